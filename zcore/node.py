"""The management node: the plugins, the database, the bus and the services, assembled.

Nothing here is global. :func:`create_node` builds a node from settings, and any of its parts
may be passed in instead (a test runs two nodes in one process by giving both the same
database URL and the same :class:`~zcore.bus.InProcessBroker`). :meth:`Node.start` migrates the
database, loads global configuration, lets every plugin set itself up and, unless told not to,
serves HTTP; :meth:`Node.stop` undoes it in reverse.
"""

from __future__ import annotations

import asyncio
import gc as python_gc
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from zcore import affinity
from zcore.api import ApiService
from zcore.bus import Bus, InProcessBroker, create_bus
from zcore.cascade import CascadeGraph
from zcore.config import Settings
from zcore.db import Database, create_database, new_uuid
from zcore.drivers import Drivers, load_drivers
from zcore.errors import StartupError
from zcore.flow import FlowContext, FlowEngine
from zcore.gc import GarbageCollector
from zcore.globalconfig import GlobalConfig
from zcore.plugins import PluginSet, build_plugin_manager, call_lifecycle
from zcore.query import QueryEngine
from zcore.queues import SyncQueues
from zcore.rest import add_rest_routes
from zcore.tags import TagPatterns, Tags
from zcore.web import NODE, health

__all__ = ["Node", "check", "create_node", "serve"]

log = logging.getLogger("zcore.node")

#: The garbage collector's thresholds while a node serves (Python's are 700, 10, 10). With
#: many requests in flight, their objects outlive many young collections, and with Python's
#: defaults the middle generation and frequent full collections traverse them again and
#: again: a third of the time of a cheap API call with 1,000 clients. Reference counting
#: frees almost all of them anyway, so the middle generation is collected a hundred times
#: less often; the young one keeps its size, which its traversal's speed depends on.
GC_THRESHOLDS = (700, 1000, 100)
#: Connections the kernel holds for the node before it accepts them (aiohttp's default is
#: 128): when a thousand clients connect at once, the rest of a shorter queue is dropped
#: and those clients wait for their SYN to be sent again, a second or more.
LISTEN_BACKLOG = 4096


class _Static:
    """What start-up validation builds from the registry alone, with no database or network."""

    def __init__(self, plugins: PluginSet) -> None:
        registry = plugins.registry
        self.drivers: Drivers = load_drivers(registry)
        self.flows = FlowEngine(
            steps={name: p.record.step for name, p in registry.flow_steps.items()},
            chains=[(p.plugin, p.record) for p in registry.flow_chains.values()],
            insertions=[(p.plugin, p.record) for p in registry.flow_insertions],
            step_providers={name: p.plugin for name, p in registry.flow_steps.items()},
            enabled_plugins=registry.plugin_labels,
        )
        labels = registry.plugin_labels
        self.cascade = CascadeGraph(registry.resource_types, registry.cascade_edges, labels)
        self.tag_patterns = TagPatterns(
            registry.records("system_tag_patterns"), resource_types=registry.resource_types,
            providers={key: registry.label(p.plugin)
                       for key, p in registry.system_tag_patterns.items()})
        self.query = QueryEngine(registry.resource_types, registry.query_expansions, labels)
        ApiService.check_declarations(registry)
        self.global_configs = {**registry.global_configs,
                               **ApiService.timeout_options(registry)}
        GlobalConfig.check_declarations(self.global_configs, self.drivers, labels)


def check(settings: Settings, *, plugins: PluginSet | None = None) -> PluginSet:
    """Every start-up check that needs no database or network; raises :class:`StartupError`.

    ``zstack-ctl start`` runs this before it puts the node in the background, so a bad
    configuration or a broken plugin is reported on the terminal.
    """
    plugins = plugins or build_plugin_manager(settings)
    _Static(plugins)
    return plugins


class Node:
    """One management node. Plugins reach every service through it.

    Attributes: ``uuid``, ``settings``, ``plugins`` (:class:`~zcore.plugins.PluginSet`),
    ``registry``, ``db`` (:class:`~zcore.db.Database`), ``bus`` (:class:`~zcore.bus.Bus`),
    ``queues`` (:class:`~zcore.queues.SyncQueues`), ``flows``
    (:class:`~zcore.flow.FlowEngine`), ``drivers``, ``cascade``, ``tags``, ``global_config``,
    ``query`` (:class:`~zcore.query.QueryEngine`), ``api`` (:class:`~zcore.api.ApiService`),
    ``gc`` (:class:`~zcore.gc.GarbageCollector`) and ``app`` (the aiohttp application;
    ``request.app[zcore.web.NODE]`` is the node).
    """

    def __init__(
        self, *, uuid: str, settings: Settings, plugins: PluginSet, db: Database, bus: Bus
    ) -> None:
        static = _Static(plugins)
        self.uuid = uuid
        self.settings = settings
        self.plugins = plugins
        self.registry = plugins.registry
        self.db = db
        self.bus = bus
        self.queues = SyncQueues()
        self.flows = static.flows
        self.drivers = static.drivers
        self.cascade = static.cascade
        self.tags = Tags(static.tag_patterns)
        self.global_config = GlobalConfig(static.global_configs, db=db, bus=bus,
                                          drivers=self.drivers)
        self.query = static.query
        self.api = ApiService(self, self.registry, static.query)
        self.gc = GarbageCollector(self)
        self.app = web.Application(client_max_size=8 * 1024 * 1024)
        self.app[NODE] = self
        self.app.router.add_get("/health", health)
        add_rest_routes(self)
        for (method, path), provided in self.registry.web_routes.items():
            route = provided.record
            self.app.router.add_route(method, path, route.handler, name=route.name)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.started = False

    @property
    def url(self) -> str:
        """Where the node serves HTTP (``http://host:port``) once started with serving."""
        return self.settings.url

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
              ) -> asyncio.Task[Any]:
        """Run ``coro`` as a background task that is cancelled when the node stops.

        A task that fails is logged with its name; it does not stop the node.
        """
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def run_flow(self, chain: str, data: dict[str, Any] | None = None) -> FlowContext:
        """Run the workflow chain ``chain`` with this node as its services."""
        return await self.flows.run(chain, data, services=self)

    async def start(self, *, serve: bool = True) -> None:
        """Migrate, load global configuration, start the plugins, then serve HTTP.

        Raises :class:`StartupError` when any of it fails; what had started is stopped again.
        """
        try:
            applied = await self.db.migrate(self.registry.records("db_migrations"))
            if applied:
                log.info("database %s migrated: %s", self.db.masked_url, ", ".join(applied))
            await self.global_config.start()
            self.api.start()
            await call_lifecycle(self.plugins, "zcore_node_starting", node=self,
                                 stop_on_error=True)
            # After the plugins set up the services their GC jobs use.
            self.gc.start()
            if serve:
                self._runner = web.AppRunner(self.app, access_log=None)
                await self._runner.setup()
                site = web.TCPSite(self._runner, self.settings.node.host, self.settings.node.port,
                                   backlog=LISTEN_BACKLOG)
                try:
                    await site.start()
                except OSError as exc:
                    raise StartupError(f"cannot listen on {self.url}: {exc.strerror or exc}; "
                                       "is another node running? Choose another port with "
                                       "ZSTACK_NODE_PORT or node.port") from None
        except BaseException:
            await self._shutdown()
            raise
        self.started = True
        for plugin, error in await call_lifecycle(self.plugins, "zcore_node_started",
                                                  node=self, stop_on_error=False):
            log.error("plugin '%s': zcore_node_started failed", plugin, exc_info=error)
        log.info("management node %s started%s", self.uuid,
                 f" on {self.url}" if serve else "")

    async def stop(self) -> None:
        """Stop the plugins (in reverse order), the background tasks, HTTP, bus and database."""
        if self.started:
            await self.gc.stop()
            for plugin, exc in await call_lifecycle(self.plugins, "zcore_node_stopping",
                                                    node=self, stop_on_error=False,
                                                    reverse=True):
                log.error("plugin '%s': zcore_node_stopping failed", plugin, exc_info=exc)
        self.started = False
        await self._shutdown()
        log.info("management node %s stopped", self.uuid)

    async def _shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.global_config.close()
        await self.bus.close()
        await self.db.close()


async def create_node(
    settings: Settings,
    *,
    plugins: PluginSet | None = None,
    db: Database | None = None,
    bus: Bus | None = None,
    broker: InProcessBroker | None = None,
    uuid: str | None = None,
) -> Node:
    """Build (but do not start) a node; every part not given is made from ``settings``."""
    plugins = plugins or build_plugin_manager(settings)
    uuid = uuid or new_uuid()
    db = db or create_database(settings.database_url, threads=settings.database.threads,
                               echo=settings.database.echo)
    if bus is None:
        bus = create_bus(settings.bus.url, node_id=uuid, broker=broker,
                         default_timeout=settings.bus.default_timeout)
    try:
        return Node(uuid=uuid, settings=settings, plugins=plugins, db=db, bus=bus)
    except BaseException:
        await bus.close()
        await db.close()
        raise


async def serve(settings: Settings, *, plugins: PluginSet | None = None) -> None:
    """Run a node until SIGTERM or SIGINT, then stop it cleanly.

    First the event loop's thread is pinned to one CPU (``node.cpu``), so that the threads
    the node starts run there too (:mod:`zcore.affinity`).
    """
    affinity.pin(settings.node.cpu)
    node = await create_node(settings, plugins=plugins)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    _settle_heap()
    try:
        await stop.wait()
    finally:
        await node.stop()


def _settle_heap() -> None:
    """Once the node serves: what start-up made (modules, models, plugins, routes) lives as
    long as the process, so no collection needs to look at it again; and the older
    generations are collected less often (:data:`GC_THRESHOLDS`)."""
    python_gc.collect()
    python_gc.freeze()
    python_gc.set_threshold(*GC_THRESHOLDS)
