"""Simulator: hosts, primary storage and backup storage that answer in process.

For tests and benchmarks with thousands of hosts: the ``Simulator`` hypervisor
(``zplugins.simulator.hypervisor.SimulatorHypervisor`` in ``zcore.hypervisors``) and the
simulated storage drivers behave like real ones, with the capacities they were added with,
but keep their state in the node's memory. Each family lives in its own module (``hosts``,
``primary_storage``, ``backup_storage``), contributing to the hooks below.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from zcore import hookimpl
from zcore.parts import Parts

if TYPE_CHECKING:
    from zcore.node import Node

ZCORE_REQUIRES = ("compute", "storage")

PARTS = Parts(__name__, ("hosts", "primary_storage", "backup_storage"))


@hookimpl
def zcore_resource_types() -> Iterator[Any]:
    yield from PARTS.collect("resource_types")


@hookimpl
def zcore_db_migrations() -> Iterator[Any]:
    yield from PARTS.collect("db_migrations")


@hookimpl
def zcore_global_configs() -> Iterator[Any]:
    yield from PARTS.collect("global_configs")


@hookimpl
def zcore_cascade_edges() -> Iterator[Any]:
    yield from PARTS.collect("cascade_edges")


@hookimpl
def zcore_query_expansions() -> Iterator[Any]:
    yield from PARTS.collect("query_expansions")


@hookimpl
def zcore_flow_steps() -> Iterator[Any]:
    yield from PARTS.collect("flow_steps")


@hookimpl
def zcore_flow_insertions() -> Iterator[Any]:
    yield from PARTS.collect("flow_insertions")


@hookimpl
def zcore_api_messages() -> Iterator[Any]:
    yield from PARTS.collect("api_messages")


@hookimpl
async def zcore_node_starting(node: Node) -> None:
    await PARTS.notify("node_starting", node)


@hookimpl
async def zcore_node_stopping(node: Node) -> None:
    await PARTS.notify("node_stopping", node)
