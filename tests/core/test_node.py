"""The assembled node: start-up, lifecycle hooks, HTTP, and two nodes in one process."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

from zcore import FlowChainFile, FlowInsertion, FlowStep, hookimpl
from zcore.errors import StartupError
from zcore.flow import FlowContext, Step
from zcore.node import Node
from zcore.plugins import inspect_plugins
from zcore.testing import make_settings as _make_settings  # noqa: F401 - fixture in use
from zplugins.mgmtnode.models import ManagementNodeVO

MakeNode = Callable[..., Awaitable[Node]]


async def get(node: Node, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(node.url + path) as reply:
        return reply.status, await reply.text()


async def test_a_node_serves_health_and_metrics(make_node: MakeNode) -> None:
    node = await make_node(serve=True)
    status, body = await get(node, "/health")
    assert status == 200
    assert f'"nodeUuid": "{node.uuid}"' in body
    assert '"mgmtnode": "active"' in body
    status, body = await get(node, "/metrics")
    assert status == 200
    assert f'zstack_node_info{{database="{node.db.dialect}",node_uuid="{node.uuid}"' in body
    assert "zstack_flow_chains_run_total" in body
    assert "zstack_bus_sent_total" in body


def optional_plugins() -> list[str]:
    from zcore.config import load_settings

    infos = inspect_plugins(load_settings(environ={}))
    required = {r for i in infos for r in i.requires}
    return [i.name for i in infos if i.name != "zcore" and i.name not in required]


@pytest.mark.parametrize("blocked", optional_plugins())
async def test_the_node_starts_with_each_optional_plugin_blocked(make_node: MakeNode,
                                                                 blocked: str) -> None:
    node = await make_node(disable=(blocked,), serve=True)
    status, body = await get(node, "/health")
    assert status == 200
    assert f'"{blocked}": "disabled"' in body
    if blocked == "metrics":
        assert (await get(node, "/metrics"))[0] == 404


@pytest.mark.no_db_template  # the node itself migrates, not the fixture
async def test_migrations_run_on_start_and_again_is_a_no_op(make_node: MakeNode) -> None:
    node = await make_node()
    tables = await node.db.run(lambda s: sa_inspect(s.connection()).get_table_names())
    assert {"ResourceVO", "GlobalConfigVO", "SystemTagVO", "UserTagVO",
            "ManagementNodeVO"} <= set(tables)
    assert await node.db.migrate(node.registry.records("db_migrations")) == []


class Order:
    """Records lifecycle calls of two plugins sharing one log."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    @hookimpl
    async def zcore_node_starting(self, node: Node) -> None:
        await asyncio.sleep(0)
        self.log.append(f"starting {self.name}")

    @hookimpl
    def zcore_node_started(self, node: Node) -> None:
        self.log.append(f"started {self.name}")

    @hookimpl
    def zcore_node_stopping(self, node: Node) -> None:
        self.log.append(f"stopping {self.name}")


async def test_lifecycle_hooks_run_in_order_and_stop_in_reverse(make_node: MakeNode) -> None:
    log: list[str] = []
    node = await make_node(("first", Order("first", log)), ("second", Order("second", log)))
    await node.stop()
    assert log == ["starting first", "starting second", "started first", "started second",
                   "stopping second", "stopping first"]


async def test_a_failing_start_hook_stops_start_up_and_releases_everything(
        make_node: MakeNode) -> None:
    cancelled = asyncio.Event()

    class Bad:
        @hookimpl
        async def zcore_node_starting(self, node: Node) -> None:
            async def forever() -> None:
                try:
                    await asyncio.Event().wait()
                finally:
                    cancelled.set()
            node.spawn(forever())
            await asyncio.sleep(0)
            raise RuntimeError("no licence")

    with pytest.raises(StartupError, match="plugin 'bad'.*zcore_node_starting failed: "
                                           "RuntimeError: no licence"):
        await make_node(("bad", Bad()), serve=True)
    assert cancelled.is_set()


async def test_a_failing_started_hook_is_logged_and_the_node_serves(
        make_node: MakeNode, caplog: pytest.LogCaptureFixture) -> None:
    class Grumpy:
        @hookimpl
        def zcore_node_started(self, node: Node) -> None:
            raise RuntimeError("grumble")

    node = await make_node(("grumpy", Grumpy()), serve=True)
    assert (await get(node, "/health"))[0] == 200
    assert "plugin 'grumpy': zcore_node_started failed" in caplog.text


async def test_a_port_in_use_is_a_clear_start_up_error(make_node: MakeNode) -> None:
    first = await make_node(serve=True)
    with pytest.raises(StartupError, match=f"cannot listen on {first.url}"):
        await make_node(serve=True, settings=first.settings)


async def test_background_tasks_end_with_the_node(make_node: MakeNode) -> None:
    node = await make_node()
    task = node.spawn(asyncio.Event().wait(), name="waits-forever")
    await node.stop()
    assert task.cancelled()


class Reserve(Step):
    provides = ("reserved",)

    async def run(self, ctx: FlowContext) -> None:
        ctx["reserved"] = True
        ctx["queues"] = ctx.services.queues  # steps reach the node through the context

    async def rollback(self, ctx: FlowContext) -> None:
        ctx["reserved"] = False


async def test_plugins_contribute_chains_steps_and_insertions(make_node: MakeNode,
                                                              tmp_path: Path) -> None:
    chain = tmp_path / "reserve-thing.yaml"
    chain.write_text("description: reserve a thing\nsteps: [reserve]\n")

    class Reserver:
        @hookimpl
        def zcore_flow_steps(self) -> Any:
            yield FlowStep("reserve", Reserve())

        @hookimpl
        def zcore_flow_chains(self) -> Any:
            yield FlowChainFile(chain)

    class Auditor:
        @hookimpl
        def zcore_flow_steps(self) -> Any:
            yield FlowStep("audit", AuditStep())

        @hookimpl
        def zcore_flow_insertions(self) -> Any:
            yield FlowInsertion("reserve-thing", "audit", after="reserve")

    class AuditStep(Step):
        requires = ("reserved",)

        async def run(self, ctx: FlowContext) -> None:
            ctx["audited"] = ctx["reserved"]

    node = await make_node(("reserver", Reserver()), ("auditor", Auditor()))
    ctx = await node.run_flow("reserve-thing")
    assert ctx.ran == ["reserve", "audit"]
    assert ctx["audited"] is True
    assert ctx["queues"] is node.queues


async def test_two_nodes_share_database_and_broker(make_node: MakeNode) -> None:
    a = await make_node()
    b = await make_node()
    rows = await a.db.run(lambda s: set(s.scalars(select(ManagementNodeVO.uuid))))
    assert rows == {a.uuid, b.uuid}

    seen: list[tuple[int, int]] = []
    b.global_config.watch("managementServer", "node.heartbeatInterval",
                          lambda old, new: seen.append((old, new)))
    await a.global_config.update("managementServer", "node.heartbeatInterval", "7")
    assert b.global_config.get("managementServer", "node.heartbeatInterval") == 7
    assert seen == [(5, 7)]

    await b.stop()
    rows = await a.db.run(lambda s: set(s.scalars(select(ManagementNodeVO.uuid))))
    assert rows == {a.uuid}


def test_a_serving_node_keeps_start_up_objects_out_of_garbage_collections() -> None:
    from zcore.node import GC_THRESHOLDS, _settle_heap

    before = gc.get_threshold()
    try:
        _settle_heap()  # what serve() does once the node serves
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
