"""ZStack's KVM agent commands for VMs: the typed bodies the driver sends and the agent reads.

Each command is a :class:`msgspec.Struct` named and spelled as in ZStack's
``KVMAgentCommands`` (``StartVmCmd`` to ``/vm/start``, ...), so that both sides of the wire
share one schema: :class:`zplugins.kvm.hypervisor.KvmHypervisor` builds them from the compute
plugin's :class:`~zplugins.compute.public.VmTO` with :func:`start_vm_cmd`, :func:`volume_to`
and :func:`nic_to`, and a KVM agent decodes a request with
``msgspec.json.decode(body, type=StartVmCmd)`` (unknown fields are ignored, as ZStack's
agent ignores them). :func:`body` turns a command into the JSON object that is posted.

Replies are plain JSON objects with ``success`` and ``error``; :class:`VmSyncRsp` and
:class:`GetVncPortRsp` describe the two that carry more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from zplugins.compute.public import NicTO, VmTO, VolumeTO

__all__ = [
    "ATTACH_NIC_PATH",
    "ATTACH_VOLUME_PATH",
    "DESTROY_VM_PATH",
    "DETACH_NIC_PATH",
    "DETACH_VOLUME_PATH",
    "GET_VNC_PORT_PATH",
    "MIGRATE_VM_PATH",
    "PAUSE_VM_PATH",
    "REBOOT_VM_PATH",
    "RESUME_VM_PATH",
    "START_VM_PATH",
    "STOP_VM_PATH",
    "VM_SYNC_PATH",
    "AgentCommand",
    "AgentNic",
    "AgentVolume",
    "AttachDataVolumeCmd",
    "AttachNicCmd",
    "DestroyVmCmd",
    "DetachDataVolumeCmd",
    "DetachNicCmd",
    "GetVncPortCmd",
    "GetVncPortRsp",
    "MigrateVmCmd",
    "PauseVmCmd",
    "RebootVmCmd",
    "ResumeVmCmd",
    "StartVmCmd",
    "StopVmCmd",
    "VmSyncCmd",
    "VmSyncRsp",
    "body",
    "nic_to",
    "start_vm_cmd",
    "volume_to",
]

START_VM_PATH = "/vm/start"
STOP_VM_PATH = "/vm/stop"
REBOOT_VM_PATH = "/vm/reboot"
PAUSE_VM_PATH = "/vm/pause"
RESUME_VM_PATH = "/vm/resume"
DESTROY_VM_PATH = "/vm/destroy"
MIGRATE_VM_PATH = "/vm/migrate"
ATTACH_VOLUME_PATH = "/vm/attachdatavolume"
DETACH_VOLUME_PATH = "/vm/detachdatavolume"
ATTACH_NIC_PATH = "/vm/attachnic"
DETACH_NIC_PATH = "/vm/detachnic"
VM_SYNC_PATH = "/vm/vmsync"
GET_VNC_PORT_PATH = "/vm/getvncport"


class AgentCommand(msgspec.Struct, kw_only=True):
    """The base of the commands and their parts: keyword-only; decoding ignores unknown
    fields."""


class AgentVolume(AgentCommand):
    """ZStack's ``VolumeTO`` of the KVM agent: a disk of the VM."""

    volumeUuid: str
    installPath: str | None
    deviceId: int
    format: str | None = "qcow2"
    deviceType: str = "file"
    useVirtio: bool = True
    shareable: bool = False
    cacheMode: str = "none"


class AgentNic(AgentCommand):
    """ZStack's ``NicTO`` of the KVM agent: a NIC of the VM and the bridge it plugs into."""

    uuid: str
    mac: str
    deviceId: int
    bridgeName: str | None = None
    nicInternalName: str | None = None
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    l3NetworkUuid: str | None = None
    isDefaultRoute: bool = False
    useVirtio: bool = True


class StartVmCmd(AgentCommand):
    """``/vm/start``: define the VM (if it is not) and start it."""

    vmInstanceUuid: str
    vmName: str
    cpuNum: int
    memory: int
    rootVolume: AgentVolume
    cpuSpeed: int = 0
    dataVolumes: list[AgentVolume] = msgspec.field(default_factory=list)
    nics: list[AgentNic] = msgspec.field(default_factory=list)
    bootDev: list[str] = msgspec.field(default_factory=lambda: ["hd"])
    consoleMode: str = "vnc"
    consolePassword: str | None = None
    hostname: str | None = None
    timeout: int = 300


class StopVmCmd(AgentCommand):
    """``/vm/stop``: ``grace`` shuts the guest down (destroyed after ``timeout``), ``cold``
    destroys it at once."""

    uuid: str
    type: str = "grace"
    timeout: int = 60


class RebootVmCmd(AgentCommand):
    """``/vm/reboot``."""

    uuid: str
    timeout: int = 300


class PauseVmCmd(AgentCommand):
    """``/vm/pause``."""

    uuid: str
    timeout: int = 300


class ResumeVmCmd(AgentCommand):
    """``/vm/resume``."""

    uuid: str
    timeout: int = 300


class DestroyVmCmd(AgentCommand):
    """``/vm/destroy``: power off and undefine; an unknown VM is not an error."""

    uuid: str


class MigrateVmCmd(AgentCommand):
    """``/vm/migrate``: live-migrate the VM to ``destHostIp`` (the source sends it)."""

    vmUuid: str
    destHostIp: str
    srcHostIp: str | None = None
    migrateFromDestination: bool = False
    storageMigrationPolicy: str | None = None
    autoConverge: bool = False
    timeout: int = 1800


class AttachDataVolumeCmd(AgentCommand):
    """``/vm/attachdatavolume``."""

    vmInstanceUuid: str
    volume: AgentVolume


class DetachDataVolumeCmd(AgentCommand):
    """``/vm/detachdatavolume``."""

    vmInstanceUuid: str
    volume: AgentVolume


class AttachNicCmd(AgentCommand):
    """``/vm/attachnic``."""

    vmUuid: str
    nic: AgentNic


class DetachNicCmd(AgentCommand):
    """``/vm/detachnic``."""

    vmUuid: str
    nic: AgentNic


class VmSyncCmd(AgentCommand):
    """``/vm/vmsync``: which VMs does the host run?"""


class VmSyncRsp(AgentCommand):
    """The reply of ``/vm/vmsync``: ``Running``, ``Paused``, ``Shutdown`` or ``Crashed`` by
    VM uuid."""

    states: dict[str, str] = msgspec.field(default_factory=dict)
    success: bool = True
    error: str | None = None


class GetVncPortCmd(AgentCommand):
    """``/vm/getvncport``."""

    vmUuid: str


class GetVncPortRsp(AgentCommand):
    """The reply of ``/vm/getvncport``."""

    port: int
    protocol: str = "vnc"
    success: bool = True
    error: str | None = None


def body(cmd: AgentCommand) -> dict[str, Any]:
    """The JSON object posted for ``cmd``."""
    data: dict[str, Any] = msgspec.to_builtins(cmd)
    return data


def volume_to(volume: VolumeTO) -> AgentVolume:
    """The agent's description of a volume of the VM."""
    return AgentVolume(volumeUuid=volume.uuid, installPath=volume.installPath,
                       deviceId=volume.deviceId, format=volume.format,
                       shareable=volume.shareable)


def nic_to(nic: NicTO) -> AgentNic:
    """The agent's description of a NIC of the VM."""
    return AgentNic(uuid=nic.uuid, mac=nic.mac, deviceId=nic.deviceId,
                    bridgeName=nic.bridgeName, nicInternalName=nic.internalName, ip=nic.ip,
                    netmask=nic.netmask, gateway=nic.gateway, l3NetworkUuid=nic.l3NetworkUuid,
                    isDefaultRoute=nic.isDefault)


def start_vm_cmd(vm: VmTO, *, timeout: int = 300) -> StartVmCmd:
    """``StartVmCmd`` for ``vm``."""
    return StartVmCmd(vmInstanceUuid=vm.uuid, vmName=vm.name, cpuNum=vm.cpuNum,
                      cpuSpeed=vm.cpuSpeed, memory=vm.memorySize,
                      rootVolume=volume_to(vm.rootVolume),
                      dataVolumes=[volume_to(v) for v in vm.dataVolumes],
                      nics=[nic_to(n) for n in vm.nics], bootDev=[vm.bootDev],
                      hostname=vm.hostname, timeout=timeout)
