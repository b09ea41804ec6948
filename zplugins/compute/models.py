"""Zones, clusters and hosts, as ZStack's ZoneInventory, ClusterInventory and HostInventory."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from zcore.db import Base, ResourceMixin

__all__ = ["ClusterVO", "HostVO", "ZoneVO"]


class ZoneVO(ResourceMixin, Base):
    """A zone: the top of the resource tree. At most one zone is the default one."""

    __tablename__ = "ZoneVO"
    __table_args__ = (Index("ix_ZoneVO_name", "name"),)

    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    type: Mapped[str] = mapped_column(String(64), default="zstack")
    isDefault: Mapped[bool] = mapped_column(Boolean(), default=False)


class ClusterVO(ResourceMixin, Base):
    """A cluster of hosts of one hypervisor type, in a zone."""

    __tablename__ = "ClusterVO"
    __table_args__ = (Index("ix_ClusterVO_name", "name"),)

    # No ON DELETE: a zone cannot vanish under its clusters; the cascade deletes them first.
    zoneUuid: Mapped[str] = mapped_column(String(32), ForeignKey("ZoneVO.uuid"), index=True)
    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    hypervisorType: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64), default="zstack")
    architecture: Mapped[str | None] = mapped_column(String(64), default=None)


class HostVO(ResourceMixin, Base):
    """A physical host in a cluster, as ZStack's HostInventory (capacity included).

    ``state`` is what the administrator wants (``Enabled``, ``Disabled``, ``PreMaintenance``,
    ``Maintenance``); ``status`` what the node observes (``Connecting``, ``Connected``,
    ``Disconnected``). Capacity columns are indexed so that allocating a host is a query:
    ``totalCpuCapacity`` is ``cpuNum`` times the CPU over-provisioning ratio,
    ``availableCpuCapacity`` and ``availableMemoryCapacity`` what is left for new VMs.
    ``reservedMemoryCapacity`` is the part of ``totalMemoryCapacity`` kept for the host itself
    (global configuration ``host.reservedMemory`` when it was last applied); it is not part
    of the inventory.
    """

    __tablename__ = "HostVO"
    __table_args__ = (
        Index("ix_HostVO_name", "name"),
        # Host allocation walks one of these from the largest capacity down and stops at
        # the first fitting hosts (zplugins.compute.allocators): no scan or sort of them all.
        Index("ix_HostVO_allocation_memory", "state", "status", "availableMemoryCapacity",
              "availableCpuCapacity", "uuid"),
        Index("ix_HostVO_allocation_cpu", "state", "status", "availableCpuCapacity",
              "availableMemoryCapacity", "uuid"),
    )

    # No ON DELETE: the cascade deletes a cluster's hosts before the cluster.
    zoneUuid: Mapped[str] = mapped_column(String(32), ForeignKey("ZoneVO.uuid"), index=True)
    clusterUuid: Mapped[str] = mapped_column(String(32), ForeignKey("ClusterVO.uuid"),
                                             index=True)
    managementIp: Mapped[str] = mapped_column(String(255), unique=True)
    hypervisorType: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    status: Mapped[str] = mapped_column(String(64), default="Connecting", index=True)
    totalCpuCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)
    availableCpuCapacity: Mapped[int] = mapped_column(BigInteger(), default=0, index=True)
    cpuSockets: Mapped[int | None] = mapped_column(Integer(), default=None)
    cpuNum: Mapped[int | None] = mapped_column(Integer(), default=None)
    totalMemoryCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)
    availableMemoryCapacity: Mapped[int] = mapped_column(BigInteger(), default=0, index=True)
    reservedMemoryCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)
    architecture: Mapped[str | None] = mapped_column(String(64), default=None)


class VmInstanceVO(ResourceMixin, Base):
    """A virtual machine, as ZStack's VmInstanceInventory (its volumes and NICs excepted).

    ``state`` follows ZStack's state machine (:mod:`zplugins.compute.vm_states`). A VM holds
    ``cpuNum`` CPUs and ``memorySize`` bytes of its host's capacity while ``hostUuid`` is set
    (from allocation until it stops or is destroyed); ``lastHostUuid`` is where it last ran.
    The root volume, data volumes and NICs are the storage and network plugins' rows, which
    add ``allVolumes`` and ``vmNics`` to the inventory.
    """

    __tablename__ = "VmInstanceVO"
    __table_args__ = (Index("ix_VmInstanceVO_name", "name"),
                      # Pages of VMs are sorted by createDate (the console's default).
                      Index("ix_VmInstanceVO_createDate", "createDate"))

    zoneUuid: Mapped[str | None] = mapped_column(String(32), ForeignKey("ZoneVO.uuid"),
                                                 index=True, default=None)
    clusterUuid: Mapped[str | None] = mapped_column(String(32), ForeignKey("ClusterVO.uuid"),
                                                    index=True, default=None)
    hostUuid: Mapped[str | None] = mapped_column(String(32), ForeignKey("HostVO.uuid"),
                                                 index=True, default=None)
    lastHostUuid: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    imageUuid: Mapped[str | None] = mapped_column(String(32), default=None)
    instanceOfferingUuid: Mapped[str | None] = mapped_column(String(32), default=None)
    rootVolumeUuid: Mapped[str | None] = mapped_column(String(32), default=None)
    defaultL3NetworkUuid: Mapped[str | None] = mapped_column(String(32), default=None)
    type: Mapped[str] = mapped_column(String(64), default="UserVm")
    hypervisorType: Mapped[str | None] = mapped_column(String(64), default=None)
    cpuNum: Mapped[int] = mapped_column(Integer())
    cpuSpeed: Mapped[int] = mapped_column(BigInteger(), default=0)
    memorySize: Mapped[int] = mapped_column(BigInteger())
    reservedMemorySize: Mapped[int] = mapped_column(BigInteger(), default=0)
    platform: Mapped[str | None] = mapped_column(String(255), default=None)
    architecture: Mapped[str | None] = mapped_column(String(64), default=None)
    guestOsType: Mapped[str | None] = mapped_column(String(255), default=None)
    allocatorStrategy: Mapped[str | None] = mapped_column(String(64), default=None)
    state: Mapped[str] = mapped_column(String(64), default="Created", index=True)
