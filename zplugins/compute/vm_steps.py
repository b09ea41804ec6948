"""The compute plugin's steps of the VM chains (``flows/vm-*.yaml``) and of ``host-connect``.

Each step reads and writes ``VmInstanceVO`` rows directly; hypervisor calls go through
:func:`~zplugins.compute.vm_service.on_host` (at most ``kvm.host.syncLevel`` per host). The
API handlers (:mod:`zplugins.compute.vms`) set the transient and final states around a chain
and restore the previous state when the chain fails; the steps set what the chain itself
decides (``Running`` after a start, ``Destroyed``, ``Stopped`` after a recovery).

``sync-vm-states`` runs in ``host-connect`` (inside the host's queue ``host-<uuid>``), so it
never enters a VM queue or :func:`on_host`: it updates rows with conditional writes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy import insert as insert_
from sqlalchemy.orm import Session

from zcore import FlowInsertion, FlowStep, GcJobKind
from zcore.db import (
    add_resource_row,
    check_new_uuid,
    delete_resource,
    sent_together,
    table_of,
    utcnow,
    write_checked,
)
from zcore.errors import RESOURCE_NOT_FOUND, ZError
from zcore.flow import FlowContext, Step
from zplugins.compute.allocators import release_host
from zplugins.compute.host_service import CONNECTED, HOST_CONNECT_CHAIN, HostInfo, host_event
from zplugins.compute.models import HostVO, VmInstanceVO
from zplugins.compute.vm_contract import CREATE_STOPPED, NicTO, VmTO, VolumeTO
from zplugins.compute.vm_service import (
    PersistedVm,
    hypervisor_of,
    on_host,
    persisted_vm,
    remember_persisted_vm,
    vm_queue,
)

if TYPE_CHECKING:
    from zcore.api import ApiContext
    from zcore.node import Node
    from zplugins.compute.vm_contract import VmSpec

__all__ = ["HOSTNAME_PATTERN", "flow_insertions", "flow_steps", "get_vm_row",
           "read_vm_row", "set_state"]

log = logging.getLogger("zplugins.compute.vms")

VM = "VmInstanceVO"
VM_TABLE = table_of(VmInstanceVO)
# Statements built once: building one costs more than running it.
_VM_BY_UUID = select(VM_TABLE).where(VM_TABLE.c.uuid == bindparam("uuid"))
_INSERT_VM = insert_(VM_TABLE)
HOSTNAME_PATTERN = "hostname::{hostname}"


# --------------------------------------------------------------------------- database work


def get_vm_row(session: Session, uuid: str) -> VmInstanceVO:
    row = session.get(VmInstanceVO, uuid)
    if row is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"VmInstanceVO {uuid} does not exist (any more)")
    return row


def read_vm_row(session: Session, uuid: str) -> Any:
    """The VM's row as plain columns (no ORM entity), for reading; ``SYS.1003`` if gone."""
    row = session.connection().execute(_VM_BY_UUID, {"uuid": uuid}).first()
    if row is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"VmInstanceVO {uuid} does not exist (any more)")
    return row


def set_state(session: Session, uuid: str, state: str) -> None:
    row = session.get(VmInstanceVO, uuid)
    if row is not None:
        row.state = state


def _host_of(session: Session, uuid: str | None) -> HostInfo | None:
    if uuid is None:
        return None
    row = session.get(HostVO, uuid)
    return HostInfo.of(row) if row is not None else None


def _vm_and_host(session: Session, uuid: str) -> tuple[VmInstanceVO, HostInfo | None]:
    row = get_vm_row(session, uuid)
    return row, _host_of(session, row.hostUuid)


def _vm_to(session: Session, node: Node, uuid: str, volumes: list[VolumeTO],
           nics: list[NicTO]) -> VmTO:
    row = read_vm_row(session, uuid)
    names = node.tags.tokens(session, uuid, VM, HOSTNAME_PATTERN)
    return _make_vm_to(row, volumes, nics, names[0]["hostname"] if names else None)


def _make_vm_to(vm: Any, volumes: list[VolumeTO], nics: list[NicTO],
                hostname: str | None) -> VmTO:
    """The VmTO of a VM row (or of what was written into it: anything with its columns)."""
    if not volumes:
        raise ZError("VM.1001", "VM has no root volume",
                     f"VM '{vm.name}' ({vm.uuid}) has no volumes to start from")
    return VmTO(uuid=vm.uuid, name=vm.name, cpuNum=vm.cpuNum, memorySize=vm.memorySize,
                rootVolume=volumes[0], dataVolumes=tuple(volumes[1:]),
                nics=tuple(sorted(nics, key=lambda n: n.deviceId)), cpuSpeed=vm.cpuSpeed,
                platform=vm.platform, architecture=vm.architecture, hostname=hostname)


# --------------------------------------------------------------------------- vm-create


class PersistVm(Step):
    """``persist-vm``: the VM row (state ``Created``) with the call's tags; provides
    ``vm_uuid`` and an empty ``host_conditions``. Rolled back by deleting the row."""

    requires = ("api", "vm")
    provides = ("vm_uuid", "host_conditions")

    async def run(self, ctx: FlowContext) -> None:
        api: ApiContext = ctx["api"]
        spec: VmSpec = ctx["vm"]

        def insert(session: Session) -> str:
            if not spec.uuidIsNew:  # the caller's choice: it may be taken (meanwhile)
                check_new_uuid(session, spec.uuid, VM)
            # Prebuilt Core INSERTs of the rows add_resource would write: no unit of work,
            # and both in one round trip.
            now = utcnow()
            with sent_together(session) as connection:
                add_resource_row(session, spec.uuid, VM, name=spec.name,
                                 owner_account_uuid=spec.accountUuid, create_date=now)
                connection.execute(_INSERT_VM, {
                    "uuid": spec.uuid, "name": spec.name, "description": spec.description,
                    "imageUuid": spec.imageUuid,
                    "instanceOfferingUuid": spec.instanceOfferingUuid,
                    "defaultL3NetworkUuid": spec.defaultL3NetworkUuid, "type": spec.type,
                    "cpuNum": spec.cpuNum, "cpuSpeed": spec.cpuSpeed,
                    "memorySize": spec.memorySize,
                    "allocatorStrategy": spec.allocatorStrategy,
                    "state": "Created", "createDate": now, "lastOpDate": now})
            api.add_tags(session, spec.uuid, VM)
            return spec.uuid

        ctx["vm_uuid"] = await api.run(insert)
        ctx["host_conditions"] = []
        remember_persisted_vm(ctx, PersistedVm(
            spec.uuid, spec.name, spec.cpuNum, spec.memorySize, spec.cpuSpeed,
            spec.allocatorStrategy, spec.instanceOfferingUuid, spec.hostname))

    async def rollback(self, ctx: FlowContext) -> None:
        uuid = ctx.get("vm_uuid")
        if uuid is None:
            return

        def remove(session: Session) -> None:
            row = session.get(VmInstanceVO, uuid)
            if row is not None:
                delete_resource(session, row)

        await ctx.services.db.run(remove)


class StartOnHypervisor(Step):
    """``start-on-hypervisor``: define and start the VM on ``host``; skipped for
    ``CreateStopped``. Rolled back by destroying it there."""

    requires = ("vm_uuid", "host", "volumes", "nics")

    def skip(self, ctx: FlowContext) -> bool:
        spec = ctx.get("vm")
        return spec is not None and spec.strategy == CREATE_STOPPED

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        host: HostInfo = ctx["host"]
        persisted = persisted_vm(ctx)
        if persisted is not None:
            to = _make_vm_to(persisted, list(ctx["volumes"]), list(ctx["nics"]),
                             persisted.hostname)
        else:
            to = await node.db.read(_vm_to, node, ctx["vm_uuid"], list(ctx["volumes"]),
                                    list(ctx["nics"]))
        driver = hypervisor_of(node, host.hypervisorType)
        ctx["vm_started_on"] = host
        await on_host(node, host.uuid, lambda: driver.start_vm(node, host, to))

    async def rollback(self, ctx: FlowContext) -> None:
        host: HostInfo | None = ctx.get("vm_started_on")
        if host is None:
            return
        node: Node = ctx.services
        driver = hypervisor_of(node, host.hypervisorType)
        uuid = ctx["vm_uuid"]
        await on_host(node, host.uuid, lambda: driver.destroy_vm(node, host, uuid))


#: What post-instantiate copies from the image when the VM has none of it yet.
_FROM_IMAGE = ("platform", "architecture", "guestOsType")
_FINISH: dict[tuple[bool, bool], Any] = {}


def _finish_statement(with_image: bool, stopped: bool) -> Any:
    """post-instantiate's UPDATE: ``state``; ``rootVolumeUuid`` and (``with_image``) the
    image's platform, architecture and guest OS type where the row has none; a running VM's
    ``lastHostUuid`` becomes its host. Built once per kind."""
    statement = _FINISH.get((with_image, stopped))
    if statement is None:
        c = VM_TABLE.c
        values: dict[str, Any] = {
            "state": bindparam("state"),
            "rootVolumeUuid": func.coalesce(c.rootVolumeUuid, bindparam("rootVolumeUuid"))}
        if with_image:
            values.update({name: func.coalesce(func.nullif(c[name], ""), bindparam(name))
                           for name in _FROM_IMAGE})
        if not stopped:
            values["lastHostUuid"] = c.hostUuid
        statement = _FINISH[(with_image, stopped)] = update(VM_TABLE).where(
            c.uuid == bindparam("vm_uuid")).values(values)
    return statement


class PostInstantiate(Step):
    """``post-instantiate``: the VM ``Running`` (``Stopped`` with its host capacity given
    back for ``CreateStopped``); its root volume, platform and architecture recorded."""

    requires = ("vm_uuid",)

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        spec = ctx.get("vm")
        stopped = spec is not None and spec.strategy == CREATE_STOPPED
        volumes: list[VolumeTO] = list(ctx.get("volumes") or [])
        image = ctx.get("image")

        def finish(session: Session) -> None:
            uuid = ctx["vm_uuid"]
            if stopped:
                release_host(session, uuid)
            values = {"vm_uuid": uuid, "state": "Stopped" if stopped else "Running",
                      "rootVolumeUuid": volumes[0].uuid if volumes else None}
            if image is not None:
                values.update({name: getattr(image, name, None) for name in _FROM_IMAGE})
            # One UPDATE that keeps what the row has: no read first; it goes with the
            # writer's next statement, and then it is checked.
            with sent_together(session):
                write_checked(session, _finish_statement(image is not None, stopped), values,
                              lambda: ZError(RESOURCE_NOT_FOUND, "resource not found",
                                             f"VmInstanceVO {uuid} does not exist (any more)"))

        await node.db.run(finish)


# --------------------------------------------------------------------------- vm-start / stop


class PrepareVmStart(Step):
    """``prepare-vm-start``: the VM ``Starting``; provides an empty ``host_conditions``."""

    requires = ("vm_uuid",)
    provides = ("host_conditions",)

    async def run(self, ctx: FlowContext) -> None:
        await ctx.services.db.run(set_state, ctx["vm_uuid"], "Starting")
        ctx["host_conditions"] = []


class StopOnHypervisor(Step):
    """``stop-on-hypervisor``: stop the VM on its host (``stop_type`` grace or cold).

    A VM whose host is not ``Connected`` cannot be asked; a cold stop then goes on (the
    host's VM state sync marks what it finds when it is back), a graceful one fails.
    """

    requires = ("vm_uuid", "stop_type")

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        row, host = await node.db.run(_vm_and_host, ctx["vm_uuid"])
        if host is None:
            return
        if host.status != CONNECTED:
            if ctx["stop_type"] == "cold":
                return
            raise ZError("VM.1002", "cannot stop VM",
                         f"VM '{row.name}' ({row.uuid}) runs on {host}, which is "
                         f"{host.status}; reconnect the host or stop with type=cold")
        driver = hypervisor_of(node, host.hypervisorType)
        uuid, kind = row.uuid, ctx["stop_type"]
        await on_host(node, host.uuid, lambda: driver.stop_vm(node, host, uuid, type=kind))


# --------------------------------------------------------------------------- destroy etc.


#: The GC job kind that destroys a VM left on a host that was not connected when it was
#: destroyed (event ``host-connected:<host uuid>``, fired when the host connects or is deleted).
DESTROY_LEFT_VM = "compute.destroy-vm-on-host"


async def destroy_left_vm(node: Node, context: dict[str, Any]) -> None:
    """Run a :data:`DESTROY_LEFT_VM` job: destroy the VM on the host once it is back.

    Done without a call when the host was deleted, or when the VM runs on that host again
    (recovered and started there meanwhile); "not yet" while the host is not connected.
    """
    vm_uuid, host_uuid = str(context["vmUuid"]), str(context["hostUuid"])

    def read(session: Session) -> tuple[HostInfo | None, bool]:
        host = session.get(HostVO, host_uuid)
        vm = session.get(VmInstanceVO, vm_uuid)
        return (HostInfo.of(host) if host is not None else None,
                vm is not None and vm.hostUuid == host_uuid)

    host, placed = await node.db.run(read)
    if host is None or placed:
        return
    if host.status != CONNECTED:
        raise ZError("VM.1002", "host not connected",
                     f"VM {vm_uuid} is still to be destroyed on {host}, which is "
                     f"{host.status}")
    driver = hypervisor_of(node, host.hypervisorType)
    await on_host(node, host.uuid, lambda: driver.destroy_vm(node, host, vm_uuid))
    log.info("VM %s, destroyed while %s was away, is now destroyed there too", vm_uuid, host)


class DestroyOnHypervisor(Step):
    """``destroy-on-hypervisor``: power the VM off and undefine it on its host.

    A VM that holds no host has nothing there. When its host is not ``Connected`` the
    destruction completes from the user's view: a GC job (:data:`DESTROY_LEFT_VM`) destroys
    it on the host when the host is back (or forgets it when the host is deleted); rolling
    back deletes the job.
    """

    requires = ("vm_uuid",)
    #: The uuid of the GC job submitted, when there is one.
    provides = ("vm_destroy_gc_job",)

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        ctx["vm_destroy_gc_job"] = None
        row, host = await node.db.run(_vm_and_host, ctx["vm_uuid"])
        if host is None:
            return
        if host.status != CONNECTED:
            uuid, host_uuid = row.uuid, host.uuid

            def submit(session: Session) -> str:
                return node.gc.submit(session, DESTROY_LEFT_VM, f"destroy-vm-{uuid}",
                                      {"vmUuid": uuid, "hostUuid": host_uuid},
                                      trigger=host_event(host_uuid))

            ctx["vm_destroy_gc_job"] = await node.db.run(submit)
            log.warning("VM %s: its host %s is %s; it will be destroyed there when the host "
                        "is back", uuid, host, host.status)
            return
        driver = hypervisor_of(node, host.hypervisorType)
        uuid = row.uuid
        await on_host(node, host.uuid, lambda: driver.destroy_vm(node, host, uuid))

    async def rollback(self, ctx: FlowContext) -> None:
        job = ctx.get("vm_destroy_gc_job")
        if job is not None:
            await ctx.services.gc.delete_job(job)


class MarkVmDestroyed(Step):
    """``mark-vm-destroyed``: the VM ``Destroyed``, holding no host."""

    requires = ("vm_uuid",)

    async def run(self, ctx: FlowContext) -> None:
        def mark(session: Session) -> None:
            row = get_vm_row(session, ctx["vm_uuid"])
            if row.hostUuid is not None:
                release_host(session, row.uuid)
            row.state = "Destroyed"

        await ctx.services.db.run(mark)


class MarkVmRecovered(Step):
    """``mark-vm-recovered``: the destroyed VM ``Stopped`` again."""

    requires = ("vm_uuid",)

    async def run(self, ctx: FlowContext) -> None:
        await ctx.services.db.run(set_state, ctx["vm_uuid"], "Stopped")


class ExpungeVm(Step):
    """``expunge-vm``: the VM's row, its resource row and its tags deleted."""

    requires = ("vm_uuid",)

    async def run(self, ctx: FlowContext) -> None:
        def remove(session: Session) -> None:
            row = session.get(VmInstanceVO, ctx["vm_uuid"])
            if row is not None:
                delete_resource(session, row)

        await ctx.services.db.run(remove)


# --------------------------------------------------------------------------- host-connect


#: VM states a host's report may overwrite; transient states belong to a running operation.
_SYNCED = ("Running", "Paused", "Unknown")


def _apply_vm_states(session: Session, host_uuid: str, reported: dict[str, str]
                     ) -> tuple[list[str], list[str]]:
    """Make the VMs of ``host_uuid`` say what the host reported; (changed, unknown)."""
    changed: list[str] = []
    rows = session.scalars(select(VmInstanceVO).where(VmInstanceVO.hostUuid == host_uuid,
                                                      VmInstanceVO.state.in_(_SYNCED)))
    known = set()
    for row in rows:
        known.add(row.uuid)
        state = reported.get(row.uuid, "Stopped")
        if state not in ("Running", "Paused"):
            state = "Stopped"
        if state == row.state:
            continue
        changed.append(f"{row.uuid}: {row.state} -> {state}")
        if state == "Stopped":
            release_host(session, row.uuid)
        row.state = state
    others = [u for u in reported if u not in known]
    if others:
        held = set(session.scalars(select(VmInstanceVO.uuid).where(
            VmInstanceVO.uuid.in_(others), VmInstanceVO.hostUuid == host_uuid)))
        others = [u for u in others if u not in held]
    return changed, others


def _apply_vm_state(session: Session, host_uuid: str, vm_uuid: str, state: str
                    ) -> str | None:
    vm = session.get(VmInstanceVO, vm_uuid)
    if vm is None or vm.hostUuid != host_uuid or vm.state not in _SYNCED \
            or vm.state == state:
        return None
    before = vm.state
    if state == "Stopped":
        release_host(session, vm_uuid)
    vm.state = state
    return before


async def record_vm_state(node: Node, host_uuid: str, vm_uuid: str, state: str) -> None:
    """A host says VM ``vm_uuid`` is now ``state`` (``Running``, ``Paused`` or ``Stopped``).

    Recorded after any operation on the VM (its queue), only while the VM is on that host in
    a state a host's report may change (``Running``, ``Paused``, ``Unknown``): a VM being
    started or stopped is left to that operation. ``Stopped`` gives its CPU and memory back.
    """
    async def record() -> None:
        before = await node.db.run(_apply_vm_state, host_uuid, vm_uuid, state)
        if before is not None:
            log.info("host %s reports VM %s %s (was %s)", host_uuid, vm_uuid, state, before)

    await vm_queue(node, vm_uuid, record)


class SyncVmStates(Step):
    """``sync-vm-states`` (host-connect, after connect-host): what the hypervisor reports
    wins. A VM the node thinks runs there but the host does not is ``Stopped`` (capacity
    back); a VM the node does not place there is reported in the log."""

    requires = ("host",)

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        host: HostInfo = ctx["host"]
        try:
            driver = hypervisor_of(node, host.hypervisorType)
            reported = await driver.vm_states(node, host)
        except NotImplementedError:
            return
        except Exception as exc:  # noqa: BLE001 - the host stays usable; states stay as they were
            log.warning("%s: reading its VM states failed, they are left as they were: %s",
                        host, exc)
            return
        changed, unknown = await node.db.run(_apply_vm_states, host.uuid, dict(reported))
        for line in changed:
            log.info("%s reports VM %s", host, line)
        for uuid in unknown:
            log.warning("%s runs VM %s (%s), which this cloud does not place on it", host,
                        uuid, reported[uuid])


# --------------------------------------------------------------------------- the hooks


def flow_steps() -> Iterator[FlowStep]:
    yield FlowStep("persist-vm", PersistVm())
    yield FlowStep("start-on-hypervisor", StartOnHypervisor())
    yield FlowStep("post-instantiate", PostInstantiate())
    yield FlowStep("prepare-vm-start", PrepareVmStart())
    yield FlowStep("stop-on-hypervisor", StopOnHypervisor())
    yield FlowStep("destroy-on-hypervisor", DestroyOnHypervisor())
    yield FlowStep("mark-vm-destroyed", MarkVmDestroyed())
    yield FlowStep("mark-vm-recovered", MarkVmRecovered())
    yield FlowStep("expunge-vm", ExpungeVm())
    yield FlowStep("sync-vm-states", SyncVmStates())


def gc_job_kinds() -> Iterator[GcJobKind]:
    yield GcJobKind(DESTROY_LEFT_VM, destroy_left_vm,
                    "destroy a VM on the host it was left on when that host was disconnected")


def flow_insertions() -> Iterator[FlowInsertion]:
    yield FlowInsertion(HOST_CONNECT_CHAIN, "sync-vm-states", after="connect-host")


