"""L2 networks: creating, attaching to clusters (bridges on the hosts), detaching, deleting."""

from __future__ import annotations

import asyncio

import pytest

from zcore.node import Node
from zplugins.simulator.hosts import SIMULATOR

from .helpers import (
    L2_FIELDS,
    L2_VLAN_FIELDS,
    MakeNode,
    bridges,
    call,
    cluster,
    fails,
    host,
    l3,
    rows,
    text,
    vlan_l2,
    zone,
)

pytestmark = pytest.mark.db


# --------------------------------------------------------------------------- creating


async def test_l2_networks_have_zstacks_inventories(node: Node) -> None:
    z = await zone(node)
    flat = (await call(node, "CreateL2NoVlanNetwork", zoneUuid=z["uuid"], name="flat",
                       physicalInterface="eth0", description="untagged"))["inventory"]
    assert set(flat) == L2_FIELDS
    assert (flat["type"], flat["virtualNetworkId"], flat["vSwitchType"], flat["zoneUuid"],
            flat["attachedClusterUuids"], flat["description"]) == \
        ("L2NoVlanNetwork", 0, "LinuxBridge", z["uuid"], [], "untagged")
    tagged = await vlan_l2(node, z["uuid"], vlan=100)
    assert set(tagged) == L2_VLAN_FIELDS
    assert (tagged["type"], tagged["vlan"], tagged["virtualNetworkId"]) == \
        ("L2VlanNetwork", 100, 100)
    found = (await call(node, "QueryL2Network", sort="+name"))["inventories"]
    assert [(n["name"], n.get("vlan")) for n in found] == [("flat", None), ("l2", 100)]
    vlans = (await call(node, "QueryL2VlanNetwork", q=["vlan=100"]))["inventories"]
    assert [n["uuid"] for n in vlans] == [tagged["uuid"]]
    assert (await call(node, "QueryL2VlanNetwork", q=["vlan=101"]))["inventories"] == []


@pytest.mark.parametrize("vlan", [0, 4095, -1])
async def test_a_vlan_outside_1_to_4094_is_refused(node: Node, vlan: int) -> None:
    z = await zone(node)
    error = await fails(vlan_l2(node, z["uuid"], vlan=vlan), "SYS.1007")
    assert "'vlan'" in error.details and "[1, 4094]" in error.details
    assert (await rows(node))["L2NetworkVO"] == 0


async def test_a_vlan_is_unique_per_interface_in_a_zone(node: Node) -> None:
    z, other_zone = await zone(node), await zone(node, "z2")
    first = await vlan_l2(node, z["uuid"], vlan=100)
    error = await fails(vlan_l2(node, z["uuid"], vlan=100, name="again"), "SYS.1007")
    assert "eth0" in error.details and "VLAN 100" in error.details
    assert first["uuid"] in error.details
    # validationOnly gives the same answer and creates nothing either
    await fails(call(node, "CreateL2VlanNetwork", zoneUuid=z["uuid"], name="dry",
                     physicalInterface="eth0", vlan=100, systemTags=["validationOnly"]),
                "SYS.1007")
    assert (await rows(node))["L2NetworkVO"] == 1
    # Another VLAN, another interface, another zone: all fine.
    await vlan_l2(node, z["uuid"], vlan=101)
    await vlan_l2(node, z["uuid"], vlan=100, interface="eth1")
    await vlan_l2(node, other_zone["uuid"], vlan=100)
    assert (await rows(node))["L2NetworkVO"] == 4


async def test_one_network_without_vlan_per_interface(node: Node) -> None:
    z = await zone(node)
    await call(node, "CreateL2NoVlanNetwork", zoneUuid=z["uuid"], name="a",
               physicalInterface="eth0")
    error = await fails(call(node, "CreateL2NoVlanNetwork", zoneUuid=z["uuid"], name="b",
                             physicalInterface="eth0"), "SYS.1007")
    assert "no VLAN" in error.details
    # VLANs on the same interface are separate networks.
    await vlan_l2(node, z["uuid"], vlan=10)
    assert (await rows(node))["L2NetworkVO"] == 2


async def test_concurrent_creations_of_one_vlan_make_one_network(node: Node) -> None:
    z = await zone(node)
    results = await asyncio.gather(*(vlan_l2(node, z["uuid"], vlan=7, name=f"n{i}")
                                     for i in range(5)), return_exceptions=True)
    made = [r for r in results if isinstance(r, dict)]
    assert len(made) == 1
    assert all(getattr(r, "code", None) == "SYS.1007" for r in results if r not in made)
    assert (await rows(node))["resources"] == 1


@pytest.mark.parametrize(("params", "fragment"), [
    ({"vSwitchType": "OvsDpdk"}, "OvsDpdk is not supported"),
    ({"vSwitchType": "Ovs"}, "'Ovs' is not one of"),
    ({"type": "L2VlanNetwork"}, "creates an L2NoVlanNetwork"),
    ({"isolated": True}, "not supported yet"),
    ({"physicalInterface": "eth 0"}, "not an interface name"),
    ({"physicalInterface": "  "}, "must not be empty"),
])
async def test_bad_l2_parameters_are_refused(node: Node, params: dict[str, object],
                                             fragment: str) -> None:
    z = await zone(node)
    arguments = {"zoneUuid": z["uuid"], "name": "n", "physicalInterface": "eth0", **params}
    error = await fails(call(node, "CreateL2NoVlanNetwork", **arguments), "SYS.1007")
    assert fragment in error.details
    assert await rows(node) == dict.fromkeys(await rows(node), 0)


async def test_an_l2_network_in_a_zone_that_does_not_exist_is_refused(node: Node) -> None:
    error = await fails(vlan_l2(node, "0" * 32), "SYS.1003")
    assert "zoneUuid" in error.details


async def test_update_changes_name_and_description(node: Node) -> None:
    z = await zone(node)
    n = await vlan_l2(node, z["uuid"])
    updated = (await call(node, "UpdateL2Network", uuid=n["uuid"], name="renamed",
                          description="d"))["inventory"]
    assert (updated["name"], updated["description"], updated["vlan"]) == ("renamed", "d", 100)


# --------------------------------------------------------------------------- attaching


async def test_attaching_creates_the_bridge_on_every_connected_host(node: Node) -> None:
    z = await zone(node)
    c = await cluster(node, z["uuid"])
    h1, h2 = await host(node, c["uuid"], "h1", "10.0.0.1"), await host(node, c["uuid"], "h2",
                                                                       "10.0.0.2")
    tagged = await vlan_l2(node, z["uuid"], vlan=100)
    flat = (await call(node, "CreateL2NoVlanNetwork", zoneUuid=z["uuid"], name="flat",
                       physicalInterface="eth1"))["inventory"]
    attached = (await call(node, "AttachL2NetworkToCluster", l2NetworkUuid=tagged["uuid"],
                           clusterUuid=c["uuid"]))["inventory"]
    assert attached["attachedClusterUuids"] == [c["uuid"]]
    await call(node, "AttachL2NetworkToCluster", l2NetworkUuid=flat["uuid"],
               clusterUuid=c["uuid"])
    for h in (h1, h2):
        assert bridges(h["uuid"]) == ["br_eth0_100", "br_eth1"]
    commands = [(path, body) for path, body in SIMULATOR.host(h1["uuid"]).calls
                if "bridge" in path]
    assert commands == [
        ("/network/l2vlan/createbridge", {"physicalInterfaceName": "eth0",
                                          "bridgeName": "br_eth0_100",
                                          "l2NetworkUuid": tagged["uuid"], "vlan": 100}),
        ("/network/l2novlan/createbridge", {"physicalInterfaceName": "eth1",
                                            "bridgeName": "br_eth1",
                                            "l2NetworkUuid": flat["uuid"]})]


async def test_hosts_that_connect_later_get_the_bridges(node: Node) -> None:
    z = await zone(node)
    c = await cluster(node, z["uuid"])
    n = await vlan_l2(node, z["uuid"], vlan=200)
    await call(node, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"], clusterUuid=c["uuid"])
    added = await host(node, c["uuid"])
    assert added["status"] == "Connected"
    assert bridges(added["uuid"]) == ["br_eth0_200"]
    await call(node, "ReconnectHost", uuid=added["uuid"])
    assert bridges(added["uuid"]) == ["br_eth0_200", "br_eth0_200"]


async def test_a_host_whose_bridge_fails_does_not_connect(node: Node) -> None:
    z = await zone(node)
    c = await cluster(node, z["uuid"])
    h = await host(node, c["uuid"])
    n = await vlan_l2(node, z["uuid"])
    await call(node, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"], clusterUuid=c["uuid"])
    SIMULATOR.fail("/network/l2vlan/createbridge", "no such device eth0", host_uuid=h["uuid"])
    error = await fails(call(node, "ReconnectHost", uuid=h["uuid"]), "HOST.1000")
    assert "prepare-l2-networks" in text(error) and "no such device eth0" in text(error)
    found = (await call(node, "QueryHost", q=[f"uuid={h['uuid']}"]))["inventories"][0]
    assert found["status"] == "Disconnected"
    # A new host of the cluster is not added while its bridge cannot be made.
    SIMULATOR.fail("/network/l2vlan/createbridge", "no such device eth0")
    await fails(host(node, c["uuid"], "h2", "10.0.0.2"), "HOST.1000")
    assert len((await call(node, "QueryHost"))["inventories"]) == 1


async def test_a_failing_host_rolls_the_attach_back(node: Node) -> None:
    z = await zone(node)
    c = await cluster(node, z["uuid"])
    good = await host(node, c["uuid"], "good", "10.0.0.1")
    bad = await host(node, c["uuid"], "bad", "10.0.0.2")
    n = await vlan_l2(node, z["uuid"])
    SIMULATOR.fail("/network/l2vlan/createbridge", "eth0 is down", host_uuid=bad["uuid"])
    error = await fails(call(node, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"],
                             clusterUuid=c["uuid"]), "SYS.1006")
    assert "host 'bad'" in text(error) and "eth0 is down" in text(error)
    assert "'good'" not in text(error)
    found = (await call(node, "QueryL2Network", q=[f"uuid={n['uuid']}"]))["inventories"][0]
    assert found["attachedClusterUuids"] == []
    assert (await rows(node))["L2NetworkClusterRefVO"] == 0
    assert bridges(good["uuid"]) == ["br_eth0_100"]  # made, unused, as in ZStack
    SIMULATOR.heal()
    await call(node, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"], clusterUuid=c["uuid"])
    assert bridges(bad["uuid"]) == ["br_eth0_100", "br_eth0_100"]


async def test_disconnected_hosts_are_left_for_their_reconnection(node: Node) -> None:
    z = await zone(node)
    c = await cluster(node, z["uuid"])
    h = await host(node, c["uuid"])
    SIMULATOR.host(h["uuid"]).reachable = False
    await fails(call(node, "ReconnectHost", uuid=h["uuid"]), "HOST.1000")
    n = await vlan_l2(node, z["uuid"])
    await call(node, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"], clusterUuid=c["uuid"])
    SIMULATOR.host(h["uuid"]).reachable = True
    await call(node, "ReconnectHost", uuid=h["uuid"])
    assert bridges(h["uuid"]) == ["br_eth0_100"]


async def test_attaching_twice_or_across_zones_is_refused(node: Node) -> None:
    z, far = await zone(node), await zone(node, "far")
    c, far_cluster = await cluster(node, z["uuid"]), await cluster(node, far["uuid"], "c2")
    n = await vlan_l2(node, z["uuid"])
    error = await fails(call(node, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"],
                             clusterUuid=far_cluster["uuid"]), "SYS.1007")
    assert far["uuid"] in error.details and "its own zone" in error.details
    await call(node, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"], clusterUuid=c["uuid"])
    error = await fails(call(node, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"],
                             clusterUuid=c["uuid"]), "SYS.1006")
    assert "already attached" in error.details
    assert (await rows(node))["L2NetworkClusterRefVO"] == 1


async def test_detaching(node: Node) -> None:
    z = await zone(node)
    c1, c2 = await cluster(node, z["uuid"]), await cluster(node, z["uuid"], "c2")
    n = await vlan_l2(node, z["uuid"])
    for c in (c1, c2):
        await call(node, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"],
                   clusterUuid=c["uuid"])
    left = (await call(node, "DetachL2NetworkFromCluster", l2NetworkUuid=n["uuid"],
                       clusterUuid=c1["uuid"]))["inventory"]
    assert left["attachedClusterUuids"] == [c2["uuid"]]
    error = await fails(call(node, "DetachL2NetworkFromCluster", l2NetworkUuid=n["uuid"],
                             clusterUuid=c1["uuid"]), "SYS.1006")
    assert "is not attached" in error.details
    # Deleting a cluster detaches its networks.
    await call(node, "DeleteCluster", uuid=c2["uuid"])
    found = (await call(node, "QueryL2Network", q=[f"uuid={n['uuid']}"]))["inventories"][0]
    assert found["attachedClusterUuids"] == []


# --------------------------------------------------------------------------- deleting


async def test_without_cascade_an_l2_network_with_l3_networks_stays(make_node: MakeNode
                                                                      ) -> None:
    strict = await make_node(disable=("cascade",))
    z = await zone(strict)
    c = await cluster(strict, z["uuid"])
    n = await vlan_l2(strict, z["uuid"])
    await call(strict, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"],
               clusterUuid=c["uuid"])
    inner = await l3(strict, n["uuid"])
    error = await fails(call(strict, "DeleteL2Network", uuid=n["uuid"]), "SYS.1004")
    assert f"L3NetworkVO {inner['uuid']}" in error.details
    await call(strict, "DeleteL3Network", uuid=inner["uuid"])
    await call(strict, "DeleteL2Network", uuid=n["uuid"])
    assert await rows(strict) == dict.fromkeys(await rows(strict), 0)


async def test_with_cascade_an_l2_network_goes_with_everything_on_it(node: Node) -> None:
    z = await zone(node)
    c = await cluster(node, z["uuid"])
    n = await vlan_l2(node, z["uuid"])
    keep = await vlan_l2(node, z["uuid"], vlan=5, name="keep")
    await call(node, "AttachL2NetworkToCluster", l2NetworkUuid=n["uuid"], clusterUuid=c["uuid"])
    inner = await l3(node, n["uuid"])
    await call(node, "AddIpRange", l3NetworkUuid=inner["uuid"], name="r", startIp="10.0.0.2",
               endIp="10.0.0.9", netmask="255.255.255.0", gateway="10.0.0.1")
    await call(node, "AddDnsToL3Network", l3NetworkUuid=inner["uuid"], dns="1.1.1.1")
    await call(node, "DeleteL2Network", uuid=n["uuid"])
    left = await rows(node)
    assert left == {**dict.fromkeys(left, 0), "L2NetworkVO": 1, "resources": 1}
    assert [x["uuid"] for x in (await call(node, "QueryL2Network"))["inventories"]] == \
        [keep["uuid"]]
