"""The frozen records that registration hooks yield.

A plugin contributes to the node by yielding these from the ``zcore_*`` registration hooks
in :mod:`zcore.hookspecs`. The plugin manager collects them once, rejects duplicate names
(naming both providers), validates them against each other and freezes the result as a
:class:`zcore.registry.Registry`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from zcore.flow import Step

__all__ = [
    "ApiMessage",
    "CascadeEdge",
    "DriverNamespace",
    "FlowChainFile",
    "FlowInsertion",
    "FlowStep",
    "GcJobKind",
    "GlobalConfigOption",
    "InventoryExtension",
    "Migrations",
    "QueryExpansion",
    "ResourceType",
    "SystemTagPattern",
    "WebRoute",
]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")


def _check_name(kind: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{kind} name {value!r} must start with a letter and hold only "
                         "letters, digits, '_', '.', '-'")


@dataclass(frozen=True, slots=True)
class ResourceType:
    """A kind of resource the node manages, named as ZStack names it (``VmInstanceVO``).

    ``model`` is the SQLAlchemy class whose rows are the resources; ``inventory`` is the
    inventory class name on the wire (``org.zstack.header.vm.VmInstanceInventory``).

    ``owned_through`` names the column whose :class:`~zcore.db.ResourceVO` row decides who
    may see a row: ``"uuid"`` for a resource (its own owner), ``"resourceUuid"`` for a tag
    (the owner of the tagged resource), ``None`` for rows every account may read (global
    configuration). ``to_inventory`` turns a row into its inventory dict; without it every
    mapped column becomes a field of the same name. ``delete`` is
    ``async delete(node, caller, uuid, mode)``, how the cascade deletes one resource of this
    type when its parent goes; without it the row (and its tags) is simply deleted.
    ``hidden`` names columns that no query may name, sort on or return (a password hash).
    ``check_delete`` is ``async check_delete(node, caller, uuid, deleting)``: raise a
    :class:`~zcore.errors.ZError` saying why this resource may not go; the cascade asks it
    of every dependant before a ``Permissive`` deletion touches anything. ``deleting`` is
    the set of uuids the same deletion removes (the resource and all its dependants), so a
    dependant whose owner goes with it can say yes (a VM's NIC when the VM goes too).
    ``columns_only``: ``to_inventory`` reads nothing of the row but the model's columns (no
    relationship, no method), so a query may hand it a plain row of those columns, with
    them as attributes, instead of a model instance, which costs more to build than a short
    query costs to run. Without ``to_inventory`` that is always so.
    """

    name: str
    model: type | None = None
    inventory: str | None = None
    description: str = ""
    owned_through: str | None = "uuid"
    to_inventory: Callable[[Any], dict[str, Any]] | None = None
    delete: Callable[..., Awaitable[None]] | None = None
    hidden: tuple[str, ...] = ()
    check_delete: Callable[..., Awaitable[None]] | None = None
    columns_only: bool = False

    def __post_init__(self) -> None:
        _check_name("resource type", self.name)


@dataclass(frozen=True, slots=True)
class FlowStep:
    """A named workflow step that chains in ``flows/*.yaml`` refer to.

    ``step`` is a :class:`zcore.flow.Step`; what it requires and provides is read from it.
    """

    name: str
    step: Step

    def __post_init__(self) -> None:
        _check_name("flow step", self.name)


@dataclass(frozen=True, slots=True)
class FlowChainFile:
    """A YAML chain definition; the chain is named after the file (``vm-create.yaml``)."""

    path: Path

    @property
    def name(self) -> str:
        return Path(self.path).stem


@dataclass(frozen=True, slots=True)
class FlowInsertion:
    """Put ``step`` into ``chain`` right before or right after the step named as anchor.

    Exactly one of ``before`` and ``after`` is given. Insertions at the same anchor keep the
    order in which the plugins are registered.
    """

    chain: str
    step: str
    before: str | None = None
    after: str | None = None

    def __post_init__(self) -> None:
        if (self.before is None) == (self.after is None):
            raise ValueError(f"FlowInsertion of {self.step!r} into {self.chain!r} needs exactly "
                             "one of before= and after=")

    @property
    def anchor(self) -> str:
        return self.before if self.before is not None else self.after  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class GlobalConfigOption:
    """A run-time setting declared by the plugin that reads it, stored in the database.

    ``type`` is one of ``int``, ``float``, ``bool``, ``str``. ``validator`` receives the
    typed value and raises ``ValueError`` with a message for a bad one. ``choices`` limits the
    value to a list; ``driver_namespace`` limits it to the names of the drivers available in
    that stevedore namespace (checked at start-up and on every update).
    """

    category: str
    name: str
    type: type
    default: Any
    description: str = ""
    validator: Callable[[Any], None] | None = None
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    driver_namespace: str | None = None

    def __post_init__(self) -> None:
        _check_name("global config category", self.category)
        _check_name("global config", self.name)
        if self.type not in (int, float, bool, str):
            raise ValueError(f"global config {self.key}: type must be int, float, bool or str, "
                             f"not {self.type!r}")

    @property
    def key(self) -> str:
        return f"{self.category}.{self.name}"


@dataclass(frozen=True, slots=True)
class SystemTagPattern:
    """A system tag shape such as ``hostname::{hostname}`` for resources of ``resource_type``.

    Each ``{token}`` matches a non-empty value; :meth:`zcore.tags.TagPatterns.match` gives the
    token values of a tag.
    """

    pattern: str
    resource_type: str
    description: str = ""
    tokens: tuple[str, ...] = field(init=False)
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tokens = tuple(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", self.pattern))
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"system tag pattern {self.pattern!r} repeats a token")
        parts = re.split(r"\{[A-Za-z_][A-Za-z0-9_]*\}", self.pattern)
        body = "".join(
            re.escape(part) + (f"(?P<{tokens[i]}>.+?)" if i < len(tokens) else "")
            for i, part in enumerate(parts)
        )
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "regex", re.compile(f"^{body}$", re.DOTALL))


@dataclass(frozen=True, slots=True)
class CascadeEdge:
    """Resources of type ``child`` belong to a resource of type ``parent``.

    Deleting a parent deletes (or, without the cascade plugin, is refused by) its children.
    ``field`` is the column of the child's model that holds the parent's uuid
    (``CascadeEdge("ClusterVO", "ZoneVO", field="zoneUuid")``); it lets the core find the
    children of a parent about to be deleted.
    """

    child: str
    parent: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Migrations:
    """A directory of Alembic revisions owned by one plugin, on its own branch ``branch``."""

    branch: str
    path: Path


@dataclass(frozen=True, slots=True)
class WebRoute:
    """An HTTP route on the node's aiohttp server.

    ``handler`` takes the ``aiohttp.web.Request``; the node is ``request.app[zcore.NODE]``.
    """

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class DriverNamespace:
    """A stevedore entry-point namespace whose drivers subclass ``base``.

    A name stored in configuration or a database row picks a driver from it
    (``zcore.hypervisors``: ``KVM``, ``Simulator``). Drivers are checked at start-up: each
    must import and subclass ``base``, or the node does not start.
    """

    namespace: str
    base: type
    description: str = ""


@dataclass(frozen=True, slots=True)
class QueryExpansion:
    """Lets queries on ``resource`` reach the fields of ``target`` through ``name``.

    ``QueryExpansion("ClusterVO", "zone", "ZoneVO", local_key="zoneUuid")`` makes
    ``QueryCluster zone.name=z1`` work: a cluster matches when a zone whose ``uuid``
    (``foreign_key``) equals the cluster's ``zoneUuid`` (``local_key``) has that name.
    Expansions chain to any depth (``vmNics.l3Network.l2Network.name``) and a plugin may add
    one to another plugin's resource type. ``(resource, name)`` is unique.

    A many-to-many relation goes through a link table: ``through=(Model, from_column,
    to_column)`` joins ``resource.local_key`` to ``Model.from_column`` and
    ``Model.to_column`` to ``target.foreign_key``::

        QueryExpansion("PrimaryStorageVO", "cluster", "ClusterVO",
                       through=(PrimaryStorageClusterRefVO, "primaryStorageUuid", "clusterUuid"))
    """

    resource: str
    name: str
    target: str
    local_key: str = "uuid"
    foreign_key: str = "uuid"
    through: tuple[type, str, str] | None = None

    def __post_init__(self) -> None:
        _check_name("query expansion", self.name)


@dataclass(frozen=True, slots=True)
class InventoryExtension:
    """Adds fields to the inventories of ``resource``, usually another plugin's type.

    ``fields(session, inventories)`` runs in the transaction that read the inventories, once
    per batch (a page of query results): it returns the new fields by resource uuid, reading
    what it needs in as few queries as it can. That is how the storage plugin adds
    ``allVolumes`` and the network plugin ``vmNics`` to ZStack's VmInstanceInventory::

        def vm_nics(session, inventories):
            rows = session.scalars(select(VmNicVO).where(
                VmNicVO.vmInstanceUuid.in_([i["uuid"] for i in inventories])))
            ...
            return {vm_uuid: {"vmNics": [...]}, ...}

        InventoryExtension("VmInstanceVO", "vmNics", vm_nics)

    ``(resource, name)`` is unique; a uuid missing from the result gets ``defaults``.
    """

    resource: str
    name: str
    fields: Callable[[Any, list[Any]], dict[str, dict[str, Any]]]
    defaults: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _check_name("inventory extension", self.name)


@dataclass(frozen=True, slots=True)
class ApiMessage:
    """Registers an API: ``message`` is a subclass of :class:`zcore.api.APIMessage`.

    The class is named as ZStack names the API (``CreateZone``) and declares its REST route
    and parameters; the API's name is unique across plugins. ``plugins`` names other plugins
    the API needs (its parameters name their resource types, its chain their steps): the API
    exists only on a node where all of them are enabled.
    """

    message: type
    plugins: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.message.__name__


@dataclass(frozen=True, slots=True)
class GcJobKind:
    """A kind of garbage-collector job: work that could not be done at the time, retried later.

    ``run`` is ``async run(node, context) -> None``, where ``context`` is the JSON dict given
    to :meth:`zcore.gc.GarbageCollector.submit`. Returning means the work is done (the job
    becomes ``Done``); raising means "not yet": the job goes back to ``Idle``, remembers the
    error and is tried again on its next trigger or timer. A run may be repeated (after a
    management node died in the middle of one), so it must be idempotent. ``timeout`` is how
    many seconds one run may take before it counts as failed. The name is stored in each
    job's ``runnerClass`` and is unique across plugins::

        async def destroy_vm(node, context):
            await host_call(node, context["hostUuid"], "/vm/destroy",
                            {"uuid": context["vmUuid"]})

        GcJobKind("kvm.destroy-vm", destroy_vm, "destroy a VM left on a disconnected host")
    """

    name: str
    run: Callable[..., Awaitable[None]]
    description: str = ""
    timeout: float = 600.0

    def __post_init__(self) -> None:
        _check_name("GC job kind", self.name)
        if not callable(self.run):
            raise TypeError(f"GC job kind {self.name!r}: run must be an async function "
                             "run(node, context)")
        if not self.timeout > 0:
            raise ValueError(f"GC job kind {self.name!r}: timeout must be positive, not "
                             f"{self.timeout!r}")
