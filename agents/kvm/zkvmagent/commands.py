"""ZStack's KVM agent commands: the typed bodies the node sends and the agent reads.

Every command and reply is a :class:`msgspec.Struct` named and spelled as in ZStack's
``KVMAgentCommands`` (``StartVmCmd`` to ``/vm/start``, ...), so both sides of the wire share
one schema: the node builds commands (``zplugins.kvm.commands`` turns its VM descriptions
into them) and posts :func:`body` of each; the agent decodes a request with
``msgspec.json.decode(body, type=StartVmCmd)``. Unknown fields are ignored, as ZStack's agent
ignores them; a missing required field or a wrong type is a malformed command.

Every reply carries ``success`` and ``error`` (:class:`AgentReply`). The sections below follow
the agent's paths: the host, VMs, bridges, then primary storage (the same commands under
:data:`LOCAL_STORAGE_PATH` and :data:`NFS_PRIMARY_STORAGE_PATH`).
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "ATTACH_NIC_PATH",
    "ATTACH_VOLUME_PATH",
    "CAPACITY_PATH",
    "CONNECT_PATH",
    "CREATE_EMPTY_VOLUME_PATH",
    "CREATE_NO_VLAN_BRIDGE_PATH",
    "CREATE_TEMPLATE_PATH",
    "CREATE_VLAN_BRIDGE_PATH",
    "CREATE_VOLUME_FROM_CACHE_PATH",
    "DELETE_BITS_PATH",
    "DESTROY_VM_PATH",
    "DETACH_NIC_PATH",
    "DETACH_VOLUME_PATH",
    "DOWNLOAD_TO_IMAGE_CACHE_PATH",
    "DUMP_VM_XML_PATH",
    "ECHO_PATH",
    "FACT_PATH",
    "GET_VNC_PORT_PATH",
    "LOCAL_STORAGE_INIT_PATH",
    "LOCAL_STORAGE_PATH",
    "MIGRATE_VM_PATH",
    "NFS_MOUNT_PATH",
    "NFS_PING_PATH",
    "NFS_PRIMARY_STORAGE_PATH",
    "NFS_UNMOUNT_PATH",
    "PAUSE_VM_PATH",
    "PING_PATH",
    "REBOOT_VM_PATH",
    "REPORT_VM_STATE_PATH",
    "RESUME_VM_PATH",
    "REVERT_SNAPSHOT_PATH",
    "START_VM_PATH",
    "STOP_VM_PATH",
    "TAKE_SNAPSHOT_PATH",
    "VERSION_PATH",
    "VM_STATES",
    "VM_SYNC_PATH",
    "AgentCommand",
    "AgentNic",
    "AgentReply",
    "AgentVolume",
    "AttachDataVolumeCmd",
    "AttachNicCmd",
    "CapacityRsp",
    "ConnectCmd",
    "ConnectRsp",
    "CreateBridgeCmd",
    "CreateEmptyVolumeCmd",
    "CreateTemplateFromVolumeCmd",
    "CreateVlanBridgeCmd",
    "CreateVolumeFromCacheCmd",
    "DeleteBitsCmd",
    "DestroyVmCmd",
    "DetachDataVolumeCmd",
    "DetachNicCmd",
    "DownloadToImageCacheCmd",
    "DumpVmXmlCmd",
    "DumpVmXmlRsp",
    "EmptyCmd",
    "GetVncPortCmd",
    "GetVncPortRsp",
    "HostCapacityCmd",
    "HostCapacityRsp",
    "HostFactCmd",
    "HostFactRsp",
    "InstallPathRsp",
    "LocalStorageInitCmd",
    "MigrateVmCmd",
    "NfsPrimaryStorageCmd",
    "PauseVmCmd",
    "PingCmd",
    "PingRsp",
    "RebootVmCmd",
    "ReportVmStateCmd",
    "ResumeVmCmd",
    "RevertSnapshotCmd",
    "RevertSnapshotRsp",
    "StartVmCmd",
    "StopVmCmd",
    "TakeSnapshotCmd",
    "TakeSnapshotRsp",
    "TemplateRsp",
    "VersionRsp",
    "VmSyncCmd",
    "VmSyncRsp",
    "body",
]

# --------------------------------------------------------------------------- paths

ECHO_PATH = "/host/echo"
VERSION_PATH = "/host/version"
CONNECT_PATH = "/host/connect"
PING_PATH = "/host/ping"
FACT_PATH = "/host/fact"
CAPACITY_PATH = "/host/capacity"

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
#: The libvirt definition of a VM, as the agent's connection holds it (for inspection).
DUMP_VM_XML_PATH = "/vm/dumpxml"

CREATE_NO_VLAN_BRIDGE_PATH = "/network/l2novlan/createbridge"
CREATE_VLAN_BRIDGE_PATH = "/network/l2vlan/createbridge"

#: The prefixes of the primary storage commands: the volume commands below exist under both.
LOCAL_STORAGE_PATH = "/localstorage"
NFS_PRIMARY_STORAGE_PATH = "/nfsprimarystorage"
LOCAL_STORAGE_INIT_PATH = "/localstorage/init"
NFS_MOUNT_PATH = "/nfsprimarystorage/mount"
NFS_UNMOUNT_PATH = "/nfsprimarystorage/unmount"
NFS_PING_PATH = "/nfsprimarystorage/ping"
DOWNLOAD_TO_IMAGE_CACHE_PATH = "/imagecache/download"
CREATE_VOLUME_FROM_CACHE_PATH = "/volume/createvolumefromcache"
CREATE_EMPTY_VOLUME_PATH = "/volume/createempty"
DELETE_BITS_PATH = "/delete"
TAKE_SNAPSHOT_PATH = "/snapshot/take"
REVERT_SNAPSHOT_PATH = "/snapshot/revert"
CREATE_TEMPLATE_PATH = "/volume/createtemplate/upload"

#: The node's path for VM state changes, posted to ``sendCommandUrl`` in the
#: ``commandpath`` header.
REPORT_VM_STATE_PATH = "/kvm/reportvmstate"

#: The VM states the agent reports (``/vm/vmsync`` and ``/kvm/reportvmstate``).
VM_STATES = ("Running", "Paused", "Shutdown", "Crashed")


# --------------------------------------------------------------------------- bases


class AgentCommand(msgspec.Struct, kw_only=True):
    """The base of the commands and their parts: keyword-only; decoding ignores unknown
    fields."""


class AgentReply(AgentCommand):
    """The base of every reply: ``success``, and ``error`` saying why when it is false."""

    success: bool = True
    error: str | None = None


class EmptyCmd(AgentCommand):
    """A command without fields (``/host/echo``, ``/host/version``)."""


class VersionRsp(AgentReply):
    """The reply of ``/host/version``: the agent's ``zkvmagent.__version__``."""

    version: str = ""


# --------------------------------------------------------------------------- host


class ConnectCmd(AgentCommand):
    """``/host/connect``: this node manages the host; post events to ``sendCommandUrl``."""

    hostUuid: str
    sendCommandUrl: str


class ConnectRsp(AgentReply):
    """The reply of ``/host/connect``."""

    libvirtVersion: str | None = None
    qemuVersion: str | None = None


class PingCmd(AgentCommand):
    """``/host/ping``."""

    hostUuid: str | None = None


class PingRsp(AgentReply):
    """The reply of ``/host/ping``: the host uuid the agent was connected with."""

    hostUuid: str | None = None
    version: str | None = None


class HostFactCmd(AgentCommand):
    """``/host/fact``: the operating system and hardware of the host."""


class HostFactRsp(AgentReply):
    """The reply of ``/host/fact``."""

    osDistribution: str | None = None
    osVersion: str | None = None
    osRelease: str | None = None
    cpuArchitecture: str | None = None
    cpuModelName: str | None = None
    hostname: str | None = None
    libvirtVersion: str | None = None
    qemuImgVersion: str | None = None
    hvmCpuFlag: str | None = None


class HostCapacityCmd(AgentCommand):
    """``/host/capacity``."""


class HostCapacityRsp(AgentReply):
    """The reply of ``/host/capacity`` (from libvirt's node info; memory in bytes)."""

    cpuNum: int = 0
    cpuSockets: int = 0
    cpuSpeed: int = 0
    totalMemory: int = 0
    usedCpu: int = 0
    usedMemory: int = 0


class ReportVmStateCmd(AgentCommand):
    """What the agent posts to the node (:data:`REPORT_VM_STATE_PATH`) when libvirt reports
    that a VM's state changed; ``vmState`` is one of :data:`VM_STATES`."""

    hostUuid: str | None
    vmUuid: str
    vmState: str


# --------------------------------------------------------------------------- VMs


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


class VmSyncRsp(AgentReply):
    """The reply of ``/vm/vmsync``: one of :data:`VM_STATES` by VM uuid."""

    states: dict[str, str] = msgspec.field(default_factory=dict)


class GetVncPortCmd(AgentCommand):
    """``/vm/getvncport``."""

    vmUuid: str


class GetVncPortRsp(AgentReply):
    """The reply of ``/vm/getvncport``."""

    port: int = 0
    protocol: str = "vnc"


class DumpVmXmlCmd(AgentCommand):
    """``/vm/dumpxml``: the VM's libvirt domain as the agent's connection holds it."""

    vmUuid: str


class DumpVmXmlRsp(AgentReply):
    """The reply of ``/vm/dumpxml``: ``xml`` is the running domain's description, and
    ``definition`` the persistent one (they differ after a change that applies at the next
    start); ``state`` is one of :data:`VM_STATES`."""

    xml: str = ""
    definition: str = ""
    state: str = ""


# --------------------------------------------------------------------------- bridges


class CreateBridgeCmd(AgentCommand):
    """``/network/l2novlan/createbridge``: a bridge ``bridgeName`` on the physical interface."""

    physicalInterfaceName: str
    bridgeName: str
    l2NetworkUuid: str | None = None


class CreateVlanBridgeCmd(CreateBridgeCmd, kw_only=True):
    """``/network/l2vlan/createbridge``: a bridge on the interface's ``vlan`` subinterface
    (``eth0.100``)."""

    vlan: int


# --------------------------------------------------------------------------- storage


class CapacityRsp(AgentReply):
    """A storage reply with the capacity (bytes) of the file system holding its directory."""

    totalCapacity: int = 0
    availableCapacity: int = 0


class LocalStorageInitCmd(AgentCommand):
    """``/localstorage/init``: create the storage's directory on the host."""

    path: str
    hostUuid: str | None = None
    uuid: str | None = None
    initFilePath: str | None = None


class NfsPrimaryStorageCmd(AgentCommand):
    """``/nfsprimarystorage/mount``, ``/unmount`` and ``/ping``: the export ``url``
    (``server:/path``) at ``mountPath``."""

    uuid: str
    url: str
    mountPath: str
    options: str | None = None


class DownloadToImageCacheCmd(AgentCommand):
    """``{storage}/imagecache/download``: copy an image from backup storage into the cache."""

    primaryStorageInstallPath: str
    backupStorageInstallPath: str
    imageUuid: str | None = None
    primaryStorageUuid: str | None = None
    backupStorageUuid: str | None = None


class InstallPathRsp(AgentReply):
    """A reply naming the file a command made."""

    installPath: str | None = None


class CreateVolumeFromCacheCmd(AgentCommand):
    """``{storage}/volume/createvolumefromcache``: a qcow2 overlay of the cached image,
    ``virtualSize`` bytes large (at least the image's size)."""

    templatePathInCache: str
    installUrl: str
    virtualSize: int = 0
    volumeUuid: str | None = None
    primaryStorageUuid: str | None = None


class CreateEmptyVolumeCmd(AgentCommand):
    """``{storage}/volume/createempty``: an empty qcow2 volume of ``size`` bytes."""

    installUrl: str
    size: int
    volumeUuid: str | None = None
    primaryStorageUuid: str | None = None


class DeleteBitsCmd(AgentCommand):
    """``{storage}/delete``: remove a volume's, a snapshot's or a cached image's file."""

    path: str
    primaryStorageUuid: str | None = None


class TakeSnapshotCmd(AgentCommand):
    """``{storage}/snapshot/take``: freeze the volume's content at ``installPath``."""

    volumeInstallPath: str
    installPath: str
    volumeUuid: str | None = None
    primaryStorageUuid: str | None = None


class TakeSnapshotRsp(AgentReply):
    """The reply of ``/snapshot/take``: the snapshot's file and its size in bytes."""

    snapshotInstallPath: str | None = None
    size: int = 0


class RevertSnapshotCmd(AgentCommand):
    """``{storage}/snapshot/revert``: make the volume what it was at the snapshot."""

    snapshotInstallPath: str
    volumeInstallPath: str
    primaryStorageUuid: str | None = None


class RevertSnapshotRsp(AgentReply):
    """The reply of ``/snapshot/revert``."""

    newVolumeInstallPath: str | None = None
    size: int = 0


class CreateTemplateFromVolumeCmd(AgentCommand):
    """``{storage}/volume/createtemplate/upload``: copy the volume (flattened) to backup
    storage at ``backupStorageInstallPath``."""

    volumePath: str
    backupStorageInstallPath: str
    imageUuid: str | None = None
    primaryStorageUuid: str | None = None
    backupStorageUuid: str | None = None


class TemplateRsp(AgentReply):
    """The reply of ``/volume/createtemplate/upload``."""

    backupStorageInstallPath: str | None = None
    size: int = 0


def body(cmd: AgentCommand) -> dict[str, Any]:
    """The JSON object posted for ``cmd``."""
    data: dict[str, Any] = msgspec.to_builtins(cmd)
    return data
