"""The VM commands: libvirt domains defined, started, stopped and changed.

As ZStack's agent does, a stopped VM is undefined: the host keeps domains of running (and
paused) VMs only, and ``/vm/start`` defines the domain again from the command. Devices are
attached with ``attachDeviceFlags`` (live and persistent); a driver that cannot (libvirt's
test driver) gets the domain redefined, same uuid, with the device added or removed (the
change is in the persistent definition).
"""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

import libvirt

from zkvmagent.commands import (
    ATTACH_NIC_PATH,
    ATTACH_VOLUME_PATH,
    DESTROY_VM_PATH,
    DETACH_NIC_PATH,
    DETACH_VOLUME_PATH,
    DUMP_VM_XML_PATH,
    GET_VNC_PORT_PATH,
    MIGRATE_VM_PATH,
    PAUSE_VM_PATH,
    REBOOT_VM_PATH,
    RESUME_VM_PATH,
    START_VM_PATH,
    STOP_VM_PATH,
    VM_SYNC_PATH,
    AgentReply,
    AgentVolume,
    AttachDataVolumeCmd,
    AttachNicCmd,
    DestroyVmCmd,
    DetachDataVolumeCmd,
    DetachNicCmd,
    DumpVmXmlCmd,
    DumpVmXmlRsp,
    GetVncPortCmd,
    GetVncPortRsp,
    MigrateVmCmd,
    PauseVmCmd,
    RebootVmCmd,
    ResumeVmCmd,
    StartVmCmd,
    StopVmCmd,
    VmSyncCmd,
    VmSyncRsp,
)
from zkvmagent.domain import (
    DomainXmlError,
    add_device,
    disk_element,
    domain_xml,
    find_disk,
    find_nic,
    graphics_ports,
    nic_element,
    remove_device,
    tostring,
)
from zkvmagent.server import AgentError, Route
from zkvmagent.system import SystemFailure
from zkvmagent.virt import DOMAIN_STATES, vm_uuid

if TYPE_CHECKING:
    from zkvmagent.server import Agent

__all__ = ["FIRST_VNC_PORT", "routes"]

log = logging.getLogger(__name__)

#: Where consoles start; the test driver allocates no port, so the agent picks one from here.
FIRST_VNC_PORT = 5900
#: Seconds between two looks at a domain's state while waiting for it.
POLL = 0.2

#: libvirt errors meaning "this driver cannot do that" (attach falls back to redefining).
_UNSUPPORTED = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED}


def _lookup(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN,
                                    libvirt.VIR_ERR_INVALID_ARG):
            return None
        raise


def _require(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain:
    dom = _lookup(conn, uuid)
    if dom is None:
        raise AgentError(f"VM {uuid} is not on this host (libvirt knows no domain of that "
                         "uuid)")
    return dom


def _state(dom: libvirt.virDomain) -> str:
    return DOMAIN_STATES.get(dom.state()[0], "Shutdown")


def _undefine(dom: libvirt.virDomain) -> None:
    try:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in _UNSUPPORTED | {libvirt.VIR_ERR_INVALID_ARG,
                                                        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}:
            raise
        dom.undefine()


def _destroy_and_undefine(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()
    if dom.isPersistent():
        _undefine(dom)


def _source(agent: Agent, volume: AgentVolume) -> str:
    if not volume.installPath:
        raise AgentError(f"volume {volume.volumeUuid} has no install path")
    path = volume.installPath.removeprefix("file://")
    return str(agent.system.path(path)) if volume.deviceType == "file" else path


async def _wait_inactive(agent: Agent, uuid: str, timeout: float) -> bool:
    """Whether domain ``uuid`` stops running (or vanishes) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout

    def active(conn: libvirt.virConnect) -> bool:
        dom = _lookup(conn, uuid)
        return dom is not None and bool(dom.isActive())

    while await agent.virt.call(active):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL)
    return True


# --------------------------------------------------------------------------- lifecycle


async def start(agent: Agent, cmd: StartVmCmd) -> AgentReply:
    uuid = cmd.vmInstanceUuid
    try:
        sources = {id(v): _source(agent, v) for v in [cmd.rootVolume, *cmd.dataVolumes]}
    except SystemFailure as exc:
        raise AgentError(f"VM {uuid}: {exc}") from exc

    def run(conn: libvirt.virConnect) -> None:
        dom = _lookup(conn, uuid)
        if dom is not None and dom.isActive():
            log.info("VM %s is already running", uuid)
            return
        test = agent.virt.is_test_driver
        vnc_port = _free_vnc_port(conn) if test else None
        # Without /dev/kvm (a nested host) QEMU emulates: libvirt offers no kvm domains.
        kind = "kvm" if test or "type='kvm'" in conn.getCapabilities() else "qemu"
        try:
            xml = domain_xml(cmd, source=lambda v: sources[id(v)], arch=conn.getInfo()[0],
                             vnc_port=vnc_port, domain_type=kind)
        except DomainXmlError as exc:
            raise AgentError(str(exc)) from exc
        dom = conn.defineXML(xml)
        try:
            dom.create()
        except libvirt.libvirtError:
            _undefine(dom)
            raise

    await agent.virt.call(run)
    log.info("started VM %s (%s)", cmd.vmName, uuid)
    return AgentReply()


def _free_vnc_port(conn: libvirt.virConnect) -> int:
    used = {port for dom in conn.listAllDomains(0)
            for _kind, port in graphics_ports(dom.XMLDesc(0))}
    port = FIRST_VNC_PORT
    while port in used:
        port += 1
    return port


async def stop(agent: Agent, cmd: StopVmCmd) -> AgentReply:
    uuid = cmd.uuid
    if cmd.type not in ("grace", "cold"):
        raise AgentError(f"VM {uuid}: stop type {cmd.type!r} is neither 'grace' nor 'cold'")

    if cmd.type == "grace":
        def shutdown(conn: libvirt.virConnect) -> bool:
            dom = _lookup(conn, uuid)
            if dom is None or not dom.isActive():
                return False
            try:
                dom.shutdown()
            except libvirt.libvirtError as exc:
                log.warning("VM %s refused to shut down (%s); destroying it", uuid, exc)
            return True

        if await agent.virt.call(shutdown) and \
                not await _wait_inactive(agent, uuid, max(cmd.timeout, 0)):
            log.warning("VM %s did not shut down within %d s; destroying it", uuid,
                        cmd.timeout)

    def finish(conn: libvirt.virConnect) -> None:
        dom = _lookup(conn, uuid)
        if dom is not None:
            _destroy_and_undefine(dom)

    await agent.virt.call(finish)
    log.info("stopped VM %s (%s)", uuid, cmd.type)
    return AgentReply()


async def destroy(agent: Agent, cmd: DestroyVmCmd) -> AgentReply:
    def run(conn: libvirt.virConnect) -> None:
        dom = _lookup(conn, cmd.uuid)
        if dom is not None:
            _destroy_and_undefine(dom)

    await agent.virt.call(run)
    return AgentReply()


async def reboot(agent: Agent, cmd: RebootVmCmd) -> AgentReply:
    def run(conn: libvirt.virConnect) -> None:
        dom = _require(conn, cmd.uuid)
        if not dom.isActive():
            raise AgentError(f"VM {cmd.uuid} is not running ({_state(dom)}); cannot reboot")
        dom.reboot(0)

    await agent.virt.call(run)
    return AgentReply()


async def pause(agent: Agent, cmd: PauseVmCmd) -> AgentReply:
    def run(conn: libvirt.virConnect) -> None:
        dom = _require(conn, cmd.uuid)
        state = _state(dom)
        if state == "Paused":
            return
        if state != "Running":
            raise AgentError(f"VM {cmd.uuid} is {state}; only a running VM can be paused")
        dom.suspend()

    await agent.virt.call(run)
    return AgentReply()


async def resume(agent: Agent, cmd: ResumeVmCmd) -> AgentReply:
    def run(conn: libvirt.virConnect) -> None:
        dom = _require(conn, cmd.uuid)
        state = _state(dom)
        if state == "Running":
            return
        if state != "Paused":
            raise AgentError(f"VM {cmd.uuid} is {state}; only a paused VM can be resumed")
        dom.resume()

    await agent.virt.call(run)
    return AgentReply()


async def vmsync(agent: Agent, cmd: VmSyncCmd) -> VmSyncRsp:
    def run(conn: libvirt.virConnect) -> dict[str, str]:
        return {vm_uuid(dom): _state(dom) for dom in conn.listAllDomains(0)}

    return VmSyncRsp(states=await agent.virt.call(run))


async def get_vnc_port(agent: Agent, cmd: GetVncPortCmd) -> GetVncPortRsp:
    def run(conn: libvirt.virConnect) -> list[tuple[str, int]]:
        dom = _require(conn, cmd.vmUuid)
        if not dom.isActive():
            raise AgentError(f"VM {cmd.vmUuid} is not running; it has no console")
        return graphics_ports(dom.XMLDesc(0))

    consoles = [(kind, port) for kind, port in await agent.virt.call(run) if port > 0]
    if not consoles:
        raise AgentError(f"VM {cmd.vmUuid} has no console port allocated")
    kind, port = consoles[0]
    return GetVncPortRsp(port=port, protocol=kind)


async def dump_xml(agent: Agent, cmd: DumpVmXmlCmd) -> DumpVmXmlRsp:
    def run(conn: libvirt.virConnect) -> DumpVmXmlRsp:
        dom = _require(conn, cmd.vmUuid)
        definition = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if dom.isPersistent() \
            else dom.XMLDesc(0)
        return DumpVmXmlRsp(xml=dom.XMLDesc(0), definition=definition, state=_state(dom))

    return await agent.virt.call(run)


async def migrate(agent: Agent, cmd: MigrateVmCmd) -> AgentReply:
    uuid = cmd.vmUuid
    if agent.virt.is_test_driver:
        raise AgentError(f"VM {uuid} cannot migrate to {cmd.destHostIp}: libvirt's test "
                         f"driver ({agent.virt.uri}) has no live migration")
    await agent.virt.call(lambda conn: _require(conn, uuid))
    dest = f"qemu+tcp://{cmd.destHostIp}/system"
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
             | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    if cmd.autoConverge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if cmd.storageMigrationPolicy:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK

    def run(conn: libvirt.virConnect) -> None:
        conn.lookupByUUIDString(uuid).migrateToURI3(dest, {}, flags)

    # A migration takes minutes: it runs in a thread of its own, not the connection's.
    try:
        await asyncio.wait_for(agent.virt.call_long(run), cmd.timeout)
    except TimeoutError:
        def abort(conn: libvirt.virConnect) -> None:
            conn.lookupByUUIDString(uuid).abortJob()

        await agent.virt.call(abort)
        raise AgentError(f"VM {uuid} did not migrate to {dest} within {cmd.timeout} s; "
                         "the migration was aborted") from None
    return AgentReply()


# --------------------------------------------------------------------------- devices


def _change(conn: libvirt.virConnect, uuid: str, device: ET.Element, *, attach: bool) -> None:
    """Attach (or detach) ``device``: live and persistent through libvirt, or by redefining
    the domain where the driver cannot."""
    dom = _require(conn, uuid)
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    text = tostring(device)
    try:
        if attach:
            dom.attachDeviceFlags(text, flags)
        else:
            dom.detachDeviceFlags(text, flags)
        return
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in _UNSUPPORTED:
            raise
        log.info("libvirt at %s cannot %s devices (%s); redefining domain %s", conn.getURI(),
                 "attach" if attach else "detach", exc.get_error_message(), uuid)
    definition = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    changed = add_device(definition, device) if attach else remove_device(definition, device)
    conn.defineXML(changed)


def _definition(dom: libvirt.virDomain) -> str:
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if dom.isPersistent() \
        else dom.XMLDesc(0)


async def attach_volume(agent: Agent, cmd: AttachDataVolumeCmd) -> AgentReply:
    uuid, volume = cmd.vmInstanceUuid, cmd.volume
    source = _source(agent, volume)
    try:
        disk = disk_element(volume, source)
    except DomainXmlError as exc:
        raise AgentError(f"VM {uuid}: {exc}") from exc

    def run(conn: libvirt.virConnect) -> None:
        dom = _require(conn, uuid)
        xml = _definition(dom)
        if find_disk(xml, volume.volumeUuid, source) is not None:
            return
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        for other in ET.fromstring(xml).iterfind("devices/disk/target"):
            if other.get("dev") == dev:
                raise AgentError(f"VM {uuid} already has a disk {dev} (device id "
                                 f"{volume.deviceId}); volume {volume.volumeUuid} needs it")
        _change(conn, uuid, disk, attach=True)

    await agent.virt.call(run)
    log.info("attached volume %s to VM %s", volume.volumeUuid, uuid)
    return AgentReply()


async def detach_volume(agent: Agent, cmd: DetachDataVolumeCmd) -> AgentReply:
    uuid, volume = cmd.vmInstanceUuid, cmd.volume
    source = _source(agent, volume) if volume.installPath else None

    def run(conn: libvirt.virConnect) -> None:
        dom = _lookup(conn, uuid)
        if dom is None:
            return
        disk = find_disk(_definition(dom), volume.volumeUuid, source)
        if disk is not None:
            _change(conn, uuid, disk, attach=False)

    await agent.virt.call(run)
    log.info("detached volume %s from VM %s", volume.volumeUuid, uuid)
    return AgentReply()


async def attach_nic(agent: Agent, cmd: AttachNicCmd) -> AgentReply:
    try:
        interface = nic_element(cmd.nic)
    except DomainXmlError as exc:
        raise AgentError(f"VM {cmd.vmUuid}: {exc}") from exc

    def run(conn: libvirt.virConnect) -> None:
        dom = _require(conn, cmd.vmUuid)
        if find_nic(_definition(dom), cmd.nic.mac) is None:
            _change(conn, cmd.vmUuid, interface, attach=True)

    await agent.virt.call(run)
    return AgentReply()


async def detach_nic(agent: Agent, cmd: DetachNicCmd) -> AgentReply:
    def run(conn: libvirt.virConnect) -> None:
        dom = _lookup(conn, cmd.vmUuid)
        if dom is None:
            return
        interface = find_nic(_definition(dom), cmd.nic.mac)
        if interface is not None:
            _change(conn, cmd.vmUuid, interface, attach=False)

    await agent.virt.call(run)
    return AgentReply()


def routes() -> list[Route]:
    handlers: list[tuple[str, type[Any], Any]] = [
        (START_VM_PATH, StartVmCmd, start),
        (STOP_VM_PATH, StopVmCmd, stop),
        (REBOOT_VM_PATH, RebootVmCmd, reboot),
        (PAUSE_VM_PATH, PauseVmCmd, pause),
        (RESUME_VM_PATH, ResumeVmCmd, resume),
        (DESTROY_VM_PATH, DestroyVmCmd, destroy),
        (MIGRATE_VM_PATH, MigrateVmCmd, migrate),
        (ATTACH_VOLUME_PATH, AttachDataVolumeCmd, attach_volume),
        (DETACH_VOLUME_PATH, DetachDataVolumeCmd, detach_volume),
        (ATTACH_NIC_PATH, AttachNicCmd, attach_nic),
        (DETACH_NIC_PATH, DetachNicCmd, detach_nic),
        (VM_SYNC_PATH, VmSyncCmd, vmsync),
        (GET_VNC_PORT_PATH, GetVncPortCmd, get_vnc_port),
        (DUMP_VM_XML_PATH, DumpVmXmlCmd, dump_xml),
    ]
    return [Route(path, command, handler) for path, command, handler in handlers]
