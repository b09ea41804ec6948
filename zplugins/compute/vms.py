"""VMs: ZStack's VM APIs on the workflow chains ``flows/vm-*.yaml``.

Resource ``VmInstanceVO`` (``org.zstack.header.vm.VmInstanceInventory``); the storage and
network plugins add ``allVolumes`` and ``vmNics`` to its inventory, ``vmCdRoms`` is always
empty (there are no CD-ROMs yet). System tag ``hostname::{hostname}`` names the guest.

APIs: CreateVmInstance, StartVmInstance, StopVmInstance, RebootVmInstance, PauseVmInstance,
ResumeVmInstance, DestroyVmInstance, RecoverVmInstance, ExpungeVmInstance, UpdateVmInstance,
GetVmConsoleAddress, QueryVmInstance. Every operation runs in the VM's queue ``vm-<uuid>``:
it checks the VM's state (:mod:`zplugins.compute.vm_states`, ``VM.1000``), sets the
transient state, runs its chain and sets the final state; if the chain fails the VM gets
its previous state back and the error is the chain's.

Deletion (global configuration, category ``vm``): ``deletionPolicy`` ``Direct`` expunges a
VM as soon as it is destroyed; ``Delay`` (default) keeps it ``Destroyed`` (recoverable) until
it is older than ``expungePeriod`` seconds (86400), when the expunge task, every
``expungeInterval`` seconds (60), expunges it; ``Never`` keeps it until ExpungeVmInstance.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, column, select, table
from sqlalchemy.orm import Session

from zcore import ApiMessage, CascadeEdge, GlobalConfigOption, ResourceType, SystemTagPattern
from zcore.api import NAME_REGEX, ApiContext, APIMessage, Caller, Param, QueryMessage
from zcore.db import ResourceVO, is_uuid, new_uuid, utcnow
from zcore.errors import INVALID_ARGUMENT, RESOURCE_NOT_FOUND, ZError
from zplugins.compute.common import get_row, refuse_tag_uuids
from zplugins.compute.models import ClusterVO, HostVO, VmInstanceVO
from zplugins.compute.offerings import MIN_MEMORY_SIZE, InstanceOfferingVO
from zplugins.compute.vm_contract import CREATE_STOPPED, INSTANT_START, VmSpec
from zplugins.compute.vm_service import hypervisor_of, on_host, vm_queue
from zplugins.compute.vm_states import check
from zplugins.compute.vm_steps import HOSTNAME_PATTERN, get_vm_row, read_vm_row, set_state

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "APIS",
    "CreateVmInstance",
    "DestroyVmInstance",
    "ExpungeVmInstance",
    "GetVmConsoleAddress",
    "PauseVmInstance",
    "QueryVmInstance",
    "RebootVmInstance",
    "RecoverVmInstance",
    "ResumeVmInstance",
    "StartVmInstance",
    "StopVmInstance",
    "UpdateVmInstance",
    "expunge_old_vms",
    "vm_inventory",
]

log = logging.getLogger("zplugins.compute.vms")

VM = "VmInstanceVO"
INVENTORY = {"inventory": "VmInstanceInventory"}

#: Global configuration of VM deletion.
CATEGORY = "vm"
DELETION_POLICY = "deletionPolicy"
EXPUNGE_PERIOD = "expungePeriod"
EXPUNGE_INTERVAL = "expungeInterval"
DELETION_POLICIES = ("Direct", "Delay", "Never")

_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
                       r"(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
_STATIC_IP = re.compile(r"^staticIp::([^:]+)::(.+)$")

_DISK_OFFERINGS = table("DiskOfferingVO", column("uuid"), column("name"), column("diskSize"),
                        column("state"))
_DISK_SIZES = select(_DISK_OFFERINGS.c.uuid, _DISK_OFFERINGS.c.name,
                     _DISK_OFFERINGS.c.diskSize, _DISK_OFFERINGS.c.state).where(
    _DISK_OFFERINGS.c.uuid.in_(bindparam("uuids", expanding=True)))
_OFFERING = select(InstanceOfferingVO.uuid, InstanceOfferingVO.name, InstanceOfferingVO.state,
                   InstanceOfferingVO.cpuNum, InstanceOfferingVO.memorySize,
                   InstanceOfferingVO.allocatorStrategy, InstanceOfferingVO.cpuSpeed).where(
    InstanceOfferingVO.uuid == bindparam("uuid"))
_NICS = table("VmNicVO", column("vmInstanceUuid"), column("l3NetworkUuid"))


def vm_inventory(row: VmInstanceVO) -> dict[str, Any]:
    """The fields of ZStack's VmInstanceInventory; volumes and NICs come from extensions."""
    return {"uuid": row.uuid, "name": row.name, "description": row.description,
            "zoneUuid": row.zoneUuid, "clusterUuid": row.clusterUuid,
            "imageUuid": row.imageUuid, "hostUuid": row.hostUuid,
            "lastHostUuid": row.lastHostUuid, "instanceOfferingUuid": row.instanceOfferingUuid,
            "rootVolumeUuid": row.rootVolumeUuid, "platform": row.platform,
            "architecture": row.architecture, "guestOsType": row.guestOsType,
            "defaultL3NetworkUuid": row.defaultL3NetworkUuid, "type": row.type,
            "hypervisorType": row.hypervisorType, "memorySize": row.memorySize,
            "reservedMemorySize": row.reservedMemorySize, "cpuNum": row.cpuNum,
            "cpuSpeed": row.cpuSpeed, "allocatorStrategy": row.allocatorStrategy,
            "createDate": row.createDate, "lastOpDate": row.lastOpDate, "state": row.state,
            "vmNics": [], "allVolumes": [], "vmCdRoms": []}


def _bad(api: str, name: str, why: str) -> ZError:
    return ZError(INVALID_ARGUMENT, "invalid argument", f"parameter '{name}' of {api}: {why}")


async def _reply(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    def read(session: Session) -> Any:
        return ctx.node.api.inventories(session, VM, [read_vm_row(session, uuid)])[0]

    return {"inventory": await ctx.node.db.read(read)}


def _begin(session: Session, uuid: str, operation: str, transient: str | None) -> str:
    row = get_vm_row(session, uuid)
    check(operation, row.state, uuid)
    previous = row.state
    if transient is not None:
        row.state = transient
    return previous


async def _operate(ctx: ApiContext, uuid: str, operation: str, transient: str | None,
                   work: Callable[[str], Awaitable[Any]], final: str | None) -> None:
    """In the VM's queue: check, go ``transient``, ``await work(previous)``, go ``final``;
    on failure the previous state is restored and the error raised."""
    async def run() -> None:
        previous = await ctx.run(_begin, uuid, operation, transient)
        try:
            await work(previous)
        except BaseException:
            if transient is not None:
                await asyncio.shield(ctx.run(set_state, uuid, previous))
            raise
        if final is not None:
            await ctx.run(set_state, uuid, final)

    await vm_queue(ctx.node, uuid, run)


async def _call_host(ctx: ApiContext, uuid: str, what: str,
                     call: Callable[..., Awaitable[Any]]) -> Any:
    """``call(driver, node, host)`` on the VM's host, among that host's hypervisor calls."""
    node = ctx.node

    def read(session: Session) -> tuple[VmInstanceVO, HostVO | None]:
        row = get_vm_row(session, uuid)
        return row, session.get(HostVO, row.hostUuid) if row.hostUuid else None

    row, host_row = await ctx.run(read)
    if host_row is None:
        raise ZError("VM.1002", f"cannot {what} VM",
                     f"VM '{row.name}' ({uuid}) is on no host")
    from zplugins.compute.host_service import CONNECTED, HostInfo

    host = HostInfo.of(host_row)
    if host.status != CONNECTED:
        raise ZError("VM.1002", f"cannot {what} VM",
                     f"VM '{row.name}' ({uuid}) runs on {host}, which is {host.status}; "
                     "reconnect the host (ReconnectHost) first")
    driver = hypervisor_of(node, host.hypervisorType)
    return await on_host(node, host.uuid, lambda: call(driver, node, host))


# --------------------------------------------------------------------------- CreateVmInstance


def _disk_sizes(session: Session, api: str, name: str, uuids: list[str]) -> dict[str, int]:
    if not uuids:
        return {}
    rows = session.connection().execute(_DISK_SIZES, {"uuids": uuids}).all()
    sizes = {}
    for uuid, offering_name, size, state in rows:
        if state != "Enabled":
            raise _bad(api, name, f"disk offering '{offering_name}' ({uuid}) is {state}; "
                                  "enable it (ChangeDiskOfferingState) or pick another")
        sizes[uuid] = int(size)
    return sizes


class CreateVmInstance(APIMessage, method="POST", path="/vm-instances", resource_type=VM,
                       result=INVENTORY):
    """Create a VM (chain ``vm-create``) from an image, on one or more L3 networks.

    Sizes come from ``instanceOfferingUuid`` or from ``cpuNum`` and ``memorySize``. With
    ``strategy`` ``InstantStart`` (default) it is started and answers ``Running``; with
    ``CreateStopped`` everything is made but it answers ``Stopped``, holding no host.
    ``zoneUuid``/``clusterUuid``/``hostUuid`` pin where it goes. System tags:
    ``hostname::<name>`` and ``staticIp::<l3 uuid>::<ip>``.
    """

    name = Param(str, required=True, max_length=255, valid_regex=NAME_REGEX)
    description = Param(str, max_length=2048)
    instanceOfferingUuid = Param(str, resource_type="InstanceOfferingVO")
    cpuNum = Param(int, number_range=(1, 1024))
    memorySize = Param(int, api_type="Long", number_range=(MIN_MEMORY_SIZE, 2**63 - 1))
    reservedMemorySize = Param(int, api_type="Long", number_range=(0, 2**63 - 1))
    imageUuid = Param(str, resource_type="ImageVO")
    l3NetworkUuids = Param(list, resource_type="L3NetworkVO")
    type = Param(str, valid_values=("UserVm", "ApplianceVm"))
    rootDiskOfferingUuid = Param(str, resource_type="DiskOfferingVO")
    rootDiskSize = Param(int, api_type="Long", number_range=(1, 2**63 - 1))
    dataDiskSizes = Param(list)
    dataDiskOfferingUuids = Param(list, resource_type="DiskOfferingVO")
    zoneUuid = Param(str, resource_type="ZoneVO")
    clusterUuid = Param(str, resource_type="ClusterVO")
    hostUuid = Param(str, resource_type="HostVO")
    primaryStorageUuidForRootVolume = Param(str, resource_type="PrimaryStorageVO")
    defaultL3NetworkUuid = Param(str, resource_type="L3NetworkVO")
    strategy = Param(str, default=INSTANT_START,
                     valid_values=(INSTANT_START, "JustCreate", CREATE_STOPPED))
    platform = Param(str, valid_values=("Linux", "Windows", "Other", "Paravirtualization",
                                        "WindowsVirtio"))
    guestOsType = Param(str, max_length=255)
    architecture = Param(str, max_length=64)
    resourceUuid = Param(str, description="The uuid the new VM gets (32 lower-case hex "
                                          "digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")
    vmNicParams = Param(list, description="Not supported yet: give l3NetworkUuids and "
                                          "staticIp:: system tags")
    rootVolumeSystemTags = Param(list, description="Not supported yet")
    dataVolumeSystemTags = Param(list, description="Not supported yet")
    dataVolumeSystemTagsOnIndex = Param(dict, api_type="Map", description="Not supported yet")
    sshKeyPairUuids = Param(list, description="Not supported yet")
    virtio = Param(bool)
    diskAOs = Param(list, description="Not supported yet: give rootDiskOfferingUuid and "
                                      "dataDiskOfferingUuids")

    #: The request as validate() checked it, for handle().
    _checked: VmSpec | None = None

    async def validate(self, ctx: ApiContext) -> None:
        # Checked once: handle() uses what validate() read.
        self._checked = await self.spec(ctx, self.resourceUuid or new_uuid())

    async def spec(self, ctx: ApiContext, uuid: str | None = None) -> VmSpec:
        """The checked request (``SYS.1007`` naming the parameter when it is not right)."""
        api = self.api_name
        refuse_tag_uuids(api, self.tagUuids)
        if self.vmNicParams:
            raise _bad(api, "vmNicParams", "NIC parameters are not supported yet; give "
                                           "l3NetworkUuids, and staticIp::<l3 uuid>::<ip> "
                                           "system tags for fixed addresses")
        for unsupported in ("rootVolumeSystemTags", "dataVolumeSystemTags",
                            "dataVolumeSystemTagsOnIndex", "sshKeyPairUuids", "diskAOs"):
            if getattr(self, unsupported):
                raise _bad(api, unsupported, "this parameter is not supported yet; leave it "
                                             "out")
        if self.strategy == "JustCreate":
            raise _bad(api, "strategy", "JustCreate is not supported; use InstantStart or "
                                        "CreateStopped")
        if self.type == "ApplianceVm":
            raise _bad(api, "type", "appliance VMs are created by their network services, "
                                    "not by this API; use UserVm")
        if self.imageUuid is None:
            raise _bad(api, "imageUuid", "is required: the image the root volume is made of")
        l3s: list[str] = list(self.l3NetworkUuids or [])
        if not l3s:
            raise _bad(api, "l3NetworkUuids", "give at least one L3 network")
        if len(set(l3s)) != len(l3s):
            raise _bad(api, "l3NetworkUuids", f"{l3s} names an L3 network twice; a VM has "
                                              "one NIC per L3 network")
        default_l3 = self.defaultL3NetworkUuid or l3s[0]
        if default_l3 not in l3s:
            raise _bad(api, "defaultL3NetworkUuid", f"{default_l3} is not one of "
                                                    f"l3NetworkUuids {l3s}")
        if self.instanceOfferingUuid is None and (self.cpuNum is None or
                                                  self.memorySize is None):
            raise _bad(api, "instanceOfferingUuid", "give an instance offering, or both "
                                                    "cpuNum and memorySize")
        if self.instanceOfferingUuid is not None and (self.cpuNum is not None or
                                                      self.memorySize is not None):
            raise _bad(api, "cpuNum", "give either instanceOfferingUuid or cpuNum and "
                                      "memorySize, not both")
        sizes = [self._size(s) for s in self.dataDiskSizes or []]
        hostname, static_ips = self._tags(ctx.system_tags, l3s)
        if self.resourceUuid is not None and not is_uuid(self.resourceUuid):
            raise _bad(api, "resourceUuid", f"{self.resourceUuid!r} is not 32 lower-case hex "
                                            "digits")

        def look(session: Session) -> VmSpec:
            cpu, memory, offering_strategy, speed = self.cpuNum, self.memorySize, None, 0
            if self.instanceOfferingUuid is not None:
                offering = session.connection().execute(
                    _OFFERING, {"uuid": self.instanceOfferingUuid}).first()
                if offering is None:
                    raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                                 f"InstanceOfferingVO {self.instanceOfferingUuid} does not "
                                 "exist (any more)")
                if offering.state != "Enabled":
                    raise _bad(api, "instanceOfferingUuid",
                               f"instance offering '{offering.name}' ({offering.uuid}) is "
                               f"{offering.state}; enable it or pick another")
                cpu, memory = offering.cpuNum, offering.memorySize
                offering_strategy, speed = offering.allocatorStrategy, offering.cpuSpeed
            wanted = [u for u in [self.rootDiskOfferingUuid, *(self.dataDiskOfferingUuids
                                                                or [])] if u]
            disk = _disk_sizes(session, api, "dataDiskOfferingUuids", wanted)
            root_size = self.rootDiskSize
            if self.rootDiskOfferingUuid is not None and root_size is None:
                root_size = disk[self.rootDiskOfferingUuid]
            data = tuple((u, disk[u]) for u in self.dataDiskOfferingUuids or []) + \
                tuple((None, s) for s in sizes)
            self._check_pins(session)
            taken = None if self.resourceUuid is None else \
                session.get(ResourceVO, self.resourceUuid)
            if taken is not None:
                raise _bad(api, "resourceUuid", f"{self.resourceUuid} is already the uuid "
                                                "of a resource; pick another")
            assert cpu is not None and memory is not None
            return VmSpec(uuid=uuid or self.resourceUuid or "0" * 32, name=self.name,
                          accountUuid=ctx.owner, cpuNum=cpu, memorySize=memory,
                          imageUuid=self.imageUuid, l3NetworkUuids=tuple(l3s),
                          defaultL3NetworkUuid=default_l3, description=self.description,
                          cpuSpeed=speed or 0,
                          instanceOfferingUuid=self.instanceOfferingUuid,
                          rootDiskOfferingUuid=self.rootDiskOfferingUuid,
                          rootDiskSize=root_size, dataDiskSizes=data,
                          zoneUuid=self.zoneUuid, clusterUuid=self.clusterUuid,
                          hostUuid=self.hostUuid,
                          primaryStorageUuidForRootVolume=self.primaryStorageUuidForRootVolume,
                          strategy=self.strategy or INSTANT_START,
                          allocatorStrategy=offering_strategy, hostname=hostname,
                          staticIps=static_ips,
                          uuidIsNew=uuid is not None and self.resourceUuid is None)

        return await ctx.node.db.read(look)

    def _size(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or \
                not str(value).isdigit() or int(value) < 1:
            raise _bad(self.api_name, "dataDiskSizes", f"{value!r} is not a size in bytes")
        return int(value)

    def _tags(self, tags: list[str], l3s: list[str]) -> tuple[str | None, dict[str, str]]:
        api, hostname, static_ips = self.api_name, None, {}
        for tag in tags:
            if isinstance(tag, str) and tag.startswith("hostname::"):
                if hostname is not None:
                    raise _bad(api, "systemTags", "two hostname:: tags are given; a VM has "
                                                  "one host name")
                hostname = tag[len("hostname::"):]
                if not _HOSTNAME.match(hostname):
                    raise _bad(api, "systemTags", f"hostname {hostname!r} is not a valid host "
                                                  "name (letters, digits, '-', dots)")
            found = _STATIC_IP.match(tag) if isinstance(tag, str) else None
            if found is not None:
                l3, ip = found.groups()
                if l3 not in l3s:
                    raise _bad(api, "systemTags", f"{tag!r} names L3 network {l3}, which is "
                                                  f"not one of l3NetworkUuids {l3s}")
                if l3 in static_ips:
                    raise _bad(api, "systemTags", f"two static IPs are asked on L3 network "
                                                  f"{l3}; a VM has one NIC per L3 network")
                static_ips[l3] = ip
        return hostname, static_ips

    def _check_pins(self, session: Session) -> None:
        api = self.api_name
        if self.hostUuid is not None:
            host = get_row(session, HostVO, "HostVO", self.hostUuid)
            if self.clusterUuid is not None and host.clusterUuid != self.clusterUuid:
                raise _bad(api, "hostUuid", f"host '{host.name}' ({host.uuid}) is not in "
                                            f"cluster {self.clusterUuid}")
            if self.zoneUuid is not None and host.zoneUuid != self.zoneUuid:
                raise _bad(api, "hostUuid", f"host '{host.name}' ({host.uuid}) is not in "
                                            f"zone {self.zoneUuid}")
        if self.clusterUuid is not None and self.zoneUuid is not None:
            cluster = get_row(session, ClusterVO, "ClusterVO", self.clusterUuid)
            if cluster.zoneUuid != self.zoneUuid:
                raise _bad(api, "clusterUuid", f"cluster '{cluster.name}' ({cluster.uuid}) is "
                                               f"not in zone {self.zoneUuid}")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        spec = self._checked or await self.spec(
            ctx, self.resourceUuid or new_uuid())
        uuid = spec.uuid

        async def create() -> None:
            await ctx.node.run_flow("vm-create", {"api": ctx, "vm": spec})

        await vm_queue(ctx.node, uuid, create)
        return await _reply(ctx, uuid)


# --------------------------------------------------------------------------- operations


class _VmAction(APIMessage):
    uuid = Param(str, required=True, resource_type=VM)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        kwargs.setdefault("method", "PUT")
        kwargs.setdefault("path", "/vm-instances/{uuid}/actions")
        kwargs.setdefault("resource_type", VM)
        kwargs.setdefault("result", INVENTORY)
        super().__init_subclass__(**kwargs)


class StartVmInstance(_VmAction):
    """Start a stopped VM (chain ``vm-start``): on its last host when it fits, or on the
    given ``hostUuid``/``clusterUuid``."""

    clusterUuid = Param(str, resource_type="ClusterVO")
    hostUuid = Param(str, resource_type="HostVO")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        data: dict[str, Any] = {"api": ctx, "vm_uuid": self.uuid}
        if self.clusterUuid or self.hostUuid:
            def pin(session: Session) -> VmSpec:
                row = get_vm_row(session, self.uuid)
                return VmSpec(uuid=row.uuid, name=row.name, accountUuid=ctx.owner,
                              cpuNum=row.cpuNum, memorySize=row.memorySize,
                              imageUuid=row.imageUuid or "", l3NetworkUuids=(),
                              clusterUuid=self.clusterUuid, hostUuid=self.hostUuid,
                              allocatorStrategy=row.allocatorStrategy)

            data["vm"] = await ctx.run(pin)

        async def start(previous: str) -> None:
            await ctx.node.run_flow("vm-start", data)

        await _operate(ctx, self.uuid, self.api_name, "Starting", start, "Running")
        return await _reply(ctx, self.uuid)


class StopVmInstance(_VmAction):
    """Stop a VM (chain ``vm-stop``): ``grace`` asks the guest, ``cold`` powers it off. Its
    host's CPU and memory are given back. Stopping a stopped VM does nothing."""

    type = Param(str, default="grace", valid_values=("grace", "cold"))
    stopHA = Param(str, valid_values=("true",))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        async def stop(previous: str) -> None:
            if previous != "Stopped":
                await ctx.node.run_flow("vm-stop", {"api": ctx, "vm_uuid": self.uuid,
                                                    "stop_type": self.type or "grace"})

        await _operate(ctx, self.uuid, self.api_name, "Stopping", stop, "Stopped")
        return await _reply(ctx, self.uuid)


class RebootVmInstance(_VmAction):
    """Reboot a running VM on its host."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        async def reboot(previous: str) -> None:
            await _call_host(ctx, self.uuid, "reboot",
                             lambda d, n, h: d.reboot_vm(n, h, self.uuid))

        await _operate(ctx, self.uuid, self.api_name, "Rebooting", reboot, "Running")
        return await _reply(ctx, self.uuid)


class PauseVmInstance(_VmAction):
    """Suspend a running VM in memory; it keeps its host."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        async def pause(previous: str) -> None:
            await _call_host(ctx, self.uuid, "pause",
                             lambda d, n, h: d.pause_vm(n, h, self.uuid))

        await _operate(ctx, self.uuid, self.api_name, "Pausing", pause, "Paused")
        return await _reply(ctx, self.uuid)


class ResumeVmInstance(_VmAction):
    """Resume a paused VM."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        async def resume(previous: str) -> None:
            await _call_host(ctx, self.uuid, "resume",
                             lambda d, n, h: d.resume_vm(n, h, self.uuid))

        await _operate(ctx, self.uuid, self.api_name, "Resuming", resume, "Running")
        return await _reply(ctx, self.uuid)


async def _expunge(node: Node, uuid: str, api: ApiContext | None) -> None:
    data: dict[str, Any] = {"vm_uuid": uuid}
    if api is not None:
        data["api"] = api
    await node.run_flow("vm-expunge", data)


class DestroyVmInstance(APIMessage, method="DELETE", path="/vm-instances/{uuid}",
                        resource_type=VM, result={}):
    """Destroy a VM (chain ``vm-destroy``): off its host, capacity back, root volume
    deleted. With ``vm.deletionPolicy`` ``Direct`` it is expunged at once; otherwise it
    stays ``Destroyed`` and RecoverVmInstance brings it back. A destroyed VM stays so."""

    uuid = Param(str, required=True, resource_type=VM)
    deleteMode = Param(str, default="Permissive", valid_values=("Permissive", "Enforcing"))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        direct = ctx.node.global_config.get(CATEGORY, DELETION_POLICY) == "Direct"
        await destroy_vm(ctx.node, self.uuid, ctx, expunge=direct)
        return {}


async def destroy_vm(node: Node, uuid: str, api: ApiContext | None, *, expunge: bool) -> None:
    """Destroy VM ``uuid`` (chain ``vm-destroy``, unless it is ``Destroyed`` already), then
    expunge it if ``expunge``; in the VM's queue. A failure restores the state it had."""
    async def work() -> None:
        previous = await node.db.run(_begin, uuid, "DestroyVmInstance", None)
        if previous != "Destroyed":
            await node.db.run(set_state, uuid, "Destroying")
            data: dict[str, Any] = {"vm_uuid": uuid}
            if api is not None:
                data["api"] = api
            try:
                await node.run_flow("vm-destroy", data)
            except BaseException:
                await asyncio.shield(node.db.run(set_state, uuid, previous))
                raise
            await node.db.run(set_state, uuid, "Destroyed")
        if expunge:
            await node.db.run(set_state, uuid, "Expunging")
            try:
                await _expunge(node, uuid, api)
            except BaseException:
                await asyncio.shield(node.db.run(set_state, uuid, "Destroyed"))
                raise

    await vm_queue(node, uuid, work)


async def _delete_vm(node: Node, caller: Caller, uuid: str, mode: str) -> None:
    """How the cascade deletes a VM (its cluster or zone is deleted): destroyed and expunged."""
    await destroy_vm(node, uuid, None, expunge=True)


class RecoverVmInstance(_VmAction):
    """Bring a destroyed VM back (chain ``vm-recover``), ``Stopped``."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        async def recover(previous: str) -> None:
            await ctx.node.run_flow("vm-recover", {"api": ctx, "vm_uuid": self.uuid})

        await _operate(ctx, self.uuid, self.api_name, None, recover, "Stopped")
        return await _reply(ctx, self.uuid)


class ExpungeVmInstance(_VmAction, result={}):
    """Delete a destroyed VM for good (chain ``vm-expunge``): root volume, NICs, IPs, row."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        async def expunge(previous: str) -> None:
            await _expunge(ctx.node, self.uuid, ctx)

        await _operate(ctx, self.uuid, self.api_name, "Expunging", expunge, None)
        return {}


class UpdateVmInstance(_VmAction):
    """Change a VM's name, description, platform, guest OS type, default L3 network, or
    (while it is ``Stopped``) its CPUs and memory; only the parameters given.

    ``state`` is ZStack's escape hatch to overwrite the recorded state; it is refused here:
    StartVmInstance and StopVmInstance keep the host capacity right.
    """

    name = Param(str, max_length=255, valid_regex=NAME_REGEX)
    description = Param(str, max_length=2048)
    state = Param(str, valid_values=("Stopped", "Running"))
    defaultL3NetworkUuid = Param(str, resource_type="L3NetworkVO")
    platform = Param(str, valid_values=("Linux", "Windows", "Other", "Paravirtualization",
                                        "WindowsVirtio"))
    cpuNum = Param(int, number_range=(1, 1024))
    memorySize = Param(int, api_type="Long", number_range=(1, 2**63 - 1))
    reservedMemorySize = Param(int, api_type="Long", number_range=(0, 2**63 - 1))
    guestOsType = Param(str, max_length=255)

    async def validate(self, ctx: ApiContext) -> None:
        if self.state is not None:
            raise _bad(self.api_name, "state", "overwriting a VM's state is not supported; "
                                               "use StartVmInstance or StopVmInstance")
        if self.memorySize is not None and self.memorySize < MIN_MEMORY_SIZE:
            raise _bad(self.api_name, "memorySize", f"{self.memorySize} bytes is less than "
                                                    f"the minimum {MIN_MEMORY_SIZE}")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> None:
            row = get_vm_row(session, self.uuid)
            check(self.api_name, row.state, row.uuid)
            if (self.cpuNum is not None or self.memorySize is not None) and \
                    row.state != "Stopped":
                raise ZError("VM.1000", "operation not allowed in the VM's current state",
                             f"VM {row.uuid} is {row.state}; changing cpuNum or memorySize "
                             "needs it Stopped")
            if self.defaultL3NetworkUuid is not None:
                l3s = set(session.scalars(select(_NICS.c.l3NetworkUuid).where(
                    _NICS.c.vmInstanceUuid == row.uuid)))
                if self.defaultL3NetworkUuid not in l3s:
                    raise _bad(self.api_name, "defaultL3NetworkUuid",
                               f"VM {row.uuid} has no NIC on L3 network "
                               f"{self.defaultL3NetworkUuid}; its L3 networks: "
                               f"{sorted(l3s)}")
                row.defaultL3NetworkUuid = self.defaultL3NetworkUuid
            for name in ("name", "description", "platform", "guestOsType", "cpuNum",
                         "memorySize", "reservedMemorySize"):
                value = getattr(self, name)
                if value is not None:
                    setattr(row, name, value)

        async def update() -> None:
            await ctx.run(change)

        await vm_queue(ctx.node, self.uuid, update)
        return await _reply(ctx, self.uuid)


class GetVmConsoleAddress(APIMessage, method="GET",
                          path="/vm-instances/{uuid}/console-addresses", resource_type=VM,
                          result={"hostIp": "String", "path": "String", "port": "int",
                                  "protocol": "String", "vdiPortInfo": "VdiPortInfo"}):
    """Where a running or paused VM's console listens (host IP, port, protocol)."""

    uuid = Param(str, required=True, resource_type=VM)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        row = await ctx.run(get_vm_row, self.uuid)
        check(self.api_name, row.state, row.uuid)
        found = await _call_host(ctx, self.uuid, "read the console address of",
                                 lambda d, n, h: d.console_address(n, h, self.uuid))
        return {"hostIp": found.get("hostIp"), "port": found.get("port"),
                "protocol": found.get("protocol"), "path": found.get("path"),
                "vdiPortInfo": found.get("vdiPortInfo")}


class QueryVmInstance(QueryMessage, path="/vm-instances", resource=VM):
    """Query VMs."""


APIS: tuple[type[APIMessage], ...] = (
    CreateVmInstance, StartVmInstance, StopVmInstance, RebootVmInstance, PauseVmInstance,
    ResumeVmInstance, DestroyVmInstance, RecoverVmInstance, ExpungeVmInstance,
    UpdateVmInstance, GetVmConsoleAddress, QueryVmInstance)


# --------------------------------------------------------------------------- expunge task


def _old_destroyed(session: Session, period: int) -> list[str]:
    before = utcnow() - timedelta(seconds=period)
    return list(session.scalars(select(VmInstanceVO.uuid).where(
        VmInstanceVO.state == "Destroyed", VmInstanceVO.lastOpDate < before)))


async def expunge_old_vms(node: Node) -> list[str]:
    """Expunge the VMs ``Destroyed`` longer than ``vm.expungePeriod`` (policy ``Delay``
    only); the uuids expunged. A failure is logged and the VM stays ``Destroyed``."""
    if node.global_config.get(CATEGORY, DELETION_POLICY) != "Delay":
        return []
    period = int(node.global_config.get(CATEGORY, EXPUNGE_PERIOD))
    done = []
    for uuid in await node.db.run(_old_destroyed, period):
        async def expunge(uuid: str = uuid) -> bool:
            def begin(session: Session) -> bool:
                row = session.get(VmInstanceVO, uuid)
                if row is None or row.state != "Destroyed":
                    return False  # recovered or expunged meanwhile
                row.state = "Expunging"
                return True

            if not await node.db.run(begin):
                return False
            try:
                await _expunge(node, uuid, None)
            except BaseException:
                await asyncio.shield(node.db.run(set_state, uuid, "Destroyed"))
                raise
            return True

        try:
            if await vm_queue(node, uuid, expunge):
                done.append(uuid)
        except ZError as exc:
            log.warning("expunging destroyed VM %s failed; it stays Destroyed: %s", uuid, exc)
    if done:
        log.info("expunged %d VM(s) destroyed more than %d s ago", len(done), period)
    return done


async def _expunge_loop(node: Node) -> None:
    while True:
        await asyncio.sleep(float(node.global_config.get(CATEGORY, EXPUNGE_INTERVAL)))
        try:
            await expunge_old_vms(node)
        except Exception:
            log.exception("the VM expunge task failed")


# --------------------------------------------------------------------------- the hooks


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(VM, model=VmInstanceVO,
                       inventory="org.zstack.header.vm.VmInstanceInventory",
                       description="A virtual machine", to_inventory=vm_inventory,
                       columns_only=True,
                       delete=_delete_vm)


def vm_cascade_edges() -> Iterator[CascadeEdge]:
    """Deleting a cluster or a zone destroys and expunges its VMs (deleting a host leaves its
    VMs Stopped on no host: see hosts.py). The plugin declares these before the hosts' edge,
    so that a cluster's VMs are destroyed on its hosts before the hosts go."""
    yield CascadeEdge(VM, "ClusterVO", field="clusterUuid")
    yield CascadeEdge(VM, "ZoneVO", field="zoneUuid")


def api_messages() -> Iterator[ApiMessage]:
    from zplugins.compute.vm_service import VM_PLUGINS

    for message in APIS:
        yield ApiMessage(message, plugins=VM_PLUGINS)


def system_tag_patterns() -> Iterator[SystemTagPattern]:
    yield SystemTagPattern(HOSTNAME_PATTERN, VM, "The guest's host name")


def global_configs() -> Iterator[GlobalConfigOption]:
    yield GlobalConfigOption(CATEGORY, DELETION_POLICY, str, "Delay",
                             "What DestroyVmInstance does: Direct expunges at once, Delay "
                             "keeps the VM recoverable for vm.expungePeriod seconds, Never "
                             "keeps it until ExpungeVmInstance", choices=DELETION_POLICIES)
    yield GlobalConfigOption(CATEGORY, EXPUNGE_PERIOD, int, 86400,
                             "Seconds a destroyed VM stays recoverable (policy Delay)",
                             min=1, max=2**31 - 1)
    yield GlobalConfigOption(CATEGORY, EXPUNGE_INTERVAL, int, 60,
                             "Seconds between two runs of the task that expunges old "
                             "destroyed VMs", min=1, max=86400)


async def node_starting(node: Node) -> None:
    node.spawn(_expunge_loop(node), name=f"vm-expunge-{node.uuid}")
