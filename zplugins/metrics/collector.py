"""Reads the node's counters at scrape time and renders them for Prometheus."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from zcore import __version__
from zcore.node import Node

REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("zplugins.metrics.registry")


def _counters(stats: Any) -> dict[str, int]:
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        values = dataclasses.asdict(stats)
    else:
        values = {name: getattr(stats, name) for name in dir(stats) if not name.startswith("_")}
    return {k: v for k, v in values.items() if isinstance(v, int) and not isinstance(v, bool)}


class NodeCollector:
    """A Prometheus collector over one node's plain counters."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        info = GaugeMetricFamily("zstack_node_info", "The management node serving these metrics",
                                 labels=["node_uuid", "version", "database"])
        info.add_metric([node.uuid, __version__, node.db.dialect], 1)
        yield info
        for prefix, stats, what in (
            ("zstack_bus", node.bus.stats, "message bus"),
            ("zstack_flow", node.flows.stats, "workflow engine"),
            ("zstack_queue", node.queues.stats, "sync queues"),
        ):
            for name, value in sorted(_counters(stats).items()):
                yield CounterMetricFamily(f"{prefix}_{name}", f"{what}: {name.replace('_', ' ')}",
                                          value=value)


def install(node: Node) -> None:
    """Give ``node`` its own collector registry (never prometheus_client's global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    node.app[REGISTRY] = registry


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``."""
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
