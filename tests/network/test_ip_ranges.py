"""IP ranges: the checks ZStack makes, ranges by CIDR, free IPs and IP capacity."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address
from typing import Any

import pytest

from zcore.api import Caller
from zcore.node import Node
from zplugins.network.ip_ranges import free_ips
from zplugins.network.models import IpRangeVO

from .helpers import call, fails, ip_range, l3, rows, use_ips, vlan_l2, zone

pytestmark = pytest.mark.db


async def l3_network(node: Node, zone_name: str = "z1") -> dict[str, Any]:
    z = await zone(node, zone_name)
    return await l3(node, (await vlan_l2(node, z["uuid"]))["uuid"])


async def test_a_range_records_its_subnet(node: Node) -> None:
    net = await l3_network(node)
    r = await ip_range(node, net["uuid"], "192.168.0.10", "192.168.0.20")
    assert {k: r[k] for k in ("startIp", "endIp", "netmask", "gateway", "networkCidr",
                              "prefixLen", "ipVersion", "ipRangeType", "l3NetworkUuid")} == {
        "startIp": "192.168.0.10", "endIp": "192.168.0.20", "netmask": "255.255.255.0",
        "gateway": "192.168.0.1", "networkCidr": "192.168.0.0/24", "prefixLen": 24,
        "ipVersion": 4, "ipRangeType": "Normal", "l3NetworkUuid": net["uuid"]}
    # Another range of the same subnet and gateway, next to it.
    await ip_range(node, net["uuid"], "192.168.0.21", "192.168.0.30", name="r2")
    found = (await call(node, "QueryIpRange", q=[f"l3NetworkUuid={net['uuid']}"],
                        sort="+startIp"))["inventories"]
    assert [x["startIp"] for x in found] == ["192.168.0.10", "192.168.0.21"]


BAD_RANGES = [
    # (start, end, netmask, gateway), what the error says
    (("192.168.0.30", "192.168.0.20", "255.255.255.0", "192.168.0.1"),
     "start ip 192.168.0.30 is after end ip 192.168.0.20"),
    (("192.168.0.10", "192.168.0.20", "255.255.255.0", "192.168.1.1"),
     "the gateway 192.168.1.1 is not in the subnet 192.168.0.0/24"),
    (("192.168.0.10", "192.168.0.20", "255.255.255.0", "192.168.0.15"),
     "the gateway 192.168.0.15 cannot be part of the range"),
    (("192.168.0.10", "192.168.1.20", "255.255.255.0", "192.168.0.1"),
     "the end ip 192.168.1.20 is not in the subnet 192.168.0.0/24"),
    (("192.168.0.0", "192.168.0.20", "255.255.255.0", "192.168.0.254"),
     "cannot contain the network address 192.168.0.0"),
    (("192.168.0.10", "192.168.0.255", "255.255.255.0", "192.168.0.1"),
     "or the broadcast address 192.168.0.255"),
    (("192.168.0.10", "192.168.0.20", "255.0.255.0", "192.168.0.1"),
     "is not a netmask"),
    (("192.168.0.10", "192.168.0.20", "0.0.0.0", "192.168.0.1"), "cannot be 0.0.0.0"),
    (("192.168.0.300", "192.168.0.20", "255.255.255.0", "192.168.0.1"),
     "parameter 'startIp': '192.168.0.300' is not an IPv4 address"),
    (("fe80::1", "fe80::9", "255.255.255.0", "fe80::fe"), "is not an IPv4 address"),
    (("224.0.0.10", "224.0.0.20", "255.255.255.0", "224.0.0.1"), "multicast"),
    (("169.254.2.10", "169.254.2.20", "255.255.255.0", "169.254.2.1"), "link-local"),
]


@pytest.mark.parametrize(("addresses", "fragment"), BAD_RANGES)
async def test_a_bad_range_is_refused_and_nothing_changes(node: Node, addresses: tuple[str, ...],
                                                          fragment: str) -> None:
    net = await l3_network(node)
    before = await rows(node)
    start, end, netmask, gateway = addresses
    error = await fails(ip_range(node, net["uuid"], start, end, netmask, gateway), "SYS.1007")
    assert fragment in error.details
    assert await rows(node) == before


async def test_a_normal_range_needs_a_gateway_and_pools_are_not_supported(node: Node) -> None:
    net = await l3_network(node)
    base = {"l3NetworkUuid": net["uuid"], "name": "r", "startIp": "10.0.0.2",
            "endIp": "10.0.0.9", "netmask": "255.255.255.0"}
    error = await fails(call(node, "AddIpRange", **base), "SYS.1007")
    assert "'gateway' is required" in error.details
    error = await fails(call(node, "AddIpRange", **base, gateway="10.0.0.1",
                             ipRangeType="AddressPool"), "SYS.1007")
    assert "address pools are not supported yet" in error.details


async def test_overlapping_ranges_are_refused(node: Node) -> None:
    net = await l3_network(node)
    first = await ip_range(node, net["uuid"], "10.0.0.10", "10.0.0.20", gateway="10.0.0.1")
    before = await rows(node)
    for start, end in (("10.0.0.20", "10.0.0.30"), ("10.0.0.2", "10.0.0.10"),
                       ("10.0.0.12", "10.0.0.13"), ("10.0.0.2", "10.0.0.200")):
        error = await fails(ip_range(node, net["uuid"], start, end, gateway="10.0.0.1"),
                            "SYS.1007")
        assert f"overlaps the IP range r1 ({first['uuid']}: 10.0.0.10 ~ 10.0.0.20)" \
            in error.details
    assert await rows(node) == before


async def test_ranges_of_networks_on_one_l2_network_may_not_overlap(node: Node) -> None:
    z = await zone(node)
    l2 = await vlan_l2(node, z["uuid"])
    a, b = await l3(node, l2["uuid"], "a"), await l3(node, l2["uuid"], "b")
    await ip_range(node, a["uuid"], "10.0.0.10", "10.0.0.20", gateway="10.0.0.1")
    error = await fails(ip_range(node, b["uuid"], "10.0.0.15", "10.0.0.30",
                                 gateway="10.0.0.1"), "SYS.1007")
    assert f"of L3 network {a['uuid']} on the same L2 network" in error.details
    # On another L2 network the same addresses are fine.
    other = await l3(node, (await vlan_l2(node, z["uuid"], vlan=200))["uuid"], "other")
    await ip_range(node, other["uuid"], "10.0.0.10", "10.0.0.20", gateway="10.0.0.1")


async def test_one_subnet_and_one_gateway_per_l3_network(node: Node) -> None:
    net = await l3_network(node)
    await ip_range(node, net["uuid"], "10.0.0.10", "10.0.0.20", gateway="10.0.0.1")
    error = await fails(ip_range(node, net["uuid"], "10.0.1.10", "10.0.1.20",
                                 gateway="10.0.1.1"), "SYS.1007")
    assert "already has ranges in 10.0.0.0/24" in error.details
    error = await fails(ip_range(node, net["uuid"], "10.0.0.30", "10.0.0.40",
                                 gateway="10.0.0.254"), "SYS.1007")
    assert "differs from the gateway 10.0.0.1" in error.details


async def test_concurrent_overlapping_ranges_are_not_both_added(node: Node) -> None:
    net = await l3_network(node)
    results = await asyncio.gather(
        *(ip_range(node, net["uuid"], f"10.0.0.{10 + i}", f"10.0.0.{30 + i}",
                   gateway="10.0.0.1", name=f"r{i}") for i in range(4)),
        return_exceptions=True)
    assert len([r for r in results if isinstance(r, dict)]) == 1
    assert (await rows(node))["IpRangeVO"] == 1


# --------------------------------------------------------------------------- by CIDR


async def test_a_cidr_becomes_a_range_after_its_gateway(node: Node) -> None:
    net = await l3_network(node)
    reply = await call(node, "AddIpRangeByNetworkCidr", l3NetworkUuid=net["uuid"], name="all",
                       networkCidr="172.16.0.0/24")
    r = reply["inventory"]
    assert reply["inventories"] == [r]
    assert (r["startIp"], r["endIp"], r["gateway"], r["netmask"], r["networkCidr"]) == \
        ("172.16.0.2", "172.16.0.254", "172.16.0.1", "255.255.255.0", "172.16.0.0/24")


async def test_a_gateway_inside_a_cidr_splits_it(node: Node) -> None:
    net = await l3_network(node)
    reply = await call(node, "AddIpRangeByNetworkCidr", l3NetworkUuid=net["uuid"], name="all",
                       networkCidr="172.16.0.0/24", gateway="172.16.0.100")
    assert [(r["startIp"], r["endIp"], r["gateway"]) for r in reply["inventories"]] == [
        ("172.16.0.1", "172.16.0.99", "172.16.0.100"),
        ("172.16.0.101", "172.16.0.254", "172.16.0.100")]
    assert reply["inventory"] == reply["inventories"][0]


@pytest.mark.parametrize(("cidr", "gateway", "fragment"), [
    ("172.16.0.0/31", None, "has no usable IP range"),
    ("172.16.0.0/33", None, "is not an IPv4 network CIDR"),
    ("not-a-cidr", None, "is not an IPv4 network CIDR"),
    ("172.16.0.0/24", "172.16.1.1", "is not a host address of the subnet 172.16.0.0/24"),
    ("172.16.0.0/24", "172.16.0.255", "is not a host address"),
])
async def test_bad_cidrs_are_refused(node: Node, cidr: str, gateway: str | None,
                                     fragment: str) -> None:
    net = await l3_network(node)
    params = {"gateway": gateway} if gateway else {}
    error = await fails(call(node, "AddIpRangeByNetworkCidr", l3NetworkUuid=net["uuid"],
                             name="r", networkCidr=cidr, **params), "SYS.1007")
    assert fragment in error.details
    assert (await rows(node))["IpRangeVO"] == 0


# --------------------------------------------------------------------------- free IPs


async def free(node: Node, **params: Any) -> list[str]:
    return [x["ip"] for x in (await call(node, "GetFreeIp", **params))["inventories"]]


async def test_free_ips_skip_used_ones_across_ranges(node: Node) -> None:
    net = await l3_network(node)
    low = await ip_range(node, net["uuid"], "10.0.0.10", "10.0.0.13", gateway="10.0.0.1")
    high = await ip_range(node, net["uuid"], "10.0.0.100", "10.0.0.102", gateway="10.0.0.1",
                          name="r2")
    await use_ips(node, low["uuid"], "10.0.0.10", "10.0.0.12")
    await use_ips(node, high["uuid"], "10.0.0.101")
    assert await free(node, l3NetworkUuid=net["uuid"]) == \
        ["10.0.0.11", "10.0.0.13", "10.0.0.100", "10.0.0.102"]
    assert await free(node, l3NetworkUuid=net["uuid"], limit=2) == ["10.0.0.11", "10.0.0.13"]
    assert await free(node, l3NetworkUuid=net["uuid"], start="10.0.0.12") == \
        ["10.0.0.13", "10.0.0.100", "10.0.0.102"]
    assert await free(node, ipRangeUuid=high["uuid"]) == ["10.0.0.100", "10.0.0.102"]
    assert await free(node, l3NetworkUuid=net["uuid"], limit=-1) == \
        await free(node, l3NetworkUuid=net["uuid"])
    one = (await call(node, "GetFreeIp", ipRangeUuid=high["uuid"], limit=1))["inventories"]
    assert one == [{"ipRangeUuid": high["uuid"], "ip": "10.0.0.100",
                    "netmask": "255.255.255.0", "gateway": "10.0.0.1"}]


async def test_get_free_ip_needs_a_network_or_a_range(node: Node) -> None:
    net = await l3_network(node)
    other = await l3(node, net["l2NetworkUuid"], "other")
    r = await ip_range(node, net["uuid"])
    error = await fails(call(node, "GetFreeIp"), "SYS.1007")
    assert "give ipRangeUuid or l3NetworkUuid" in error.details
    error = await fails(call(node, "GetFreeIp", ipRangeUuid=r["uuid"],
                             l3NetworkUuid=other["uuid"]), "SYS.1007")
    assert "is not a range of L3 network" in error.details
    error = await fails(call(node, "GetFreeIp", l3NetworkUuid=net["uuid"], start="10.0.0"),
                        "SYS.1007")
    assert "'start'" in error.details


async def test_free_ips_are_found_past_many_used_ones(node: Node) -> None:
    net = await l3_network(node)
    r = await ip_range(node, net["uuid"], "10.0.0.2", "10.0.7.254", "255.255.248.0",
                       "10.0.0.1")
    first = int(IPv4Address("10.0.0.2"))
    # 1,200 used addresses (more than two of GetFreeIp's reads) with two holes.
    used = [str(IPv4Address(first + i)) for i in range(1200) if i not in (600, 1100)]
    await use_ips(node, r["uuid"], *used)
    expected = [str(IPv4Address(first + i)) for i in (600, 1100, 1200, 1201)]
    assert await free(node, l3NetworkUuid=net["uuid"], limit=4) == expected

    def direct(session: Any) -> list[str]:
        row = session.get(IpRangeVO, r["uuid"])
        return [str(ip) for _, ip in free_ips(session, [row], IPv4Address("10.0.2.100"), 2)]

    assert await node.db.run(direct) == ["10.0.4.78", "10.0.4.178"]
    capacity = await call(node, "GetIpAddressCapacity", ipRangeUuids=[r["uuid"]])
    assert (capacity["totalCapacity"], capacity["usedIpAddressNumber"],
            capacity["availableCapacity"]) == (2045, 1198, 847)


# --------------------------------------------------------------------------- capacity


async def test_capacity_of_ranges_networks_and_zones(node: Node) -> None:
    net = await l3_network(node)
    z = net["zoneUuid"]
    a = await ip_range(node, net["uuid"], "10.0.0.10", "10.0.0.19", gateway="10.0.0.1")
    b = await ip_range(node, net["uuid"], "10.0.0.30", "10.0.0.34", gateway="10.0.0.1",
                       name="r2")
    other = await l3_network(node, "z2")
    c = await ip_range(node, other["uuid"], "10.9.0.2", "10.9.0.5", gateway="10.9.0.1")
    await use_ips(node, a["uuid"], "10.0.0.10", "10.0.0.11", "10.0.0.12")
    await use_ips(node, b["uuid"], "10.0.0.34")

    def numbers(reply: dict[str, Any]) -> tuple[int, int, int]:
        return (reply["totalCapacity"], reply["usedIpAddressNumber"],
                reply["availableCapacity"])

    by_range = await call(node, "GetIpAddressCapacity", ipRangeUuids=[a["uuid"], b["uuid"]])
    assert numbers(by_range) == (15, 4, 11)
    assert by_range["resourceType"] == "IpRangeVO"
    assert {d["resourceUuid"]: numbers(d) for d in by_range["capacityData"]} == {
        a["uuid"]: (10, 3, 7), b["uuid"]: (5, 1, 4)}
    assert (by_range["ipv4TotalCapacity"], by_range["ipv4UsedIpAddressNumber"],
            by_range["ipv4AvailableCapacity"], by_range["ipv6TotalCapacity"]) == (15, 4, 11, 0)
    by_l3 = await call(node, "GetIpAddressCapacity", l3NetworkUuids=[net["uuid"]])
    assert (numbers(by_l3), by_l3["resourceType"]) == ((15, 4, 11), "L3NetworkVO")
    by_zone = await call(node, "GetIpAddressCapacity", zoneUuids=[z])
    assert (numbers(by_zone), by_zone["resourceType"]) == ((15, 4, 11), "ZoneVO")
    everything = await call(node, "GetIpAddressCapacity", all=True)
    assert numbers(everything) == (19, 4, 15)
    assert {d["resourceUuid"]: numbers(d) for d in everything["capacityData"]} == {
        z: (15, 4, 11), other["zoneUuid"]: (4, 0, 4)}
    await use_ips(node, c["uuid"], "10.9.0.2")
    assert numbers(await call(node, "GetIpAddressCapacity", all=True)) == (19, 5, 14)
    # A range deleted takes its used IPs with it.
    await call(node, "DeleteIpRange", uuid=a["uuid"])
    assert numbers(await call(node, "GetIpAddressCapacity", l3NetworkUuids=[net["uuid"]])) == \
        (5, 1, 4)
    assert (await rows(node))["UsedIpVO"] == 2


async def test_capacity_needs_something_to_count(node: Node) -> None:
    error = await fails(call(node, "GetIpAddressCapacity"), "SYS.1007")
    assert "or all=true" in error.details
    await fails(call(node, "GetIpAddressCapacity", l3NetworkUuids=["0" * 32]), "SYS.1003")
    empty = await call(node, "GetIpAddressCapacity", all=True)
    assert (empty["totalCapacity"], empty["capacityData"]) == (0, [])


async def test_a_normal_account_sees_and_counts_its_own_networks(node: Node) -> None:
    tenant = Caller(account_uuid="7" * 32, account_name="tenant", is_admin=False)
    admins = await l3_network(node)
    await ip_range(node, admins["uuid"], "10.0.0.2", "10.0.0.9", gateway="10.0.0.1")
    z = (await call(node, "CreateZone", tenant, name="mine"))["inventory"]
    l2 = (await call(node, "CreateL2VlanNetwork", tenant, zoneUuid=z["uuid"], name="l2",
                     physicalInterface="eth0", vlan=10))["inventory"]
    own = (await call(node, "CreateL3Network", tenant, l2NetworkUuid=l2["uuid"],
                      name="own"))["inventory"]
    await call(node, "AddIpRange", tenant, l3NetworkUuid=own["uuid"], name="r",
               startIp="10.5.0.2", endIp="10.5.0.3", netmask="255.255.255.0",
               gateway="10.5.0.1")
    seen = (await call(node, "QueryL3Network", tenant))["inventories"]
    assert [x["uuid"] for x in seen] == [own["uuid"]]
    assert (await call(node, "GetIpAddressCapacity", tenant, all=True))["totalCapacity"] == 2
    assert (await call(node, "GetIpAddressCapacity", all=True))["totalCapacity"] == 10
    await fails(call(node, "GetFreeIp", tenant, l3NetworkUuid=admins["uuid"]), "ID.1002")
    await fails(call(node, "CreateL3Network", tenant, l2NetworkUuid=admins["l2NetworkUuid"],
                     name="theirs"), "ID.1002")
