"""Zone APIs through node.api.call: create, update, change state, delete, query, bad input."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from zcore import FlowInsertion, FlowStep, hookimpl
from zcore.api import NAME_REGEX
from zcore.db import SystemTagVO, UserTagVO, new_uuid
from zcore.flow import FlowContext, Step
from zcore.node import Node
from zplugins.compute.models import ZoneVO

from .helpers import (
    NOTHING,
    MakeNode,
    call,
    cluster,
    compute_tags,
    counts,
    details,
    fails,
    resource,
    tenant,
    zone,
)

pytestmark = pytest.mark.db

INVENTORIES = Path(__file__).parents[2] / ".." / "shared" / "zstack-api" / "inventories.json"


async def test_a_zone_is_created_enabled_with_the_fields_of_zstack(node: Node) -> None:
    z = await zone(node, "z1", description="the first")
    assert (z["name"], z["description"], z["state"], z["type"], z["isDefault"]) == \
        ("z1", "the first", "Enabled", "zstack", False)
    assert isinstance(z["createDate"], datetime) and z["createDate"].utcoffset() is not None
    assert z["lastOpDate"] == z["createDate"]
    if INVENTORIES.exists():
        fields = json.loads(INVENTORIES.read_text())["ZoneInventory"]["fields"]
        assert list(z) == ["uuid", "name", "description", "state", "type", "isDefault",
                           "createDate", "lastOpDate"]
        assert set(z) == set(fields)
    row = await resource(node, z["uuid"])
    assert (row.resourceType, row.resourceName, row.ownerAccountUuid) == ("ZoneVO", "z1", None)


async def test_the_zone_belongs_to_the_caller(node: Node) -> None:
    a, b = tenant("a"), tenant("b")
    z = await zone(node, "mine", caller=a)
    row = await resource(node, z["uuid"])
    assert row.ownerAccountUuid == a.account_uuid
    assert [i["name"] for i in (await call(node, "QueryZone", a))["inventories"]] == ["mine"]
    assert (await call(node, "QueryZone", b))["inventories"] == []
    error = await fails(call(node, "UpdateZone", b, uuid=z["uuid"], name="theirs"), "ID.1002")
    assert z["uuid"] in error.details
    await fails(call(node, "DeleteZone", b, uuid=z["uuid"]), "ID.1002")
    await fails(call(node, "ChangeZoneState", b, uuid=z["uuid"], stateEvent="disable"),
                "ID.1002")
    assert (await call(node, "UpdateZone", a, uuid=z["uuid"], name="still-mine"))[
        "inventory"]["name"] == "still-mine"


async def test_one_zone_at_most_is_the_default(node: Node) -> None:
    z1 = await zone(node, "z1", isDefault=True)
    z2 = await zone(node, "z2")
    assert (z1["isDefault"], z2["isDefault"]) == (True, False)
    z3 = await zone(node, "z3", isDefault=True)
    assert z3["isDefault"] is True

    async def defaults() -> list[str]:
        found = await call(node, "QueryZone", q=["isDefault=true"])
        return [i["name"] for i in found["inventories"]]

    assert await defaults() == ["z3"]
    await call(node, "UpdateZone", uuid=z2["uuid"], isDefault=True)
    assert await defaults() == ["z2"]
    await call(node, "UpdateZone", uuid=z2["uuid"], isDefault=False)
    assert await defaults() == []


async def test_update_changes_only_the_fields_given(node: Node) -> None:
    z = await zone(node, "z1", description="old")
    renamed = (await call(node, "UpdateZone", uuid=z["uuid"], name="z2"))["inventory"]
    assert (renamed["name"], renamed["description"]) == ("z2", "old")
    assert renamed["createDate"] == z["createDate"] and renamed["lastOpDate"] > z["lastOpDate"]
    described = (await call(node, "UpdateZone", uuid=z["uuid"], description="new"))["inventory"]
    assert (described["name"], described["description"]) == ("z2", "new")
    row = await resource(node, z["uuid"])
    assert row.resourceName == "z2"
    await fails(call(node, "UpdateZone", uuid=z["uuid"], name=" z3"), "SYS.1007")
    await fails(call(node, "UpdateZone", uuid=z["uuid"], name="z" * 256), "SYS.1007")
    assert (await call(node, "QueryZone", q=[f"uuid={z['uuid']}"]))["inventories"][0][
        "name"] == "z2"


async def test_change_state_enables_and_disables(node: Node) -> None:
    z = await zone(node)
    disabled = (await call(node, "ChangeZoneState", uuid=z["uuid"], stateEvent="disable"))
    assert disabled["inventory"]["state"] == "Disabled"
    again = (await call(node, "ChangeZoneState", uuid=z["uuid"], stateEvent="disable"))
    assert again["inventory"]["state"] == "Disabled"
    enabled = (await call(node, "ChangeZoneState", uuid=z["uuid"], stateEvent="enable"))
    assert enabled["inventory"]["state"] == "Enabled"
    error = await fails(call(node, "ChangeZoneState", uuid=z["uuid"], stateEvent="maintain"),
                        "SYS.1007")
    assert "'enable', 'disable'" in error.details
    await fails(call(node, "ChangeZoneState", uuid=z["uuid"]), "SYS.1007")


async def test_a_zone_without_clusters_is_deleted_with_its_tags(make_node: MakeNode) -> None:
    node = await make_node(("compute_tags", compute_tags))
    z = await zone(node, systemTags=["owner::ops"], userTags=["web", "prod"])
    assert await counts(node) == {**NOTHING, "zones": 1, "resources": 1, "system_tags": 1,
                                  "user_tags": 2}
    assert await call(node, "DeleteZone", uuid=z["uuid"]) == {}
    assert await counts(node) == NOTHING
    await fails(call(node, "DeleteZone", uuid=z["uuid"]), "SYS.1003")


async def test_delete_mode_must_be_permissive_or_enforcing(node: Node) -> None:
    z = await zone(node)
    await fails(call(node, "DeleteZone", uuid=z["uuid"], deleteMode="Force"), "SYS.1007")
    await call(node, "DeleteZone", uuid=z["uuid"], deleteMode="Enforcing")
    assert (await counts(node))["zones"] == 0


@pytest.mark.parametrize("api,params", [
    ("UpdateZone", {"name": "x"}),
    ("ChangeZoneState", {"stateEvent": "enable"}),
    ("DeleteZone", {}),
])
async def test_a_zone_that_does_not_exist_is_sys_1003(node: Node, api: str,
                                                      params: dict[str, Any]) -> None:
    missing = new_uuid()
    error = await fails(call(node, api, uuid=missing, **params), "SYS.1003")
    assert missing in error.details and "ZoneVO" in error.details
    await fails(call(node, api, uuid="not-a-uuid", **params), "SYS.1007")
    c = await cluster(node, (await zone(node))["uuid"])
    await fails(call(node, api, uuid=c["uuid"], **params), "SYS.1003")  # not a zone


@pytest.mark.parametrize("name,why", [
    ("z" * 256, "256 characters long; at most 255"),
    (" z1", "does not match"),
    ("z1 ", "does not match"),
    ("z1/z2", "does not match"),
    (None, "is required"),
])
async def test_a_bad_name_is_sys_1007_and_creates_nothing(node: Node, name: str | None,
                                                          why: str) -> None:
    params = {} if name is None else {"name": name}
    error = await fails(call(node, "CreateZone", **params), "SYS.1007")
    assert "'name'" in error.details and why in error.details
    assert await counts(node) == NOTHING


async def test_names_zstack_allows_are_allowed(node: Node) -> None:
    for name in ("z" * 255, "区域-1", 'a (b) "c": d+e.f_g'):
        assert (await zone(node, name))["name"] == name
    assert NAME_REGEX.startswith("^(?! )")


async def test_a_long_description_is_refused(node: Node) -> None:
    await fails(call(node, "CreateZone", name="z1", description="d" * 2049), "SYS.1007")
    assert (await zone(node, description="d" * 2048))["description"] == "d" * 2048
    assert (await counts(node))["zones"] == 1


async def test_the_resource_uuid_is_honoured_and_a_taken_one_refused(node: Node) -> None:
    chosen = new_uuid()
    z = await zone(node, "z1", resourceUuid=chosen, userTags=["t"])
    assert z["uuid"] == chosen
    before = await counts(node)
    error = await fails(zone(node, "z2", resourceUuid=chosen, userTags=["t"]), "SYS.1007")
    assert chosen in details(error) and "already used" in details(error)
    c = await cluster(node, chosen)
    error = await fails(zone(node, "z3", resourceUuid=c["uuid"]), "SYS.1007")
    assert "ClusterVO" in details(error)
    await fails(zone(node, "z4", resourceUuid="NOT-A-UUID"), "SYS.1007")
    assert await counts(node) == {**before, "clusters": 1, "resources": 2}


async def test_system_tags_must_match_a_pattern_before_anything_is_created(
        make_node: MakeNode) -> None:
    node = await make_node(("compute_tags", compute_tags))
    error = await fails(zone(node, systemTags=["owner::ops", "colour::red"]), "SYS.1007")
    assert "colour::red" in error.details and "owner::{team}" in error.details
    await fails(zone(node, systemTags=["rack::r1"]), "SYS.1007")  # a cluster's pattern
    assert await counts(node) == NOTHING
    z = await zone(node, systemTags=["owner::ops"], userTags=["web"])

    def tags(session: Any) -> tuple[list[tuple[str, str]], list[str]]:
        system = session.execute(select(SystemTagVO.tag, SystemTagVO.resourceType).where(
            SystemTagVO.resourceUuid == z["uuid"])).all()
        user = session.scalars(select(UserTagVO.tag).where(
            UserTagVO.resourceUuid == z["uuid"])).all()
        return [tuple(r) for r in system], list(user)

    assert await node.db.run(tags) == ([("owner::ops", "ZoneVO")], ["web"])
    found = await call(node, "QueryZone", q=["__systemTag__=owner::ops"])
    assert [i["uuid"] for i in found["inventories"]] == [z["uuid"]]


async def test_without_patterns_every_system_tag_is_refused(node: Node) -> None:
    error = await fails(zone(node, systemTags=["owner::ops"]), "SYS.1007")
    assert "ZoneVO" in error.details
    assert await counts(node) == NOTHING


async def test_validation_only_creates_nothing(node: Node) -> None:
    assert await call(node, "CreateZone", name="z1", systemTags=["validationOnly"]) == {}
    assert await counts(node) == NOTHING
    await fails(call(node, "CreateZone", name=" z1", systemTags=["validationOnly"]),
                "SYS.1007")


async def test_tag_uuids_are_not_supported_yet(node: Node) -> None:
    error = await fails(zone(node, tagUuids=[new_uuid()]), "SYS.1007")
    assert "tagUuids" in error.details
    assert await counts(node) == NOTHING
    assert (await zone(node, tagUuids=[]))["name"] == "z1"


async def test_query_by_name_and_count(node: Node) -> None:
    for name in ("a1", "a2", "b1"):
        await zone(node, name)
    found = await call(node, "QueryZone", q=["name~=a%"], sort="-name")
    assert [i["name"] for i in found["inventories"]] == ["a2", "a1"]
    assert await call(node, "QueryZone", q=["state=Enabled"], count=True) == {"total": 3}
    fields = await call(node, "QueryZone", q=["name=b1"], fields=["uuid,name"])
    assert list(fields["inventories"][0]) == ["uuid", "name"]


class Failing(Step):
    """Fails after the zone was written: the zone must be rolled back."""

    requires = ("zone",)

    async def run(self, ctx: FlowContext) -> None:
        raise RuntimeError("the step after persist-zone failed")


class fail_after_persist:  # a plugin that inserts a failing step into zone-create
    @staticmethod
    @hookimpl
    def zcore_flow_steps() -> Any:
        yield FlowStep("fail-after-zone", Failing())

    @staticmethod
    @hookimpl
    def zcore_flow_insertions() -> Any:
        yield FlowInsertion("zone-create", "fail-after-zone", after="persist-zone")


async def test_a_later_step_failing_rolls_the_zone_back(make_node: MakeNode) -> None:
    node = await make_node(("fail_after_persist", fail_after_persist))
    assert node.flows.chains["zone-create"].step_names == ("persist-zone", "fail-after-zone")
    error = await fails(zone(node, userTags=["web"]), "SYS.1000")
    assert "the step after persist-zone failed" in details(error)
    assert await counts(node) == NOTHING
    assert await node.db.run(lambda s: s.scalars(select(ZoneVO)).all()) == []
