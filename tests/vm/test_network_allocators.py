"""IP allocator strategies against the database: free addresses, static IPs, races."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from zcore.errors import ZError
from zcore.node import Node
from zplugins.network.ip_allocators import (
    IP_ALLOCATION_ERROR,
    IP_ALLOCATORS,
    FirstAvailableIpAllocatorStrategy,
    Range,
    allocate_ip,
    strategy_of,
)
from zplugins.network.models import UsedIpVO

from ..network.helpers import fails, ip_range, l3, use_ips, vlan_l2, zone

pytestmark = pytest.mark.db

FIRST = "FirstAvailableIpAllocatorStrategy"
RANDOM = "RandomIpAllocatorStrategy"


async def network(node: Node, start: str = "192.168.0.10", end: str = "192.168.0.20",
                  **kw: Any) -> tuple[str, str]:
    z = await zone(node)
    net = await l3(node, (await vlan_l2(node, z["uuid"]))["uuid"])
    r = await ip_range(node, net["uuid"], start, end, **kw)
    return net["uuid"], r["uuid"]


async def allocate(node: Node, l3_uuid: str, strategy: str = RANDOM,
                   static_ip: str | None = None) -> str:
    def run(session: Session) -> str:
        return allocate_ip(session, l3_uuid, vm_nic_uuid=None,
                           strategy=strategy_of(node, strategy), static_ip=static_ip).ip

    return await node.db.run(run)


async def used(node: Node, l3_uuid: str) -> list[str]:
    def read(session: Session) -> list[str]:
        return list(session.scalars(select(UsedIpVO.ip).where(
            UsedIpVO.l3NetworkUuid == l3_uuid).order_by(UsedIpVO.ipInLong)))

    return await node.db.run(read)


async def test_both_strategies_are_drivers(node: Node) -> None:
    assert {FIRST, RANDOM} <= set(node.drivers.names(IP_ALLOCATORS))


async def test_first_available_fills_the_lowest_gaps_in_order(node: Node) -> None:
    l3_uuid, range_uuid = await network(node)
    await use_ips(node, range_uuid, "192.168.0.10", "192.168.0.11", "192.168.0.13")
    got = [await allocate(node, l3_uuid, FIRST) for _ in range(3)]
    assert got == ["192.168.0.12", "192.168.0.14", "192.168.0.15"]


async def test_random_gives_every_address_once_then_a_clear_error(node: Node) -> None:
    l3_uuid, _ = await network(node, "192.168.0.10", "192.168.0.20")
    got = [await allocate(node, l3_uuid, RANDOM) for _ in range(11)]
    assert sorted(got, key=lambda ip: int(ip.split(".")[-1])) == [
        f"192.168.0.{i}" for i in range(10, 21)]
    error = await fails(allocate(node, l3_uuid, RANDOM), IP_ALLOCATION_ERROR)
    assert l3_uuid in str(error.details) and "no free IP" in str(error.details)
    await fails(allocate(node, l3_uuid, FIRST), IP_ALLOCATION_ERROR)


async def test_a_huge_range_is_allocated_from_without_walking_it(node: Node) -> None:
    l3_uuid, range_uuid = await network(node, "10.0.0.2", "10.255.255.254",
                                        netmask="255.0.0.0", gateway="10.0.0.1")
    await use_ips(node, range_uuid, "10.0.0.2", "10.0.0.3")
    assert await allocate(node, l3_uuid, FIRST) == "10.0.0.4"
    ip = await allocate(node, l3_uuid, RANDOM)
    assert ip.startswith("10.") and ip not in ("10.0.0.2", "10.0.0.3", "10.0.0.4")


async def test_concurrent_allocations_never_give_an_address_twice(node: Node) -> None:
    l3_uuid, _ = await network(node, "192.168.0.10", "192.168.0.29")  # 20 addresses
    results = await asyncio.gather(*(allocate(node, l3_uuid, s)
                                     for s in [RANDOM, FIRST] * 15), return_exceptions=True)
    ips = [r for r in results if isinstance(r, str)]
    errors = [r for r in results if not isinstance(r, str)]
    assert len(ips) == 20 and len(set(ips)) == 20
    assert len(errors) == 10
    assert all(isinstance(e, ZError) and e.code == IP_ALLOCATION_ERROR for e in errors)
    assert await used(node, l3_uuid) == sorted(ips, key=lambda ip: int(ip.split(".")[-1]))


async def test_a_static_ip_taken_or_outside_the_ranges_is_refused(node: Node) -> None:
    l3_uuid, range_uuid = await network(node)
    await use_ips(node, range_uuid, "192.168.0.15")
    assert await allocate(node, l3_uuid, static_ip="192.168.0.16") == "192.168.0.16"
    error = await fails(allocate(node, l3_uuid, static_ip="192.168.0.15"), IP_ALLOCATION_ERROR)
    assert "192.168.0.15" in str(error.details) and "already used" in str(error.details)
    error = await fails(allocate(node, l3_uuid, static_ip="192.168.0.99"), IP_ALLOCATION_ERROR)
    assert "192.168.0.99" in str(error.details) and l3_uuid in str(error.details)
    await fails(allocate(node, l3_uuid, static_ip="not-an-ip"), "SYS.1007")
    assert await used(node, l3_uuid) == ["192.168.0.15", "192.168.0.16"]


class _TakenMeanwhile(FirstAvailableIpAllocatorStrategy):
    """Picks first an address that another node took after this one read the free ones."""

    def __init__(self, taken: str) -> None:
        self.taken = int(IPv4Address(taken))
        self.excluded: list[frozenset[int]] = []

    def pick(self, session: Session, ranges: list[Range],
             exclude: frozenset[int]) -> tuple[Range, int] | None:
        self.excluded.append(exclude)
        if len(self.excluded) == 1:
            return ranges[0], self.taken
        return super().pick(session, ranges, exclude)


async def test_an_address_taken_meanwhile_is_passed_over_for_the_next(node: Node) -> None:
    l3_uuid, range_uuid = await network(node)
    await use_ips(node, range_uuid, "192.168.0.15")
    strategy = _TakenMeanwhile("192.168.0.15")

    def run(session: Session) -> str:
        return allocate_ip(session, l3_uuid, vm_nic_uuid=None, strategy=strategy).ip

    assert await node.db.run(run) == "192.168.0.10"
    assert strategy.excluded == [frozenset(), frozenset({strategy.taken})]
    assert await used(node, l3_uuid) == ["192.168.0.10", "192.168.0.15"]
