"""L3 networks: creating, updating, DNS servers, queries across networks and clusters."""

from __future__ import annotations

from typing import Any

import pytest

from zcore.node import Node

from .helpers import (
    IP_RANGE_FIELDS,
    L3_FIELDS,
    call,
    cluster,
    fails,
    ip_range,
    l3,
    rows,
    vlan_l2,
    zone,
)

pytestmark = pytest.mark.db


async def network(node: Node) -> tuple[dict[str, Any], dict[str, Any]]:
    z = await zone(node)
    return z, await vlan_l2(node, z["uuid"])


async def test_an_l3_network_has_zstacks_inventory(node: Node) -> None:
    z, l2 = await network(node)
    made = await l3(node, l2["uuid"], dnsDomain="corp.example.com", description="web tier")
    assert set(made) == L3_FIELDS
    assert {k: made[k] for k in ("type", "zoneUuid", "l2NetworkUuid", "state", "category",
                                 "system", "ipVersion", "enableIPAM", "dnsDomain",
                                 "description", "dns", "ipRanges", "networkServices",
                                 "hostRoute", "reservedIpRanges")} == {
        "type": "L3BasicNetwork", "zoneUuid": z["uuid"], "l2NetworkUuid": l2["uuid"],
        "state": "Enabled", "category": "Private", "system": False, "ipVersion": 4,
        "enableIPAM": True, "dnsDomain": "corp.example.com", "description": "web tier",
        "dns": [], "ipRanges": [], "networkServices": [], "hostRoute": [],
        "reservedIpRanges": []}
    r = await ip_range(node, made["uuid"])
    assert set(r) == IP_RANGE_FIELDS
    found = (await call(node, "QueryL3Network", q=[f"uuid={made['uuid']}"]))["inventories"][0]
    assert [x["uuid"] for x in found["ipRanges"]] == [r["uuid"]]
    assert set(found["ipRanges"][0]) == IP_RANGE_FIELDS


@pytest.mark.parametrize(("params", "code", "fragment"), [
    ({"type": "L3VpcNetwork"}, "SYS.1007", "unsupported L3 network type 'L3VpcNetwork'"),
    ({"ipVersion": 6}, "SYS.1007", "IPv6"),
    ({"ipVersion": 5}, "SYS.1007", "not one of"),
    ({"category": "System"}, "SYS.1007", "do not go together"),
    ({"category": "Private", "system": True}, "SYS.1007", "do not go together"),
    ({"category": "Other"}, "SYS.1007", "not one of"),
    ({"dnsDomain": "not a domain"}, "SYS.1007", "not a valid domain name"),
    ({"l2NetworkUuid": "0" * 32}, "SYS.1003", "l2NetworkUuid"),
])
async def test_bad_l3_parameters_are_refused(node: Node, params: dict[str, Any], code: str,
                                             fragment: str) -> None:
    _, l2 = await network(node)
    error = await fails(call(node, "CreateL3Network", **{"l2NetworkUuid": l2["uuid"],
                                                         "name": "n", **params}), code)
    assert fragment in error.details
    assert (await rows(node))["L3NetworkVO"] == 0


async def test_system_networks_may_be_public_or_system(node: Node) -> None:
    _, l2 = await network(node)
    assert (await l3(node, l2["uuid"], system=True, category="System"))["system"] is True
    assert (await l3(node, l2["uuid"], "pub", system=True, category="Public"))["category"] == \
        "Public"


async def test_update_and_change_state(node: Node) -> None:
    _, l2 = await network(node)
    made = await l3(node, l2["uuid"])
    updated = (await call(node, "UpdateL3Network", uuid=made["uuid"], name="renamed",
                          dnsDomain="example.org", category="Public"))["inventory"]
    assert (updated["name"], updated["dnsDomain"], updated["category"]) == \
        ("renamed", "example.org", "Public")
    error = await fails(call(node, "UpdateL3Network", uuid=made["uuid"], system=True),
                        "SYS.1007")
    assert "give 'category' together with 'system'" in error.details
    await fails(call(node, "UpdateL3Network", uuid=made["uuid"], category="System"), "SYS.1007")
    changed = (await call(node, "UpdateL3Network", uuid=made["uuid"], system=True,
                          category="System"))["inventory"]
    assert (changed["system"], changed["category"]) == (True, "System")
    disabled = (await call(node, "ChangeL3NetworkState", uuid=made["uuid"],
                           stateEvent="disable"))["inventory"]
    assert disabled["state"] == "Disabled"


async def test_dns_servers_in_the_order_they_were_added(node: Node) -> None:
    _, l2 = await network(node)
    made = await l3(node, l2["uuid"])
    for dns in ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"):
        reply = await call(node, "AddDnsToL3Network", l3NetworkUuid=made["uuid"], dns=dns)
    assert reply["inventory"]["dns"] == ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"]
    error = await fails(call(node, "AddDnsToL3Network", l3NetworkUuid=made["uuid"],
                             dns="1.1.1.1"), "SYS.1006")
    assert "already has the DNS server 1.1.1.1" in error.details
    # The same IPv6 address written another way is the same server.
    await fails(call(node, "AddDnsToL3Network", l3NetworkUuid=made["uuid"],
                     dns="2001:4860:4860:0:0:0:0:8888"), "SYS.1006")
    error = await fails(call(node, "AddDnsToL3Network", l3NetworkUuid=made["uuid"],
                             dns="dns.google"), "SYS.1007")
    assert "not an IP address" in error.details
    assert (await rows(node))["L3NetworkDnsVO"] == 3
    left = (await call(node, "RemoveDnsFromL3Network", l3NetworkUuid=made["uuid"],
                       dns="8.8.8.8"))["inventory"]
    assert left["dns"] == ["1.1.1.1", "2001:4860:4860::8888"]
    # Removing a server the network does not have changes nothing, as in ZStack.
    again = (await call(node, "RemoveDnsFromL3Network", l3NetworkUuid=made["uuid"],
                        dns="8.8.8.8"))["inventory"]
    assert again["dns"] == left["dns"]


async def test_queries_reach_networks_clusters_and_zones(node: Node) -> None:
    z, l2 = await network(node)
    other_zone = await zone(node, "z2")
    c1, c2 = await cluster(node, z["uuid"], "c1"), await cluster(node, z["uuid"], "c2")
    await call(node, "AttachL2NetworkToCluster", l2NetworkUuid=l2["uuid"],
               clusterUuid=c1["uuid"])
    web = await l3(node, l2["uuid"], "web")
    await l3(node, l2["uuid"], "db")
    lone_l2 = await vlan_l2(node, other_zone["uuid"], vlan=9, name="lone")
    lone = await l3(node, lone_l2["uuid"], "lone")
    await ip_range(node, web["uuid"], "10.1.0.10", "10.1.0.20", gateway="10.1.0.1")

    async def names(api: str, *conditions: str) -> list[str]:
        found = (await call(node, api, q=list(conditions), sort="+name"))["inventories"]
        return [x["name"] for x in found]

    assert await names("QueryL3Network", f"l2Network.cluster.uuid={c1['uuid']}") == ["db", "web"]
    assert await names("QueryL3Network", f"l2Network.cluster.uuid={c2['uuid']}") == []
    assert await names("QueryL3Network", "l2Network.cluster.name=c1") == ["db", "web"]
    assert await names("QueryL3Network", "l2Network.vSwitchType=LinuxBridge",
                       "zone.name=z2") == ["lone"]
    assert await names("QueryL3Network", "ipRanges.startIp=10.1.0.10") == ["web"]
    assert await names("QueryL3Network", "ipRanges.uuid is null") == []
    assert await names("QueryL2Network", "l3Network.name=web") == ["l2"]
    assert await names("QueryL2Network", "cluster.zone.name=z1") == ["l2"]
    assert await names("QueryCluster", "l2Network.name=l2") == ["c1"]
    assert await names("QueryCluster", "l2Network.l3Network.name=db") == ["c1"]
    assert await names("QueryZone", "l3Network.name=lone") == ["z2"]
    assert await names("QueryZone", "l2Network.virtualNetworkId=100") == ["z1"]
    assert await names("QueryIpRange", "l3Network.name=web") == ["r1"]
    assert await names("QueryL3Network", "l2Network.cluster.uuid!=" + c1["uuid"]) == []
    assert lone["zoneUuid"] == other_zone["uuid"]


async def test_without_cascade_an_l3_network_with_ranges_stays(make_node: Any) -> None:
    strict: Node = await make_node(disable=("cascade",))
    z = await zone(strict)
    l2 = await vlan_l2(strict, z["uuid"])
    made = await l3(strict, l2["uuid"])
    r = await ip_range(strict, made["uuid"])
    await call(strict, "AddDnsToL3Network", l3NetworkUuid=made["uuid"], dns="1.1.1.1")
    error = await fails(call(strict, "DeleteL3Network", uuid=made["uuid"]), "SYS.1004")
    assert f"IpRangeVO {r['uuid']}" in error.details
    await call(strict, "DeleteIpRange", uuid=r["uuid"])
    await call(strict, "DeleteL3Network", uuid=made["uuid"])
    left = await rows(strict)
    assert left == {**dict.fromkeys(left, 0), "L2NetworkVO": 1, "resources": 1}
