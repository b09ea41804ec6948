"""Management node rows: written on start, heartbeat at the configured interval, gone on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import select

from zcore.node import Node
from zplugins.mgmtnode.models import ManagementNodeVO

MakeNode = Callable[..., Awaitable[Node]]


async def heartbeat(node: Node) -> datetime:
    return await node.db.run(lambda s: s.scalars(select(ManagementNodeVO.heartBeat).where(
        ManagementNodeVO.uuid == node.uuid)).one())


async def test_a_new_interval_applies_at_once(make_node: MakeNode) -> None:
    node = await make_node()
    first = await heartbeat(node)
    assert node.global_config.get("managementServer", "node.heartbeatInterval") == 5
    await node.global_config.update("managementServer", "node.heartbeatInterval", 1)
    async with asyncio.timeout(4):  # a heartbeat within ~1 s, not the old 5 s
        while await heartbeat(node) == first:
            await asyncio.sleep(0.05)
    assert await heartbeat(node) > first


async def test_the_row_says_where_the_node_listens(make_node: MakeNode) -> None:
    node = await make_node()
    row = await node.db.run(lambda s: s.get(ManagementNodeVO, node.uuid))
    assert (row.hostName, row.port) == (node.settings.node.host, node.settings.node.port)
    assert row.joinDate <= row.heartBeat
