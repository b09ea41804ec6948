"""VMs whose host goes away: disconnected (Unknown, destroyed later through the GC) or
deleted (the VMs stay, Stopped), and clusters and zones deleted with their VMs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from zcore.db import ResourceVO
from zcore.errors import ZError
from zcore.gc import GarbageCollectorVO
from zcore.testing.env import Environment
from zplugins.compute.host_service import service
from zplugins.compute.models import VmInstanceVO
from zplugins.network.models import UsedIpVO, VmNicVO
from zplugins.simulator.hosts import SIMULATOR
from zplugins.storage.volume_models import VolumeVO

from .test_lifecycle import MakeEnv, create_vm, failing_plugin


async def host_status(env: Environment, uuid: str) -> str:
    reply = await env.client.call("QueryHost", q=[f"uuid={uuid}"])
    return str(reply["inventories"][0]["status"])


async def vm_state(env: Environment, uuid: str) -> str:
    reply = await env.client.call("QueryVmInstance", q=[f"uuid={uuid}"])
    return str(reply["inventories"][0]["state"])


async def take_down(env: Environment, host_uuid: str) -> None:
    await env.node.global_config.update("host", "ping.maxFailure", 1)
    SIMULATOR.host(host_uuid).reachable = False
    await service(env.node).ping_all()
    assert await host_status(env, host_uuid) == "Disconnected"


async def bring_back(env: Environment, host_uuid: str) -> None:
    SIMULATOR.host(host_uuid).reachable = True
    await service(env.node).ping_all()
    for _ in range(200):  # the reconnection, then the GC, run in the background
        await asyncio.sleep(0.02)
        # No GC job waiting or still at work ("Processing"): each has run to its end.
        if await host_status(env, host_uuid) == "Connected" and all(
                job["status"] == "Done" for job in await gc_jobs(env)):
            break
    assert await host_status(env, host_uuid) == "Connected"


async def gc_jobs(env: Environment, status: str | None = None) -> list[dict[str, Any]]:
    reply = await env.client.call("QueryGCJob", q=[f"status={status}"] if status else [])
    return list(reply["inventories"])


async def test_vms_of_a_disconnected_host_are_unknown_until_it_is_back(
        vm_cloud: Environment) -> None:
    env = vm_cloud
    vm = await create_vm(env, "vm1", hostUuid=env.uuid("host1"))
    await take_down(env, env.uuid("host1"))
    assert await vm_state(env, vm["uuid"]) == "Unknown"
    await bring_back(env, env.uuid("host1"))
    assert await vm_state(env, vm["uuid"]) == "Running"


async def test_a_vm_destroyed_while_its_host_is_down_is_destroyed_there_when_it_is_back(
        vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    host = env.uuid("host1")
    vm = await create_vm(env, "vm1", hostUuid=host)
    await take_down(env, host)

    await call("DestroyVmInstance", uuid=vm["uuid"])  # completes from the user's view
    assert await vm_state(env, vm["uuid"]) == "Destroyed"
    assert vm["uuid"] in SIMULATOR.host(host).vms()  # the host could not be told
    [job] = await gc_jobs(env)
    assert job["status"] == "Idle" and job["context"]
    assert vm["uuid"] in job["context"] and host in job["context"]

    await bring_back(env, host)
    assert vm["uuid"] not in SIMULATOR.host(host).vms()
    assert [j["status"] for j in await gc_jobs(env)] == ["Done"]


async def test_a_destroy_that_fails_after_giving_up_on_the_host_leaves_no_gc_job(
        make_env: MakeEnv, vm_cloud_spec: dict[str, Any],
        api_client: Callable[..., Awaitable[Any]]) -> None:
    client = await api_client(("failer", failing_plugin("release-host", "vm-destroy")))
    env = await make_env(vm_cloud_spec, client=client)
    host = env.uuid("host1")
    vm = await create_vm(env, "vm1", hostUuid=host)
    await take_down(env, host)

    with pytest.raises(ZError, match="injected failure"):
        await env.client.call("DestroyVmInstance", uuid=vm["uuid"])

    assert await vm_state(env, vm["uuid"]) == "Unknown"
    assert await gc_jobs(env) == []


async def test_the_gc_job_of_a_deleted_host_is_done_without_it(vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    host = env.uuid("host1")
    vm = await create_vm(env, "vm1", hostUuid=host)
    await take_down(env, host)
    await call("DestroyVmInstance", uuid=vm["uuid"])
    await call("DeleteHost", uuid=host)
    for _ in range(100):
        await asyncio.sleep(0.02)
        if [j["status"] for j in await gc_jobs(env)] == ["Done"]:
            break
    assert [j["status"] for j in await gc_jobs(env)] == ["Done"]


async def test_deleting_a_host_leaves_its_vms_stopped_on_no_host(vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    host, other = env.uuid("host1"), env.uuid("host2")
    vm = await create_vm(env, "vm1", hostUuid=host)
    await call("DeleteHost", uuid=host)

    [left] = (await call("QueryVmInstance", q=[f"uuid={vm['uuid']}"]))["inventories"]
    assert left["state"] == "Stopped" and left["hostUuid"] is None
    assert left["lastHostUuid"] is None
    # The storage is shared: it starts on the other host.
    started = (await call("StartVmInstance", uuid=vm["uuid"]))["inventory"]
    assert started["state"] == "Running" and started["hostUuid"] == other


async def _rows(env: Environment) -> dict[str, int]:
    def read(session: Any) -> dict[str, int]:
        return {model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (VmInstanceVO, VolumeVO, VmNicVO, UsedIpVO, GarbageCollectorVO)}

    return await env.node.db.run(read)


async def test_deleting_a_cluster_destroys_and_expunges_its_vms(vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    vms = [await create_vm(env, f"vm{i}") for i in range(3)]
    machines = [SIMULATOR.host(env.uuid(name)) for name in ("host1", "host2")]
    assert {u for m in machines for u in m.vms()} == {vm["uuid"] for vm in vms}

    await call("DeleteCluster", uuid=env.uuid("cluster1"))

    # Destroyed on their hosts before the hosts were deleted.
    assert [m.vms() for m in machines] == [{}, {}]
    destroyed = [b["uuid"] for m in machines for path, b in m.calls if path == "/vm/destroy"]
    assert sorted(destroyed) == sorted(vm["uuid"] for vm in vms)
    rows = await _rows(env)
    assert rows["VmInstanceVO"] == 0 and rows["VmNicVO"] == 0 and rows["UsedIpVO"] == 0
    # Data volumes outlive their VMs, detached, as when a VM is expunged.
    data = (await call("QueryVolume", q=["type=Data"]))["inventories"]
    assert len(data) == 3 and all(v["vmInstanceUuid"] is None for v in data)
    assert (await call("QueryVolume", q=["type=Root"]))["inventories"] == []


async def test_deleting_a_zone_with_vms_leaves_no_row_behind(vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    await asyncio.gather(*(create_vm(env, f"vm{i}") for i in range(4)))

    await call("DeleteZone", uuid=env.uuid("zone1"))

    rows = await _rows(env)
    assert {k: v for k, v in rows.items() if k != "GarbageCollectorVO"} == \
        {"VmInstanceVO": 0, "VolumeVO": 0, "VmNicVO": 0, "UsedIpVO": 0}

    def orphans(session: Any) -> list[str]:
        # Every resource row that remains belongs to something outside the zone.
        return [f"{r.resourceType} {r.uuid}" for r in session.scalars(select(ResourceVO))
                if r.resourceType in ("VmInstanceVO", "VolumeVO", "VmNicVO", "HostVO",
                                      "ClusterVO", "L3NetworkVO", "PrimaryStorageVO")]

    assert await env.node.db.run(orphans) == []


async def test_volume_bits_left_on_unreachable_storage_are_deleted_by_the_gc(
        vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    volume = (await call("CreateDataVolume", name="data", diskOfferingUuid=env.uuid("disk10G"),
                         primaryStorageUuid=env.uuid("ps1")))["inventory"]
    assert volume["status"] == "Ready" and volume["installPath"]
    await call("DeleteDataVolume", uuid=volume["uuid"])
    SIMULATOR.fail("/simulator/primarystorage/delete", "storage network down")
    try:
        await call("ExpungeDataVolume", uuid=volume["uuid"])  # done from the user's view
    finally:
        SIMULATOR.heal()
    assert (await call("QueryVolume", q=[f"uuid={volume['uuid']}"]))["inventories"] == []
    [job] = await gc_jobs(env)
    assert job["status"] == "Idle" and job["type"] == "TimeBased"
    assert volume["installPath"] in job["context"]

    await call("TriggerGCJob", uuid=job["uuid"])

    assert [j["status"] for j in await gc_jobs(env)] == ["Done"]
    deleted = [b["path"] for h in ("host1", "host2") for path, b in
               SIMULATOR.host(env.uuid(h)).calls if path == "/simulator/primarystorage/delete"]
    assert deleted.count(volume["installPath"]) == 2  # the failed try, then the GC's
