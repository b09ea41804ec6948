"""The zone-labels plugin, installed with pip as its own distribution, works through REST.

Every test serves a node built from the installed plugins (``api_client``) and calls it over
HTTP as admin, exactly as ZStack's SDKs would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from zcore.errors import INVALID_ARGUMENT, RESOURCE_NOT_FOUND, ZError
from zcore.testing import ApiClient

MakeClient = Callable[..., Awaitable[ApiClient]]

LABEL_INVENTORY = "org.example.zonelabels.ZoneLabelInventory"
OWNER_TAG = "zonelabels::owner::ops"


async def zone(client: ApiClient, name: str, **params: Any) -> dict[str, Any]:
    reply = await client.call("CreateZone", name=name, **params)
    return reply["inventory"]  # type: ignore[no-any-return]


async def names(client: ApiClient, api: str, *conditions: str) -> list[str]:
    reply = await client.call(api, q=list(conditions))
    return sorted(inv["name"] for inv in reply["inventories"])


async def test_it_is_found_through_its_entry_point(api_client: MakeClient) -> None:
    client = await api_client()
    info = client.node.plugins.info("zonelabels")
    assert (info.status, info.distribution, info.version) == (
        "active", "zstack-zone-labels", "1.0.0")
    assert info.requires == ("compute",)
    status, body = await client.request("GET", "/openapi.json")
    assert status == 200
    assert {"CreateZoneLabel", "DeleteZoneLabel", "QueryZoneLabel"} <= set(body["x-zstack-apis"])


async def test_a_label_on_a_zone(api_client: MakeClient) -> None:
    client = await api_client()
    z1 = await zone(client, "z1")
    status, body = await client.call_raw("CreateZoneLabel", zoneUuid=z1["uuid"], name="prod")
    assert status == 200, body
    label = body["inventory"]
    assert (label["name"], label["zoneUuid"], label["color"]) == ("prod", z1["uuid"], "green")
    assert len(label["uuid"]) == 32 and label["createDate"]
    assert body["schema"] == {"inventory": LABEL_INVENTORY}

    status, body = await client.request("GET", f"/zone-labels/{label['uuid']}")
    assert status == 200
    assert [inv["uuid"] for inv in body["inventories"]] == [label["uuid"]]
    assert body["schema"] == {"inventories[0]": LABEL_INVENTORY}


async def test_zones_are_queried_by_their_labels(api_client: MakeClient) -> None:
    client = await api_client()
    z1, z2, _ = [await zone(client, n) for n in ("z1", "z2", "z3")]
    await client.call("CreateZoneLabel", zoneUuid=z1["uuid"], name="hot", color="red")
    await client.call("CreateZoneLabel", zoneUuid=z1["uuid"], name="cold", color="blue")
    await client.call("CreateZoneLabel", zoneUuid=z2["uuid"], name="cold", color="blue")

    assert await names(client, "QueryZone", "label.color=red") == ["z1"]
    assert await names(client, "QueryZone", "label.color=blue") == ["z1", "z2"]
    assert await names(client, "QueryZone", "label.name?=hot,warm") == ["z1"]
    assert await names(client, "QueryZone", "label.color=green") == []


async def test_labels_are_queried_by_their_zone(api_client: MakeClient) -> None:
    client = await api_client()
    z1, z2 = await zone(client, "z1"), await zone(client, "z2")
    await client.call("CreateZoneLabel", zoneUuid=z1["uuid"], name="a")
    await client.call("CreateZoneLabel", zoneUuid=z2["uuid"], name="b", color="red")

    assert await names(client, "QueryZoneLabel", "zone.name=z1") == ["a"]
    assert await names(client, "QueryZoneLabel", "zone.name=z2", "color=red") == ["b"]
    assert await names(client, "QueryZoneLabel", "zone.name=nowhere") == []


async def test_the_owner_system_tag_goes_on_zones(api_client: MakeClient) -> None:
    client = await api_client()
    tagged = await zone(client, "tagged", systemTags=[OWNER_TAG])
    await zone(client, "plain")

    reply = await client.call("QueryZone", q=[f"__systemTag__={OWNER_TAG}"])
    assert [inv["uuid"] for inv in reply["inventories"]] == [tagged["uuid"]]
    assert await names(client, "QueryZone", "__systemTag__~=zonelabels::owner::%") == ["tagged"]
    tags = await client.call("QuerySystemTag", q=[f"resourceUuid={tagged['uuid']}"])
    assert [t["tag"] for t in tags["inventories"]] == [OWNER_TAG]


async def test_a_label_on_a_missing_zone_is_refused(api_client: MakeClient) -> None:
    client = await api_client()
    with pytest.raises(ZError) as caught:
        await client.call("CreateZoneLabel", zoneUuid="0" * 32, name="lost")
    assert caught.value.code == RESOURCE_NOT_FOUND
    assert "0" * 32 in caught.value.details
    assert (await client.call("QueryZoneLabel", count=True))["total"] == 0


async def test_a_colour_outside_the_palette_is_refused(api_client: MakeClient) -> None:
    client = await api_client()
    z1 = await zone(client, "z1")
    with pytest.raises(ZError) as caught:
        await client.call("CreateZoneLabel", zoneUuid=z1["uuid"], name="x", color="purple")
    assert caught.value.code == INVALID_ARGUMENT
    assert "'purple'" in caught.value.details and "'red'" in caught.value.details
    assert (await client.call("QueryZoneLabel", count=True))["total"] == 0


async def test_labels_are_deleted_alone_or_with_their_zone(api_client: MakeClient) -> None:
    client = await api_client()
    z1, z2 = await zone(client, "z1"), await zone(client, "z2")
    a = (await client.call("CreateZoneLabel", zoneUuid=z1["uuid"], name="a"))["inventory"]
    await client.call("CreateZoneLabel", zoneUuid=z2["uuid"], name="b")

    assert await client.call("DeleteZoneLabel", uuid=a["uuid"]) == {}
    assert await names(client, "QueryZoneLabel") == ["b"]

    await client.call("DeleteZone", uuid=z2["uuid"])
    assert await names(client, "QueryZoneLabel") == []
    assert await names(client, "QueryZone") == ["z1"]


async def test_without_the_plugin_the_tag_and_the_apis_are_unknown(
        api_client: MakeClient) -> None:
    client = await api_client(disable=("zonelabels",))
    assert client.node.plugins.info("zonelabels").status == "disabled"

    with pytest.raises(ZError) as caught:
        await zone(client, "tagged", systemTags=[OWNER_TAG])
    assert caught.value.code == INVALID_ARGUMENT
    assert OWNER_TAG in caught.value.details
    assert await names(client, "QueryZone") == []

    with pytest.raises(ZError) as caught:
        await client.call("QueryZone", q=["label.color=red"])
    assert caught.value.code == INVALID_ARGUMENT
    status, _ = await client.request("GET", "/zone-labels")
    assert status == 404
