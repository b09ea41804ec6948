"""Hosts: adding simulator hosts, querying, updating, state, reconnecting, deleting, bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from zcore.api import SYSTEM, Caller
from zcore.db import ResourceVO, SystemTagVO, UserTagVO
from zcore.node import Node
from zcore.testing import ApiClient
from zplugins.compute.models import HostVO
from zplugins.simulator.hosts import SIMULATOR

from .helpers import MakeNode, call, cluster, compute_tags, details, fails, tenant, zone

pytestmark = pytest.mark.db

GiB = 1024**3

#: ZStack's HostInventory fields, and what SimulatorHostInventory adds.
HOST_FIELDS = {
    "architecture", "availableCpuCapacity", "availableMemoryCapacity", "clusterUuid",
    "cpuNum", "cpuSockets", "cpuStatus", "createDate", "description", "diskStatus",
    "fanStatus", "gpuStatus", "hypervisorType", "ipmiAddress", "ipmiPort", "ipmiPowerStatus",
    "ipmiUsername", "lastOpDate", "managementIp", "memoryStatus", "name", "nicStatus",
    "powerSupplyStatus", "raidStatus", "state", "status", "temperatureStatus",
    "totalCpuCapacity", "totalMemoryCapacity", "uuid", "zoneUuid"}
SIMULATOR_FIELDS = HOST_FIELDS | {"cpuCapacity", "memoryCapacity"}


@pytest.fixture(autouse=True)
def simulated_world() -> Iterator[None]:
    yield
    SIMULATOR.clear()


async def sim_cluster(node: Node, zone_name: str = "z1", name: str = "c1",
                      caller: Caller = SYSTEM) -> dict[str, Any]:
    z = await zone(node, zone_name, caller)
    return await cluster(node, z["uuid"], name, caller, hypervisorType="Simulator")


async def add_host(node: Node, cluster_uuid: str, name: str = "h1", ip: str = "10.0.0.1",
                   caller: Caller = SYSTEM, **params: Any) -> dict[str, Any]:
    params.setdefault("cpuCapacity", 8)
    params.setdefault("memoryCapacity", 8 * GiB)
    reply = await call(node, "AddSimulatorHost", caller, clusterUuid=cluster_uuid, name=name,
                       managementIp=ip, **params)
    inventory: dict[str, Any] = reply["inventory"]
    return inventory


async def host_rows(node: Node) -> dict[str, int]:
    def count(session: Any) -> dict[str, int]:
        return {
            "hosts": session.scalar(select(func.count()).select_from(HostVO)),
            "resources": session.scalar(select(func.count()).select_from(ResourceVO)
                                        .where(ResourceVO.resourceType == "HostVO")),
            "tags": session.scalar(select(func.count()).select_from(SystemTagVO)
                                   .where(SystemTagVO.resourceType == "HostVO"))
            + session.scalar(select(func.count()).select_from(UserTagVO)
                             .where(UserTagVO.resourceType == "HostVO")),
        }

    return await node.db.run(count)


async def get(node: Node, uuid: str) -> dict[str, Any]:
    found = (await call(node, "QueryHost", q=[f"uuid={uuid}"]))["inventories"]
    assert len(found) == 1
    inventory: dict[str, Any] = found[0]
    return inventory


# --------------------------------------------------------------------------- adding


async def test_a_simulator_host_is_added_connected_with_its_capacity(api_client: Any) -> None:
    client: ApiClient = await api_client()
    z = (await client.call("CreateZone", name="z1"))["inventory"]
    c = (await client.call("CreateCluster", zoneUuid=z["uuid"], name="c1",
                           hypervisorType="Simulator"))["inventory"]
    status, body = await client.call_raw(
        "AddSimulatorHost", clusterUuid=c["uuid"], name="h1", managementIp="10.0.0.1",
        cpuCapacity=8, memoryCapacity=8 * GiB, description="rack 1", userTags=["fast"])
    assert status == 200
    host = body["inventory"]
    assert body["schema"] == {"inventory": "org.zstack.header.simulator.SimulatorHostInventory"}
    assert set(host) == SIMULATOR_FIELDS
    assert {k: host[k] for k in ("name", "description", "managementIp", "clusterUuid",
                                 "zoneUuid", "hypervisorType", "state", "status")} == {
        "name": "h1", "description": "rack 1", "managementIp": "10.0.0.1",
        "clusterUuid": c["uuid"], "zoneUuid": z["uuid"], "hypervisorType": "Simulator",
        "state": "Enabled", "status": "Connected"}
    # CPU: cpuNum x the over-provisioning ratio (10); memory: less the reserved 1G.
    assert (host["cpuNum"], host["cpuSockets"], host["totalCpuCapacity"],
            host["availableCpuCapacity"]) == (8, 1, 80, 80)
    assert (host["totalMemoryCapacity"], host["availableMemoryCapacity"]) == (8 * GiB, 7 * GiB)
    assert (host["cpuCapacity"], host["memoryCapacity"]) == (8, 8 * GiB)
    assert host["architecture"] == "x86_64"
    assert (await client.call("QueryUserTag", q=[f"resourceUuid={host['uuid']}"]))[
        "inventories"][0]["tag"] == "fast"
    # The simulated machine was connected once (then asked which VMs it runs).
    assert [path for path, _ in SIMULATOR.host(host["uuid"]).calls
            if path.startswith("/host/")] == ["/host/connect"]


async def test_a_host_may_be_given_its_uuid_and_a_dry_run_adds_nothing(node: Node) -> None:
    c = await sim_cluster(node)
    await call(node, "AddSimulatorHost", clusterUuid=c["uuid"], name="h1",
               managementIp="10.0.0.9", cpuCapacity=1, memoryCapacity=GiB,
               systemTags=["validationOnly"])
    assert (await host_rows(node))["hosts"] == 0
    chosen = "ab" * 16
    host = await add_host(node, c["uuid"], resourceUuid=chosen)
    assert host["uuid"] == chosen


# --------------------------------------------------------------------------- querying


async def test_hosts_are_queried_across_cluster_and_zone(api_client: Any) -> None:
    client: ApiClient = await api_client()
    node = client.node
    west = await sim_cluster(node, "west", "cw")
    east = await sim_cluster(node, "east", "ce")
    h1 = await add_host(node, west["uuid"], "h1", "10.0.0.1")
    h2 = await add_host(node, west["uuid"], "h2", "10.0.0.2", cpuCapacity=32)
    h3 = await add_host(node, east["uuid"], "h3", "10.0.0.3")

    def names(reply: dict[str, Any]) -> list[str]:
        return sorted(i["name"] for i in reply["inventories"])

    assert names(await client.call("QueryHost", q=["cluster.zone.name=west"])) == ["h1", "h2"]
    assert names(await client.call("QueryHost", q=["zone.name=east"])) == ["h3"]
    assert names(await client.call("QueryHost", q=["cluster.name=cw", "cpuNum>=16"])) == ["h2"]
    assert names(await client.call("QueryHost", q=["availableCpuCapacity>100"])) == ["h2"]
    found = await client.call("QueryCluster", q=["host.managementIp=10.0.0.3"])
    assert [c["name"] for c in found["inventories"]] == ["ce"]
    found = await client.call("QueryZone", q=["host.name?=h1,h2"])
    assert [z["name"] for z in found["inventories"]] == ["west"]
    # One host by uuid, in the query shape; fields= gives only what was asked.
    status, body = await client.request("GET", f"/hosts/{h3['uuid']}")
    assert status == 200 and [i["uuid"] for i in body["inventories"]] == [h3["uuid"]]
    assert body["schema"] == {
        "inventories[0]": "org.zstack.header.simulator.SimulatorHostInventory"}
    only = await client.call("QueryHost", q=[f"uuid={h1['uuid']}"], fields="name,status")
    assert only["inventories"] == [{"name": "h1", "status": "Connected"}]
    assert (await client.call("QueryHost", count=True)) == {"total": 3}
    assert h2["uuid"] in {i["uuid"] for i in (await client.call("QueryHost"))["inventories"]}


async def test_a_tenant_sees_only_its_own_hosts(node: Node) -> None:
    admin_cluster = await sim_cluster(node)
    await add_host(node, admin_cluster["uuid"], "admins")
    alice = tenant("a")
    error = await fails(add_host(node, admin_cluster["uuid"], "hers", "10.0.0.2", alice),
                        "ID.1002")
    assert admin_cluster["uuid"] in error.details
    hers = await sim_cluster(node, "za", "ca", alice)
    await add_host(node, hers["uuid"], "hers", "10.0.0.2", alice)
    found = await call(node, "QueryHost", alice)
    assert [h["name"] for h in found["inventories"]] == ["hers"]


async def test_the_hidden_reserved_memory_column_cannot_be_queried(node: Node) -> None:
    await add_host(node, (await sim_cluster(node))["uuid"])
    error = await fails(call(node, "QueryHost", q=["reservedMemoryCapacity>0"]), "SYS.1007")
    assert "reservedMemoryCapacity" in error.details


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("params", "code", "words"), [
    ({"clusterUuid": "f" * 32}, "SYS.1003", "no ClusterVO has uuid"),
    ({"clusterUuid": "not-a-uuid"}, "SYS.1007", "not a resource uuid"),
    ({"managementIp": "10.0.0.1"}, "SYS.1007", "already has management IP 10.0.0.1"),
    ({"managementIp": "300.1.2.3"}, "SYS.1007", "neither an IP address nor a host name"),
    ({"managementIp": "bad host!"}, "SYS.1007", "neither an IP address nor a host name"),
    ({"managementIp": " "}, "SYS.1007", "must not be empty"),
    ({"cpuCapacity": 0}, "SYS.1007", "cpuCapacity"),
    ({"cpuCapacity": -4}, "SYS.1007", "cpuCapacity"),
    ({"memoryCapacity": 0}, "SYS.1007", "memoryCapacity"),
    ({"memoryCapacity": -1}, "SYS.1007", "memoryCapacity"),
    ({"memoryCapacity": None}, "SYS.1007", "'memoryCapacity' of AddSimulatorHost is required"),
    ({"name": "x" * 256}, "SYS.1007", "at most 255"),
    ({"resourceUuid": "XYZ"}, "SYS.1007", "uuid"),
    ({"tagUuids": ["a" * 32]}, "SYS.1007", "tagUuids"),
])
async def test_bad_input_adds_nothing(node: Node, params: dict[str, Any], code: str,
                                      words: str) -> None:
    c = await sim_cluster(node)
    first = await add_host(node, c["uuid"], "h1", "10.0.0.1")
    before, machines = await host_rows(node), len(SIMULATOR.hosts())
    request = {"clusterUuid": c["uuid"], "name": "h2", "managementIp": "10.0.0.2",
               "cpuCapacity": 4, "memoryCapacity": 4 * GiB, **params}
    request = {k: v for k, v in request.items() if v is not None}
    error = await fails(call(node, "AddSimulatorHost", **request), code)
    assert words in details(error)
    assert await host_rows(node) == before
    assert len(SIMULATOR.hosts()) == machines
    assert (await get(node, first["uuid"]))["status"] == "Connected"


async def test_a_cluster_of_another_hypervisor_is_refused(node: Node) -> None:
    z = await zone(node)
    kvm = await cluster(node, z["uuid"], "kvm", hypervisorType="KVM")
    error = await fails(add_host(node, kvm["uuid"]), "SYS.1007")
    assert f"cluster 'kvm' ({kvm['uuid']}) is for KVM hosts" in error.details
    assert "AddSimulatorHost adds Simulator hosts" in error.details
    assert (await host_rows(node))["hosts"] == 0


async def test_a_host_that_cannot_connect_is_not_added(api_client: Any) -> None:
    client: ApiClient = await api_client()
    node = client.node
    c = await sim_cluster(node)
    SIMULATOR.fail("/host/connect", "libvirtd is not running")
    status, body = await client.call_raw(
        "AddSimulatorHost", clusterUuid=c["uuid"], name="h1", managementIp="10.0.0.1",
        cpuCapacity=4, memoryCapacity=4 * GiB, userTags=["t"])
    assert status == 503
    error = body["error"]
    assert error["code"] == "HOST.1000"
    assert "libvirtd is not running" in error["details"]
    assert "connect-host" in error["details"] and "was not added" in error["details"]
    assert await host_rows(node) == {"hosts": 0, "resources": 0, "tags": 0}
    assert SIMULATOR.hosts() == []
    # Once the host connects, the same IP is welcome.
    SIMULATOR.heal()
    assert (await add_host(node, c["uuid"], "h1", "10.0.0.1"))["status"] == "Connected"


async def test_a_host_of_another_architecture_than_its_cluster_is_not_added(
        node: Node) -> None:
    z = await zone(node)
    arm = await cluster(node, z["uuid"], "arm", hypervisorType="Simulator",
                        architecture="aarch64")
    error = await fails(add_host(node, arm["uuid"]), "HOST.1000")
    assert ("the host's CPU architecture is x86_64 but cluster "
            f"{arm['uuid']} is for aarch64 hosts") in error.details
    assert await host_rows(node) == {"hosts": 0, "resources": 0, "tags": 0}


# --------------------------------------------------------------------------- updating


async def test_update_changes_only_what_is_given(node: Node) -> None:
    c = await sim_cluster(node)
    h = await add_host(node, c["uuid"], "h1", "10.0.0.1", description="old")
    updated = (await call(node, "UpdateHost", uuid=h["uuid"], name="renamed"))["inventory"]
    assert (updated["name"], updated["description"], updated["managementIp"]) == \
        ("renamed", "old", "10.0.0.1")
    assert updated["lastOpDate"] > h["lastOpDate"]
    assert [p for p, _ in SIMULATOR.host(h["uuid"]).calls] == ["/host/connect", "/vm/vmsync"]


async def test_a_new_management_ip_reconnects_the_host(node: Node) -> None:
    c = await sim_cluster(node)
    h = await add_host(node, c["uuid"], "h1", "10.0.0.1")
    other = await add_host(node, c["uuid"], "h2", "10.0.0.2")
    moved = (await call(node, "UpdateHost", uuid=h["uuid"], managementIp="h1.example.com")
             )["inventory"]
    assert (moved["managementIp"], moved["status"]) == ("h1.example.com", "Connected")
    assert [p for p, _ in SIMULATOR.host(h["uuid"]).calls] == ["/host/connect", "/vm/vmsync"] * 2
    # Taken or malformed addresses change nothing.
    for ip, words in (("10.0.0.2", f"host 'h2' ({other['uuid']}) already has"),
                      ("10.0.0.256", "neither an IP address")):
        error = await fails(call(node, "UpdateHost", uuid=h["uuid"], managementIp=ip,
                                 name="nope"), "SYS.1007")
        assert words in error.details
    assert (await get(node, h["uuid"]))["name"] == "h1"
    assert (await get(node, h["uuid"]))["managementIp"] == "h1.example.com"


# --------------------------------------------------------------------------- state


async def test_state_changes(api_client: Any) -> None:
    client: ApiClient = await api_client()
    c = await sim_cluster(client.node)
    h = await add_host(client.node, c["uuid"])
    for event, state in (("disable", "Disabled"), ("enable", "Enabled"),
                         ("maintain", "Maintenance"), ("maintain", "Maintenance"),
                         ("disable", "Disabled"), ("maintain", "Maintenance"),
                         ("enable", "Enabled")):
        reply = await client.call("ChangeHostState", uuid=h["uuid"], stateEvent=event)
        assert (reply["inventory"]["state"], reply["inventory"]["status"]) == \
            (state, "Connected"), event
    error = await fails(client.call("ChangeHostState", uuid=h["uuid"],
                                    stateEvent="preMaintain"), "SYS.1007")
    assert "'enable', 'disable', 'maintain'" in error.details
    assert (await get(client.node, h["uuid"]))["state"] == "Enabled"


# --------------------------------------------------------------------------- reconnecting


async def test_reconnect_reads_the_capacity_again(api_client: Any) -> None:
    client: ApiClient = await api_client()
    node = client.node
    h = await add_host(node, (await sim_cluster(node))["uuid"])
    machine = SIMULATOR.host(h["uuid"])
    machine.cpuNum, machine.totalMemory = 16, 32 * GiB
    reply = (await client.call("ReconnectHost", uuid=h["uuid"]))["inventory"]
    assert (reply["status"], reply["cpuNum"], reply["totalCpuCapacity"],
            reply["totalMemoryCapacity"], reply["availableMemoryCapacity"]) == \
        ("Connected", 16, 160, 32 * GiB, 31 * GiB)


async def test_a_failed_reconnect_leaves_the_host_disconnected(api_client: Any) -> None:
    client: ApiClient = await api_client()
    node = client.node
    h = await add_host(node, (await sim_cluster(node))["uuid"])
    SIMULATOR.host(h["uuid"]).reachable = False
    error = await fails(client.call("ReconnectHost", uuid=h["uuid"]), "HOST.1000")
    assert f"Simulator host 'h1' ({h['uuid']}) at 10.0.0.1" in error.details
    assert "unreachable" in error.details
    assert (await get(node, h["uuid"]))["status"] == "Disconnected"
    SIMULATOR.host(h["uuid"]).reachable = True
    assert (await client.call("ReconnectHost", uuid=h["uuid"]))["inventory"]["status"] == \
        "Connected"


# --------------------------------------------------------------------------- deleting


async def test_delete_host_removes_it_and_its_tags(api_client: Any) -> None:
    client: ApiClient = await api_client(("compute_tags", compute_tags))
    node = client.node
    c = await sim_cluster(node)
    h = await add_host(node, c["uuid"], userTags=["u"])
    keep = await add_host(node, c["uuid"], "h2", "10.0.0.2")
    assert await client.call("DeleteHost", uuid=h["uuid"]) == {}
    assert await host_rows(node) == {"hosts": 1, "resources": 1, "tags": 0}
    assert SIMULATOR.get(h["uuid"]) is None and SIMULATOR.get(keep["uuid"]) is not None
    # Its IP is free again.
    assert (await add_host(node, c["uuid"], "h1", "10.0.0.1"))["status"] == "Connected"
    await fails(client.call("DeleteHost", uuid=h["uuid"]), "SYS.1003")


@pytest.mark.parametrize("mode", ["Permissive", "Enforcing"])
async def test_deleting_a_zone_or_cluster_deletes_its_hosts(node: Node, mode: str) -> None:
    c1 = await sim_cluster(node, "z1", "c1")
    c2 = await cluster(node, c1["zoneUuid"], "c2", hypervisorType="Simulator")
    await add_host(node, c1["uuid"], "h1", "10.0.0.1")
    h2 = await add_host(node, c2["uuid"], "h2", "10.0.0.2")
    other = await sim_cluster(node, "z2", "c3")
    await add_host(node, other["uuid"], "h3", "10.0.0.3")
    await call(node, "DeleteCluster", uuid=c1["uuid"], deleteMode=mode)
    assert sorted(h["name"] for h in (await call(node, "QueryHost"))["inventories"]) == \
        ["h2", "h3"]
    await call(node, "DeleteZone", uuid=c1["zoneUuid"], deleteMode=mode)
    left = (await call(node, "QueryHost"))["inventories"]
    assert [h["name"] for h in left] == ["h3"]
    assert SIMULATOR.get(h2["uuid"]) is None
    assert await host_rows(node) == {"hosts": 1, "resources": 1, "tags": 0}


async def test_without_cascade_a_cluster_with_hosts_is_not_deleted(make_node: MakeNode) -> None:
    node = await make_node(disable=("cascade",))
    c = await sim_cluster(node)
    h = await add_host(node, c["uuid"])
    for api, uuid in (("DeleteCluster", c["uuid"]), ("DeleteZone", c["zoneUuid"])):
        error = await fails(call(node, api, uuid=uuid), "SYS.1004")
        assert f"HostVO {h['uuid']}" in error.details
    assert (await get(node, h["uuid"]))["status"] == "Connected"
    await call(node, "DeleteHost", uuid=h["uuid"])
    await call(node, "DeleteCluster", uuid=c["uuid"])
    await call(node, "DeleteZone", uuid=c["zoneUuid"])
    assert (await host_rows(node))["hosts"] == 0


# --------------------------------------------------------------------------- the reference


def test_host_inventory_fields_are_zstacks() -> None:
    reference = json.loads((Path(__file__).parents[1] / "reference" / "zstack_api.json")
                           .read_text())["inventories"]
    if "HostInventory" not in reference:
        pytest.skip("tests/reference/zstack_api.json has no HostInventory yet")
    assert set(reference["HostInventory"]["fields"]) == HOST_FIELDS
    assert set(reference["SimulatorHostInventory"]["fields"]) == SIMULATOR_FIELDS - HOST_FIELDS
