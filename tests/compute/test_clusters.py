"""Cluster APIs through node.api.call, and queries across zones and clusters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from zcore.db import SystemTagVO, new_uuid
from zcore.node import Node

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


async def names(node: Node, api: str, *conditions: str) -> list[str]:
    found = await call(node, api, q=list(conditions))
    return sorted(i["name"] for i in found["inventories"])


async def test_a_cluster_is_created_enabled_in_its_zone(node: Node) -> None:
    z = await zone(node)
    c = await cluster(node, z["uuid"], "c1", description="kvm hosts")
    assert (c["name"], c["description"], c["zoneUuid"], c["hypervisorType"], c["state"],
            c["type"], c["architecture"]) == \
        ("c1", "kvm hosts", z["uuid"], "KVM", "Enabled", "zstack", None)
    assert c["createDate"].utcoffset() is not None and c["lastOpDate"] == c["createDate"]
    if INVENTORIES.exists():
        fields = json.loads(INVENTORIES.read_text())["ClusterInventory"]["fields"]
        assert set(c) == set(fields)
    row = await resource(node, c["uuid"])
    assert (row.resourceType, row.resourceName) == ("ClusterVO", "c1")
    sim = await cluster(node, z["uuid"], "c2", hypervisorType="Simulator",
                        architecture="aarch64", type="zstack")
    assert (sim["hypervisorType"], sim["architecture"]) == ("Simulator", "aarch64")


async def test_a_cluster_may_be_created_in_a_disabled_zone(node: Node) -> None:
    z = await zone(node)
    await call(node, "ChangeZoneState", uuid=z["uuid"], stateEvent="disable")
    assert (await cluster(node, z["uuid"]))["state"] == "Enabled"


async def test_an_unknown_hypervisor_type_lists_the_available_ones(node: Node) -> None:
    z = await zone(node)
    before = await counts(node)
    error = await fails(cluster(node, z["uuid"], hypervisorType="Xen"), "SYS.1007")
    assert "'hypervisorType'" in error.details and "'Xen'" in error.details
    assert "available: KVM, Simulator" in error.details
    error = await fails(cluster(node, z["uuid"], hypervisorType="kvm"), "SYS.1007")
    assert "did you mean 'KVM'?" in error.details
    assert await counts(node) == before
    # ZStack lists it, but no driver here: refused as well.
    await fails(cluster(node, z["uuid"], hypervisorType="baremetal"), "SYS.1007")
    await fails(call(node, "CreateCluster", zoneUuid=z["uuid"], name="c1"), "SYS.1007")
    assert await counts(node) == before


async def test_a_hypervisor_whose_plugin_is_disabled_is_unavailable(make_node: MakeNode) -> None:
    node = await make_node(disable=("kvm",))
    assert node.drivers.names("zcore.hypervisors") == ["Simulator"]
    z = await zone(node)
    error = await fails(cluster(node, z["uuid"], hypervisorType="KVM"), "SYS.1007")
    assert error.details.endswith("available: Simulator")
    assert (await cluster(node, z["uuid"], hypervisorType="Simulator"))["name"] == "c1"


async def test_the_zone_must_exist_and_be_a_zone(node: Node) -> None:
    missing = new_uuid()
    error = await fails(cluster(node, missing), "SYS.1003")
    assert "'zoneUuid'" in error.details and missing in error.details
    await fails(cluster(node, "zone-1"), "SYS.1007")
    z = await zone(node)
    c = await cluster(node, z["uuid"])
    await fails(cluster(node, c["uuid"], "c2"), "SYS.1003")
    assert (await counts(node))["clusters"] == 1


async def test_the_zone_of_another_account_is_refused(node: Node) -> None:
    a, b = tenant("a"), tenant("b")
    z = await zone(node, caller=a)
    await fails(cluster(node, z["uuid"], caller=b), "ID.1002")
    c = await cluster(node, z["uuid"], caller=a)
    row = await resource(node, c["uuid"])
    assert row.ownerAccountUuid == a.account_uuid
    await fails(call(node, "UpdateCluster", b, uuid=c["uuid"], name="x"), "ID.1002")
    await fails(call(node, "DeleteCluster", b, uuid=c["uuid"]), "ID.1002")
    assert await names(node, "QueryCluster") == ["c1"]  # the admin sees every cluster
    assert (await call(node, "QueryCluster", b))["inventories"] == []


@pytest.mark.parametrize("params,why", [
    ({"name": None}, "'name' of CreateCluster is required"),
    ({"name": "c" * 256}, "at most 255"),
    ({"description": "d" * 2049}, "at most 2048"),
    ({"type": "vmware"}, "'zstack', 'baremetal', 'baremetal2'"),
    ({"architecture": "sparc"}, "'x86_64', 'aarch64', 'mips64el', 'loongarch64'"),
    ({"hypervisorType": ""}, "no hypervisor ''"),
    ({"systemTags": ["rack::r1"]}, "matches no pattern for ClusterVO"),
])
async def test_bad_input_is_sys_1007_and_creates_nothing(node: Node, params: dict[str, Any],
                                                         why: str) -> None:
    z = await zone(node)
    body = {"zoneUuid": z["uuid"], "name": "c1", "hypervisorType": "KVM", **params}
    error = await fails(call(node, "CreateCluster", **{k: v for k, v in body.items()
                                                      if v is not None}), "SYS.1007")
    assert why in error.details
    assert (await counts(node))["clusters"] == 0


async def test_resource_uuid_tags_and_validation_only(make_node: MakeNode) -> None:
    node = await make_node(("compute_tags", compute_tags))
    z = await zone(node)
    assert await call(node, "CreateCluster", zoneUuid=z["uuid"], name="c1",
                      hypervisorType="KVM", systemTags=["validationOnly"]) == {}
    error = await fails(call(node, "CreateCluster", zoneUuid=z["uuid"], name="c1",
                             hypervisorType="Xen", systemTags=["validationOnly"]), "SYS.1007")
    assert "Xen" in error.details  # the dry run checks the hypervisor drivers too
    assert (await counts(node))["clusters"] == 0
    chosen = new_uuid()
    c = await cluster(node, z["uuid"], resourceUuid=chosen, systemTags=["rack::r1"],
                      userTags=["fast"])
    assert c["uuid"] == chosen
    tags = await node.db.run(lambda s: s.scalars(select(SystemTagVO.tag).where(
        SystemTagVO.resourceUuid == chosen)).all())
    assert list(tags) == ["rack::r1"]
    error = await fails(cluster(node, z["uuid"], "c2", resourceUuid=chosen), "SYS.1007")
    assert "already used by a ClusterVO" in details(error)
    await fails(cluster(node, z["uuid"], "c3", tagUuids=[new_uuid()]), "SYS.1007")
    assert await counts(node) == {**NOTHING, "zones": 1, "clusters": 1, "resources": 2,
                                  "system_tags": 1, "user_tags": 1}


async def test_update_change_state_and_delete(node: Node) -> None:
    z = await zone(node)
    c = await cluster(node, z["uuid"], description="old")
    renamed = (await call(node, "UpdateCluster", uuid=c["uuid"], name="c2"))["inventory"]
    assert (renamed["name"], renamed["description"]) == ("c2", "old")
    assert renamed["lastOpDate"] > c["lastOpDate"]
    described = (await call(node, "UpdateCluster", uuid=c["uuid"],
                            description="new"))["inventory"]
    assert (described["name"], described["description"]) == ("c2", "new")
    state = await call(node, "ChangeClusterState", uuid=c["uuid"], stateEvent="disable")
    assert state["inventory"]["state"] == "Disabled"
    state = await call(node, "ChangeClusterState", uuid=c["uuid"], stateEvent="enable")
    assert state["inventory"]["state"] == "Enabled"
    await fails(call(node, "ChangeClusterState", uuid=c["uuid"], stateEvent="on"), "SYS.1007")
    assert await call(node, "DeleteCluster", uuid=c["uuid"]) == {}
    assert await counts(node) == {**NOTHING, "zones": 1, "resources": 1}
    for api, params in (("UpdateCluster", {"name": "x"}), ("DeleteCluster", {}),
                        ("ChangeClusterState", {"stateEvent": "enable"})):
        await fails(call(node, api, uuid=c["uuid"], **params), "SYS.1003")
        await fails(call(node, api, uuid=z["uuid"], **params), "SYS.1003")  # a zone


async def test_queries_reach_across_zones_and_clusters(node: Node) -> None:
    z1, z2, z3 = await zone(node, "z1"), await zone(node, "z2"), await zone(node, "z3")
    await cluster(node, z1["uuid"], "c1")
    await cluster(node, z1["uuid"], "c2", hypervisorType="Simulator")
    await cluster(node, z2["uuid"], "c3")
    assert await names(node, "QueryCluster", "zone.name=z1") == ["c1", "c2"]
    assert await names(node, "QueryCluster", "zone.name=z2") == ["c3"]
    assert await names(node, "QueryCluster", "zone.name?=z2,z3") == ["c3"]
    assert await names(node, "QueryCluster", "zone.name=z1", "hypervisorType=KVM") == ["c1"]
    assert await names(node, "QueryZone", "cluster.name=c1") == ["z1"]
    assert await names(node, "QueryZone", "cluster.name?=c2,c3") == ["z1", "z2"]
    assert await names(node, "QueryZone", "cluster.hypervisorType=Simulator") == ["z1"]
    assert await names(node, "QueryZone", f"uuid={z3['uuid']}") == ["z3"]
    await call(node, "ChangeZoneState", uuid=z2["uuid"], stateEvent="disable")
    assert await names(node, "QueryCluster", "zone.state=Disabled") == ["c3"]
    await fails(call(node, "QueryCluster", q=["zone.colour=red"]), "SYS.1007")
