"""The VM APIs of the compute plugin: parameters, the state machine, deletion, state sync."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from zcore.db import utcnow
from zcore.errors import ZError
from zcore.testing.env import Environment
from zplugins.compute.models import VmInstanceVO
from zplugins.compute.vms import CreateVmInstance, expunge_old_vms
from zplugins.simulator.hosts import SIMULATOR

GiB = 1024**3


async def _create(env: Environment, name: str = "vm1", **params: Any) -> dict[str, Any]:
    params.setdefault("instanceOfferingUuid", env.uuid("small"))
    params.setdefault("imageUuid", env.uuid("image1"))
    params.setdefault("l3NetworkUuids", [env.uuid("l3a")])
    reply = await env.client.call("CreateVmInstance", name=name, **params)
    inventory: dict[str, Any] = reply["inventory"]
    return inventory


async def _vms(env: Environment) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await env.client.call("QueryVmInstance"))["inventories"]
    return found


async def _hosts(env: Environment) -> dict[str, tuple[int, int]]:
    hosts = (await env.client.call("QueryHost"))["inventories"]
    return {h["uuid"]: (h["availableCpuCapacity"], h["availableMemoryCapacity"])
            for h in hosts}


async def _action(env: Environment, api: str, uuid: str, **params: Any) -> dict[str, Any]:
    inventory: dict[str, Any] = (await env.client.call(api, uuid=uuid, **params))["inventory"]
    return inventory


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("params, named", [
    ({"instanceOfferingUuid": None}, "instanceOfferingUuid"),
    ({"instanceOfferingUuid": None, "cpuNum": 1}, "instanceOfferingUuid"),
    ({"cpuNum": 2}, "cpuNum"),
    ({"l3NetworkUuids": []}, "l3NetworkUuids"),
    ({"strategy": "JustCreate"}, "strategy"),
    ({"dataDiskSizes": ["ten"]}, "dataDiskSizes"),
    ({"systemTags": ["hostname::-bad-"]}, "systemTags"),
    ({"systemTags": ["hostname::web1", "hostname::web2"]}, "systemTags"),
])
async def test_bad_creation_requests_are_refused_and_create_nothing(
        vm_cloud: Environment, params: dict[str, Any], named: str) -> None:
    params = {k: v for k, v in params.items()}
    with pytest.raises(ZError) as caught:
        await _create(vm_cloud, **params)
    assert caught.value.code == "SYS.1007"
    assert named in caught.value.details
    assert await _vms(vm_cloud) == []


async def test_the_default_l3_network_must_be_one_of_the_vms(vm_cloud: Environment) -> None:
    with pytest.raises(ZError) as caught:
        await _create(vm_cloud, defaultL3NetworkUuid=vm_cloud.uuid("l3b"))
    assert caught.value.code == "SYS.1007"
    assert "defaultL3NetworkUuid" in caught.value.details
    assert await _vms(vm_cloud) == []


async def test_a_pinned_host_outside_the_pinned_zone_is_refused(vm_cloud: Environment) -> None:
    other = (await vm_cloud.client.call("CreateZone", name="zone2"))["inventory"]["uuid"]
    with pytest.raises(ZError) as caught:
        await _create(vm_cloud, hostUuid=vm_cloud.uuid("host1"), zoneUuid=other)
    assert caught.value.code == "SYS.1007"
    assert await _vms(vm_cloud) == []


async def test_a_chosen_uuid_is_the_vms_unless_a_resource_has_it(
        vm_cloud: Environment) -> None:
    chosen = "ab" * 16
    vm = await _create(vm_cloud, resourceUuid=chosen)
    assert vm["uuid"] == chosen
    with pytest.raises(ZError) as caught:
        await _create(vm_cloud, "vm2", resourceUuid=chosen)
    assert caught.value.code == "SYS.1007" and "resourceUuid" in caught.value.details
    assert [v["uuid"] for v in await _vms(vm_cloud)] == [chosen]


async def test_a_chosen_uuid_taken_after_the_checks_is_refused_and_leaves_nothing(
        vm_cloud: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another call takes the uuid between the request's checks and the VM's row.
    checked = CreateVmInstance.spec

    async def checked_then_taken(self: CreateVmInstance, ctx: Any,
                                 uuid: str | None = None) -> Any:
        spec = await checked(self, ctx, uuid)
        await vm_cloud.client.call("CreateZone", name="zone-taking-it", resourceUuid=spec.uuid)
        return spec

    monkeypatch.setattr(CreateVmInstance, "spec", checked_then_taken)
    before = await _hosts(vm_cloud)
    with pytest.raises(ZError) as caught:
        await _create(vm_cloud, resourceUuid="cd" * 16)
    assert caught.value.code == "SYS.1007"
    assert "already used by a ZoneVO" in caught.value.details
    assert await _vms(vm_cloud) == []
    assert await _hosts(vm_cloud) == before


# --------------------------------------------------------------------------- the life cycle


async def test_a_vm_goes_through_its_life_cycle_and_gives_back_its_host(
        vm_cloud: Environment) -> None:
    before = await _hosts(vm_cloud)
    vm = await _create(vm_cloud, systemTags=["hostname::web1"])
    assert vm["state"] == "Running"
    assert vm["hostUuid"] in before and vm["lastHostUuid"] == vm["hostUuid"]
    assert vm["cpuNum"] == 1 and vm["memorySize"] == GiB
    assert vm["rootVolumeUuid"] is not None
    assert vm["allVolumes"][0]["uuid"] == vm["rootVolumeUuid"]
    assert vm["platform"] == "Linux"  # the image's
    assert [n["l3NetworkUuid"] for n in vm["vmNics"]] == [vm_cloud.uuid("l3a")]
    assert vm["vmCdRoms"] == []
    uuid, host = vm["uuid"], vm["hostUuid"]
    cpu, memory = before[host]
    assert (await _hosts(vm_cloud))[host] == (cpu - 1, memory - GiB)

    stopped = await _action(vm_cloud, "StopVmInstance", uuid)
    assert (stopped["state"], stopped["hostUuid"], stopped["lastHostUuid"]) == \
        ("Stopped", None, host)
    assert await _hosts(vm_cloud) == before
    # Stopping a stopped VM is fine; starting a running one is not.
    assert (await _action(vm_cloud, "StopVmInstance", uuid, type="cold"))["state"] == "Stopped"
    assert (await _action(vm_cloud, "StartVmInstance", uuid))["state"] == "Running"
    with pytest.raises(ZError) as caught:
        await _action(vm_cloud, "StartVmInstance", uuid)
    assert caught.value.code == "VM.1000" and "Running" in caught.value.details

    assert (await _action(vm_cloud, "RebootVmInstance", uuid))["state"] == "Running"
    assert (await _action(vm_cloud, "PauseVmInstance", uuid))["state"] == "Paused"
    with pytest.raises(ZError) as caught:
        await _action(vm_cloud, "RebootVmInstance", uuid)
    assert caught.value.code == "VM.1000" and "Paused" in caught.value.details
    assert (await _action(vm_cloud, "ResumeVmInstance", uuid))["state"] == "Running"

    console = await vm_cloud.client.call("GetVmConsoleAddress", uuid=uuid)
    assert console["port"] and console["protocol"]

    await vm_cloud.client.call("DestroyVmInstance", uuid=uuid)
    [destroyed] = await _vms(vm_cloud)
    assert (destroyed["state"], destroyed["hostUuid"]) == ("Destroyed", None)
    assert await _hosts(vm_cloud) == before
    with pytest.raises(ZError) as caught:
        await _action(vm_cloud, "StartVmInstance", uuid)
    assert caught.value.code == "VM.1000" and "Destroyed" in caught.value.details

    assert (await _action(vm_cloud, "RecoverVmInstance", uuid))["state"] == "Stopped"
    assert (await _action(vm_cloud, "StartVmInstance", uuid))["state"] == "Running"
    await vm_cloud.client.call("DestroyVmInstance", uuid=uuid)
    await vm_cloud.client.call("ExpungeVmInstance", uuid=uuid)
    assert await _vms(vm_cloud) == []
    assert await _hosts(vm_cloud) == before


async def test_the_hypervisor_is_told_the_same_vm_at_creation_and_at_a_later_start(
        vm_cloud: Environment) -> None:
    vm = await _create(vm_cloud, systemTags=["hostname::web1"], cpuNum=2,
                       memorySize=2 * GiB, instanceOfferingUuid=None)
    await _action(vm_cloud, "StopVmInstance", vm["uuid"])
    started = await _action(vm_cloud, "StartVmInstance", vm["uuid"],
                            hostUuid=vm["hostUuid"])
    assert started["hostUuid"] == vm["hostUuid"]
    starts = [body for path, body in SIMULATOR.host(vm["hostUuid"]).calls
              if path == "/vm/start" and body["vmInstanceUuid"] == vm["uuid"]]
    assert len(starts) == 2
    assert starts[0] == starts[1]
    assert (starts[0]["vmName"], starts[0]["hostname"], starts[0]["cpuNum"],
            starts[0]["memory"]) == ("vm1", "web1", 2, 2 * GiB)
    assert starts[0]["rootVolume"]["volumeUuid"] == vm["rootVolumeUuid"]


async def test_create_stopped_holds_no_host(vm_cloud: Environment) -> None:
    before = await _hosts(vm_cloud)
    vm = await _create(vm_cloud, strategy="CreateStopped", cpuNum=2, memorySize=2 * GiB,
                       instanceOfferingUuid=None)
    assert (vm["state"], vm["hostUuid"], vm["cpuNum"]) == ("Stopped", None, 2)
    assert vm["lastHostUuid"] in before  # the host it was made on
    assert vm["rootVolumeUuid"] == vm["allVolumes"][0]["uuid"]
    assert vm["platform"] == "Linux"
    assert await _hosts(vm_cloud) == before
    started = await _action(vm_cloud, "StartVmInstance", vm["uuid"])
    assert started["state"] == "Running"
    assert started["lastHostUuid"] == started["hostUuid"]
    assert (started["rootVolumeUuid"], started["platform"]) == \
        (vm["rootVolumeUuid"], "Linux")
    cpu, memory = before[started["hostUuid"]]
    assert (await _hosts(vm_cloud))[started["hostUuid"]] == (cpu - 2, memory - 2 * GiB)


async def test_update_changes_sizes_only_while_stopped(vm_cloud: Environment) -> None:
    vm = await _create(vm_cloud)
    renamed = await _action(vm_cloud, "UpdateVmInstance", vm["uuid"], name="renamed")
    assert renamed["name"] == "renamed"
    with pytest.raises(ZError) as caught:
        await _action(vm_cloud, "UpdateVmInstance", vm["uuid"], cpuNum=4)
    assert caught.value.code == "VM.1000"
    await _action(vm_cloud, "StopVmInstance", vm["uuid"])
    assert (await _action(vm_cloud, "UpdateVmInstance", vm["uuid"], cpuNum=4))["cpuNum"] == 4


# --------------------------------------------------------------------------- deletion policy


async def test_direct_deletion_expunges_at_once(vm_cloud: Environment) -> None:
    before = await _hosts(vm_cloud)
    await vm_cloud.node.global_config.update("vm", "deletionPolicy", "Direct")
    vm = await _create(vm_cloud)
    await vm_cloud.client.call("DestroyVmInstance", uuid=vm["uuid"])
    assert await _vms(vm_cloud) == []
    assert await _hosts(vm_cloud) == before


async def _age(env: Environment, uuid: str, seconds: int) -> None:
    def backdate(session: Any) -> None:
        session.execute(update(VmInstanceVO).where(VmInstanceVO.uuid == uuid).values(
            lastOpDate=utcnow() - timedelta(seconds=seconds)))

    await env.node.db.run(backdate)


async def test_the_expunge_task_expunges_only_old_destroyed_vms(vm_cloud: Environment) -> None:
    old, young = await _create(vm_cloud, "old"), await _create(vm_cloud, "young")
    for vm in (old, young):
        await vm_cloud.client.call("DestroyVmInstance", uuid=vm["uuid"])
    await _age(vm_cloud, old["uuid"], 86400 + 60)
    assert await expunge_old_vms(vm_cloud.node) == [old["uuid"]]
    assert [v["uuid"] for v in await _vms(vm_cloud)] == [young["uuid"]]


async def test_policy_never_keeps_destroyed_vms(vm_cloud: Environment) -> None:
    vm = await _create(vm_cloud)
    await vm_cloud.client.call("DestroyVmInstance", uuid=vm["uuid"])
    await _age(vm_cloud, vm["uuid"], 10 * 86400)
    await vm_cloud.node.global_config.update("vm", "deletionPolicy", "Never")
    assert await expunge_old_vms(vm_cloud.node) == []
    assert [v["state"] for v in await _vms(vm_cloud)] == ["Destroyed"]


# --------------------------------------------------------------------------- state sync


async def test_a_reconnected_host_reports_which_vms_it_runs(vm_cloud: Environment) -> None:
    before = await _hosts(vm_cloud)
    vm = await _create(vm_cloud, hostUuid=vm_cloud.uuid("host1"))
    kept = await _create(vm_cloud, "kept", hostUuid=vm_cloud.uuid("host1"))
    # The machine lost the first VM while the node was not looking.
    SIMULATOR.host(vm["hostUuid"]).state["vms"].pop(vm["uuid"])
    await vm_cloud.client.call("ReconnectHost", uuid=vm["hostUuid"])
    states = {v["uuid"]: (v["state"], v["hostUuid"]) for v in await _vms(vm_cloud)}
    assert states[vm["uuid"]] == ("Stopped", None)
    assert states[kept["uuid"]] == ("Running", vm_cloud.uuid("host1"))
    cpu, memory = before[vm_cloud.uuid("host1")]
    assert (await _hosts(vm_cloud))[vm_cloud.uuid("host1")] == (cpu - 1, memory - GiB)


async def test_the_migrations_match_the_vm_model(vm_cloud: Environment) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from zcore.db import Base

    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table == "VmInstanceVO"

    def diff(session: Any) -> list[Any]:
        context = MigrationContext.configure(
            session.connection(), opts={"compare_type": True, "include_object": include})
        return list(compare_metadata(context, Base.metadata))

    assert await vm_cloud.node.db.run(diff) == []
