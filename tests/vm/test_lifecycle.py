"""The VM lifecycle end to end, through REST on simulator hosts.

What an operator would check after a day of work: every operation answers as ZStack's does,
and once everything is expunged, every host, storage and IP range has exactly the capacity
it started with.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from zcore import FlowInsertion, FlowStep, hookimpl
from zcore.db import ResourceVO
from zcore.errors import ZError
from zcore.flow import FlowContext, Step
from zcore.testing.env import Environment
from zplugins.compute.models import HostVO, VmInstanceVO
from zplugins.network.models import UsedIpVO, VmNicVO
from zplugins.simulator.hosts import SIMULATOR
from zplugins.storage.primary_models import PrimaryStorageVO
from zplugins.storage.volume_models import VolumeVO

MakeEnv = Callable[..., Awaitable[Environment]]


async def capacities(env: Environment) -> dict[str, Any]:
    """Every capacity a VM uses: hosts' CPU and memory, storage bytes, free IPs."""
    def read(session: Any) -> dict[str, Any]:
        hosts = {row.uuid: (row.availableCpuCapacity, row.availableMemoryCapacity)
                 for row in session.scalars(select(HostVO))}
        storage = {row.uuid: row.availableCapacity for row in session.scalars(
            select(PrimaryStorageVO))}
        return {"hosts": hosts, "storage": storage,
                "used_ips": session.scalar(select(func.count()).select_from(UsedIpVO))}

    return await env.node.db.run(read)


async def row_counts(env: Environment) -> dict[str, int]:
    def read(session: Any) -> dict[str, int]:
        return {model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (VmInstanceVO, VolumeVO, VmNicVO, UsedIpVO, ResourceVO)}

    return await env.node.db.run(read)


def simulated_vms(env: Environment) -> dict[str, Any]:
    vms: dict[str, Any] = {}
    for host_uuid in env.uuids["hosts"].values():
        vms.update(SIMULATOR.host(host_uuid).state.get("vms", {}))
    return vms


async def create_vm(env: Environment, name: str, **params: Any) -> dict[str, Any]:
    params.setdefault("instanceOfferingUuid", env.uuid("small"))
    params.setdefault("imageUuid", env.uuid("image1"))
    params.setdefault("l3NetworkUuids", [env.uuid("l3a"), env.uuid("l3b")])
    params.setdefault("dataDiskOfferingUuids", [env.uuid("disk10G")])
    reply = await env.client.call("CreateVmInstance", name=name, **params)
    return reply["inventory"]


async def test_twenty_vms_through_their_whole_life_give_every_capacity_back(
        vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    before = await capacities(env)
    rows_before = await row_counts(env)

    vms = await asyncio.gather(*(create_vm(env, f"vm-{i}") for i in range(20)))
    assert {vm["state"] for vm in vms} == {"Running"}
    ips = [nic["ip"] for vm in vms for nic in vm["vmNics"]]
    assert len(ips) == 40 and len(set(ips)) == 40
    assert all(len(vm["allVolumes"]) == 2 for vm in vms)
    assert set(simulated_vms(env)) == {vm["uuid"] for vm in vms}
    during = await capacities(env)
    assert sum(m for _, m in during["hosts"].values()) == \
        sum(m for _, m in before["hosts"].values()) - 20 * 2**30

    first, second, third, fourth = (vm["uuid"] for vm in vms[:4])
    stopped = (await call("StopVmInstance", uuid=first))["inventory"]
    assert stopped["state"] == "Stopped" and stopped["hostUuid"] is None
    assert (await call("StartVmInstance", uuid=first))["inventory"]["state"] == "Running"
    assert (await call("RebootVmInstance", uuid=second))["inventory"]["state"] == "Running"

    source = vms[2]["hostUuid"]
    migrated = (await call("MigrateVm", vmInstanceUuid=third))["inventory"]
    assert migrated["hostUuid"] not in (None, source)
    assert third in SIMULATOR.host(migrated["hostUuid"]).state["vms"]

    volume = (await call("CreateDataVolume", name="extra",
                         diskOfferingUuid=env.uuid("disk10G")))["inventory"]
    attached = (await call("AttachDataVolumeToVm", volumeUuid=volume["uuid"],
                           vmInstanceUuid=fourth))["inventory"]
    assert attached["vmInstanceUuid"] == fourth
    detached = (await call("DetachDataVolumeFromVm", uuid=volume["uuid"]))["inventory"]
    assert detached["vmInstanceUuid"] is None

    await call("StopVmInstance", uuid=fourth)
    root = vms[3]["rootVolumeUuid"]
    snapshot = (await call("CreateVolumeSnapshot", volumeUuid=root, name="snap"))["inventory"]
    await call("RevertVolumeFromSnapshot", uuid=snapshot["uuid"])
    await call("DeleteVolumeSnapshot", uuid=snapshot["uuid"])

    await asyncio.gather(*(call("DestroyVmInstance", uuid=vm["uuid"]) for vm in vms))
    assert simulated_vms(env) == {}
    recovered = (await call("RecoverVmInstance", uuid=first))["inventory"]
    assert recovered["state"] == "Stopped"
    await call("DestroyVmInstance", uuid=first)
    await asyncio.gather(*(call("ExpungeVmInstance", uuid=vm["uuid"]) for vm in vms))

    # The data volumes outlive their VMs (detached); deleting and expunging them is the
    # operator's call.
    data = (await call("QueryVolume", q=["type=Data"]))["inventories"]
    assert len(data) == 21 and all(v["vmInstanceUuid"] is None for v in data)
    for item in data:
        await call("DeleteDataVolume", uuid=item["uuid"])
        await call("ExpungeDataVolume", uuid=item["uuid"])

    assert await capacities(env) == before
    assert await row_counts(env) == rows_before


async def test_operations_are_refused_in_states_that_do_not_allow_them(
        vm_cloud: Environment) -> None:
    vm = await create_vm(vm_cloud, "vm")
    with pytest.raises(ZError) as refused:
        await vm_cloud.client.call("StartVmInstance", uuid=vm["uuid"])
    assert refused.value.code == "VM.1000" and "Running" in refused.value.details
    await vm_cloud.client.call("PauseVmInstance", uuid=vm["uuid"])
    with pytest.raises(ZError, match="Paused"):
        await vm_cloud.client.call("RebootVmInstance", uuid=vm["uuid"])
    resumed = await vm_cloud.client.call("ResumeVmInstance", uuid=vm["uuid"])
    assert resumed["inventory"]["state"] == "Running"


class _FailAfter(Step):
    async def run(self, ctx: FlowContext) -> None:
        raise RuntimeError("injected failure")


def failing_plugin(anchor: str, chain: str = "vm-create") -> object:
    class failer:  # inserts a failing step right after ``anchor`` in ``chain``
        @staticmethod
        @hookimpl
        def zcore_flow_steps() -> Any:
            yield FlowStep("fail-after-anchor", _FailAfter())

        @staticmethod
        @hookimpl
        def zcore_flow_insertions() -> Any:
            yield FlowInsertion(chain, "fail-after-anchor", after=anchor)

    return failer


def _vm_create_steps() -> list[str]:
    import yaml

    from zcore.paths import data_path

    return yaml.safe_load((data_path("flows") / "vm-create.yaml").read_text())["steps"]


@pytest.mark.parametrize("step", _vm_create_steps())
async def test_a_failure_after_any_step_of_vm_create_leaks_nothing(
        step: str, make_env: MakeEnv, vm_cloud_spec: dict[str, Any],
        api_client: Callable[..., Awaitable[Any]]) -> None:
    client = await api_client(("failer", failing_plugin(step)))
    env = await make_env(vm_cloud_spec, client=client)
    before, rows_before = await capacities(env), await row_counts(env)

    with pytest.raises(ZError, match="injected failure"):
        await create_vm(env, "doomed")

    assert await capacities(env) == before
    assert await row_counts(env) == rows_before
    assert simulated_vms(env) == {}


async def test_a_hundred_creations_on_room_for_sixty_give_exactly_sixty(
        make_env: MakeEnv, vm_cloud_spec: dict[str, Any]) -> None:
    spec = copy.deepcopy(vm_cloud_spec)
    for host in spec["zones"][0]["clusters"][0]["hosts"]:
        host["memoryCapacity"] = "31G"  # 1G is kept for the host: room for 30 VMs of 1G
    env = await make_env(spec)

    results = await asyncio.gather(
        *(create_vm(env, f"vm-{i}", dataDiskOfferingUuids=[]) for i in range(100)),
        return_exceptions=True)

    created = [r for r in results if isinstance(r, dict)]
    failed = [r for r in results if not isinstance(r, dict)]
    assert len(created) == 60 and len(failed) == 40
    assert all(isinstance(e, ZError) and e.code == "HOST_ALLOCATION.1001" for e in failed)
    after = await capacities(env)
    assert all(cpu >= 0 and memory >= 0 for cpu, memory in after["hosts"].values())
    assert all(memory == 0 for _, memory in after["hosts"].values())
    ips = [nic["ip"] for vm in created for nic in vm["vmNics"]]
    assert len(ips) == len(set(ips)) == 120
    counts = await row_counts(env)
    assert counts["VmInstanceVO"] == 60 and counts["UsedIpVO"] == 120
