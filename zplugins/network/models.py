"""L2 and L3 networks, IP ranges, DNS, used IPs and network services, as ZStack's VOs.

Resources (with a :class:`~zcore.db.ResourceVO` row): ``L2NetworkVO`` (VLAN networks are
the single-table subclass ``L2VlanNetworkVO``, whose ``vlan`` is the ``virtualNetworkId``
column), ``L3NetworkVO``, ``IpRangeVO``, ``NetworkServiceProviderVO``. Plain rows that go
with their parent (``ON DELETE CASCADE``): ``L2NetworkClusterRefVO``, ``L3NetworkDnsVO``,
``UsedIpVO``, ``NetworkServiceTypeVO``, ``NetworkServiceL3NetworkRefVO``.

Two read-only classes are mapped onto joins for the query engine, which expands queries
along one pair of columns at a time: ``L2NetworkClusterVO`` (a cluster seen from an L2
network it is attached to: the cluster's columns plus ``l2NetworkUuid``) and
``ClusterL2NetworkVO`` (an L2 network seen from a cluster: its columns plus
``clusterUuid``), so that ``QueryL3Network l2Network.cluster.uuid=...`` and
``QueryCluster l2Network.name=...`` are single expansions through the attachment table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    column,
    join,
    table,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from zcore.db import Base, ResourceMixin, TimestampMixin, UTCDateTime, new_uuid, utcnow

__all__ = [
    "CLUSTER_TABLE",
    "ZONE_TABLE",
    "ClusterL2NetworkVO",
    "IpRangeVO",
    "L2NetworkClusterRefVO",
    "L2NetworkClusterVO",
    "L2NetworkVO",
    "L2VlanNetworkVO",
    "L3NetworkDnsVO",
    "L3NetworkVO",
    "NetworkServiceL3NetworkRefVO",
    "NetworkServiceProviderVO",
    "NetworkServiceTypeVO",
    "UsedIpVO",
    "VmNicVO",
]

#: ``L2NetworkVO.type`` of the two kinds of L2 network.
L2_NO_VLAN = "L2NoVlanNetwork"
L2_VLAN = "L2VlanNetwork"

_ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class L2NetworkClusterRefVO(TimestampMixin, Base):
    """An L2 network attached to a cluster; (l2NetworkUuid, clusterUuid) is unique."""

    __tablename__ = "L2NetworkClusterRefVO"
    __table_args__ = (UniqueConstraint("l2NetworkUuid", "clusterUuid"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    l2NetworkUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("L2NetworkVO.uuid", ondelete="CASCADE"))
    clusterUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("ClusterVO.uuid", ondelete="CASCADE"), index=True)


class L2NetworkVO(ResourceMixin, Base):
    """An L2 network on a physical interface of the hosts of the clusters it is attached to.

    ``virtualNetworkId`` is the VLAN id of a VLAN network and 0 otherwise. A zone has at most
    one L2 network per (physicalInterface, virtualNetworkId): one without VLAN and one per
    VLAN on each interface (on MariaDB the unique index covers the first 255 characters of
    the interface name; Linux names have at most 15).
    """

    __tablename__ = "L2NetworkVO"
    __table_args__ = (
        Index("ix_L2NetworkVO_zoneUuid_physicalInterface_virtualNetworkId", "zoneUuid",
              "physicalInterface", "virtualNetworkId", unique=True,
              mysql_length={"physicalInterface": 255}),
        Index("ix_L2NetworkVO_name", "name"),
    )

    # No ON DELETE: the cascade deletes a zone's L2 networks before the zone.
    zoneUuid: Mapped[str] = mapped_column(String(32), ForeignKey("ZoneVO.uuid"))
    physicalInterface: Mapped[str] = mapped_column(String(1024))
    type: Mapped[str] = mapped_column(String(128))
    vSwitchType: Mapped[str] = mapped_column(String(128), default="LinuxBridge")
    virtualNetworkId: Mapped[int] = mapped_column(Integer(), default=0)
    isolated: Mapped[bool] = mapped_column(Boolean(), default=False)
    pvlan: Mapped[str | None] = mapped_column(String(1024), default=None)

    clusterRefs: Mapped[list[L2NetworkClusterRefVO]] = relationship(
        viewonly=True, lazy="selectin", order_by=L2NetworkClusterRefVO.id)

    __mapper_args__ = {  # noqa: RUF012 (read once, by the declarative mapping)
        "polymorphic_on": "type", "polymorphic_identity": L2_NO_VLAN}

    @property
    def attachedClusterUuids(self) -> list[str]:
        return [ref.clusterUuid for ref in self.clusterRefs]


class L2VlanNetworkVO(L2NetworkVO):
    """An L2 network on a VLAN of its physical interface; ``vlan`` is ``virtualNetworkId``."""

    vlan: Mapped[int] = column_property(L2NetworkVO.__table__.c.virtualNetworkId)

    __mapper_args__ = {"polymorphic_identity": L2_VLAN}  # noqa: RUF012


class IpRangeVO(ResourceMixin, Base):
    """A range of addresses of an L3 network, with its subnet and gateway (IPv4)."""

    __tablename__ = "IpRangeVO"
    __table_args__ = (Index("ix_IpRangeVO_name", "name"),)

    l3NetworkUuid: Mapped[str] = mapped_column(String(32), ForeignKey("L3NetworkVO.uuid"),
                                               index=True)
    startIp: Mapped[str] = mapped_column(String(64))
    endIp: Mapped[str] = mapped_column(String(64))
    netmask: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str] = mapped_column(String(64))
    networkCidr: Mapped[str] = mapped_column(String(64))
    ipVersion: Mapped[int] = mapped_column(Integer(), default=4)
    prefixLen: Mapped[int] = mapped_column(Integer())
    addressMode: Mapped[str | None] = mapped_column(String(64), default=None)
    ipRangeType: Mapped[str] = mapped_column(String(64), default="Normal")


class L3NetworkDnsVO(TimestampMixin, Base):
    """A DNS server of an L3 network; ``id`` keeps the order in which they were added."""

    __tablename__ = "L3NetworkDnsVO"
    __table_args__ = (UniqueConstraint("l3NetworkUuid", "dns"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    l3NetworkUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("L3NetworkVO.uuid", ondelete="CASCADE"))
    dns: Mapped[str] = mapped_column(String(255))


class NetworkServiceProviderVO(ResourceMixin, Base):
    """A provider of network services (DHCP, DNS, SNAT, ...), registered by a plugin."""

    __tablename__ = "NetworkServiceProviderVO"

    type: Mapped[str] = mapped_column(String(255), unique=True)

    serviceTypes: Mapped[list[NetworkServiceTypeVO]] = relationship(
        viewonly=True, lazy="selectin", order_by="NetworkServiceTypeVO.id")

    @property
    def networkServiceTypes(self) -> list[str]:
        return [t.type for t in self.serviceTypes]


class NetworkServiceTypeVO(Base):
    """A service type that a provider offers."""

    __tablename__ = "NetworkServiceTypeVO"
    __table_args__ = (UniqueConstraint("networkServiceProviderUuid", "type"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    networkServiceProviderUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("NetworkServiceProviderVO.uuid", ondelete="CASCADE",
                               name="fk_NetworkServiceTypeVO_provider"))
    type: Mapped[str] = mapped_column(String(255))


class NetworkServiceL3NetworkRefVO(Base):
    """A service of a provider enabled on an L3 network; one provider per service type."""

    __tablename__ = "NetworkServiceL3NetworkRefVO"
    # Explicit names where the conventional ones exceed PostgreSQL's 63 characters.
    __table_args__ = (UniqueConstraint("l3NetworkUuid", "networkServiceType",
                                       name="uq_NetworkServiceL3NetworkRefVO_l3_type"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    l3NetworkUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("L3NetworkVO.uuid", ondelete="CASCADE"))
    networkServiceProviderUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("NetworkServiceProviderVO.uuid", ondelete="CASCADE",
                               name="fk_NetworkServiceL3NetworkRefVO_provider"), index=True)
    networkServiceType: Mapped[str] = mapped_column(String(255))


class L3NetworkVO(ResourceMixin, Base):
    """An L3 network on an L2 network: IP ranges, DNS and network services."""

    __tablename__ = "L3NetworkVO"
    __table_args__ = (Index("ix_L3NetworkVO_name", "name"),)

    # No ON DELETE: the cascade deletes an L2 network's (and a zone's) L3 networks first.
    zoneUuid: Mapped[str] = mapped_column(String(32), ForeignKey("ZoneVO.uuid"), index=True)
    l2NetworkUuid: Mapped[str] = mapped_column(String(32), ForeignKey("L2NetworkVO.uuid"),
                                               index=True)
    type: Mapped[str] = mapped_column(String(128), default="L3BasicNetwork")
    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    category: Mapped[str] = mapped_column(String(64), default="Private")
    system: Mapped[bool] = mapped_column(Boolean(), default=False)
    dnsDomain: Mapped[str | None] = mapped_column(String(255), default=None)
    ipVersion: Mapped[int] = mapped_column(Integer(), default=4)
    enableIPAM: Mapped[bool] = mapped_column(Boolean(), default=True)
    isolated: Mapped[bool] = mapped_column(Boolean(), default=False)

    ipRanges: Mapped[list[IpRangeVO]] = relationship(
        viewonly=True, lazy="selectin", order_by=IpRangeVO.createDate)
    dnsRows: Mapped[list[L3NetworkDnsVO]] = relationship(
        viewonly=True, lazy="selectin", order_by=L3NetworkDnsVO.id)
    networkServiceRefs: Mapped[list[NetworkServiceL3NetworkRefVO]] = relationship(
        viewonly=True, lazy="selectin", order_by=NetworkServiceL3NetworkRefVO.id)


class UsedIpVO(Base):
    """An address of an IP range in use (by a VM NIC, from the VM issue on).

    ``ipInLong`` is the address as an integer; (l3NetworkUuid, ipInLong) is unique, so two
    allocations of one address cannot both commit, and (ipRangeUuid, ipInLong) is indexed
    for walking a range's free addresses in order.
    """

    __tablename__ = "UsedIpVO"
    __table_args__ = (
        UniqueConstraint("l3NetworkUuid", "ipInLong"),
        Index("ix_UsedIpVO_ipRangeUuid_ipInLong", "ipRangeUuid", "ipInLong"),
    )

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    ipRangeUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("IpRangeVO.uuid", ondelete="CASCADE"))
    l3NetworkUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("L3NetworkVO.uuid", ondelete="CASCADE"))
    ip: Mapped[str] = mapped_column(String(128))
    ipInLong: Mapped[int] = mapped_column(BigInteger())
    ipVersion: Mapped[int] = mapped_column(Integer(), default=4)
    gateway: Mapped[str | None] = mapped_column(String(128), default=None)
    netmask: Mapped[str | None] = mapped_column(String(128), default=None)
    usedFor: Mapped[str | None] = mapped_column(String(64), default=None)
    vmNicUuid: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    createDate: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lastOpDate: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow,
                                                 onupdate=utcnow)


class VmNicVO(TimestampMixin, Base):
    """A VM's network interface on an L3 network, as ZStack's VmNicInventory.

    A resource (a :class:`~zcore.db.ResourceVO` row, owned by the VM's owner) without a
    name. ``mac`` is unique across the cloud and ``deviceId`` unique within its VM. ``ip``,
    ``netmask`` and ``gateway`` repeat the NIC's :class:`UsedIpVO` (the first, when it has
    several), as ZStack's inventory shows them.
    """

    __tablename__ = "VmNicVO"
    __table_args__ = (UniqueConstraint("vmInstanceUuid", "deviceId"),)

    uuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("ResourceVO.uuid", ondelete="CASCADE"), primary_key=True)
    vmInstanceUuid: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("VmInstanceVO.uuid", ondelete="CASCADE"), index=True)
    l3NetworkUuid: Mapped[str] = mapped_column(String(32), ForeignKey("L3NetworkVO.uuid"),
                                               index=True)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    ip: Mapped[str | None] = mapped_column(String(128), default=None, index=True)
    netmask: Mapped[str | None] = mapped_column(String(128), default=None)
    gateway: Mapped[str | None] = mapped_column(String(128), default=None)
    ipVersion: Mapped[int | None] = mapped_column(Integer(), default=None)
    deviceId: Mapped[int] = mapped_column(Integer())
    internalName: Mapped[str | None] = mapped_column(String(128), default=None)
    type: Mapped[str] = mapped_column(String(64), default="VNIC")
    driverType: Mapped[str | None] = mapped_column(String(64), default=None)
    hypervisorType: Mapped[str | None] = mapped_column(String(64), default=None)
    metaData: Mapped[str | None] = mapped_column(String(255), default=None)
    state: Mapped[str] = mapped_column(String(64), default="enable")

    usedIps: Mapped[list[UsedIpVO]] = relationship(
        primaryjoin="foreign(UsedIpVO.vmNicUuid) == VmNicVO.uuid", viewonly=True,
        lazy="selectin", order_by="UsedIpVO.ipInLong")


# --------------------------------------------------------------------------- query views

_REF = L2NetworkClusterRefVO.__table__
_L2 = L2NetworkVO.__table__
# The compute plugin's tables, named rather than imported: the columns of ZStack's
# ClusterInventory, and a zone's uuid.
CLUSTER_TABLE = table(
    "ClusterVO", column("uuid", String(32)), column("name", String(255)),
    column("description", String(2048)), column("zoneUuid", String(32)),
    column("state", String(64)), column("hypervisorType", String(64)),
    column("type", String(64)), column("architecture", String(64)),
    column("createDate", UTCDateTime()), column("lastOpDate", UTCDateTime()))
ZONE_TABLE = table("ZoneVO", column("uuid", String(32)))
_CLUSTER = CLUSTER_TABLE


class L2NetworkClusterVO(Base):
    """Read-only, for queries: a cluster with the uuid of an L2 network attached to it."""

    __table__ = join(_CLUSTER, _REF, _CLUSTER.c.uuid == _REF.c.clusterUuid)
    __mapper_args__ = {  # noqa: RUF012
        "primary_key": [_REF.c.id],
        "include_properties": ["uuid", "name", "description", "zoneUuid", "state",
                               "hypervisorType", "type", "architecture", "createDate",
                               "lastOpDate", "l2NetworkUuid", "attachedDate", "refLastOpDate",
                               "refId"],
    }

    uuid = column_property(_CLUSTER.c.uuid, _REF.c.clusterUuid)
    createDate = column_property(_CLUSTER.c.createDate)
    lastOpDate = column_property(_CLUSTER.c.lastOpDate)
    l2NetworkUuid = column_property(_REF.c.l2NetworkUuid)
    refId = column_property(_REF.c.id)
    attachedDate = column_property(_REF.c.createDate)
    refLastOpDate = column_property(_REF.c.lastOpDate)


class ClusterL2NetworkVO(Base):
    """Read-only, for queries: an L2 network with the uuid of a cluster it is attached to."""

    __table__ = join(_L2, _REF, _L2.c.uuid == _REF.c.l2NetworkUuid)
    __mapper_args__ = {  # noqa: RUF012
        "primary_key": [_REF.c.id],
        "include_properties": ["uuid", "name", "description", "zoneUuid", "physicalInterface",
                               "type", "vSwitchType", "virtualNetworkId", "isolated", "pvlan",
                               "createDate", "lastOpDate", "clusterUuid", "attachedDate",
                               "refLastOpDate", "refId"],
    }

    uuid = column_property(_L2.c.uuid, _REF.c.l2NetworkUuid)
    createDate = column_property(_L2.c.createDate)
    lastOpDate = column_property(_L2.c.lastOpDate)
    clusterUuid = column_property(_REF.c.clusterUuid)
    refId = column_property(_REF.c.id)
    attachedDate = column_property(_REF.c.createDate)
    refLastOpDate = column_property(_REF.c.lastOpDate)
