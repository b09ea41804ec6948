"""IP allocator strategies: which free address of an L3 network a NIC gets.

Strategies are drivers in the stevedore namespace ``zcore.ip_allocators`` (subclasses of
:class:`IpAllocatorStrategy`): ``RandomIpAllocatorStrategy`` (the default) and
``FirstAvailableIpAllocatorStrategy``. A strategy only *proposes* an address; it finds one
with indexed queries over ``UsedIpVO`` (never by walking every address of a range in
Python), and :func:`allocate_ip` claims it by inserting the ``UsedIpVO`` row in a
savepoint. The unique (l3NetworkUuid, ipInLong) constraint makes that claim atomic: when a
concurrent allocation took the address first, the insert fails, the address is excluded and
the strategy asked again.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.orm import Session, aliased

from zcore.db import insert_unless_taken, new_uuid, table_of, utcnow
from zcore.errors import ZError
from zcore.records import GlobalConfigOption
from zplugins.network.models import IpRangeVO, L3NetworkVO, UsedIpVO

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "DEFAULT_STRATEGY",
    "IP_ALLOCATION_ERROR",
    "IP_ALLOCATORS",
    "FirstAvailableIpAllocatorStrategy",
    "IpAllocatorStrategy",
    "RandomIpAllocatorStrategy",
    "UsedIp",
    "allocate_ip",
    "check_static_ip",
]

#: The stevedore namespace of IP allocator strategies.
IP_ALLOCATORS = "zcore.ip_allocators"
DEFAULT_STRATEGY = "RandomIpAllocatorStrategy"
#: No free IP, or a static IP that is taken or outside every range of the L3 network.
IP_ALLOCATION_ERROR = "L3.1001"

#: How many claims may lose a race before allocation gives up.
_MAX_CLAIMS = 64


@dataclass(frozen=True, slots=True)
class Range:
    """An IP range of an L3 network with its ends as integers."""

    uuid: str
    l3NetworkUuid: str
    first: int
    last: int
    netmask: str
    gateway: str

    @classmethod
    def of(cls, row: Any) -> Range:
        """From an :class:`IpRangeVO` row (or any row with its columns)."""
        return cls(row.uuid, row.l3NetworkUuid, int(IPv4Address(row.startIp)),
                   int(IPv4Address(row.endIp)), row.netmask, row.gateway)


@dataclass(frozen=True, slots=True)
class UsedIp:
    """The values of a :class:`UsedIpVO` row :func:`allocate_ip` wrote."""

    uuid: str
    ipRangeUuid: str
    l3NetworkUuid: str
    ip: str
    ipInLong: int
    ipVersion: int
    gateway: str
    netmask: str
    vmNicUuid: str | None


# Statements built once: building one costs more than running it.
_RANGES, _USED_IPS = table_of(IpRangeVO), table_of(UsedIpVO)
_RANGES_OF = select(_RANGES.c.uuid, _RANGES.c.l3NetworkUuid, _RANGES.c.startIp,
                    _RANGES.c.endIp, _RANGES.c.netmask, _RANGES.c.gateway).where(
    _RANGES.c.l3NetworkUuid == bindparam("l3"), _RANGES.c.ipVersion == 4)
_IS_USED = select(_USED_IPS.c.uuid).where(_USED_IPS.c.l3NetworkUuid == bindparam("l3"),
                                          _USED_IPS.c.ipInLong == bindparam("ip"))


def ranges_of(session: Session, l3_uuid: str) -> list[Range]:
    """The IPv4 ranges of an L3 network (a handful of rows), by start address."""
    rows = session.connection().execute(_RANGES_OF, {"l3": l3_uuid})
    return sorted((Range.of(r) for r in rows), key=lambda r: r.first)


def is_used(session: Session, l3_uuid: str, ip: int) -> bool:
    return session.connection().execute(_IS_USED, {"l3": l3_uuid, "ip": ip}).first() is not None


def first_free(session: Session, rng: Range, start: int, exclude: frozenset[int]) -> int | None:
    """The lowest free address of ``rng`` at or after ``start``: one gap-finding query.

    ``exclude`` holds addresses whose claim just lost a race (already committed by another
    transaction, so visible now, but excluded to be safe against snapshot isolation).
    """
    point = max(start, rng.first)
    while point <= rng.last:
        if point not in exclude and not is_used(session, rng.l3NetworkUuid, point):
            return point
        # The smallest used address u >= point in the range whose successor is not used.
        nxt = aliased(UsedIpVO)
        gap = session.scalar(select(func.min(UsedIpVO.ipInLong + 1)).where(
            UsedIpVO.l3NetworkUuid == rng.l3NetworkUuid,
            UsedIpVO.ipInLong >= point, UsedIpVO.ipInLong < rng.last,
            ~exists().where(nxt.l3NetworkUuid == rng.l3NetworkUuid,
                            nxt.ipInLong == UsedIpVO.ipInLong + 1)))
        if gap is None:
            return None
        if gap not in exclude:
            return int(gap)
        point = int(gap) + 1
    return None


class IpAllocatorStrategy(ABC):
    """Proposes a free address of an L3 network; the base of ``zcore.ip_allocators`` drivers.

    :meth:`pick` runs in the allocating transaction and must find its answer with a few
    indexed queries (see :func:`first_free`), whatever the size of the ranges.
    """

    name: ClassVar[str]

    @abstractmethod
    def pick(self, session: Session, ranges: list[Range],
             exclude: frozenset[int]) -> tuple[Range, int] | None:
        """An address (with its range) not in ``exclude`` to claim, or ``None`` if there is
        none free. The caller claims it; when it is taken, the caller asks again with it in
        ``exclude``."""


class FirstAvailableIpAllocatorStrategy(IpAllocatorStrategy):
    """The lowest free address of the first range that has one."""

    name = "FirstAvailableIpAllocatorStrategy"

    def pick(self, session: Session, ranges: list[Range],
             exclude: frozenset[int]) -> tuple[Range, int] | None:
        for rng in ranges:
            ip = first_free(session, rng, rng.first, exclude)
            if ip is not None:
                return rng, ip
        return None


class RandomIpAllocatorStrategy(IpAllocatorStrategy):
    """A random free address: a few random guesses, then the first free one after a random
    point (wrapping round), so a nearly full range costs a few queries too.

    A guess is not looked up first: claiming it is one statement, as the lookup would be,
    and a taken one comes back in ``exclude``.
    """

    name = "RandomIpAllocatorStrategy"
    probes = 4

    def pick(self, session: Session, ranges: list[Range],
             exclude: frozenset[int]) -> tuple[Range, int] | None:
        if not ranges:
            return None
        if len(exclude) < self.probes:
            rng = random.choice(ranges)
            ip = random.randint(rng.first, rng.last)
            if ip not in exclude:
                return rng, ip
        order = list(ranges)
        random.shuffle(order)
        for rng in order:
            start = random.randint(rng.first, rng.last)
            found = first_free(session, rng, start, exclude)
            if found is None:
                found = first_free(session, rng, rng.first, exclude)
            if found is not None:
                return rng, found
        return None


def _range_of(ranges: list[Range], ip: int) -> Range | None:
    return next((r for r in ranges if r.first <= ip <= r.last), None)


def check_static_ip(session: Session, l3_uuid: str, ip: str) -> Range:
    """The range of L3 network ``l3_uuid`` holding ``ip``; ``L3.1001`` if it is outside
    every range or already used, ``SYS.1007`` if it is not an IPv4 address."""
    from zcore.errors import INVALID_ARGUMENT

    try:
        value = int(IPv4Address(ip.strip()))
    except ValueError:
        raise ZError(INVALID_ARGUMENT, "invalid static IP",
                     f"static IP {ip!r} for L3 network {l3_uuid} is not an IPv4 address") from None
    ranges = ranges_of(session, l3_uuid)
    rng = _range_of(ranges, value)
    if rng is None:
        spans = ", ".join(f"{IPv4Address(r.first)}~{IPv4Address(r.last)}" for r in ranges)
        raise ZError(IP_ALLOCATION_ERROR, "static IP outside the L3 network's ranges",
                     f"static IP {ip} is in no IP range of L3 network {l3_uuid} "
                     f"(ranges: {spans or 'none'}); choose an address inside one")
    if is_used(session, l3_uuid, value):
        raise ZError(IP_ALLOCATION_ERROR, "static IP already used",
                     f"static IP {ip} of L3 network {l3_uuid} is already used; choose a free "
                     "one (GetFreeIp lists them)")
    return rng


#: Global configuration ``l3.ipAllocatorStrategy``: the strategy used when none is asked.
CONFIG_CATEGORY, CONFIG_NAME = "l3", "ipAllocatorStrategy"


def global_configs() -> list[GlobalConfigOption]:
    return [GlobalConfigOption(CONFIG_CATEGORY, CONFIG_NAME, str, DEFAULT_STRATEGY,
                               description="How VM NICs get their IP: the name of a driver "
                                           f"in {IP_ALLOCATORS}",
                               driver_namespace=IP_ALLOCATORS)]


def strategy_of(node: Node | None, name: str | None) -> IpAllocatorStrategy:
    """An instance of the strategy ``name`` (default: the global configuration
    ``l3.ipAllocatorStrategy``) from the node's drivers."""
    if name is None and node is not None:
        name = str(node.global_config.get(CONFIG_CATEGORY, CONFIG_NAME))
    name = name or DEFAULT_STRATEGY
    if node is None:
        builtin: dict[str, type[IpAllocatorStrategy]] = {
            c.name: c for c in (RandomIpAllocatorStrategy, FirstAvailableIpAllocatorStrategy)}
        return builtin[name]()
    cls = node.drivers.get(IP_ALLOCATORS, name)
    return cls()  # type: ignore[no-any-return]


def allocate_ip(session: Session, l3_uuid: str, *, vm_nic_uuid: str | None,
                strategy: IpAllocatorStrategy, static_ip: str | None = None,
                used_for: str = "Vm", ranges: Sequence[Range] | None = None) -> UsedIp:
    """Claim an address of L3 network ``l3_uuid`` (``static_ip`` if given): a new ``UsedIpVO``
    row, whose values are returned.

    ``ranges``: the network's IPv4 ranges as the caller read them before (a round trip
    saved); when none of them has a free address they are read again, and a claim in one
    deleted since raises :class:`~sqlalchemy.exc.IntegrityError` (no parent range).

    Runs in the caller's transaction; a claim that finds the address taken (a lost race,
    or a guess of the strategy) undoes only itself, and the strategy is asked again.
    ``L3.1001`` when the network has no free address or the static IP is refused.
    """
    if static_ip is not None:
        rng = check_static_ip(session, l3_uuid, static_ip)
        row = _claim(session, rng, int(IPv4Address(static_ip.strip())), vm_nic_uuid, used_for)
        if row is None:
            raise ZError(IP_ALLOCATION_ERROR, "static IP already used",
                         f"static IP {static_ip} of L3 network {l3_uuid} was just taken by "
                         "another allocation; choose another one")
        return row
    planned = bool(ranges)
    ranges = list(ranges) if ranges else ranges_of(session, l3_uuid)
    exclude: set[int] = set()
    for _ in range(_MAX_CLAIMS):
        found = strategy.pick(session, ranges, frozenset(exclude))
        if found is None:
            if planned:  # ranges may have been added since
                planned, ranges = False, ranges_of(session, l3_uuid)
                continue
            break
        rng, ip = found
        row = _claim(session, rng, ip, vm_nic_uuid, used_for)
        if row is not None:
            return row
        exclude.add(ip)
    l3 = session.get(L3NetworkVO, l3_uuid)
    name = f"'{l3.name}' " if l3 is not None else ""
    raise ZError(IP_ALLOCATION_ERROR, "no free IP",
                 f"L3 network {name}({l3_uuid}) has no free IP address in its "
                 f"{len(ranges)} IP range(s); add an IP range or release addresses")


def _claim(session: Session, rng: Range, ip: int, vm_nic_uuid: str | None,
           used_for: str) -> UsedIp | None:
    used = UsedIp(uuid=new_uuid(), ipRangeUuid=rng.uuid, l3NetworkUuid=rng.l3NetworkUuid,
                  ip=str(IPv4Address(ip)), ipInLong=ip, ipVersion=4, gateway=rng.gateway,
                  netmask=rng.netmask, vmNicUuid=vm_nic_uuid)
    now = utcnow()
    # A Core INSERT: the unit of work would cost more than the claim itself. The address
    # is taken when another allocation has it (unique l3NetworkUuid, ipInLong).
    taken = not insert_unless_taken(session, _USED_IPS, {
        "uuid": used.uuid, "ipRangeUuid": used.ipRangeUuid,
        "l3NetworkUuid": used.l3NetworkUuid, "ip": used.ip, "ipInLong": ip,
        "ipVersion": 4, "gateway": used.gateway, "netmask": used.netmask,
        "usedFor": used_for, "vmNicUuid": vm_nic_uuid, "createDate": now,
        "lastOpDate": now})
    return None if taken else used
