"""Primary storage: adding each kind, attaching to clusters, preparing hosts, deleting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zcore.api import SYSTEM, Caller
from zcore.db import Base, ResourceVO, SystemTagVO, UserTagVO, new_uuid
from zcore.node import Node
from zplugins.simulator.hosts import SIMULATOR
from zplugins.storage.primary_models import (
    PrimaryStorageClusterRefVO,
    PrimaryStorageHostRefVO,
    PrimaryStorageVO,
)
from zplugins.storage.public import Capacity

from ..compute.helpers import MakeNode, call, cluster, details, fails, tenant, zone

pytestmark = pytest.mark.db

GiB = 1024 ** 3
TiB = 1024 ** 4
INVENTORIES = Path(__file__).parents[2] / ".." / "shared" / "zstack-api" / "inventories.json"
FIELDS = {"uuid", "zoneUuid", "name", "url", "description", "totalCapacity",
          "availableCapacity", "totalPhysicalCapacity", "availablePhysicalCapacity",
          "systemUsedCapacity", "type", "state", "status", "mountPath", "createDate",
          "lastOpDate", "attachedClusterUuids"}
RESERVED = GiB  # primaryStorage.reservedCapacity's default, 1G
MOUNT, UNMOUNT, INIT = "/nfsprimarystorage/mount", "/nfsprimarystorage/unmount", \
    "/localstorage/init"


@pytest.fixture(autouse=True)
def simulated_world() -> Iterator[None]:
    yield
    SIMULATOR.clear()


# --------------------------------------------------------------------------- helpers


async def sim_cluster(node: Node, zone_uuid: str, name: str = "c1",
                      caller: Caller = SYSTEM) -> dict[str, Any]:
    return await cluster(node, zone_uuid, name, caller, hypervisorType="Simulator")


async def add_host(node: Node, cluster_uuid: str, name: str, ip: str,
                   disk: Capacity | None = None) -> dict[str, Any]:
    host: dict[str, Any] = (await call(node, "AddSimulatorHost", clusterUuid=cluster_uuid,
                                       name=name, managementIp=ip, cpuCapacity=8,
                                       memoryCapacity=16 * GiB))["inventory"]
    if disk is not None:
        SIMULATOR.host(host["uuid"]).state["localStorage"] = disk
    return host


async def add_ps(node: Node, kind: str, zone_uuid: str, name: str = "ps1",
                 caller: Caller = SYSTEM, **params: Any) -> dict[str, Any]:
    params.setdefault("url", {"Local": "/zstack_ps", "Nfs": "10.0.0.9:/exports/ps",
                              "Simulator": "/simulated"}[kind])
    reply = await call(node, f"Add{kind}PrimaryStorage", caller, name=name, zoneUuid=zone_uuid,
                       **params)
    inventory: dict[str, Any] = reply["inventory"]
    return inventory


async def get(node: Node, uuid: str) -> dict[str, Any]:
    found = (await call(node, "QueryPrimaryStorage", q=[f"uuid={uuid}"]))["inventories"]
    assert len(found) == 1, found
    inventory: dict[str, Any] = found[0]
    return inventory


async def attach(node: Node, ps_uuid: str, cluster_uuid: str) -> dict[str, Any]:
    reply = await call(node, "AttachPrimaryStorageToCluster", primaryStorageUuid=ps_uuid,
                       clusterUuid=cluster_uuid)
    inventory: dict[str, Any] = reply["inventory"]
    return inventory


def paths(host_uuid: str, *wanted: str) -> list[str]:
    """The agent commands a simulated host received, of the kinds asked for."""
    return [p for p, _ in SIMULATOR.host(host_uuid).calls if p in wanted]


async def rows(node: Node) -> dict[str, int]:
    """Rows of primary storage, its references, resource rows and tags."""
    def count(session: Session) -> dict[str, int]:
        def n(stmt: Any) -> int:
            return int(session.scalar(stmt) or 0)

        return {
            "ps": n(select(func.count()).select_from(PrimaryStorageVO)),
            "cluster_refs": n(select(func.count()).select_from(PrimaryStorageClusterRefVO)),
            "host_refs": n(select(func.count()).select_from(PrimaryStorageHostRefVO)),
            "resources": n(select(func.count()).select_from(ResourceVO).where(
                ResourceVO.resourceType == "PrimaryStorageVO")),
            "tags": n(select(func.count()).select_from(SystemTagVO).where(
                SystemTagVO.resourceType == "PrimaryStorageVO"))
            + n(select(func.count()).select_from(UserTagVO).where(
                UserTagVO.resourceType == "PrimaryStorageVO")),
        }

    return await node.db.run(count)


NOTHING = {"ps": 0, "cluster_refs": 0, "host_refs": 0, "resources": 0, "tags": 0}


# --------------------------------------------------------------------------- adding


async def test_each_kind_is_added_connected_with_zstacks_fields(node: Node) -> None:
    z = await zone(node)
    sim = await add_ps(node, "Simulator", z["uuid"], "sim", totalCapacity=100 * GiB,
                       availableCapacity=60 * GiB, description="fake")
    local = await add_ps(node, "Local", z["uuid"], "local", userTags=["fast"])
    nfs = await add_ps(node, "Nfs", z["uuid"], "nfs")
    for inventory in (sim, local, nfs):
        assert set(inventory) == FIELDS
        assert (inventory["state"], inventory["status"], inventory["zoneUuid"],
                inventory["attachedClusterUuids"]) == ("Enabled", "Connected", z["uuid"], [])
        assert inventory["createDate"].utcoffset() is not None
    if INVENTORIES.exists():
        zstack = json.loads(INVENTORIES.read_text())["PrimaryStorageInventory"]["fields"]
        assert FIELDS == set(zstack)
    assert (sim["type"], sim["url"], sim["mountPath"], sim["description"]) == \
        ("Simulator", "/simulated", "/simulated", "fake")
    # The simulator's capacity is the one given; 1G is kept free (reservedCapacity).
    assert (sim["totalPhysicalCapacity"], sim["availablePhysicalCapacity"],
            sim["systemUsedCapacity"], sim["totalCapacity"], sim["availableCapacity"]) == \
        (100 * GiB, 60 * GiB, 40 * GiB, 100 * GiB, 60 * GiB - RESERVED)
    assert (local["type"], local["url"], local["mountPath"]) == \
        ("LocalStorage", "/zstack_ps", "/zstack_ps")
    assert (nfs["type"], nfs["url"], nfs["mountPath"]) == \
        ("NFS", "10.0.0.9:/exports/ps", f"/opt/zstack/nfsprimarystorage/prim-{nfs['uuid']}")
    # Without hosts neither local nor NFS storage knows its size yet.
    for inventory in (local, nfs):
        assert (inventory["totalCapacity"], inventory["availableCapacity"],
                inventory["totalPhysicalCapacity"]) == (0, 0, 0)
    assert await rows(node) == {**NOTHING, "ps": 3, "resources": 3, "tags": 1}
    assert (await get(node, local["uuid"]))["name"] == "local"


async def test_a_primary_storage_may_be_given_its_uuid_and_a_dry_run_adds_nothing(
        node: Node) -> None:
    z = await zone(node)
    assert await call(node, "AddNfsPrimaryStorage", name="nfs", zoneUuid=z["uuid"],
                      url="nas:/zstack", systemTags=["validationOnly"]) == {}
    assert await rows(node) == NOTHING
    chosen = new_uuid()
    nfs = await add_ps(node, "Nfs", z["uuid"], resourceUuid=chosen, type="NFS")
    assert nfs["uuid"] == chosen
    error = await fails(add_ps(node, "Local", z["uuid"], "l2", resourceUuid=chosen), "SYS.1007")
    assert "already used" in details(error)
    assert await rows(node) == {**NOTHING, "ps": 1, "resources": 1}


@pytest.mark.parametrize("kind,params,code,why", [
    ("Nfs", {"url": "10.0.0.9/exports"}, "SYS.1007", "write server:/path"),
    ("Nfs", {"url": "10.0.0.9:exports"}, "SYS.1007", "is not an NFS export"),
    ("Nfs", {"url": ":/exports"}, "SYS.1007", "is not an NFS export"),
    ("Nfs", {"type": "LocalStorage"}, "SYS.1007", "is not 'NFS'"),
    ("Local", {"url": "zstack_ps"}, "SYS.1007", "is not an absolute directory path"),
    ("Local", {"url": "/"}, "SYS.1007", "other than '/'"),
    ("Local", {"url": "   "}, "SYS.1007", "must not be empty"),
    ("Local", {"name": "n" * 256}, "SYS.1007", "at most 255"),
    ("Local", {"zoneUuid": new_uuid()}, "SYS.1003", "no ZoneVO has uuid"),
    ("Local", {"tagUuids": [new_uuid()]}, "SYS.1007", "not supported yet"),
    ("Simulator", {"totalCapacity": 10 * GiB, "availableCapacity": 11 * GiB}, "SYS.1007",
     "exceeds the total"),
    ("Simulator", {"totalCapacity": -1}, "SYS.1007", "out of the range"),
    ("Simulator", {"availablePhysicalCapacity": -5}, "SYS.1007", "out of the range"),
])
async def test_bad_input_adds_nothing(node: Node, kind: str, params: dict[str, Any], code: str,
                                      why: str) -> None:
    z = await zone(node)
    params = dict(params)  # the parameters are shared by the runs on each backend
    zone_uuid = params.pop("zoneUuid", z["uuid"])
    error = await fails(add_ps(node, kind, zone_uuid, **params), code)
    assert why in error.details
    assert await rows(node) == NOTHING


async def test_one_nfs_export_once_per_zone(node: Node) -> None:
    z1, z2 = await zone(node, "z1"), await zone(node, "z2")
    first = await add_ps(node, "Nfs", z1["uuid"], "a", url="nas:/exports")
    error = await fails(add_ps(node, "Nfs", z1["uuid"], "b", url="nas:/exports"), "SYS.1007")
    assert first["uuid"] in error.details and "nas:/exports" in error.details
    await add_ps(node, "Nfs", z2["uuid"], "c", url="nas:/exports")  # another zone: fine
    await add_ps(node, "Nfs", z1["uuid"], "d", url="nas:/exports2")
    assert (await rows(node))["ps"] == 3


# --------------------------------------------------------------------------- attaching


async def test_local_storage_is_initialised_on_every_host_and_sums_their_disks(
        node: Node) -> None:
    z = await zone(node)
    c = await sim_cluster(node, z["uuid"])
    h1 = await add_host(node, c["uuid"], "h1", "10.0.0.1", disk=Capacity(100 * GiB, 80 * GiB))
    h2 = await add_host(node, c["uuid"], "h2", "10.0.0.2", disk=Capacity(200 * GiB, 50 * GiB))
    local = await add_ps(node, "Local", z["uuid"])
    attached = await attach(node, local["uuid"], c["uuid"])
    assert attached["attachedClusterUuids"] == [c["uuid"]]
    for h in (h1, h2):
        assert paths(h["uuid"], INIT) == [INIT]
        body = SIMULATOR.host(h["uuid"]).calls[-1][1]
        assert (body["path"], body["hostUuid"]) == ("/zstack_ps", h["uuid"])
    assert (attached["totalPhysicalCapacity"], attached["availablePhysicalCapacity"],
            attached["systemUsedCapacity"], attached["totalCapacity"],
            attached["availableCapacity"]) == \
        (300 * GiB, 130 * GiB, 170 * GiB, 300 * GiB, 130 * GiB - RESERVED)
    assert await get(node, local["uuid"]) == attached
    # A third host joining the cluster is initialised as it connects, and counts.
    h3 = await add_host(node, c["uuid"], "h3", "10.0.0.3")  # the simulator's 1 TiB disk
    assert paths(h3["uuid"], INIT) == [INIT]
    now = await get(node, local["uuid"])
    assert (now["totalPhysicalCapacity"], now["availableCapacity"]) == \
        (300 * GiB + TiB, 130 * GiB + TiB - RESERVED)


async def test_nfs_is_mounted_on_every_connected_host_and_unmounted_on_detach(
        node: Node) -> None:
    z = await zone(node)
    c1, c2 = await sim_cluster(node, z["uuid"], "c1"), await sim_cluster(node, z["uuid"], "c2")
    h1 = await add_host(node, c1["uuid"], "h1", "10.0.0.1")
    h2 = await add_host(node, c1["uuid"], "h2", "10.0.0.2")
    other = await add_host(node, c2["uuid"], "h3", "10.0.0.3")
    nfs = await add_ps(node, "Nfs", z["uuid"])
    attached = await attach(node, nfs["uuid"], c1["uuid"])
    for h in (h1, h2):
        assert paths(h["uuid"], MOUNT) == [MOUNT]
        body = SIMULATOR.host(h["uuid"]).calls[-1][1]
        assert (body["url"], body["mountPath"]) == (nfs["url"], nfs["mountPath"])
    assert paths(other["uuid"], MOUNT) == []  # not in the cluster
    # Every host sees the same export: its capacity, not a sum.
    assert (attached["totalPhysicalCapacity"], attached["availableCapacity"]) == \
        (10 * TiB, 10 * TiB - RESERVED)
    detached = (await call(node, "DetachPrimaryStorageFromCluster", primaryStorageUuid=nfs["uuid"],
                           clusterUuid=c1["uuid"]))["inventory"]
    assert detached["attachedClusterUuids"] == []
    for h in (h1, h2):
        assert paths(h["uuid"], MOUNT, UNMOUNT) == [MOUNT, UNMOUNT]
    assert (await rows(node))["host_refs"] == 0
    # Detaching twice: it is not attached any more.
    error = await fails(call(node, "DetachPrimaryStorageFromCluster",
                             primaryStorageUuid=nfs["uuid"], clusterUuid=c1["uuid"]), "SYS.1007")
    assert "is not attached to cluster" in error.details


async def test_only_connected_hosts_are_prepared(node: Node) -> None:
    z = await zone(node)
    c = await sim_cluster(node, z["uuid"])
    h1 = await add_host(node, c["uuid"], "h1", "10.0.0.1")
    h2 = await add_host(node, c["uuid"], "h2", "10.0.0.2")
    SIMULATOR.host(h2["uuid"]).reachable = False
    await fails(call(node, "ReconnectHost", uuid=h2["uuid"]), "HOST.1000")
    nfs = await add_ps(node, "Nfs", z["uuid"])
    await attach(node, nfs["uuid"], c["uuid"])
    assert paths(h1["uuid"], MOUNT) == [MOUNT]
    SIMULATOR.host(h2["uuid"]).reachable = True
    assert paths(h2["uuid"], MOUNT) == []
    # Once it connects again, it mounts the storage of its cluster.
    await call(node, "ReconnectHost", uuid=h2["uuid"])
    assert paths(h2["uuid"], MOUNT) == [MOUNT]


async def test_a_cluster_of_another_zone_is_refused_naming_both_zones(node: Node) -> None:
    z1, z2 = await zone(node, "z1"), await zone(node, "z2")
    c2 = await sim_cluster(node, z2["uuid"])
    h = await add_host(node, c2["uuid"], "h1", "10.0.0.1")
    nfs = await add_ps(node, "Nfs", z1["uuid"])
    before = await rows(node)
    error = await fails(attach(node, nfs["uuid"], c2["uuid"]), "SYS.1007")
    assert z1["uuid"] in error.details and z2["uuid"] in error.details
    assert await rows(node) == before
    assert paths(h["uuid"], MOUNT) == []
    assert (await get(node, nfs["uuid"]))["attachedClusterUuids"] == []


async def test_attaching_twice_is_refused_and_changes_nothing(node: Node) -> None:
    z = await zone(node)
    c = await sim_cluster(node, z["uuid"])
    h = await add_host(node, c["uuid"], "h1", "10.0.0.1")
    nfs = await add_ps(node, "Nfs", z["uuid"])
    first = await attach(node, nfs["uuid"], c["uuid"])
    before = await rows(node)
    error = await fails(attach(node, nfs["uuid"], c["uuid"]), "SYS.1007")
    assert "already attached" in error.details
    assert await rows(node) == before
    assert paths(h["uuid"], MOUNT) == [MOUNT]  # not mounted again
    assert await get(node, nfs["uuid"]) == first


async def test_unknown_or_wrong_resources_are_refused(node: Node) -> None:
    z = await zone(node)
    c = await sim_cluster(node, z["uuid"])
    nfs = await add_ps(node, "Nfs", z["uuid"])
    await fails(attach(node, new_uuid(), c["uuid"]), "SYS.1003")
    await fails(attach(node, nfs["uuid"], new_uuid()), "SYS.1003")
    await fails(attach(node, c["uuid"], c["uuid"]), "SYS.1003")  # a cluster is no storage
    await fails(attach(node, nfs["uuid"], z["uuid"]), "SYS.1003")  # a zone is no cluster
    await fails(attach(node, nfs["uuid"], "c1"), "SYS.1007")
    for api, params in (("ReconnectPrimaryStorage", {}), ("DeletePrimaryStorage", {}),
                        ("ChangePrimaryStorageState", {"stateEvent": "enable"})):
        await fails(call(node, api, uuid=new_uuid(), **params), "SYS.1003")
    assert (await rows(node))["cluster_refs"] == 0


async def test_a_host_that_fails_rolls_the_attachment_back(node: Node) -> None:
    z = await zone(node)
    c = await sim_cluster(node, z["uuid"])
    h1 = await add_host(node, c["uuid"], "h1", "10.0.0.1")
    h2 = await add_host(node, c["uuid"], "h2", "10.0.0.2")
    nfs = await add_ps(node, "Nfs", z["uuid"])
    SIMULATOR.fail(MOUNT, "mount.nfs: access denied by server", host_uuid=h2["uuid"])
    error = await fails(attach(node, nfs["uuid"], c["uuid"]), "PS.1001")
    text = details(error)
    assert h2["uuid"] in text and "access denied by server" in text and MOUNT in text
    after = await get(node, nfs["uuid"])
    assert after == nfs  # no cluster, no capacity: as before
    assert await rows(node) == {**NOTHING, "ps": 1, "resources": 1}
    # The host that had mounted it unmounts it again.
    assert paths(h1["uuid"], MOUNT, UNMOUNT) == [MOUNT, UNMOUNT]
    SIMULATOR.heal()
    assert (await attach(node, nfs["uuid"], c["uuid"]))["attachedClusterUuids"] == [c["uuid"]]


async def test_a_host_that_cannot_prepare_the_storage_does_not_connect(node: Node) -> None:
    z = await zone(node)
    c = await sim_cluster(node, z["uuid"])
    h1 = await add_host(node, c["uuid"], "h1", "10.0.0.1")
    local = await add_ps(node, "Local", z["uuid"])
    nfs = await add_ps(node, "Nfs", z["uuid"])
    await attach(node, local["uuid"], c["uuid"])
    await attach(node, nfs["uuid"], c["uuid"])
    # Reconnecting mounts it again; when the mount fails, the host stays Disconnected.
    await call(node, "ReconnectHost", uuid=h1["uuid"])
    assert paths(h1["uuid"], MOUNT) == [MOUNT, MOUNT]
    SIMULATOR.fail(MOUNT, "no route to the NFS server", host_uuid=h1["uuid"])
    error = await fails(call(node, "ReconnectHost", uuid=h1["uuid"]), "HOST.1000")
    assert "no route to the NFS server" in details(error)
    assert "PS.1001" in [e.code for e in error.causes()]
    found = (await call(node, "QueryHost", q=[f"uuid={h1['uuid']}"]))["inventories"][0]
    assert found["status"] == "Disconnected"
    # While it is not connected, its local disk does not count.
    assert (await get(node, local["uuid"]))["totalPhysicalCapacity"] == 0
    # A host being added that cannot mount it is not added, and its disk does not count.
    SIMULATOR.fail(MOUNT, "no route to the NFS server")
    before = await rows(node)
    error = await fails(add_host(node, c["uuid"], "h2", "10.0.0.2"), "HOST.1000")
    assert "PS.1001" in [e.code for e in error.causes()]
    assert (await call(node, "QueryHost", q=["name=h2"]))["inventories"] == []
    assert await rows(node) == before
    assert (await get(node, local["uuid"]))["totalPhysicalCapacity"] == 0
    SIMULATOR.heal()
    await call(node, "ReconnectHost", uuid=h1["uuid"])
    assert (await get(node, local["uuid"]))["totalPhysicalCapacity"] == TiB


# --------------------------------------------------------------------------- reconnecting


async def test_reconnect_prepares_the_hosts_again_and_reads_the_capacity(node: Node) -> None:
    z = await zone(node)
    c = await sim_cluster(node, z["uuid"])
    h = await add_host(node, c["uuid"], "h1", "10.0.0.1", disk=Capacity(100 * GiB, 100 * GiB))
    local = await add_ps(node, "Local", z["uuid"])
    await attach(node, local["uuid"], c["uuid"])
    SIMULATOR.host(h["uuid"]).state["localStorage"] = Capacity(100 * GiB, 30 * GiB)
    again = (await call(node, "ReconnectPrimaryStorage", uuid=local["uuid"]))["inventory"]
    assert paths(h["uuid"], INIT) == [INIT, INIT]
    assert (again["status"], again["availablePhysicalCapacity"], again["availableCapacity"]) == \
        ("Connected", 30 * GiB, 30 * GiB - RESERVED)
    SIMULATOR.fail(INIT, "disk is read-only", host_uuid=h["uuid"])
    error = await fails(call(node, "ReconnectPrimaryStorage", uuid=local["uuid"]), "PS.1003")
    assert "disk is read-only" in details(error)
    failed = await get(node, local["uuid"])
    assert failed["status"] == "Disconnected"
    assert failed["attachedClusterUuids"] == [c["uuid"]]  # still attached
    SIMULATOR.heal()
    assert (await call(node, "ReconnectPrimaryStorage",
                       uuid=local["uuid"]))["inventory"]["status"] == "Connected"


async def test_the_ping_disconnects_and_reconnects_a_storage(node: Node) -> None:
    import asyncio

    z = await zone(node)
    c = await sim_cluster(node, z["uuid"])
    h = await add_host(node, c["uuid"], "h1", "10.0.0.1")
    nfs = await add_ps(node, "Nfs", z["uuid"])
    await attach(node, nfs["uuid"], c["uuid"])
    await node.global_config.update("primaryStorage", "ping.interval", 1)

    async def status_becomes(wanted: str) -> None:
        for _ in range(100):
            if (await get(node, nfs["uuid"]))["status"] == wanted:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"still {(await get(node, nfs['uuid']))['status']}, not {wanted}")

    SIMULATOR.fail("/nfsprimarystorage/ping", "stale file handle", host_uuid=h["uuid"])
    await status_becomes("Disconnected")
    SIMULATOR.heal()
    await status_becomes("Connected")
    # Reconnected: mounted again.
    assert paths(h["uuid"], MOUNT) == [MOUNT, MOUNT]


# --------------------------------------------------------------------------- state, deletion


async def test_state_changes(node: Node) -> None:
    z = await zone(node)
    ps = await add_ps(node, "Simulator", z["uuid"])
    for event, state in (("disable", "Disabled"), ("maintain", "Maintenance"),
                         ("enable", "Enabled")):
        changed = await call(node, "ChangePrimaryStorageState", uuid=ps["uuid"],
                             stateEvent=event)
        assert changed["inventory"]["state"] == state
        assert (await get(node, ps["uuid"]))["state"] == state
    error = await fails(call(node, "ChangePrimaryStorageState", uuid=ps["uuid"],
                             stateEvent="deleting"), "SYS.1007")
    assert "DeletePrimaryStorage" in error.details
    await fails(call(node, "ChangePrimaryStorageState", uuid=ps["uuid"], stateEvent="on"),
                "SYS.1007")
    assert (await get(node, ps["uuid"]))["state"] == "Enabled"


async def test_delete_detaches_from_every_cluster_first(node: Node) -> None:
    z = await zone(node)
    c1, c2 = await sim_cluster(node, z["uuid"], "c1"), await sim_cluster(node, z["uuid"], "c2")
    h1 = await add_host(node, c1["uuid"], "h1", "10.0.0.1")
    h2 = await add_host(node, c2["uuid"], "h2", "10.0.0.2")
    nfs = await add_ps(node, "Nfs", z["uuid"], userTags=["gold"])
    keep = await add_ps(node, "Local", z["uuid"], "keep")
    await attach(node, nfs["uuid"], c1["uuid"])
    await attach(node, nfs["uuid"], c2["uuid"])
    await attach(node, keep["uuid"], c1["uuid"])
    assert await call(node, "DeletePrimaryStorage", uuid=nfs["uuid"]) == {}
    for h in (h1, h2):
        assert paths(h["uuid"], MOUNT, UNMOUNT) == [MOUNT, UNMOUNT]
    assert await rows(node) == {"ps": 1, "cluster_refs": 1, "host_refs": 1, "resources": 1,
                                "tags": 0}
    assert (await get(node, keep["uuid"]))["attachedClusterUuids"] == [c1["uuid"]]
    await fails(call(node, "DeletePrimaryStorage", uuid=nfs["uuid"]), "SYS.1003")


async def test_deleting_a_cluster_detaches_its_storage(node: Node) -> None:
    z = await zone(node)
    c1, c2 = await sim_cluster(node, z["uuid"], "c1"), await sim_cluster(node, z["uuid"], "c2")
    await add_host(node, c1["uuid"], "h1", "10.0.0.1")
    nfs = await add_ps(node, "Nfs", z["uuid"])
    await attach(node, nfs["uuid"], c1["uuid"])
    await attach(node, nfs["uuid"], c2["uuid"])
    await call(node, "DeleteCluster", uuid=c1["uuid"])
    assert (await get(node, nfs["uuid"]))["attachedClusterUuids"] == [c2["uuid"]]
    assert (await rows(node))["host_refs"] == 0


@pytest.mark.parametrize("mode", ["Permissive", "Enforcing"])
async def test_deleting_a_zone_deletes_its_storage_with_the_cascade(node: Node,
                                                                    mode: str) -> None:
    z, other = await zone(node, "z1"), await zone(node, "z2")
    c = await sim_cluster(node, z["uuid"])
    await add_host(node, c["uuid"], "h1", "10.0.0.1")
    for kind in ("Local", "Nfs", "Simulator"):
        ps = await add_ps(node, kind, z["uuid"], kind.lower(), userTags=["t"])
        await attach(node, ps["uuid"], c["uuid"])
    stays = await add_ps(node, "Simulator", other["uuid"], "stays")
    await call(node, "DeleteZone", uuid=z["uuid"], deleteMode=mode)
    assert await rows(node) == {**NOTHING, "ps": 1, "resources": 1}
    assert [p["uuid"] for p in (await call(node, "QueryPrimaryStorage"))["inventories"]] == \
        [stays["uuid"]]


async def test_without_cascade_a_zone_with_storage_is_not_deleted(make_node: MakeNode) -> None:
    node = await make_node(disable=("cascade",))
    z = await zone(node)
    ps = await add_ps(node, "Simulator", z["uuid"])
    error = await fails(call(node, "DeleteZone", uuid=z["uuid"]), "SYS.1004")
    assert f"PrimaryStorageVO {ps['uuid']}" in error.details
    assert (await rows(node))["ps"] == 1
    await call(node, "DeletePrimaryStorage", uuid=ps["uuid"])
    await call(node, "DeleteZone", uuid=z["uuid"])
    assert await rows(node) == NOTHING


# --------------------------------------------------------------------------- queries


async def test_queries_reach_zones_clusters_and_hosts(node: Node) -> None:
    z1, z2 = await zone(node, "z1"), await zone(node, "z2")
    c1, c2 = await sim_cluster(node, z1["uuid"], "c1"), await sim_cluster(node, z1["uuid"], "c2")
    c3 = await sim_cluster(node, z2["uuid"], "c3")
    h1 = await add_host(node, c1["uuid"], "h1", "10.0.0.1")
    h2 = await add_host(node, c2["uuid"], "h2", "10.0.0.2")
    local = await add_ps(node, "Local", z1["uuid"], "local")
    nfs = await add_ps(node, "Nfs", z1["uuid"], "nfs")
    sim = await add_ps(node, "Simulator", z2["uuid"], "sim")
    await attach(node, local["uuid"], c1["uuid"])
    await attach(node, nfs["uuid"], c1["uuid"])
    await attach(node, nfs["uuid"], c2["uuid"])
    await attach(node, sim["uuid"], c3["uuid"])

    async def names(api: str, *conditions: str) -> list[str]:
        found = await call(node, api, q=list(conditions))
        return sorted(i["name"] for i in found["inventories"])

    assert await names("QueryPrimaryStorage", "zone.name=z1") == ["local", "nfs"]
    assert await names("QueryPrimaryStorage", f"cluster.uuid={c2['uuid']}") == ["nfs"]
    assert await names("QueryPrimaryStorage", "cluster.name=c1") == ["local", "nfs"]
    assert await names("QueryPrimaryStorage", f"cluster.host.uuid={h1['uuid']}") == \
        ["local", "nfs"]
    assert await names("QueryPrimaryStorage", f"cluster.host.uuid={h2['uuid']}") == ["nfs"]
    assert await names("QueryPrimaryStorage", "cluster.zone.name=z2") == ["sim"]
    assert await names("QueryPrimaryStorage", "type=NFS", "zone.name=z1") == ["nfs"]
    assert await names("QueryPrimaryStorage", "availableCapacity>0") == ["local", "nfs", "sim"]
    assert await names("QueryCluster", "primaryStorage.name=nfs") == ["c1", "c2"]
    assert await names("QueryCluster", "primaryStorage.type=LocalStorage") == ["c1"]
    assert await names("QueryZone", "primaryStorage.name=sim") == ["z2"]
    assert await names("QueryHost", "cluster.primaryStorage.name=local") == ["h1"]
    found = await call(node, "QueryPrimaryStorage", q=["name=nfs"])
    assert found["inventories"][0]["attachedClusterUuids"] == [c1["uuid"], c2["uuid"]]
    # The bookkeeping of reservations is not a field.
    error = await fails(call(node, "QueryPrimaryStorage", q=["allocatedCapacity=0"]),
                        "SYS.1007")
    assert "allocatedCapacity" in error.details


async def test_a_tenant_sees_and_touches_only_its_own_storage(node: Node) -> None:
    a, b = tenant("a"), tenant("b")
    z = await zone(node, "z", a)
    c = await sim_cluster(node, z["uuid"], "c", a)
    ps = await add_ps(node, "Simulator", z["uuid"], "ps", a)
    await fails(add_ps(node, "Simulator", z["uuid"], "ps2", b), "ID.1002")
    await fails(call(node, "AttachPrimaryStorageToCluster", b, primaryStorageUuid=ps["uuid"],
                     clusterUuid=c["uuid"]), "ID.1002")
    await fails(call(node, "DeletePrimaryStorage", b, uuid=ps["uuid"]), "ID.1002")
    assert (await call(node, "QueryPrimaryStorage", b))["inventories"] == []
    assert len((await call(node, "QueryPrimaryStorage", a))["inventories"]) == 1
    await call(node, "AttachPrimaryStorageToCluster", a, primaryStorageUuid=ps["uuid"],
               clusterUuid=c["uuid"])


# --------------------------------------------------------------------------- migrations


async def test_the_migrations_match_the_models(node: Node) -> None:
    ours = {"PrimaryStorageVO", "PrimaryStorageClusterRefVO", "PrimaryStorageHostRefVO"}

    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in ours

    def diff(session: Session) -> list[Any]:
        context = MigrationContext.configure(
            session.connection(), opts={"compare_type": True, "include_object": include})
        return list(compare_metadata(context, Base.metadata))

    assert await node.db.run(diff) == []
