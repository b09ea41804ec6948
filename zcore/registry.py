"""The frozen collection of everything plugins registered.

:func:`collect_registry` calls each registration hook of each active plugin, in registration
order, checks that every item is the record type the hook promises, and rejects a second
record with the same name, naming both providers. The result is read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pluggy

from zcore.errors import StartupError
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

if TYPE_CHECKING:
    from zcore.plugins import PluginInfo

__all__ = ["Provided", "Registry", "collect_registry"]

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Provided:
    """A record and the name of the plugin that registered it."""

    plugin: str
    record: Any


@dataclass(frozen=True)
class Registry:
    """Every record registered by the active plugins, keyed by its unique name.

    Each mapping's values are :class:`Provided` pairs, so errors can name the plugin behind a
    record. Iteration order is plugin registration order.
    """

    resource_types: Mapping[str, Provided]
    db_migrations: Mapping[str, Provided]
    global_configs: Mapping[str, Provided]
    system_tag_patterns: Mapping[str, Provided]
    cascade_edges: Mapping[tuple[str, str], Provided]
    flow_steps: Mapping[str, Provided]
    flow_chains: Mapping[str, Provided]
    flow_insertions: tuple[Provided, ...]
    web_routes: Mapping[tuple[str, str], Provided]
    driver_namespaces: Mapping[str, Provided]
    query_expansions: Mapping[tuple[str, str], Provided]
    api_messages: Mapping[str, Provided]
    gc_job_kinds: Mapping[str, Provided]
    inventory_extensions: Mapping[tuple[str, str], Provided]
    plugin_modules: Mapping[str, str]
    plugin_labels: Mapping[str, str]

    def label(self, plugin: str) -> str:
        """How errors name a plugin: ``plugin 'name' (version, distribution)``."""
        return self.plugin_labels.get(plugin, f"plugin '{plugin}'")

    def records(self, kind: str) -> list[Any]:
        """The bare records of one kind (``"global_configs"``), in registration order."""
        value = getattr(self, kind)
        items = value.values() if isinstance(value, Mapping) else value
        return [p.record for p in items]


# hook name, registry field, record type, key of a record, what the key is called in errors
_HOOKS: list[tuple[str, str, type, Callable[[Any], Hashable] | None, str]] = [
    ("zcore_resource_types", "resource_types", ResourceType, lambda r: r.name, "resource type"),
    ("zcore_db_migrations", "db_migrations", Migrations, lambda r: r.branch, "migration branch"),
    ("zcore_global_configs", "global_configs", GlobalConfigOption, lambda r: r.key,
     "global config"),
    ("zcore_system_tag_patterns", "system_tag_patterns", SystemTagPattern,
     lambda r: r.pattern, "system tag pattern"),
    ("zcore_cascade_edges", "cascade_edges", CascadeEdge, lambda r: (r.child, r.parent),
     "cascade edge"),
    ("zcore_flow_steps", "flow_steps", FlowStep, lambda r: r.name, "flow step"),
    ("zcore_flow_chains", "flow_chains", FlowChainFile, lambda r: r.name, "flow chain"),
    ("zcore_flow_insertions", "flow_insertions", FlowInsertion, None, "flow insertion"),
    ("zcore_web_routes", "web_routes", WebRoute, lambda r: (r.method.upper(), r.path),
     "web route"),
    ("zcore_driver_namespaces", "driver_namespaces", DriverNamespace, lambda r: r.namespace,
     "driver namespace"),
    ("zcore_query_expansions", "query_expansions", QueryExpansion,
     lambda r: (r.resource, r.name), "query expansion"),
    ("zcore_api_messages", "api_messages", ApiMessage, lambda r: r.name, "API"),
    ("zcore_gc_job_kinds", "gc_job_kinds", GcJobKind, lambda r: r.name, "GC job kind"),
    ("zcore_inventory_extensions", "inventory_extensions", InventoryExtension,
     lambda r: (r.resource, r.name), "inventory extension"),
]


def _results(
    pm: pluggy.PluginManager, hook: str, labels: Mapping[str, str]
) -> Iterable[tuple[str, Any]]:
    for impl in getattr(pm.hook, hook).get_hookimpls():
        label = labels.get(impl.plugin_name, impl.plugin_name)
        try:
            produced = impl.function()
            items = list(produced) if produced is not None else []
        except Exception as exc:
            raise StartupError(f"{label}: {hook} failed: {type(exc).__name__}: {exc}") from exc
        for item in items:
            yield impl.plugin_name, item


def collect_registry(pm: pluggy.PluginManager, active: Sequence[PluginInfo]) -> Registry:
    """Call every registration hook and return the validated, read-only :class:`Registry`."""
    labels = {i.name: i.label for i in active}
    problems: list[str] = []
    fields: dict[str, Any] = {}
    for hook, field, record_type, key_of, what in _HOOKS:
        keyed: dict[Hashable, Provided] = {}
        listed: list[Provided] = []
        for plugin, record in _results(pm, hook, labels):
            label = labels.get(plugin, plugin)
            if not isinstance(record, record_type):
                problems.append(f"{label}: {hook} yielded {record!r}; expected "
                                f"zcore.{record_type.__name__}")
                continue
            if key_of is None:
                listed.append(Provided(plugin, record))
                continue
            key = key_of(record)
            if key in keyed:
                first = labels.get(keyed[key].plugin, keyed[key].plugin)
                shown = key if isinstance(key, str) else " ".join(map(str, cast(tuple[str, ...], key)))
                problems.append(f"duplicate {what} '{shown}': registered by {first} and "
                                f"by {label}")
                continue
            keyed[key] = Provided(plugin, record)
        fields[field] = tuple(listed) if key_of is None else MappingProxyType(keyed)
    if problems:
        raise StartupError("plugin registrations conflict:\n"
                           + "\n".join(f"  - {p}" for p in problems))
    # An API that needs a plugin the node leaves out does not exist there.
    enabled = set(labels)
    fields["api_messages"] = MappingProxyType({
        name: provided for name, provided in fields["api_messages"].items()
        if set(provided.record.plugins) <= enabled})
    modules = {i.name: i.module for i in active}
    return Registry(plugin_modules=MappingProxyType(modules),
                    plugin_labels=MappingProxyType(labels), **fields)
