"""IP ranges of L3 networks, their free addresses and their capacity.

A range is IPv4 with a netmask and a gateway, checked as ZStack checks it: the start, end
and gateway are IPv4 addresses, the netmask a real one (not 0.0.0.0), the start is not
after the end, the range lies in the subnet of the start address without its network or
broadcast address, the gateway lies in that subnet but outside the range, no multicast,
reserved (240/4) or link-local (169.254.1.0-169.254.254.255) address is included; all the
ranges of an L3 network share one subnet and one gateway, and no two ranges of the L3
networks of one L2 network overlap. A range's gateway is not recorded as a used IP (as in
ZStack). Ranges of one L2 network are added one at a time (the L2 network's row is locked),
so two concurrent calls cannot add overlapping ranges.

``AddIpRangeByNetworkCidr`` makes the ranges of a whole subnet: without a gateway, the
gateway is the first host address and the range the rest; with a gateway in the middle,
the addresses on either side of it become two ranges, as in ZStack.

Used addresses are ``UsedIpVO`` rows (made by the VM issue when it gives NICs their IPs).
``GetFreeIp`` walks the ranges in address order and skips used addresses found by an
indexed query, a few hundred at a time, so a /8 costs no more than a /24.
``GetIpAddressCapacity`` counts the addresses of ranges from their ends and the used ones
with one grouped query.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zcore import ApiMessage, CascadeEdge, QueryExpansion, ResourceType
from zcore.api import ApiContext, APIMessage, Inventory, Param, QueryMessage
from zcore.db import ResourceVO, add_resource
from zplugins.network.common import (
    DELETE_MODES,
    delete_rows,
    get_row,
    invalid,
    refuse_tag_uuids,
)
from zplugins.network.l3 import IP_RANGE_INVENTORY, ip_range_fields
from zplugins.network.models import ZONE_TABLE, IpRangeVO, L2NetworkVO, L3NetworkVO, UsedIpVO

__all__ = [
    "AddIpRange",
    "AddIpRangeByNetworkCidr",
    "DeleteIpRange",
    "GetFreeIp",
    "GetIpAddressCapacity",
    "QueryIpRange",
    "RangeSpec",
    "UpdateIpRange",
    "check_range",
    "free_ips",
]

IP_RANGE = "IpRangeVO"
RESULT = {"inventory": "IpRangeInventory"}
FREE_IP_INVENTORY = "org.zstack.header.network.l3.FreeIpInventory"
RANGE_TYPES = ("Normal", "AddressPool")

#: Address blocks no range may touch, as in ZStack: (first, last, why).
_FORBIDDEN = (
    (IPv4Address("224.0.0.0"), IPv4Address("239.255.255.255"),
     "D class addresses, which are for multicast"),
    (IPv4Address("240.0.0.0"), IPv4Address("255.255.255.255"),
     "E class addresses, which are reserved"),
    (IPv4Address("169.254.1.0"), IPv4Address("169.254.254.255"),
     "link-local addresses, which are reserved"),
)

#: How many used addresses GetFreeIp reads per query while it walks a range.
_USED_BATCH = 512
#: ``limit`` below 0 means "all free addresses" (ZStack's rule), capped here.
ALL_FREE_CAP = 65536


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """One range to add to L3 network ``l3_network_uuid``; addresses already parsed."""

    l3_network_uuid: str
    name: str
    start: IPv4Address
    end: IPv4Address
    netmask: IPv4Address
    gateway: IPv4Address
    description: str | None = None
    uuid: str | None = None

    @property
    def subnet(self) -> IPv4Network:
        return IPv4Network(f"{self.start}/{self.netmask}", strict=False)


def _ipv4(api: str, name: str, value: str) -> IPv4Address:
    try:
        return IPv4Address(value.strip())
    except ValueError:
        raise invalid(api, f"parameter '{name}': {value!r} is not an IPv4 address") from None


def _netmask(api: str, value: str) -> IPv4Address:
    mask = _ipv4(api, "netmask", value)
    bits = int(mask)
    inverted = ~bits & 0xFFFFFFFF
    if bits == 0 or inverted & (inverted + 1):
        raise invalid(api, f"parameter 'netmask': {value!r} is not a netmask (ones then zeros, "
                           "such as 255.255.255.0), and the netmask cannot be 0.0.0.0")
    return mask


def check_shape(api: str, spec: RangeSpec) -> None:
    """The checks of one range on its own (no database)."""
    start, end, gateway = spec.start, spec.end, spec.gateway
    if start > end:
        raise invalid(api, f"start ip {start} is after end ip {end}")
    for first, last, why in _FORBIDDEN:
        if start <= last and first <= end:
            raise invalid(api, f"the IP range {start} ~ {end} contains {why} "
                               f"({first} ~ {last})")
    subnet = spec.subnet
    if gateway not in subnet:
        raise invalid(api, f"the gateway {gateway} is not in the subnet {subnet} of the range "
                           f"(start ip {start}, netmask {spec.netmask})")
    if end not in subnet:
        raise invalid(api, f"the end ip {end} is not in the subnet {subnet} of the range "
                           f"(start ip {start}, netmask {spec.netmask})")
    if start == subnet.network_address or end == subnet.broadcast_address:
        raise invalid(api, f"the range {start} ~ {end} cannot contain the network address "
                           f"{subnet.network_address} or the broadcast address "
                           f"{subnet.broadcast_address} of {subnet}")
    if start <= gateway <= end:
        raise invalid(api, f"the gateway {gateway} cannot be part of the range {start} ~ {end}")


def check_range(session: Session, api: str, spec: RangeSpec) -> L3NetworkVO:
    """Every check of a new range against the L3 network's and its L2 network's ranges."""
    check_shape(api, spec)
    l3 = get_row(session, L3NetworkVO, "L3NetworkVO", spec.l3_network_uuid)
    siblings = select(L3NetworkVO.uuid).where(L3NetworkVO.l2NetworkUuid == l3.l2NetworkUuid)
    ranges = session.scalars(select(IpRangeVO).where(IpRangeVO.l3NetworkUuid.in_(siblings),
                                                     IpRangeVO.ipVersion == 4)).all()
    subnet = spec.subnet
    for other in ranges:
        if spec.start <= IPv4Address(other.endIp) and IPv4Address(other.startIp) <= spec.end:
            where = "" if other.l3NetworkUuid == l3.uuid else \
                f" of L3 network {other.l3NetworkUuid} on the same L2 network"
            raise invalid(api, f"the range {spec.start} ~ {spec.end} overlaps the IP range "
                               f"{other.name} ({other.uuid}: {other.startIp} ~ {other.endIp})"
                               f"{where}")
        if other.l3NetworkUuid != l3.uuid:
            continue
        if other.networkCidr != str(subnet):
            raise invalid(api, f"L3 network {l3.uuid} already has ranges in {other.networkCidr} "
                               f"(IP range {other.uuid}); the range {spec.start} ~ {spec.end} "
                               f"is in {subnet}, and one L3 network has one subnet")
        if other.gateway != str(spec.gateway):
            raise invalid(api, f"the gateway {spec.gateway} differs from the gateway "
                               f"{other.gateway} of the other ranges of L3 network {l3.uuid} "
                               f"(IP range {other.uuid})")
    return l3


def _insert_ranges(session: Session, api: ApiContext, specs: list[RangeSpec]) -> list[Inventory]:
    l3 = get_row(session, L3NetworkVO, "L3NetworkVO", specs[0].l3_network_uuid)
    # One writer per L2 network at a time, so overlapping ranges cannot both pass the checks.
    session.execute(select(L2NetworkVO.uuid).where(L2NetworkVO.uuid == l3.l2NetworkUuid)
                    .with_for_update())
    rows = []
    for spec in specs:
        check_range(session, api.api, spec)
        subnet = spec.subnet
        row = IpRangeVO(l3NetworkUuid=spec.l3_network_uuid, name=spec.name,
                        description=spec.description, startIp=str(spec.start),
                        endIp=str(spec.end), netmask=str(spec.netmask),
                        gateway=str(spec.gateway), networkCidr=str(subnet), ipVersion=4,
                        prefixLen=subnet.prefixlen, addressMode=None, ipRangeType="Normal")
        if spec.uuid is not None:
            row.uuid = spec.uuid
        add_resource(session, row, IP_RANGE, owner_account_uuid=api.owner)
        session.flush()
        api.add_tags(session, row.uuid, IP_RANGE)
        rows.append(row)
    return [Inventory(IP_RANGE_INVENTORY, ip_range_fields(r)) for r in rows]


def _refuse_pools(api: str, range_type: str | None) -> None:
    if range_type not in (None, "Normal"):
        raise invalid(api, "parameter 'ipRangeType': address pools are not supported yet; "
                           "use Normal")


# --------------------------------------------------------------------------- APIs


class AddIpRange(APIMessage, method="POST", path="/l3-networks/{l3NetworkUuid}/ip-ranges",
                 resource_type=IP_RANGE, result=RESULT):
    """Add an IPv4 range (start, end, netmask, gateway) to an L3 network."""

    l3NetworkUuid = Param(str, required=True, resource_type="L3NetworkVO")
    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    startIp = Param(str, required=True, max_length=64)
    endIp = Param(str, required=True, max_length=64)
    netmask = Param(str, required=True, max_length=64)
    gateway = Param(str, max_length=64, description="Required for a Normal range")
    ipRangeType = Param(str, valid_values=RANGE_TYPES, description="Only Normal so far")
    resourceUuid = Param(str, description="The uuid the new range gets (32 lower-case hex "
                                          "digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    def spec(self) -> RangeSpec:
        api = self.api_name
        if self.gateway is None:
            raise invalid(api, "parameter 'gateway' is required for a Normal IP range")
        return RangeSpec(self.l3NetworkUuid, self.name, _ipv4(api, "startIp", self.startIp),
                         _ipv4(api, "endIp", self.endIp), _netmask(api, self.netmask),
                         _ipv4(api, "gateway", self.gateway), self.description,
                         self.resourceUuid)

    async def validate(self, ctx: ApiContext) -> None:
        refuse_tag_uuids(self.api_name, self.tagUuids)
        _refuse_pools(self.api_name, self.ipRangeType)
        await ctx.run(check_range, self.api_name, self.spec())

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        inventories = await ctx.run(_insert_ranges, ctx, [self.spec()])
        return {"inventory": inventories[0]}


def cidr_ranges(api: str, l3_uuid: str, name: str, cidr: str, gateway: str | None,
                description: str | None = None, uuid: str | None = None) -> list[RangeSpec]:
    """The ranges of a whole subnet around its gateway (ZStack's rule)."""
    try:
        subnet = IPv4Network(cidr.strip(), strict=False)
    except ValueError:
        raise invalid(api, f"parameter 'networkCidr': {cidr!r} is not an IPv4 network CIDR "
                           "(such as 192.168.1.0/24)") from None
    if subnet.prefixlen > 30:
        raise invalid(api, f"parameter 'networkCidr': {subnet} has no usable IP range (at "
                           "most /30)")
    first = subnet.network_address + 1
    last = subnet.broadcast_address - 1
    gw = first if gateway is None else _ipv4(api, "gateway", gateway)
    if gateway is not None and not first <= gw <= last:
        raise invalid(api, f"the gateway {gw} is not a host address of the subnet {subnet}")
    pieces = [(a, b) for a, b in ((first, gw - 1), (gw + 1, last)) if a <= b]
    return [RangeSpec(l3_uuid, name, a, b, subnet.netmask, gw, description,
                      uuid if i == 0 else None) for i, (a, b) in enumerate(pieces)]


class AddIpRangeByNetworkCidr(APIMessage, method="POST",
                              path="/l3-networks/{l3NetworkUuid}/ip-ranges/by-cidr",
                              resource_type=IP_RANGE,
                              result={"inventory": "IpRangeInventory", "inventories": "List"}):
    """Add the whole of a subnet to an L3 network, all but its gateway (by default the first
    host address); a gateway in the middle splits it into two ranges."""

    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    l3NetworkUuid = Param(str, required=True, resource_type="L3NetworkVO")
    networkCidr = Param(str, required=True, max_length=64)
    gateway = Param(str, max_length=64)
    ipRangeType = Param(str, valid_values=RANGE_TYPES, description="Only Normal so far")
    resourceUuid = Param(str, description="The uuid the (first) new range gets")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    def specs(self) -> list[RangeSpec]:
        return cidr_ranges(self.api_name, self.l3NetworkUuid, self.name, self.networkCidr,
                           self.gateway, self.description, self.resourceUuid)

    async def validate(self, ctx: ApiContext) -> None:
        refuse_tag_uuids(self.api_name, self.tagUuids)
        _refuse_pools(self.api_name, self.ipRangeType)
        for spec in self.specs():
            await ctx.run(check_range, self.api_name, spec)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        inventories = await ctx.run(_insert_ranges, ctx, self.specs())
        return {"inventory": inventories[0], "inventories": inventories}


class UpdateIpRange(APIMessage, method="PUT", path="/l3-networks/ip-ranges/{uuid}/actions",
                    resource_type=IP_RANGE, result=RESULT):
    """Change an IP range's name or description."""

    uuid = Param(str, required=True, resource_type=IP_RANGE)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> Inventory:
            row = get_row(session, IpRangeVO, IP_RANGE, self.uuid)
            if self.name is not None:
                row.name = self.name
            if self.description is not None:
                row.description = self.description
            session.flush()
            return Inventory(IP_RANGE_INVENTORY, ip_range_fields(row))

        return {"inventory": await ctx.run(change)}


class DeleteIpRange(APIMessage, method="DELETE", path="/l3-networks/ip-ranges/{uuid}",
                    resource_type=IP_RANGE, result={}):
    """Delete an IP range; its used IPs go with it."""

    uuid = Param(str, required=True, resource_type=IP_RANGE)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ctx.delete(IP_RANGE, self.uuid, self.deleteMode, delete_rows(IpRangeVO, IP_RANGE))
        return {}


class QueryIpRange(QueryMessage, path="/l3-networks/ip-ranges", resource=IP_RANGE):
    """Query IP ranges; ``l3Network.`` reaches their L3 network's fields."""


# --------------------------------------------------------------------------- free IPs


def free_ips(session: Session, ranges: list[IpRangeVO], start: IPv4Address | None,
             limit: int) -> list[tuple[IpRangeVO, IPv4Address]]:
    """The first ``limit`` unused addresses of ``ranges`` (in address order) from ``start``."""
    found: list[tuple[IpRangeVO, IPv4Address]] = []
    floor = int(start) if start is not None else 0
    for row in sorted(ranges, key=lambda r: int(IPv4Address(r.startIp))):
        cursor = max(int(IPv4Address(row.startIp)), floor)
        last = int(IPv4Address(row.endIp))
        while cursor <= last and len(found) < limit:
            used = list(session.scalars(
                select(UsedIpVO.ipInLong)
                .where(UsedIpVO.ipRangeUuid == row.uuid, UsedIpVO.ipInLong >= cursor,
                       UsedIpVO.ipInLong <= last)
                .order_by(UsedIpVO.ipInLong).limit(_USED_BATCH)))
            # Free addresses run up to the next used one (or the range's end).
            stops = [*used, last + 1] if len(used) < _USED_BATCH else used
            for stop in stops:
                while cursor < stop and len(found) < limit:
                    found.append((row, IPv4Address(cursor)))
                    cursor += 1
                if len(found) >= limit:
                    break
                cursor = max(cursor, stop + 1)
    return found


class GetFreeIp(APIMessage, method="GET", path="/l3-networks/ip/free",
                result={"inventories": "List"}):
    """The first free addresses of an L3 network or of one of its ranges, from ``start``.

    ``limit`` (default 100) below 0 means all of them, at most 65,536.
    """

    l3NetworkUuid = Param(str, resource_type="L3NetworkVO")
    ipRangeUuid = Param(str, resource_type=IP_RANGE)
    start = Param(str, max_length=64, description="Only addresses from this one on")
    ipRangeType = Param(str, valid_values=RANGE_TYPES)
    ipVersion = Param(int, valid_values=(4, 6))
    limit = Param(int, default=100, api_type="int")

    async def validate(self, ctx: ApiContext) -> None:
        if self.ipRangeUuid is None and self.l3NetworkUuid is None:
            raise invalid(self.api_name, "give ipRangeUuid or l3NetworkUuid")
        if self.ipVersion == 6:
            raise invalid(self.api_name, "parameter 'ipVersion': IPv6 is not supported yet")
        if self.start is not None:
            _ipv4(self.api_name, "start", self.start)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        start = _ipv4(self.api_name, "start", self.start) if self.start is not None else None
        limit = ALL_FREE_CAP if self.limit < 0 else min(self.limit, ALL_FREE_CAP)
        if self.ipRangeType == "AddressPool":
            return {"inventories": []}

        def find(session: Session) -> list[Inventory]:
            if self.ipRangeUuid is not None:
                row = get_row(session, IpRangeVO, IP_RANGE, self.ipRangeUuid)
                if self.l3NetworkUuid is not None and row.l3NetworkUuid != self.l3NetworkUuid:
                    raise invalid(self.api_name, f"IP range {row.uuid} is not a range of L3 "
                                                 f"network {self.l3NetworkUuid}")
                ranges = [row]
            else:
                ranges = list(session.scalars(select(IpRangeVO).where(
                    IpRangeVO.l3NetworkUuid == self.l3NetworkUuid, IpRangeVO.ipVersion == 4)))
            return [Inventory(FREE_IP_INVENTORY, {"ipRangeUuid": r.uuid, "ip": str(ip),
                                                  "netmask": r.netmask, "gateway": r.gateway})
                    for r, ip in free_ips(session, ranges, start, limit)]

        return {"inventories": await ctx.run(find)}


# --------------------------------------------------------------------------- capacity


def _capacity(total: int, used: int) -> dict[str, int]:
    return {"totalCapacity": total, "availableCapacity": total - used,
            "usedIpAddressNumber": used, "ipv4TotalCapacity": total,
            "ipv4AvailableCapacity": total - used, "ipv4UsedIpAddressNumber": used,
            "ipv6TotalCapacity": 0, "ipv6AvailableCapacity": 0, "ipv6UsedIpAddressNumber": 0}


class GetIpAddressCapacity(APIMessage, method="GET", path="/ip-capacity", result={
        "availableCapacity": "long", "capacityData": "List", "ipv4AvailableCapacity": "long",
        "ipv4TotalCapacity": "long", "ipv4UsedIpAddressNumber": "long",
        "ipv6AvailableCapacity": "long", "ipv6TotalCapacity": "long",
        "ipv6UsedIpAddressNumber": "long", "resourceType": "String", "totalCapacity": "long",
        "usedIpAddressNumber": "long"}):
    """Total, used and available addresses of IP ranges, L3 networks or zones.

    The first of ``ipRangeUuids``, ``l3NetworkUuids``, ``zoneUuids`` given decides what is
    counted (``resourceType``); ``all`` counts every zone. ``capacityData`` has the numbers
    of each resource asked about. A normal account counts the ranges of its own L3 networks.
    """

    zoneUuids = Param(list, resource_type="ZoneVO")
    l3NetworkUuids = Param(list, resource_type="L3NetworkVO")
    ipRangeUuids = Param(list, resource_type=IP_RANGE)
    all = Param(bool, default=False, api_type="boolean")

    async def validate(self, ctx: ApiContext) -> None:
        if not (self.zoneUuids or self.l3NetworkUuids or self.ipRangeUuids or self.all):
            raise invalid(self.api_name, "give ipRangeUuids, l3NetworkUuids or zoneUuids (a "
                                         "non-empty list), or all=true")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def count(session: Session) -> dict[str, Any]:
            ranges = select(IpRangeVO.uuid, IpRangeVO.startIp, IpRangeVO.endIp,
                            IpRangeVO.l3NetworkUuid, L3NetworkVO.zoneUuid) \
                .join(L3NetworkVO, L3NetworkVO.uuid == IpRangeVO.l3NetworkUuid) \
                .where(IpRangeVO.ipVersion == 4)
            if self.ipRangeUuids:
                kind, asked, key = IP_RANGE, list(dict.fromkeys(self.ipRangeUuids)), 0
                ranges = ranges.where(IpRangeVO.uuid.in_(asked))
            elif self.l3NetworkUuids:
                kind, asked, key = "L3NetworkVO", list(dict.fromkeys(self.l3NetworkUuids)), 3
                ranges = ranges.where(IpRangeVO.l3NetworkUuid.in_(asked))
            else:
                kind, key = "ZoneVO", 4
                asked = list(dict.fromkeys(self.zoneUuids or [])) or list(session.scalars(
                    select(ZONE_TABLE.c.uuid).order_by(ZONE_TABLE.c.uuid)))
                ranges = ranges.where(L3NetworkVO.zoneUuid.in_(asked))
            account = ctx.caller.filter_account
            if account is not None:  # a normal account counts its own networks only
                ranges = ranges.where(L3NetworkVO.uuid.in_(
                    select(ResourceVO.uuid).where(ResourceVO.ownerAccountUuid == account)))
            rows = session.execute(ranges).all()
            used = dict(session.execute(
                select(UsedIpVO.ipRangeUuid, func.count())
                .where(UsedIpVO.ipRangeUuid.in_([r[0] for r in rows]))
                .group_by(UsedIpVO.ipRangeUuid)).all()) if rows else {}
            totals = dict.fromkeys(asked, 0)
            in_use = dict.fromkeys(asked, 0)
            for row in rows:
                size = int(IPv4Address(row[2])) - int(IPv4Address(row[1])) + 1
                totals[row[key]] = totals.get(row[key], 0) + size
                in_use[row[key]] = in_use.get(row[key], 0) + int(used.get(row[0], 0))
            data = [{"resourceUuid": uuid, **_capacity(totals[uuid], in_use[uuid])}
                    for uuid in totals]
            return {**_capacity(sum(totals.values()), sum(in_use.values())),
                    "resourceType": kind, "capacityData": data}

        return await ctx.run(count)


APIS: tuple[type[APIMessage], ...] = (
    AddIpRange, AddIpRangeByNetworkCidr, UpdateIpRange, DeleteIpRange, QueryIpRange,
    GetFreeIp, GetIpAddressCapacity)


# --------------------------------------------------------------------------- registration


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(IP_RANGE, model=IpRangeVO, inventory=IP_RANGE_INVENTORY,
                       to_inventory=ip_range_fields,
                       description="A range of IPv4 addresses of an L3 network")


def cascade_edges() -> Iterator[CascadeEdge]:
    yield CascadeEdge(IP_RANGE, "L3NetworkVO", field="l3NetworkUuid")


def query_expansions() -> Iterator[QueryExpansion]:
    yield QueryExpansion("L3NetworkVO", "ipRanges", IP_RANGE, foreign_key="l3NetworkUuid")
    yield QueryExpansion(IP_RANGE, "l3Network", "L3NetworkVO", local_key="l3NetworkUuid")


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)
