"""Bridges are recorded under the agent's root the way sysfs shows them."""

from __future__ import annotations

from .conftest import AgentClient


async def test_a_bridge_on_a_physical_interface(agent: AgentClient) -> None:
    net = agent.agent.system.root / "sys/class/net"
    cmd = {"physicalInterfaceName": "eth0", "bridgeName": "br_eth0", "l2NetworkUuid": "l2"}
    await agent.ok("/network/l2novlan/createbridge", cmd)
    assert (net / "br_eth0" / "bridge").is_dir()
    assert sorted(p.name for p in (net / "br_eth0" / "brif").iterdir()) == ["eth0"]
    await agent.ok("/network/l2novlan/createbridge", cmd)  # idempotent
    assert sorted(p.name for p in (net / "br_eth0" / "brif").iterdir()) == ["eth0"]


async def test_a_bridge_on_a_vlan_subinterface(agent: AgentClient) -> None:
    net = agent.agent.system.root / "sys/class/net"
    cmd = {"physicalInterfaceName": "eth1", "bridgeName": "br_eth1_100", "vlan": 100,
           "l2NetworkUuid": "l2"}
    await agent.ok("/network/l2vlan/createbridge", cmd)
    await agent.ok("/network/l2vlan/createbridge", cmd)
    assert (net / "eth1.100" / "lower_eth1").exists()
    assert sorted(p.name for p in (net / "br_eth1_100" / "brif").iterdir()) == ["eth1.100"]


async def test_bad_bridge_commands_fail_saying_why(agent: AgentClient) -> None:
    status, reply = await agent.post("/network/l2vlan/createbridge", {
        "physicalInterfaceName": "eth0", "bridgeName": "br_eth0_5000", "vlan": 5000})
    assert status == 200 and reply["success"] is False and "5000" in reply["error"]
    status, reply = await agent.post("/network/l2novlan/createbridge", {
        "physicalInterfaceName": "eth0", "bridgeName": "br_a_very_long_name"})
    assert reply["success"] is False and "br_a_very_long_name" in reply["error"]
    status, reply = await agent.post("/network/l2vlan/createbridge", {
        "physicalInterfaceName": "eth0", "bridgeName": "br_eth0_5"})
    assert status == 400 and "vlan" in reply["error"]
