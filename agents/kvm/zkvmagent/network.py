"""The bridge commands: ``/network/l2novlan/createbridge`` and
``/network/l2vlan/createbridge`` (a bridge on the ``<interface>.<vlan>`` subinterface).

Both are idempotent: what exists already is left as it is (see :mod:`zkvmagent.system`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zkvmagent.commands import (
    CREATE_NO_VLAN_BRIDGE_PATH,
    CREATE_VLAN_BRIDGE_PATH,
    AgentReply,
    CreateBridgeCmd,
    CreateVlanBridgeCmd,
)
from zkvmagent.server import Route

if TYPE_CHECKING:
    from zkvmagent.server import Agent

__all__ = ["routes"]


async def create_bridge(agent: Agent, cmd: CreateBridgeCmd) -> AgentReply:
    await agent.system.create_bridge(cmd.bridgeName, cmd.physicalInterfaceName)
    return AgentReply()


async def create_vlan_bridge(agent: Agent, cmd: CreateVlanBridgeCmd) -> AgentReply:
    vlan = await agent.system.create_vlan(cmd.physicalInterfaceName, cmd.vlan)
    await agent.system.create_bridge(cmd.bridgeName, vlan)
    return AgentReply()


def routes() -> list[Route]:
    return [Route(CREATE_NO_VLAN_BRIDGE_PATH, CreateBridgeCmd, create_bridge),
            Route(CREATE_VLAN_BRIDGE_PATH, CreateVlanBridgeCmd, create_vlan_bridge)]
