"""What the plugins that build a VM hand each other: the request and the parts' descriptions.

The chain ``vm-create`` (``flows/vm-create.yaml``) is assembled from steps of the compute,
storage and network plugins. They share the chain's context, whose keys are documented in
that file; the values are these frozen dataclasses, so that every plugin reads the same
shape. The hypervisor drivers receive a :class:`VmTO` built from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CREATE_STOPPED", "INSTANT_START", "NicTO", "VmSpec", "VmTO", "VolumeTO"]

INSTANT_START = "InstantStart"
CREATE_STOPPED = "CreateStopped"


@dataclass(frozen=True, slots=True)
class VmSpec:
    """A VM as ``CreateVmInstance`` asked for it, checked and with its sizes resolved.

    ``cpuNum``/``memorySize`` come from the instance offering when one was given.
    ``l3NetworkUuids`` keep the caller's order (NIC device ids follow it);
    ``staticIps`` maps an L3 network uuid to the address asked with ``staticIp::`` tags.
    ``rootDiskSize`` is the root disk offering's size (``None``: the image's size);
    ``dataDiskSizes`` holds ``(disk offering uuid or None, size)`` per data disk.
    ``zoneUuid``/``clusterUuid``/``hostUuid`` pin the VM; ``avoidHostUuids`` are never chosen.
    ``uuidIsNew``: the node made ``uuid`` for this call (the caller gave no
    ``resourceUuid``), so no resource can have it and ``persist-vm`` does not look it up.
    """

    uuid: str
    name: str
    accountUuid: str | None
    cpuNum: int
    memorySize: int
    imageUuid: str
    l3NetworkUuids: tuple[str, ...]
    defaultL3NetworkUuid: str | None = None
    description: str | None = None
    cpuSpeed: int = 0
    instanceOfferingUuid: str | None = None
    rootDiskOfferingUuid: str | None = None
    rootDiskSize: int | None = None
    dataDiskSizes: tuple[tuple[str | None, int], ...] = ()
    zoneUuid: str | None = None
    clusterUuid: str | None = None
    hostUuid: str | None = None
    primaryStorageUuidForRootVolume: str | None = None
    avoidHostUuids: tuple[str, ...] = ()
    strategy: str = INSTANT_START
    allocatorStrategy: str | None = None
    hostname: str | None = None
    staticIps: dict[str, str] = field(default_factory=dict)
    type: str = "UserVm"
    uuidIsNew: bool = False


@dataclass(frozen=True, slots=True)
class VolumeTO:
    """A volume as a hypervisor sees it: where its bytes are and how it is plugged in."""

    uuid: str
    type: str                      # Root | Data
    deviceId: int
    size: int
    primaryStorageUuid: str | None
    installPath: str | None = None
    format: str | None = "qcow2"
    primaryStorageType: str | None = None
    shareable: bool = False


@dataclass(frozen=True, slots=True)
class NicTO:
    """A NIC as a hypervisor sees it: its MAC, address and the bridge it plugs into."""

    uuid: str
    l3NetworkUuid: str
    mac: str
    deviceId: int
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    bridgeName: str | None = None
    internalName: str | None = None
    isDefault: bool = False


@dataclass(frozen=True, slots=True)
class VmTO:
    """Everything a hypervisor needs to define and start a VM."""

    uuid: str
    name: str
    cpuNum: int
    memorySize: int
    rootVolume: VolumeTO
    dataVolumes: tuple[VolumeTO, ...] = ()
    nics: tuple[NicTO, ...] = ()
    cpuSpeed: int = 0
    platform: str | None = None
    architecture: str | None = None
    hostname: str | None = None
    bootDev: str = "hd"
    extra: dict[str, Any] = field(default_factory=dict)
