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
    __table_args__ = (Index("ix_HostVO_name", "name"),)

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
