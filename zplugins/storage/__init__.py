"""Storage: primary storage, backup storage, images and disk offerings.

An essential plugin. Each family lives in its own module (``primary``, ``backup``,
``images``, ``disk_offerings``), contributing to the hooks below; backends are drivers picked
by name (``zcore.primary_storage``: ``LocalStorage``, ``NFS``, ``Simulator``;
``zcore.backup_storage``: ``SftpBackupStorage``, ``Simulator``) from feature plugins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from zcore import hookimpl
from zcore.parts import Parts

if TYPE_CHECKING:
    from zcore.node import Node

ZCORE_REQUIRES = ("compute",)

PARTS = Parts(__name__, ("primary", "backup", "images", "disk_offerings", "volumes",
                           "volume_steps", "snapshots"))


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
def zcore_driver_namespaces() -> Iterator[Any]:
    yield from PARTS.collect("driver_namespaces")


@hookimpl
def zcore_flow_chains() -> Iterator[Any]:
    yield from PARTS.collect("flow_chains")


@hookimpl
def zcore_system_tag_patterns() -> Iterator[Any]:
    yield from PARTS.collect("system_tag_patterns")


@hookimpl
def zcore_flow_steps() -> Iterator[Any]:
    yield from PARTS.collect("flow_steps")


@hookimpl
def zcore_flow_insertions() -> Iterator[Any]:
    yield from PARTS.collect("flow_insertions")


@hookimpl
def zcore_inventory_extensions() -> Iterator[Any]:
    yield from PARTS.collect("inventory_extensions")


@hookimpl
def zcore_api_messages() -> Iterator[Any]:
    yield from PARTS.collect("api_messages")


@hookimpl
def zcore_gc_job_kinds() -> Iterator[Any]:
    from zcore import GcJobKind
    from zplugins.storage.volume_ops import DELETE_BITS, delete_left_bits

    yield GcJobKind(DELETE_BITS, delete_left_bits,
                    "delete the files a volume left on primary storage that was unreachable")


@hookimpl
async def zcore_node_starting(node: Node) -> None:
    await PARTS.notify("node_starting", node)


@hookimpl
async def zcore_node_stopping(node: Node) -> None:
    await PARTS.notify("node_stopping", node)
