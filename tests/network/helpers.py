"""Helpers of the network tests: a small datacenter, calls, row counts, used IPs."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zcore.api import SYSTEM, Caller
from zcore.db import ResourceVO, new_uuid
from zcore.errors import ZError
from zcore.node import Node
from zplugins.network.models import (
    IpRangeVO,
    L2NetworkClusterRefVO,
    L2NetworkVO,
    L3NetworkDnsVO,
    L3NetworkVO,
    NetworkServiceL3NetworkRefVO,
    UsedIpVO,
)
from zplugins.simulator.hosts import SIMULATOR

GiB = 1024**3
MakeNode = Callable[..., Awaitable[Node]]

#: ZStack's inventory fields (inventories.json).
L2_FIELDS = {"attachedClusterUuids", "createDate", "description", "isolated", "lastOpDate",
             "name", "physicalInterface", "pvlan", "type", "uuid", "vSwitchType",
             "virtualNetworkId", "zoneUuid"}
L2_VLAN_FIELDS = L2_FIELDS | {"vlan"}
L3_FIELDS = {"category", "createDate", "description", "dns", "dnsDomain", "enableIPAM",
             "hostRoute", "ipRanges", "ipVersion", "isolated", "l2NetworkUuid", "lastOpDate",
             "name", "networkServices", "reservedIpRanges", "state", "system", "type", "uuid",
             "zoneUuid"}
IP_RANGE_FIELDS = {"addressMode", "createDate", "description", "endIp", "gateway",
                   "ipRangeType", "ipVersion", "l3NetworkUuid", "lastOpDate", "name", "netmask",
                   "networkCidr", "prefixLen", "startIp", "uuid"}

NETWORK_TYPES = ("L2NetworkVO", "L3NetworkVO", "IpRangeVO")


async def call(node: Node, api: str, caller: Caller = SYSTEM, /, **params: Any) -> Any:
    return await node.api.call(api, params, caller=caller)


async def fails(awaitable: Awaitable[Any], code: str) -> ZError:
    """Await ``awaitable``, which must raise a ZError with ``code``; the error."""
    try:
        await awaitable
    except ZError as exc:
        assert exc.code == code, f"expected {code}, got {exc}"
        return exc
    raise AssertionError(f"expected {code}, but the call succeeded")


def text(error: ZError) -> str:
    """Every description and details in an error's cause chain, for matching."""
    return " | ".join(f"{e.description}: {e.details}" for e in error.causes())


async def zone(node: Node, name: str = "z1") -> dict[str, Any]:
    return (await call(node, "CreateZone", name=name))["inventory"]


async def cluster(node: Node, zone_uuid: str, name: str = "c1") -> dict[str, Any]:
    return (await call(node, "CreateCluster", zoneUuid=zone_uuid, name=name,
                       hypervisorType="Simulator"))["inventory"]


async def host(node: Node, cluster_uuid: str, name: str = "h1", ip: str = "10.0.0.1"
               ) -> dict[str, Any]:
    return (await call(node, "AddSimulatorHost", clusterUuid=cluster_uuid, name=name,
                       managementIp=ip, cpuCapacity=8, memoryCapacity=8 * GiB))["inventory"]


async def vlan_l2(node: Node, zone_uuid: str, vlan: int = 100, interface: str = "eth0",
                  name: str = "l2") -> dict[str, Any]:
    return (await call(node, "CreateL2VlanNetwork", zoneUuid=zone_uuid, name=name,
                       physicalInterface=interface, vlan=vlan))["inventory"]


async def l3(node: Node, l2_uuid: str, name: str = "l3", **params: Any) -> dict[str, Any]:
    return (await call(node, "CreateL3Network", l2NetworkUuid=l2_uuid, name=name,
                       **params))["inventory"]


async def ip_range(node: Node, l3_uuid: str, start: str = "192.168.0.10",
                   end: str = "192.168.0.20", netmask: str = "255.255.255.0",
                   gateway: str = "192.168.0.1", name: str = "r1") -> dict[str, Any]:
    return (await call(node, "AddIpRange", l3NetworkUuid=l3_uuid, name=name, startIp=start,
                       endIp=end, netmask=netmask, gateway=gateway))["inventory"]


def bridges(host_uuid: str) -> list[str]:
    """The bridges the simulated host was asked to create, in order."""
    return [body["bridgeName"] for path, body in SIMULATOR.host(host_uuid).calls
            if path.endswith("/createbridge")]


async def use_ips(node: Node, range_uuid: str, *ips: str) -> None:
    """Mark addresses of a range used, as the VM issue will when it gives NICs their IPs."""
    def insert(session: Session) -> None:
        row = session.get(IpRangeVO, range_uuid)
        assert row is not None
        for ip in ips:
            session.add(UsedIpVO(uuid=new_uuid(), ipRangeUuid=row.uuid,
                                 l3NetworkUuid=row.l3NetworkUuid, ip=ip,
                                 ipInLong=int(ipaddress.IPv4Address(ip)), ipVersion=4,
                                 gateway=row.gateway, netmask=row.netmask, usedFor="Vm"))

    await node.db.run(insert)


async def rows(node: Node) -> dict[str, int]:
    """Rows of every network table and the resource rows of the network types."""
    def count(session: Session) -> dict[str, int]:
        out = {model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
               for model in (L2NetworkVO, L2NetworkClusterRefVO, L3NetworkVO, IpRangeVO,
                             L3NetworkDnsVO, UsedIpVO, NetworkServiceL3NetworkRefVO)}
        out["resources"] = int(session.scalar(select(func.count()).select_from(ResourceVO).where(
            ResourceVO.resourceType.in_(NETWORK_TYPES))) or 0)
        return out

    return await node.db.run(count)
