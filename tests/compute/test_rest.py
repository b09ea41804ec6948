"""Zones and clusters over real HTTP, as ZStack's SDKs call them."""

from __future__ import annotations

from typing import Any

import pytest

from zcore.db import ResourceVO
from zcore.testing import ApiClient

pytestmark = pytest.mark.db

ADMIN = "36c27e8ff05c4780bf6d2fa65700f22e"  # the identity plugin's admin account, as ZStack's


async def create(client: ApiClient, api: str, **params: Any) -> dict[str, Any]:
    inventory: dict[str, Any] = (await client.call(api, **params))["inventory"]
    return inventory


async def test_a_zone_and_a_cluster_over_http(api_client: Any) -> None:
    client = await api_client()
    z = await create(client, "CreateZone", name="z1", userTags=["web"])
    status, body = await client.call_raw("CreateCluster", zoneUuid=z["uuid"], name="c1",
                                         hypervisorType="Simulator")
    assert status == 200
    assert body["schema"] == {"inventory": "org.zstack.header.cluster.ClusterInventory"}
    c = body["inventory"]
    assert (c["zoneUuid"], c["hypervisorType"], c["state"]) == (z["uuid"], "Simulator",
                                                                "Enabled")
    status, body = await client.call_raw("QueryCluster", q=["zone.name=z1"])
    assert status == 200 and [i["uuid"] for i in body["inventories"]] == [c["uuid"]]
    assert body["schema"] == {"inventories[0]": "org.zstack.header.cluster.ClusterInventory"}
    found = await client.call("QueryZone", q=["cluster.name=c1"])
    assert [i["uuid"] for i in found["inventories"]] == [z["uuid"]]
    # What an account creates over HTTP, it owns.
    row = await client.node.db.run(lambda s: s.get(ResourceVO, c["uuid"]))
    assert row.ownerAccountUuid == ADMIN


async def test_actions_share_a_url_and_dispatch_on_their_key(api_client: Any) -> None:
    client = await api_client()
    z = await create(client, "CreateZone", name="z1")
    status, body = await client.request("PUT", f"/zones/{z['uuid']}/actions",
                                        json={"changeZoneState": {"stateEvent": "disable"}})
    assert status == 202
    status, body = await client.poll(body["location"])
    assert status == 200 and body["inventory"]["state"] == "Disabled"
    updated = await create(client, "UpdateZone", uuid=z["uuid"], description="cold")
    assert (updated["state"], updated["description"]) == ("Disabled", "cold")


async def test_errors_over_http(api_client: Any) -> None:
    client = await api_client()
    z = await create(client, "CreateZone", name="z1")
    status, body = await client.call_raw("CreateCluster", zoneUuid=z["uuid"], name="c1",
                                         hypervisorType="Xen")
    assert status == 503 and body["error"]["code"] == "SYS.1007"
    assert "available: KVM, Simulator" in body["error"]["details"]
    status, body = await client.call_raw("CreateZone", name=" z2")
    assert status == 503 and body["error"]["code"] == "SYS.1007"
    status, body = await client.call_raw("DeleteZone", uuid="0" * 32)
    assert status == 503 and body["error"]["code"] == "SYS.1003"
    assert (await client.call("QueryZone", count=True))["total"] == 1


async def test_delete_a_zone_with_clusters_over_http(api_client: Any) -> None:
    client = await api_client(disable=("cascade",))
    z = await create(client, "CreateZone", name="z1")
    c = await create(client, "CreateCluster", zoneUuid=z["uuid"], name="c1",
                     hypervisorType="KVM")
    status, body = await client.call_raw("DeleteZone", uuid=z["uuid"],
                                         deleteMode="Enforcing")
    assert status == 503 and body["error"]["code"] == "SYS.1004"
    assert c["uuid"] in body["error"]["details"]

    client = await api_client(disable=())  # a new node, with the cascade plugin
    z = await create(client, "CreateZone", name="z1")
    await create(client, "CreateCluster", zoneUuid=z["uuid"], name="c1", hypervisorType="KVM")
    status, body = await client.call_raw("DeleteZone", uuid=z["uuid"])
    assert (status, body) == (200, {"schema": {}})
    # (Both nodes share the test's database: the first zone and its cluster are still there.)
    assert (await client.call("QueryCluster", q=[f"zoneUuid={z['uuid']}"],
                              count=True))["total"] == 0
    assert (await client.call("QueryZone", q=[f"uuid={z['uuid']}"], count=True))["total"] == 0
