"""The core's own APIs over REST: tags, global configuration, the query language."""

from __future__ import annotations

from typing import Any

import pytest

from zcore import SystemTagPattern, hookimpl
from zcore.db import new_uuid
from zcore.testing import ApiClient

pytestmark = pytest.mark.db


class zone_tags:  # a plugin that declares a system tag pattern for zones
    @staticmethod
    @hookimpl
    def zcore_system_tag_patterns() -> Any:
        yield SystemTagPattern("owner::{team}", "ZoneVO")


async def zone(client: ApiClient, name: str, **params: Any) -> dict[str, Any]:
    return (await client.call("CreateZone", name=name, **params))["inventory"]


async def names(client: ApiClient, api: str, *conditions: str, **params: Any) -> list[str]:
    body = await client.call(api, q=list(conditions), **params)
    return sorted(i["name"] for i in body["inventories"])


# --------------------------------------------------------------------------- tags


async def test_user_tags_are_created_queried_and_deleted(api_client: Any) -> None:
    client = await api_client()
    z = await zone(client, "z1")
    tag = (await client.call("CreateUserTag", resourceType="ZoneVO", resourceUuid=z["uuid"],
                             tag="web"))["inventory"]
    assert tag["tag"] == "web" and tag["type"] == "User" and tag["resourceUuid"] == z["uuid"]
    _status, body = await client.call_raw("QueryUserTag", q=[f"resourceUuid={z['uuid']}"])
    assert [t["uuid"] for t in body["inventories"]] == [tag["uuid"]]
    assert body["schema"] == {"inventories[0]": "org.zstack.header.tag.UserTagInventory"}
    assert await names(client, "QueryZone", "__userTag__=web") == ["z1"]
    await client.call("DeleteTag", uuid=tag["uuid"])
    assert await names(client, "QueryZone", "__userTag__=web") == []


async def test_system_tags_must_match_a_registered_pattern(api_client: Any) -> None:
    client = await api_client(("zone_tags", zone_tags))
    z = await zone(client, "z1", systemTags=["owner::ops"])
    assert await names(client, "QueryZone", "__systemTag__=owner::ops") == ["z1"]
    status, body = await client.call_raw("CreateSystemTag", resourceType="ZoneVO",
                                         resourceUuid=z["uuid"], tag="color::red")
    assert status == 503 and body["error"]["code"] == "SYS.1007"
    assert "color::red" in body["error"]["details"]
    tag = (await client.call("CreateSystemTag", resourceType="ZoneVO", resourceUuid=z["uuid"],
                             tag="owner::dev"))["inventory"]
    assert tag["inherent"] is False
    found = await client.call("QuerySystemTag", q=["tag~=owner::%"])
    assert sorted(t["tag"] for t in found["inventories"]) == ["owner::dev", "owner::ops"]


async def test_a_tag_on_a_missing_or_mistyped_resource_is_refused(api_client: Any) -> None:
    client = await api_client()
    z = await zone(client, "z1")
    for resource_type, resource_uuid, code in [("ZoneVO", new_uuid(), "SYS.1003"),
                                               ("ClusterVO", z["uuid"], "SYS.1003"),
                                               ("NoSuchVO", z["uuid"], "SYS.1007")]:
        status, body = await client.call_raw("CreateUserTag", resourceType=resource_type,
                                             resourceUuid=resource_uuid, tag="x")
        assert status == 503 and body["error"]["code"] == code
    assert (await client.call("QueryUserTag", count=True))["total"] == 0


async def test_tags_go_with_their_resource(api_client: Any) -> None:
    client = await api_client()
    z = await zone(client, "z1", userTags=["a", "b"])
    assert (await client.call("QueryUserTag", count=True))["total"] == 2
    await client.call("DeleteZone", uuid=z["uuid"])
    assert (await client.call("QueryUserTag", count=True))["total"] == 0


# --------------------------------------------------------------------------- global config


async def test_global_config_is_queried_updated_validated_and_reset(api_client: Any) -> None:
    client = await api_client()
    found = await client.call("QueryGlobalConfig", q=["category=apiTimeout", "name=CreateZone"])
    assert found["inventories"][0]["value"] == found["inventories"][0]["defaultValue"] == "1800"
    updated = await client.call("UpdateGlobalConfig", category="apiTimeout", name="CreateZone",
                                value="60")
    assert updated["inventory"]["value"] == "60"
    assert client.node.global_config.get("apiTimeout", "CreateZone") == 60
    status, body = await client.call_raw("UpdateGlobalConfig", category="apiTimeout",
                                         name="CreateZone", value="soon")
    assert status == 503 and body["error"]["code"] == "SYS.1007"
    status, body = await client.call_raw("UpdateGlobalConfig", category="apiTimeout",
                                         name="CreateZone", value="0")
    assert body["error"]["code"] == "SYS.1007"
    status, body = await client.call_raw("UpdateGlobalConfig", category="nope", name="x",
                                         value="1")
    assert body["error"]["code"] == "SYS.1003"
    await client.call("ResetGlobalConfig")
    assert client.node.global_config.get("apiTimeout", "CreateZone") == 1800


# --------------------------------------------------------------------------- queries


@pytest.fixture
async def three_zones(api_client: Any) -> ApiClient:
    client = await api_client()
    await zone(client, "alpha", description="first")
    await zone(client, "beta", isDefault=True)
    gamma = await zone(client, "gamma", description="third")
    await client.call("ChangeZoneState", uuid=gamma["uuid"], stateEvent="disable")
    return client


@pytest.mark.parametrize(("condition", "expected"), [
    ("name=beta", ["beta"]),
    ("name!=beta", ["alpha", "gamma"]),
    ("name>beta", ["gamma"]),
    ("name>=beta", ["beta", "gamma"]),
    ("name<beta", ["alpha"]),
    ("name<=beta", ["alpha", "beta"]),
    ("name?=alpha,gamma,zeta", ["alpha", "gamma"]),
    ("name!?=alpha,gamma", ["beta"]),
    ("name~=%ta", ["beta"]),
    ("name!~=%ph%", ["beta", "gamma"]),
    ("name~=g_mm%", ["gamma"]),
    ("description is null", ["beta"]),
    ("description not null", ["alpha", "gamma"]),
    ("isDefault=true", ["beta"]),
    ("state=Disabled", ["gamma"]),
])
async def test_every_operator(three_zones: ApiClient, condition: str,
                              expected: list[str]) -> None:
    assert await names(three_zones, "QueryZone", condition) == expected


async def test_conditions_combine_and_page(three_zones: ApiClient) -> None:
    client = three_zones
    assert await names(client, "QueryZone", "name!=beta", "state=Enabled") == ["alpha"]
    body = await client.call("QueryZone", sort="-name", limit=2, start=1, replyWithCount=True)
    assert [z["name"] for z in body["inventories"]] == ["beta", "alpha"]
    assert body["total"] == 3
    assert await client.call("QueryZone", count=True) == {"total": 3}
    body = await client.call("QueryZone", sortBy="name", sortDirection="desc", limit=1)
    assert [z["name"] for z in body["inventories"]] == ["gamma"]
    body = await client.call("QueryZone", fields=["uuid,name"], q=["name=alpha"])
    assert list(body["inventories"][0]) == ["uuid", "name"]


async def test_expanded_fields_join_across_resources(three_zones: ApiClient) -> None:
    client = three_zones
    beta = (await client.call("QueryZone", q=["name=beta"]))["inventories"][0]
    for cluster in ("c1", "c2"):
        await client.call("CreateCluster", zoneUuid=beta["uuid"], name=cluster,
                          hypervisorType="KVM")
    assert await names(client, "QueryCluster", "zone.name=beta") == ["c1", "c2"]
    assert await names(client, "QueryZone", "cluster.name=c1") == ["beta"]
    assert await names(client, "QueryZone", "cluster.zone.cluster.name=c2") == ["beta"]
    assert await names(client, "QueryCluster", "zone.name=beta", "name!=c1") == ["c2"]


@pytest.mark.parametrize("condition", ["colour=red", "zone.nope=1", "cluster=x",
                                       "name; DROP TABLE ZoneVO=1"])
async def test_unknown_query_fields_are_sys_1007(three_zones: ApiClient,
                                                 condition: str) -> None:
    status, body = await three_zones.call_raw("QueryZone", q=[condition])
    assert status == 503 and body["error"]["code"] == "SYS.1007", body
    assert await names(three_zones, "QueryZone") == ["alpha", "beta", "gamma"]


async def test_values_are_data_never_sql(three_zones: ApiClient) -> None:
    assert await names(three_zones, "QueryZone", "name=x' OR '1'='1") == []


async def test_a_condition_without_an_operator_is_400(three_zones: ApiClient) -> None:
    status, body = await three_zones.request("GET", "/zones", params={"q": "name"})
    assert status == 400 and body["error"]["code"] == "SYS.1007"
    assert "!?=" in body["error"]["details"] and "not null" in body["error"]["details"]


async def test_fields_and_sort_must_be_known(three_zones: ApiClient) -> None:
    for params in ({"fields": ["uuid,colour"]}, {"sort": "+colour"}, {"sort": "\t"},
                   {"sort": "-"}, {"sortBy": "colour"}):
        status, body = await three_zones.call_raw("QueryZone", **params)
        assert status == 503 and body["error"]["code"] == "SYS.1007", params
