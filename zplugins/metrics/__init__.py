"""Prometheus metrics of the management node (optional).

Serves ``GET /metrics`` in the Prometheus text format: the counters of the node's bus,
workflow engine and sync queues, read when scraped, so the hot paths pay nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from zcore import WebRoute, hookimpl

if TYPE_CHECKING:
    from zcore.node import Node


@hookimpl
def zcore_web_routes() -> Iterator[WebRoute]:
    from zplugins.metrics.collector import metrics

    yield WebRoute("GET", "/metrics", metrics, name="metrics")


@hookimpl
def zcore_node_starting(node: Node) -> None:
    from zplugins.metrics.collector import install

    install(node)
