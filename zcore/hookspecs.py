"""Every extension point of the management node, in the order the hooks fire.

A plugin is a module (or object) with functions named after these hooks and marked with
``@zcore.hookimpl``; it is found through the ``zcore.plugins`` entry-point group. Hook
implementations take their arguments by keyword and may accept any subset of them.

There are two kinds of hook:

* **Registration hooks** (``zcore_resource_types`` ... ``zcore_driver_namespaces``) are called
  once, while the plugin manager is being built and before the node serves. Each returns an
  iterable (a list, or a generator: ``yield`` works) of frozen records from
  :mod:`zcore.records`. The manager collects them per plugin, rejects duplicates naming both
  providers, validates them and freezes the result; registering anything later is an error.
* **Lifecycle hooks** (``zcore_node_starting`` ... ``zcore_node_stopping``) are called on the
  running node. They may be plain functions or ``async def``: an awaitable return is awaited.

A third-party plugin looks like this::

    # my_plugin/__init__.py, registered in its pyproject.toml as
    # [project.entry-points."zcore.plugins"] myplugin = "my_plugin"
    from zcore import hookimpl, GlobalConfigOption

    @hookimpl
    def zcore_global_configs():
        yield GlobalConfigOption("myplugin", "retries", int, 3, "How often to retry", min=0)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from zcore.api import Caller
    from zcore.node import Node
    from zcore.records import (
        ApiMessage,
        CascadeEdge,
        DriverNamespace,
        FlowChainFile,
        FlowInsertion,
        FlowStep,
        GcJobKind,
        GlobalConfigOption,
        InventoryExtension,
        Migrations,
        QueryExpansion,
        ResourceType,
        SystemTagPattern,
        WebRoute,
    )

PROJECT = "zcore"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------
# Registration: called once while the plugin manager is built, before the node starts.
# --------------------------------------------------------------------------------------------


@hookspec
def zcore_resource_types() -> Iterable[ResourceType]:
    """Declare the kinds of resource this plugin owns.

    Called once at build time. Each :class:`~zcore.records.ResourceType` names a resource as
    ZStack does (``ZoneVO``, ``VmInstanceVO``) and gives its SQLAlchemy model. Names are
    unique across plugins; a second plugin declaring the same name stops start-up.

    Example::

        @hookimpl
        def zcore_resource_types():
            yield ResourceType("ZoneVO", model=ZoneVO,
                               inventory="org.zstack.header.zone.ZoneInventory")
    """


@hookspec
def zcore_db_migrations() -> Iterable[Migrations]:
    """Give the directory of Alembic revisions for this plugin's tables.

    Called once at build time. Each plugin keeps its revisions on its own Alembic branch
    (``branch_labels = ("<branch>",)`` on its first revision, which ``depends_on`` the core's
    base revision ``zcore_0001``). The node upgrades every branch to its head on start and in
    ``zstack-ctl deploydb``. Branch names are unique across plugins.
    """


@hookspec
def zcore_global_configs() -> Iterable[GlobalConfigOption]:
    """Declare the run-time settings this plugin reads.

    Called once at build time. Each :class:`~zcore.records.GlobalConfigOption` gives a
    category, a name, a type, a default and optionally a validator, choices, a range or a
    driver namespace. Options are stored in the database on first start, read with
    ``node.global_config.get(category, name)`` and changed at run time with
    ``node.global_config.update(...)``, which publishes a ``GlobalConfigChanged`` event on the
    bus. ``(category, name)`` is unique across plugins.
    """


@hookspec
def zcore_system_tag_patterns() -> Iterable[SystemTagPattern]:
    """Declare the system tags this plugin understands, such as ``hostname::{hostname}``.

    Called once at build time. A system tag is accepted only if it matches a declared
    pattern for its resource type; ``{token}`` parts are extracted by name. Patterns are
    unique across plugins.
    """


@hookspec
def zcore_cascade_edges() -> Iterable[CascadeEdge]:
    """Declare that resources of one type belong to resources of another.

    Called once at build time. Edges may connect this plugin's types to another plugin's
    (the EIP plugin says ``EipVO`` belongs to ``VmNicVO``). Both ends must be declared
    resource types and the graph must have no cycle, or start-up stops naming the edges.
    The graph orders deletion children-first.
    """


@hookspec
def zcore_flow_steps() -> Iterable[FlowStep]:
    """Provide workflow steps that chains refer to by name.

    Called once at build time. Each :class:`~zcore.records.FlowStep` pairs a unique name with
    a :class:`zcore.flow.Step` (``run``, ``rollback``, optional ``skip``, and the context keys
    it ``requires`` and ``provides``). Names are unique across plugins.
    """


@hookspec
def zcore_flow_chains() -> Iterable[FlowChainFile]:
    """Provide YAML chain definitions, each a list of step names.

    Called once at build time. The core provides every file in ``flows/``; a plugin may ship
    chains of its own. The chain is named after the file; names are unique. Every chain is
    validated at start-up: each step must exist and everything it requires must be an input
    of the chain or provided by a step before it.
    """


@hookspec
def zcore_flow_insertions() -> Iterable[FlowInsertion]:
    """Insert this plugin's steps into chains defined elsewhere, before or after an anchor.

    Called once at build time, after every chain and step is known. Insertions into the same
    anchor keep plugin registration order. An unknown chain or anchor stops start-up, naming
    the plugin.

    Example::

        @hookimpl
        def zcore_flow_insertions():
            yield FlowInsertion("vm-create", "attach-eip", after="instantiate-resources")
    """


@hookspec
def zcore_web_routes() -> Iterable[WebRoute]:
    """Add HTTP routes to the node's aiohttp server (the REST API, the web UI, callbacks).

    Called once at build time. ``(method, path)`` pairs are unique across plugins. Handlers
    reach the node through ``request.app[zcore.NODE]``.
    """


@hookspec
def zcore_driver_namespaces() -> Iterable[DriverNamespace]:
    """Declare a stevedore namespace of drivers and the base class they implement.

    Called once at build time. At start-up every driver in the namespace that belongs to an
    enabled plugin's distribution is loaded and checked against the base class; a driver that
    fails to import or does not subclass it stops start-up, naming the driver and its
    distribution. Drivers are then fetched by name with ``node.drivers.get(namespace, name)``;
    an unknown name lists the available ones.
    """


@hookspec
def zcore_query_expansions() -> Iterable[QueryExpansion]:
    """Let queries on a resource type reach the fields of a related one.

    Called once at build time. Each :class:`~zcore.records.QueryExpansion` gives a name
    (``zone``) under which queries on ``resource`` (``ClusterVO``) reach the fields of
    ``target`` (``ZoneVO``), joined on ``local_key`` = ``foreign_key``. A plugin may expand
    another plugin's resource type: that is how the EIP plugin adds ``eip`` to VM NICs.
    Both types and both columns are checked at start-up; ``(resource, name)`` is unique.

    Example::

        @hookimpl
        def zcore_query_expansions():
            yield QueryExpansion("ClusterVO", "zone", "ZoneVO", local_key="zoneUuid")
    """


@hookspec
def zcore_inventory_extensions() -> Iterable[InventoryExtension]:
    """Add fields to the inventories of a resource type, usually another plugin's.

    Called once at build time. Each :class:`~zcore.records.InventoryExtension` computes
    fields for a batch of inventories in the transaction that read them (the storage plugin
    adds ``allVolumes`` to VMs, the network plugin ``vmNics``). The resource type must be
    registered; ``(resource, name)`` is unique. Queries apply them to every page; handlers
    get extended inventories through :meth:`zcore.api.ApiService.inventories`.

    Example::

        @hookimpl
        def zcore_inventory_extensions():
            yield InventoryExtension("VmInstanceVO", "vmNics", vm_nics,
                                     defaults=(("vmNics", ()),))
    """


@hookspec
def zcore_api_messages() -> Iterable[ApiMessage]:
    """Provide the APIs this plugin serves.

    Called once at build time. Each :class:`~zcore.records.ApiMessage` wraps a subclass of
    :class:`zcore.api.APIMessage` named as ZStack names the API (``CreateZone``), declaring
    its REST route, body envelope, sync or async answer and parameters. The REST server,
    the OpenAPI document and ``zstack-cli`` are generated from them. API names and
    ``(method, path, envelope)`` routes are unique across plugins.
    """


@hookspec
def zcore_gc_job_kinds() -> Iterable[GcJobKind]:
    """Declare the kinds of garbage-collector job this plugin submits and knows how to run.

    Called once at build time. A GC job finishes work that could not be done at the time
    (destroy a VM whose host is disconnected, delete a volume whose storage is unreachable).
    Each :class:`~zcore.records.GcJobKind` pairs a unique name with
    ``async run(node, context)``: returning means done, raising means "not yet, retry
    later". Jobs are stored in the database (``GarbageCollectorVO``), so they survive a
    restart and any management node may run them. Submit one in the transaction that gave
    up on the work, with ``node.gc.submit(session, kind, name, context, trigger=... or
    interval=...)``; fire an event with ``await node.gc.trigger(key)``. A job whose kind no
    plugin registers any more stays in the database and is reported. Names are unique
    across plugins.

    Example::

        @hookimpl
        def zcore_gc_job_kinds():
            yield GcJobKind("kvm.destroy-vm", destroy_vm_on_host)
    """


# --------------------------------------------------------------------------------------------
# Lifecycle: called on the running node. Implementations may be async.
# --------------------------------------------------------------------------------------------


@hookspec
def zcore_node_starting(node: Node) -> Any:
    """Set up this plugin's part of ``node`` before it serves.

    Called once per node after the database is migrated and global configuration is loaded,
    before the HTTP server accepts requests. Register bus services
    (``node.bus.register(service_id, handler)``), subscribe to events and start background
    tasks here (``node.spawn(coro)`` ties a task to the node's lifetime). May be async.
    Plugins are called in registration order; an exception stops start-up.
    """


@hookspec
def zcore_node_started(node: Node) -> Any:
    """React to ``node`` having started: the HTTP server is listening.

    Called once per node. May be async. An exception is logged, naming the plugin, and does
    not stop the node.
    """


@hookspec
def zcore_node_stopping(node: Node) -> Any:
    """Release what this plugin holds before ``node`` stops.

    Called once per node, while the bus and the database still work and before background
    tasks are cancelled. May be async. An exception is logged and the other plugins are still
    called.
    """


# --------------------------------------------------------------------------------------------
# Questions one plugin answers for the node (firstresult). Implementations may be async.
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def zcore_authenticate(node: Node, session_uuid: str | None) -> Caller | None:
    """Say who is calling: turn a session uuid into a :class:`zcore.api.Caller`.

    Called once per API call that needs a session, with the uuid from the
    ``Authorization: OAuth <uuid>`` header (``None`` when there is none). Return the
    :class:`~zcore.api.Caller` (its account and whether it is an administrator), or raise a
    :class:`~zcore.errors.ZError` ``ID.1001`` for a missing, unknown or expired session. The
    first plugin to return a value wins; the ``identity`` plugin implements it. With no
    implementation at all every call runs as the system administrator. May be async.
    """


@hookspec(firstresult=True)
def zcore_delete_dependants(
    node: Node, caller: Caller, resource_type: str, uuid: str,
    dependants: list[tuple[str, str]], mode: str,
) -> bool | None:
    """Deal with the resources that still belong to one about to be deleted.

    Called once per deletion of a resource that has dependants, before it is deleted.
    ``dependants`` lists ``(resource type, uuid)`` pairs, children first, found through the
    cascade edges; ``mode`` is ``Permissive`` or ``Enforcing``. Return ``True`` once they
    are deleted, or raise a :class:`~zcore.errors.ZError` to refuse. Without an
    implementation (the ``cascade`` plugin provides one) the deletion is refused with an
    error naming the dependants. May be async.
    """
