"""Joining, heartbeating and leaving."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from sqlalchemy import CursorResult, delete, update
from sqlalchemy.orm import Session

from zcore.db import utcnow
from zcore.node import Node
from zplugins.mgmtnode import CATEGORY, HEARTBEAT_INTERVAL
from zplugins.mgmtnode.models import ManagementNodeVO

log = logging.getLogger("zplugins.mgmtnode")


def _insert(session: Session, uuid: str, host: str, port: int) -> None:
    now = utcnow()
    session.add(ManagementNodeVO(uuid=uuid, hostName=host, port=port, joinDate=now,
                                 heartBeat=now))


def _beat(session: Session, uuid: str) -> int:
    result = session.execute(update(ManagementNodeVO).where(ManagementNodeVO.uuid == uuid)
                             .values(heartBeat=utcnow()))
    return cast(CursorResult[Any], result).rowcount


def _delete(session: Session, uuid: str) -> None:
    session.execute(delete(ManagementNodeVO).where(ManagementNodeVO.uuid == uuid))


async def join(node: Node) -> None:
    settings = node.settings.node
    await node.db.run(_insert, node.uuid, settings.host, settings.port)
    changed = asyncio.Event()
    node.global_config.watch(CATEGORY, HEARTBEAT_INTERVAL, lambda old, new: changed.set())
    node.spawn(_heartbeat(node, changed), name=f"heartbeat-{node.uuid}")


async def _heartbeat(node: Node, changed: asyncio.Event) -> None:
    while True:
        interval = node.global_config.get(CATEGORY, HEARTBEAT_INTERVAL)
        try:
            # A new interval takes effect now, not after the old one ran out.
            await asyncio.wait_for(changed.wait(), timeout=interval)
            changed.clear()
            continue
        except TimeoutError:
            pass
        try:
            if await node.db.run(_beat, node.uuid) == 0:
                log.warning("management node %s had no row; writing it again", node.uuid)
                await node.db.run(_insert, node.uuid, node.settings.node.host,
                                  node.settings.node.port)
        except Exception:
            log.exception("heartbeat of management node %s failed", node.uuid)


async def leave(node: Node) -> None:
    await node.db.run(_delete, node.uuid)
