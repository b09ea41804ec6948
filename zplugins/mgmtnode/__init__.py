"""Management nodes: each running node keeps a row with a heartbeat.

Every node writes its row when it starts, refreshes ``heartBeat`` every
``managementServer.node.heartbeatInterval`` seconds (global configuration; a change applies at
once on every node) and deletes the row when it stops. Other nodes will read these rows to
notice a node that went silent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from zcore import GlobalConfigOption, Migrations, ResourceType, hookimpl

if TYPE_CHECKING:
    from zcore.node import Node

CATEGORY = "managementServer"
HEARTBEAT_INTERVAL = "node.heartbeatInterval"


@hookimpl
def zcore_resource_types() -> Iterator[ResourceType]:
    from zplugins.mgmtnode.models import ManagementNodeVO

    yield ResourceType("ManagementNodeVO", model=ManagementNodeVO,
                       inventory="org.zstack.header.managementnode.ManagementNodeInventory")


@hookimpl
def zcore_db_migrations() -> Iterator[Migrations]:
    yield Migrations("mgmtnode", Path(__file__).parent / "migrations")


@hookimpl
def zcore_global_configs() -> Iterator[GlobalConfigOption]:
    yield GlobalConfigOption(CATEGORY, HEARTBEAT_INTERVAL, int, 5,
                             "Seconds between two heartbeats of a management node", min=1,
                             max=3600)


@hookimpl
async def zcore_node_starting(node: Node) -> None:
    from zplugins.mgmtnode.heartbeat import join

    await join(node)


@hookimpl
async def zcore_node_stopping(node: Node) -> None:
    from zplugins.mgmtnode.heartbeat import leave

    await leave(node)
