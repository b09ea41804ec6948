"""Random sequences of VM and volume operations against the model of :mod:`tests.vm.model`.

A hypothesis state machine creates (InstantStart or CreateStopped, with or without a data
disk, on one or both L3 networks), stops (grace or cold), starts, reboots, pauses, resumes,
migrates, destroys, recovers and expunges VMs, attaches and detaches L3 networks, and
creates, attaches, detaches, deletes, recovers, expunges and snapshots data volumes, through
REST on the simulator cloud of ``vm_cloud`` whose hosts have room for one VM each. Some
steps run several operations at once: on different VMs, or two on one VM (its queue runs
them in some order). After every step it checks what an operator would:

* every VM, NIC, volume and snapshot is what the model says; an operation the model
  refuses is refused with ``VM.1000`` (the VM's state) or ``HOST_ALLOCATION.1001`` (no host
  with room) and changes nothing;
* each host's available CPU and memory is its total (less the memory kept for the host)
  minus what the VMs placed on it take, and exactly the running and paused VMs are placed;
* each primary storage's available capacity is its total less what is kept free, less the
  size of every instantiated volume and of every snapshot on it (the image cache holds none);
* no IP address is used twice, every used IP belongs to a NIC of an existing VM, every NIC
  and every attached volume to an existing VM, every resource row to an existing row;
* what the simulated hosts run is what the database says runs on them, in the same state,
  with the same volumes and NICs.

Deploying the cloud is slow, so one environment serves every example: the cloud runs on the
test's event loop while hypothesis drives it from a worker thread, and each example's
teardown expunges what it created and checks that every capacity and row count is back
where it began.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select, update

from zcore.db import ResourceVO
from zcore.errors import ZError
from zcore.testing.env import Environment
from zplugins.compute.models import HostVO, VmInstanceVO
from zplugins.network.models import UsedIpVO, VmNicVO
from zplugins.simulator.hosts import SIMULATOR
from zplugins.storage.primary_models import PrimaryStorageVO
from zplugins.storage.volume_models import VolumeSnapshotVO, VolumeVO

from .model import (
    HOLDING_HOST,
    NIC_VM_STATES,
    VM_OPERATIONS,
    VOLUME_VM_STATES,
    ZSTACK_VM_STATES,
    Model,
    VmModel,
    VolumeModel,
)
from .test_lifecycle import capacities, row_counts

T = TypeVar("T")

#: At most this many VMs exist at once: room on the two hosts, whatever the sequence.
MAX_VMS = 5
#: At most this many data volumes exist (not deleted) at once.
MAX_DATA_VOLUMES = 6
#: The error code of an operation refused in the VM's current state.
VM_STATE_ERROR = "VM.1000"
#: The error code of an operation that finds no host with room.
NO_HOST_ERROR = "HOST_ALLOCATION.1001"
#: Memory of each host: with 1 GiB kept for the host, room for one VM of 1 GiB, so that
#: sequences fill the hosts and operations that need one are refused.
HOST_MEMORY = "2G"
#: The VM operations that need a host with room.
NEEDS_HOST = ("StartVmInstance", "MigrateVm")
#: The resource types whose rows come with a ResourceVO row.
RESOURCES = ("VmInstanceVO", "VolumeVO", "VmNicVO", "VolumeSnapshotVO")


# --------------------------------------------------------------------------- the cloud


@dataclass
class Rows:
    """What the database holds, read in one transaction."""

    hosts: list[HostVO]
    storage: list[PrimaryStorageVO]
    vms: list[VmInstanceVO]
    volumes: list[VolumeVO]
    snapshots: list[VolumeSnapshotVO]
    nics: list[VmNicVO]
    used_ips: list[UsedIpVO]
    resources: dict[str, set[str]]


def _read_rows(session: Any) -> Rows:
    rows = Rows(hosts=list(session.scalars(select(HostVO))),
                storage=list(session.scalars(select(PrimaryStorageVO))),
                vms=list(session.scalars(select(VmInstanceVO))),
                volumes=list(session.scalars(select(VolumeVO))),
                snapshots=list(session.scalars(select(VolumeSnapshotVO))),
                nics=list(session.scalars(select(VmNicVO))),
                used_ips=list(session.scalars(select(UsedIpVO))),
                resources={kind: set(session.scalars(select(ResourceVO.uuid).where(
                    ResourceVO.resourceType == kind))) for kind in RESOURCES})
    session.expunge_all()
    return rows


def _simulated() -> dict[str, dict[str, Any]]:
    """The VMs each simulated host runs: host uuid -> VM uuid -> the simulator's record."""
    return {host.uuid: host.vms() for host in SIMULATOR.hosts()}


class Cloud:
    """The deployed cloud on its event loop, called from hypothesis' thread."""

    def __init__(self, env: Environment, loop: asyncio.AbstractEventLoop,
                 baseline: dict[str, Any], baseline_rows: dict[str, int]) -> None:
        self.env = env
        self.loop = loop
        self.baseline = baseline
        self.baseline_rows = baseline_rows
        self.host_uuids = set(env.uuids["hosts"].values())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def call(self, api: str, **params: Any) -> Any:
        return self.run(self.env.client.call(api, **params))

    def refused(self, api: str, code: str, **params: Any) -> ZError:
        """Call ``api`` expecting the error ``code``; the error."""
        try:
            reply = self.call(api, **params)
        except ZError as error:
            assert error.code == code, f"{api}{params}: {error}"
            return error
        raise AssertionError(f"{api}{params} should be refused with {code}, got {reply}")

    def inventories(self, api: str) -> list[dict[str, Any]]:
        return list(self.call(api, q=[])["inventories"])

    def rows(self) -> Rows:
        return self.run(self.env.node.db.run(_read_rows))

    def simulated(self) -> dict[str, dict[str, Any]]:
        async def read() -> dict[str, dict[str, Any]]:
            return {uuid: vms for uuid, vms in _simulated().items() if uuid in self.host_uuids}

        return self.run(read())

    def fingerprint(self) -> Any:
        """What a refused operation must leave as it was."""
        vms = sorted((vm["uuid"], vm["state"], vm["hostUuid"],
                      sorted((n["uuid"], n["l3NetworkUuid"], n["ip"]) for n in vm["vmNics"]))
                     for vm in self.inventories("QueryVmInstance"))
        volumes = sorted((v["uuid"], v["status"], v["vmInstanceUuid"], v["primaryStorageUuid"])
                         for v in self.inventories("QueryVolume"))
        snapshots = sorted(s["uuid"] for s in self.inventories("QueryVolumeSnapshot"))
        return vms, volumes, snapshots, self.run(capacities(self.env)), self.simulated()


# --------------------------------------------------------------------------- the machine


@dataclass
class _Planned:
    """A VM operation about to run: its parameters and, for a migration, the source."""

    operation: str
    vm: VmModel
    params: dict[str, Any]
    source: str | None


def _vm_rule(operation: str) -> Any:
    """A rule that runs ``operation`` on a VM the model lets it run on."""
    @precondition(lambda self: any(self.model.allows(operation, vm)
                                   for vm in self.model.vms.values()))
    @rule(data=st.data())
    def step(self: VmLifecycle, data: st.DataObject) -> None:
        self._allowed(operation, data)

    step.__name__ = step.__qualname__ = operation
    return step


class VmLifecycle(RuleBasedStateMachine):
    """Operations drawn at random; the model says what each should do. A subclass names
    the :class:`Cloud` they run on."""

    cloud: Cloud

    def __init__(self) -> None:
        super().__init__()
        self.model = Model(room={uuid: min(cpu, memory // 2**30) for uuid, (cpu, memory)
                                 in self.cloud.baseline["hosts"].items()})
        self.l3s = {"l3a": self.cloud.env.uuid("l3a"), "l3b": self.cloud.env.uuid("l3b")}

    # ------------------------------------------------------------------- helpers

    def _vm(self, data: st.DataObject, candidates: list[VmModel]) -> VmModel:
        by_label = {vm.label: vm for vm in candidates}
        return by_label[data.draw(st.sampled_from(list(by_label)), label="vm")]

    def _volume(self, data: st.DataObject, candidates: list[VolumeModel]) -> VolumeModel:
        by_label = {volume.label: volume for volume in candidates}
        return by_label[data.draw(st.sampled_from(list(by_label)), label="volume")]

    def _refused_unchanged(self, api: str, code: str = VM_STATE_ERROR,
                           **params: Any) -> None:
        before = self.cloud.fingerprint()
        error = self.cloud.refused(api, code, **params)
        assert self.cloud.fingerprint() == before, f"{api} was refused ({error}) yet changed"

    def _add_volume(self, inventory: dict[str, Any], vm: str | None) -> VolumeModel:
        volume = VolumeModel(label=self.model.label(inventory["type"].lower()),
                             uuid=inventory["uuid"], type=inventory["type"],
                             status=inventory["status"], vm=vm)
        self.model.volumes[volume.uuid] = volume
        return volume

    # ------------------------------------------------------------------- VMs

    @precondition(lambda self: len(self.model.vms) < MAX_VMS)
    @rule(strategy=st.sampled_from(["InstantStart", "CreateStopped"]),
          data_disk=st.booleans(),
          networks=st.sampled_from([("l3a",), ("l3b",), ("l3a", "l3b")]))
    def create_vm(self, strategy: str, data_disk: bool, networks: tuple[str, ...]) -> None:
        label = self.model.label("vm")
        offerings = [self.cloud.env.uuid("disk10G")] if data_disk else []
        params = {"name": label, "strategy": strategy,
                  "instanceOfferingUuid": self.cloud.env.uuid("small"),
                  "imageUuid": self.cloud.env.uuid("image1"),
                  "l3NetworkUuids": [self.l3s[n] for n in networks],
                  "dataDiskOfferingUuids": offerings}
        if not self.model.has_room():  # both strategies place the VM (CreateStopped: then
            # give the host back): with every host full, the creation fails, leaving nothing
            rows = self.cloud.run(row_counts(self.cloud.env))
            self._refused_unchanged("CreateVmInstance", NO_HOST_ERROR, **params)
            assert self.cloud.run(row_counts(self.cloud.env)) == rows
            return
        vm = self.cloud.call("CreateVmInstance", **params)["inventory"]
        expected = "Running" if strategy == "InstantStart" else "Stopped"
        assert vm["state"] == expected, f"{label} created {vm['state']}, not {expected}"
        assert (vm["hostUuid"] is not None) == (expected == "Running")
        assert sorted(n["l3NetworkUuid"] for n in vm["vmNics"]) == \
            sorted(self.l3s[n] for n in networks)
        assert [v["type"] for v in vm["allVolumes"]] == ["Root"] + ["Data"] * len(offerings)
        self.model.vms[vm["uuid"]] = VmModel(
            label=label, uuid=vm["uuid"], state=expected, cpu=vm["cpuNum"],
            memory=vm["memorySize"], root_volume=vm["rootVolumeUuid"],
            nics={n["uuid"]: n["l3NetworkUuid"] for n in vm["vmNics"]}, host=vm["hostUuid"])
        for volume in vm["allVolumes"]:
            self._add_volume(volume, vm["uuid"])

    def _allowed(self, operation: str, data: st.DataObject) -> None:
        vm = self._vm(data, [v for v in self.model.vms.values()
                             if self.model.allows(operation, v)])
        plan = self._plan(operation, vm, data)
        if not self.model.fits(operation, vm):
            self._refused_unchanged(operation, NO_HOST_ERROR, **plan.params)
            return
        self._run_vm_operations([plan])

    def _plan(self, operation: str, vm: VmModel, data: st.DataObject) -> _Planned:
        params: dict[str, Any] = {"uuid": vm.uuid}
        source = None
        if operation == "StopVmInstance":
            params["type"] = data.draw(st.sampled_from(["grace", "cold"]), label="type")
        if operation == "MigrateVm":
            params = {"vmInstanceUuid": vm.uuid}
            source = self.cloud.call("QueryVmInstance", q=[f"uuid={vm.uuid}"]
                                     )["inventories"][0]["hostUuid"]
        return _Planned(operation, vm, params, source)

    def _run_vm_operations(self, planned: list[_Planned]) -> None:
        """Run the operations at once; each must answer as the model says."""
        async def run_all() -> list[Any]:
            return await asyncio.gather(
                *(self.cloud.env.client.call(p.operation, **p.params) for p in planned),
                return_exceptions=True)

        replies = self.cloud.run(run_all())
        for plan, reply in zip(planned, replies, strict=True):
            assert not isinstance(reply, BaseException), \
                f"{plan.operation} of {plan.vm.label} ({plan.vm.state}) failed: {reply!r}"
            self.model.apply_vm_operation(plan.operation, plan.vm)
            if isinstance(reply, dict) and "inventory" in reply:
                plan.vm.host = reply["inventory"]["hostUuid"]
            after = VM_OPERATIONS[plan.operation][1]
            if after is not None and plan.operation != "DestroyVmInstance":
                assert reply["inventory"]["state"] == after, \
                    f"{plan.operation} of {plan.vm.label} answered {reply['inventory']['state']}"
            if plan.operation == "MigrateVm":
                assert reply["inventory"]["hostUuid"] not in (None, plan.source), \
                    f"{plan.vm.label} migrated from {plan.source} to " \
                    f"{reply['inventory']['hostUuid']}"

    @precondition(lambda self: len(self.model.vms) >= 2)
    @rule(data=st.data())
    def operations_on_several_vms_at_once(self, data: st.DataObject) -> None:
        labels = data.draw(st.lists(st.sampled_from([vm.label for vm in self.model.vms.values()]),
                                    min_size=2, max_size=4, unique=True), label="vms")
        vms = {vm.label: vm for vm in self.model.vms.values()}
        planned = []
        for label in labels:
            vm = vms[label]
            operation = data.draw(st.sampled_from(
                [op for op in VM_OPERATIONS if self.model.allows(op, vm)
                 and op not in NEEDS_HOST]), label=f"operation of {label}")
            planned.append(self._plan(operation, vm, data))
        self._run_vm_operations(planned)

    @precondition(lambda self: sum(vm.state == "Stopped" for vm in self.model.vms.values()) > 1)
    @rule(data=st.data())
    def start_several_vms_at_once(self, data: st.DataObject) -> None:
        """As many start as there is room for; the others are refused and stay Stopped."""
        labels = data.draw(st.lists(st.sampled_from(
            [vm.label for vm in self.model.vms.values() if vm.state == "Stopped"]),
            min_size=2, max_size=4, unique=True), label="vms")
        vms = {vm.label: vm for vm in self.model.vms.values()}
        room = sum(max(0, self.model.free(host)) for host in self.model.room)

        async def start_all() -> list[Any]:
            return await asyncio.gather(
                *(self.cloud.env.client.call("StartVmInstance", uuid=vms[label].uuid)
                  for label in labels), return_exceptions=True)

        replies = self.cloud.run(start_all())
        started = [label for label, reply in zip(labels, replies, strict=True)
                   if not isinstance(reply, BaseException)]
        assert len(started) == min(room, len(labels)), \
            f"{len(started)} of {labels} started with room for {room}: {replies!r}"
        for label, reply in zip(labels, replies, strict=True):
            if isinstance(reply, BaseException):
                assert isinstance(reply, ZError) and reply.code == NO_HOST_ERROR, \
                    f"starting {label} failed: {reply!r}"
            else:
                self.model.apply_vm_operation("StartVmInstance", vms[label])
                vms[label].host = reply["inventory"]["hostUuid"]

    @precondition(lambda self: bool(self.model.vms))
    @rule(data=st.data())
    def two_operations_on_one_vm_at_once(self, data: st.DataObject) -> None:
        """The VM's queue runs them one after the other, in either order: each succeeds or
        is refused as the model says for that order."""
        vm = self._vm(data, list(self.model.vms.values()))
        operations = data.draw(st.lists(st.sampled_from(
            [op for op in VM_OPERATIONS if op != "MigrateVm"]), min_size=2, max_size=2),
            label="operations")
        planned = [self._plan(operation, vm, data) for operation in operations]

        async def run_both() -> list[Any]:
            return await asyncio.gather(
                *(self.cloud.env.client.call(p.operation, **p.params) for p in planned),
                return_exceptions=True)

        replies = self.cloud.run(run_both())
        for plan, reply in zip(planned, replies, strict=True):
            assert not isinstance(reply, BaseException) or isinstance(reply, ZError), \
                f"{plan.operation} of {vm.label} failed: {reply!r}"
        state = {v["uuid"]: v["state"] for v in self.cloud.inventories("QueryVmInstance")
                 }.get(vm.uuid)
        explained = []
        for order in ((0, 1), (1, 0)):
            model = copy.deepcopy(self.model)
            fits = True
            for i in order:
                reply, current = replies[i], model.vms.get(vm.uuid)
                if current is not None and model.allows(operations[i], current) and \
                        not model.fits(operations[i], current):
                    fits = fits and isinstance(reply, ZError) and reply.code == NO_HOST_ERROR
                elif current is not None and model.allows(operations[i], current):
                    fits = fits and not isinstance(reply, BaseException)
                    model.apply_vm_operation(operations[i], current)
                    if current.state in HOLDING_HOST and current.host is None:
                        current.host = "?"  # the allocator's choice, read below
                elif current is not None:  # refused in the state the other one left
                    fits = fits and isinstance(reply, ZError) and reply.code == VM_STATE_ERROR
                else:  # the other one expunged it
                    fits = fits and isinstance(reply, ZError)
            final = model.vms[vm.uuid].state if vm.uuid in model.vms else None
            if fits and final == state:
                explained.append(model)
        assert explained, f"{operations} at once on {vm.label} ({vm.state}) answered " \
            f"{[r if isinstance(r, BaseException) else 'ok' for r in replies]!r} and left " \
            f"it {state}: no order of the two explains that"
        self.model = explained[0]
        if vm.uuid in self.model.vms:
            self.model.vms[vm.uuid].host = self.cloud.call(
                "QueryVmInstance", q=[f"uuid={vm.uuid}"])["inventories"][0]["hostUuid"]

    stop_vm = _vm_rule("StopVmInstance")
    start_vm = _vm_rule("StartVmInstance")
    reboot_vm = _vm_rule("RebootVmInstance")
    pause_vm = _vm_rule("PauseVmInstance")
    resume_vm = _vm_rule("ResumeVmInstance")
    migrate_vm = _vm_rule("MigrateVm")
    destroy_vm = _vm_rule("DestroyVmInstance")
    recover_vm = _vm_rule("RecoverVmInstance")
    expunge_vm = _vm_rule("ExpungeVmInstance")

    @precondition(lambda self: bool(self.model.vms))
    @rule(data=st.data())
    def refused_vm_operation(self, data: st.DataObject) -> None:
        vm = self._vm(data, list(self.model.vms.values()))
        operation = data.draw(st.sampled_from(
            [op for op in VM_OPERATIONS if not self.model.allows(op, vm)]), label="operation")
        key = "vmInstanceUuid" if operation == "MigrateVm" else "uuid"
        self._refused_unchanged(operation, **{key: vm.uuid})

    @precondition(lambda self: any(len(vm.nics) < 2 for vm in self.model.vms.values()))
    @rule(data=st.data())
    def attach_l3_network(self, data: st.DataObject) -> None:
        vm = self._vm(data, [v for v in self.model.vms.values() if len(v.nics) < 2])
        name = data.draw(st.sampled_from(
            [n for n, uuid in self.l3s.items() if uuid not in vm.nics.values()]), label="l3")
        params = {"vmInstanceUuid": vm.uuid, "l3NetworkUuid": self.l3s[name]}
        if vm.state not in NIC_VM_STATES:
            self._refused_unchanged("AttachL3NetworkToVm", **params)
            return
        reply = self.cloud.call("AttachL3NetworkToVm", **params)["inventory"]
        added = [n for n in reply["vmNics"] if n["uuid"] not in vm.nics]
        assert [n["l3NetworkUuid"] for n in added] == [self.l3s[name]], \
            f"{vm.label} got NICs {added} attaching {name}"
        vm.nics[added[0]["uuid"]] = self.l3s[name]

    @precondition(lambda self: any(vm.nics for vm in self.model.vms.values()))
    @rule(data=st.data())
    def detach_l3_network(self, data: st.DataObject) -> None:
        vm = self._vm(data, [v for v in self.model.vms.values() if v.nics])
        nic = data.draw(st.sampled_from(sorted(vm.nics, key=lambda u: vm.nics[u])),
                        label="nic")
        if vm.state not in NIC_VM_STATES:
            self._refused_unchanged("DetachL3NetworkFromVm", vmNicUuid=nic)
            return
        reply = self.cloud.call("DetachL3NetworkFromVm", vmNicUuid=nic)["inventory"]
        del vm.nics[nic]
        assert {n["uuid"] for n in reply["vmNics"]} == set(vm.nics)

    # ------------------------------------------------------------------- volumes

    @precondition(lambda self: len(self.model.live_data_volumes()) < MAX_DATA_VOLUMES)
    @rule(on_storage=st.booleans())
    def create_data_volume(self, on_storage: bool) -> None:
        params: dict[str, Any] = {"name": f"data-{self.model.counter + 1}",
                                  "diskOfferingUuid": self.cloud.env.uuid("disk10G")}
        if on_storage:
            params["primaryStorageUuid"] = self.cloud.env.uuid("ps1")
        volume = self.cloud.call("CreateDataVolume", **params)["inventory"]
        expected = "Ready" if on_storage else "NotInstantiated"
        assert volume["status"] == expected and volume["vmInstanceUuid"] is None
        self._add_volume(volume, None)

    @precondition(lambda self: bool(self.model.vms and self.model.detached_data_volumes()))
    @rule(data=st.data())
    def attach_data_volume(self, data: st.DataObject) -> None:
        volume = self._volume(data, self.model.detached_data_volumes())
        vm = self._vm(data, list(self.model.vms.values()))
        params = {"volumeUuid": volume.uuid, "vmInstanceUuid": vm.uuid}
        if vm.state not in VOLUME_VM_STATES:
            self._refused_unchanged("AttachDataVolumeToVm", **params)
            return
        reply = self.cloud.call("AttachDataVolumeToVm", **params)["inventory"]
        volume.vm, volume.status = vm.uuid, "Ready"
        assert reply["vmInstanceUuid"] == vm.uuid and reply["status"] == "Ready"

    @precondition(lambda self: bool(self.model.attached_data_volumes()))
    @rule(data=st.data())
    def detach_data_volume(self, data: st.DataObject) -> None:
        volume = self._volume(data, self.model.attached_data_volumes())
        vm = self.model.vm_of(volume)
        assert vm is not None
        if vm.state not in VOLUME_VM_STATES:
            self._refused_unchanged("DetachDataVolumeFromVm", uuid=volume.uuid)
            return
        reply = self.cloud.call("DetachDataVolumeFromVm", uuid=volume.uuid)["inventory"]
        volume.vm = None
        assert reply["vmInstanceUuid"] is None

    @precondition(lambda self: bool(self.model.live_data_volumes()))
    @rule(data=st.data())
    def delete_data_volume(self, data: st.DataObject) -> None:
        volume = self._volume(data, self.model.live_data_volumes())
        vm = self.model.vm_of(volume)
        if vm is not None and vm.state not in VOLUME_VM_STATES:
            self._refused_unchanged("DeleteDataVolume", uuid=volume.uuid)
            return
        self.cloud.call("DeleteDataVolume", uuid=volume.uuid)
        self.model.delete_data_volume(volume)

    @precondition(lambda self: bool(self.model.deleted_data_volumes()))
    @rule(data=st.data())
    def recover_data_volume(self, data: st.DataObject) -> None:
        volume = self._volume(data, self.model.deleted_data_volumes())
        reply = self.cloud.call("RecoverDataVolume", uuid=volume.uuid)["inventory"]
        volume.status = "Ready"
        assert reply["status"] == "Ready" and reply["vmInstanceUuid"] is None

    @precondition(lambda self: bool(self.model.deleted_data_volumes()))
    @rule(data=st.data())
    def expunge_data_volume(self, data: st.DataObject) -> None:
        volume = self._volume(data, self.model.deleted_data_volumes())
        self.cloud.call("ExpungeDataVolume", uuid=volume.uuid)
        del self.model.volumes[volume.uuid]

    @precondition(lambda self: any(v.status == "Ready" or v.vm is not None
                                   for v in self.model.volumes.values()))
    @rule(data=st.data())
    def create_volume_snapshot(self, data: st.DataObject) -> None:
        volume = self._volume(data, [v for v in self.model.volumes.values()
                                     if v.status == "Ready" or v.vm is not None])
        params = {"volumeUuid": volume.uuid, "name": f"snap-{volume.snapshots + 1}"}
        vm = self.model.vm_of(volume)
        if vm is not None and vm.state not in VOLUME_VM_STATES:
            self._refused_unchanged("CreateVolumeSnapshot", **params)
            return
        reply = self.cloud.call("CreateVolumeSnapshot", **params)["inventory"]
        volume.snapshots += 1
        assert reply["volumeUuid"] == volume.uuid

    # ------------------------------------------------------------------- invariants

    @invariant()
    def the_cloud_is_what_the_model_says(self) -> None:
        vms = {vm["uuid"]: vm for vm in self.cloud.inventories("QueryVmInstance")}
        assert {vm["state"] for vm in vms.values()} <= ZSTACK_VM_STATES
        assert {u: vm["state"] for u, vm in vms.items()} == \
            {u: vm.state for u, vm in self.model.vms.items()}
        for uuid, vm in self.model.vms.items():
            nics = {n["uuid"]: n["l3NetworkUuid"] for n in vms[uuid]["vmNics"]}
            assert nics == vm.nics, f"{vm.label}: NICs {nics}, expected {vm.nics}"
            assert (vms[uuid]["hostUuid"] is not None) == (vm.state in HOLDING_HOST), \
                f"{vm.label} is {vm.state} with hostUuid {vms[uuid]['hostUuid']}"
        volumes = {v["uuid"]: (v["type"], v["status"], v["vmInstanceUuid"])
                   for v in self.cloud.inventories("QueryVolume")}
        assert volumes == {u: (v.type, v.status, v.vm) for u, v in self.model.volumes.items()}
        snapshots: dict[str, int] = {}
        for snapshot in self.cloud.inventories("QueryVolumeSnapshot"):
            snapshots[snapshot["volumeUuid"]] = snapshots.get(snapshot["volumeUuid"], 0) + 1
        assert snapshots == {u: v.snapshots for u, v in self.model.volumes.items()
                             if v.snapshots}

    @invariant()
    def capacities_add_up_and_no_row_is_orphaned(self) -> None:
        check_rows(self.cloud.rows())

    @invariant()
    def the_hosts_run_what_the_database_says(self) -> None:
        check_simulator(self.cloud.rows(), self.cloud.simulated())

    # ------------------------------------------------------------------- teardown

    def teardown(self) -> None:
        """Expunge what the example created; every capacity must be back."""
        cloud = self.cloud
        try:
            for vm in list(self.model.vms.values()):
                if vm.state != "Destroyed":
                    cloud.call("DestroyVmInstance", uuid=vm.uuid)
                cloud.call("ExpungeVmInstance", uuid=vm.uuid)
            for volume in list(self.model.volumes.values()):
                if volume.type == "Data":
                    cloud.call("DeleteDataVolume", uuid=volume.uuid)
                    if volume.status != "NotInstantiated":
                        cloud.call("ExpungeDataVolume", uuid=volume.uuid)
        finally:
            back = cloud.run(capacities(cloud.env)), cloud.run(row_counts(cloud.env))
            if back != (cloud.baseline, cloud.baseline_rows):
                cloud.run(sweep(cloud))  # the next example starts from the baseline
        assert back[0] == cloud.baseline, f"capacity not given back: {back[0]}"
        assert back[1] == cloud.baseline_rows, f"rows left behind: {back[1]}"


# --------------------------------------------------------------------------- the checks


def check_rows(rows: Rows) -> None:
    """Capacities, IPs and references, from the database alone."""
    vms = {vm.uuid: vm for vm in rows.vms}
    for host in rows.hosts:
        placed = [vm for vm in rows.vms if vm.hostUuid == host.uuid]
        assert host.availableCpuCapacity == \
            host.totalCpuCapacity - sum(vm.cpuNum for vm in placed), \
            f"host {host.name}: availableCpuCapacity {host.availableCpuCapacity}, VMs " \
            f"{[(vm.name, vm.state, vm.cpuNum) for vm in placed]}"
        assert host.availableMemoryCapacity == (
            host.totalMemoryCapacity - host.reservedMemoryCapacity
            - sum(vm.memorySize for vm in placed)), \
            f"host {host.name}: availableMemoryCapacity {host.availableMemoryCapacity}, VMs " \
            f"{[(vm.name, vm.state, vm.memorySize) for vm in placed]}"
    for vm in rows.vms:
        assert vm.state in ZSTACK_VM_STATES
        assert (vm.hostUuid is not None) == (vm.state in HOLDING_HOST), \
            f"VM {vm.name} is {vm.state} with hostUuid {vm.hostUuid}"

    for ps in rows.storage:
        held = sum(v.size for v in rows.volumes if v.primaryStorageUuid == ps.uuid
                   and v.status != "NotInstantiated")
        held += sum(s.size for s in rows.snapshots if s.primaryStorageUuid == ps.uuid)
        assert ps.allocatedCapacity == held, \
            f"primary storage {ps.name}: {ps.allocatedCapacity} allocated, volumes and " \
            f"snapshots take {held}"
        assert ps.availableCapacity == max(0, ps.totalCapacity - ps.systemUsedCapacity
                                           - ps.reservedCapacity - held), \
            f"primary storage {ps.name}: availableCapacity {ps.availableCapacity}"

    nics = {nic.uuid: nic for nic in rows.nics}
    addresses = [(ip.l3NetworkUuid, ip.ip) for ip in rows.used_ips]
    assert len(addresses) == len(set(addresses)), f"an IP is used twice: {sorted(addresses)}"
    for ip in rows.used_ips:
        if ip.vmNicUuid is None:
            continue  # a gateway or another service's address
        assert ip.vmNicUuid in nics, f"used IP {ip.ip} belongs to no NIC ({ip.vmNicUuid})"
        assert nics[ip.vmNicUuid].ip == ip.ip
    owned = {ip.vmNicUuid for ip in rows.used_ips}
    for nic in rows.nics:
        assert nic.vmInstanceUuid in vms, f"NIC {nic.uuid} of no VM ({nic.vmInstanceUuid})"
        assert nic.uuid in owned, f"NIC {nic.uuid} ({nic.ip}) holds no used IP"
    for volume in rows.volumes:
        assert volume.vmInstanceUuid is None or volume.vmInstanceUuid in vms, \
            f"volume {volume.name} names VM {volume.vmInstanceUuid}, which does not exist"
    for snapshot in rows.snapshots:
        assert snapshot.volumeUuid in {v.uuid for v in rows.volumes}
    tables: dict[str, list[Any]] = {"VmInstanceVO": rows.vms, "VolumeVO": rows.volumes,
                                     "VmNicVO": rows.nics, "VolumeSnapshotVO": rows.snapshots}
    for kind, table in tables.items():
        assert rows.resources[kind] == {r.uuid for r in table}, \
            f"{kind} and its ResourceVO rows disagree"


def check_simulator(rows: Rows, simulated: dict[str, dict[str, Any]]) -> None:
    """Each simulated host runs exactly the VMs placed on it, with their volumes and NICs."""
    for host_uuid, running in simulated.items():
        placed = {vm.uuid: vm for vm in rows.vms if vm.hostUuid == host_uuid}
        assert {u: vm["state"] for u, vm in running.items()} == \
            {u: vm.state for u, vm in placed.items()}, \
            f"host {host_uuid} runs {sorted(running)}; the database places " \
            f"{[(vm.name, vm.state) for vm in placed.values()]} there"
        for uuid, vm in running.items():
            volumes = {v.uuid for v in rows.volumes if v.vmInstanceUuid == uuid}
            assert set(vm["volumes"]) == volumes, \
                f"VM {placed[uuid].name} runs with volumes {sorted(vm['volumes'])}, " \
                f"has {sorted(volumes)}"
            nics = {n.uuid for n in rows.nics if n.vmInstanceUuid == uuid}
            assert set(vm["nics"]) == nics, \
                f"VM {placed[uuid].name} runs with NICs {sorted(vm['nics'])}, has {nics}"


async def sweep(cloud: Cloud) -> None:
    """Remove whatever an example left behind and put the capacities back, so that a
    failure of one example is not the failure of every later one."""
    call = cloud.env.client.call
    for vm in (await call("QueryVmInstance", q=[]))["inventories"]:
        for api in ("DestroyVmInstance", "ExpungeVmInstance"):
            try:
                await call(api, uuid=vm["uuid"])
            except ZError:
                pass
    for volume in (await call("QueryVolume", q=["type=Data"]))["inventories"]:
        for api in ("DeleteDataVolume", "ExpungeDataVolume"):
            try:
                await call(api, uuid=volume["uuid"])
            except ZError:
                pass
    for host in SIMULATOR.hosts():
        if host.uuid in cloud.host_uuids:
            host.state.get("vms", {}).clear()

    def restore(session: Any) -> None:
        for uuid, (cpu, memory) in cloud.baseline["hosts"].items():
            session.execute(update(HostVO).where(HostVO.uuid == uuid).values(
                availableCpuCapacity=cpu, availableMemoryCapacity=memory))
        for uuid, available in cloud.baseline["storage"].items():
            session.execute(update(PrimaryStorageVO).where(PrimaryStorageVO.uuid == uuid)
                            .values(availableCapacity=available, allocatedCapacity=0))

    await cloud.env.node.db.run(restore)


# --------------------------------------------------------------------------- the test


@pytest.fixture
def vm_cloud_spec(vm_cloud_spec: dict[str, Any]) -> dict[str, Any]:
    """The VM cloud with hosts of :data:`HOST_MEMORY`."""
    for host in vm_cloud_spec["zones"][0]["clusters"][0]["hosts"]:
        host["memoryCapacity"] = HOST_MEMORY
    return vm_cloud_spec



async def test_random_operations_keep_every_invariant(vm_cloud: Environment) -> None:
    deployed = Cloud(vm_cloud, asyncio.get_running_loop(), await capacities(vm_cloud),
                     await row_counts(vm_cloud))

    class OnVmCloud(VmLifecycle):
        cloud = deployed

    await asyncio.to_thread(
        run_state_machine_as_test, OnVmCloud,
        settings=settings(max_examples=25, stateful_step_count=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]))
