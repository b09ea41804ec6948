"""Finding, loading, validating and freezing plugins.

Plugins are found through the ``zcore.plugins`` entry-point group; the built-in features
under ``zplugins/`` are registered there exactly as a third-party distribution's are. The set
that runs is chosen by ``plugins.enable`` / ``plugins.disable`` in the configuration and by
``ZSTACK_DISABLE_PLUGINS``.

:func:`inspect_plugins` loads what it can and reports every plugin's status without failing
(``zstack-ctl plugins``); :func:`build_plugin_manager` does the same, then stops with one
:class:`~zcore.errors.StartupError` naming every plugin that failed, collects the registration
records, validates them and freezes the result.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any, Literal

import pluggy

from zcore import hookspecs
from zcore.config import Settings
from zcore.errors import ConfigError, StartupError
from zcore.registry import Registry, collect_registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "PluginSet",
    "build_plugin_manager",
    "call_lifecycle",
    "inspect_plugins",
]

ENTRY_POINT_GROUP = "zcore.plugins"
CORE_PLUGIN = "zcore"

Status = Literal["active", "disabled", "failed"]


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What is known of one plugin: where it comes from and whether it runs.

    ``reason`` says why a plugin is disabled or failed. ``requires`` lists the plugins it
    needs (its module's ``ZCORE_REQUIRES``).
    """

    name: str
    module: str
    distribution: str | None
    version: str | None
    status: Status
    reason: str = ""
    requires: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``name version (distribution)``: how errors name a plugin."""
        version = self.version or "unknown version"
        dist = f", {self.distribution}" if self.distribution else ""
        return f"plugin '{self.name}' ({version}{dist})"


class _ZcorePluginManager(pluggy.PluginManager):
    """A pluggy manager that refuses registrations once frozen."""

    frozen = False

    def register(self, plugin: object, name: str | None = None) -> str | None:
        if self.frozen:
            raise RuntimeError(
                f"cannot register plugin {name or plugin!r}: the plugin set is frozen once the "
                "node has been built; plugins are chosen before start-up")
        return super().register(plugin, name)


@dataclass(frozen=True)
class PluginSet:
    """The built, validated and frozen plugins of one node.

    ``pm`` calls the lifecycle hooks; ``registry`` holds every registration record;
    ``infos`` says what became of each installed plugin.
    """

    pm: pluggy.PluginManager
    infos: tuple[PluginInfo, ...]
    registry: Registry

    def info(self, name: str) -> PluginInfo:
        for info in self.infos:
            if info.name == name:
                return info
        raise KeyError(name)

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.infos if i.status == "active")


def _discover(eps: Iterable[EntryPoint] | None) -> list[EntryPoint]:
    found = list(entry_points(group=ENTRY_POINT_GROUP) if eps is None else eps)
    seen: dict[str, EntryPoint] = {}
    for ep in found:
        if ep.name in seen and seen[ep.name].value != ep.value:
            raise StartupError(
                f"two installed plugins are named '{ep.name}': {seen[ep.name].value} "
                f"({_dist_name(seen[ep.name])}) and {ep.value} ({_dist_name(ep)}); "
                "uninstall one of them")
        seen[ep.name] = ep
    return sorted(seen.values(), key=lambda ep: ep.name)


def _dist_name(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def _dist_version(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else None


def _selection(settings: Settings, names: Sequence[str]) -> dict[str, str]:
    """Map each plugin name that must not run to why; reject unknown names."""
    chosen = settings.plugins
    where = settings.source or "configuration"
    for key, listed in (("enable", chosen.enable), ("disable", chosen.disable)):
        if listed == "all":
            continue
        for name in listed:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean '{close[0]}'?" if close else \
                    f"installed: {', '.join(names) or 'none'}"
                raise ConfigError(f"{where}: plugins.{key}: unknown plugin '{name}'; {hint}")
    off: dict[str, str] = {}
    if chosen.enable != "all":
        for name in names:
            if name not in chosen.enable:
                off[name] = "not in plugins.enable"
    for name in chosen.disable:
        off[name] = "disabled by plugins.disable or ZSTACK_DISABLE_PLUGINS"
    return off


def _unknown_hook_names(module: object) -> list[str]:
    """Functions that look like hooks (``zcore_*``) but match no spec or lack the marker."""
    problems = []
    specs = {name for name in dir(hookspecs) if name.startswith("zcore_")}
    for attr in dir(module):
        if not attr.startswith("zcore_"):
            continue
        value = getattr(module, attr, None)
        if not callable(value):
            continue
        marked = hasattr(value, f"{hookspecs.PROJECT}_impl")
        if attr not in specs:
            close = difflib.get_close_matches(attr, sorted(specs), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"unknown hook {attr}{hint}")
        elif not marked:
            problems.append(f"{attr} is not marked with @zcore.hookimpl, so it would never "
                            "be called")
    return problems


def _load(ep: EntryPoint) -> tuple[Any, tuple[str, ...]]:
    plugin = ep.load()
    requires = tuple(getattr(plugin, "ZCORE_REQUIRES", ()))
    return plugin, requires


def _new_manager() -> _ZcorePluginManager:
    pm = _ZcorePluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _register(pm: pluggy.PluginManager, plugin: object, info: PluginInfo) -> str | None:
    """Register ``plugin``; return a problem description or None."""
    problems = _unknown_hook_names(plugin)
    if problems:
        return "; ".join(problems)
    try:
        pm.register(plugin, name=info.name)
    except pluggy.PluginValidationError as exc:
        return str(exc)
    except ValueError as exc:  # a plugin object or name registered twice
        return str(exc)
    return None


def _load_all(
    settings: Settings,
    eps: Iterable[EntryPoint] | None,
    extra_plugins: Sequence[tuple[str, object]],
) -> tuple[_ZcorePluginManager, list[PluginInfo]]:
    from zcore import builtin

    found = _discover(eps)
    extra_names = [name for name, _ in extra_plugins]
    for name in extra_names:
        if name == CORE_PLUGIN or any(ep.name == name for ep in found):
            raise StartupError(f"plugin name '{name}' is taken by an installed plugin")
    off = _selection(settings, [ep.name for ep in found] + extra_names)

    pm = _new_manager()
    infos: list[PluginInfo] = []
    core_info = PluginInfo(CORE_PLUGIN, builtin.__name__, "zstack-py", _core_version(), "active")
    problem = _register(pm, builtin, core_info)
    if problem:  # pragma: no cover - the core's own hooks are tested
        raise StartupError(f"{core_info.label}: {problem}")
    infos.append(core_info)

    candidates: list[tuple[str, str, str | None, str | None, Any]] = [
        (ep.name, ep.value, _dist_name(ep), _dist_version(ep), ep) for ep in found
    ] + [(name, _module_name(obj), None, None, obj) for name, obj in extra_plugins]
    for name, module, dist, version, source in candidates:
        if name in off:
            infos.append(PluginInfo(name, module, dist, version, "disabled", off[name]))
            continue
        try:
            plugin, requires = _load(source) if isinstance(source, EntryPoint) else (
                source, tuple(getattr(source, "ZCORE_REQUIRES", ())))
        except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
            infos.append(PluginInfo(name, module, dist, version, "failed",
                                    f"cannot be imported: {type(exc).__name__}: {exc}"))
            continue
        info = PluginInfo(name, module, dist, version, "active", requires=requires)
        problem = _register(pm, plugin, info)
        if problem:
            info = PluginInfo(name, module, dist, version, "failed", problem, requires)
        infos.append(info)

    _check_requirements(infos)
    return pm, infos


def _check_requirements(infos: list[PluginInfo]) -> None:
    by_name = {i.name: i for i in infos}
    for index, info in enumerate(infos):
        if info.status != "active":
            continue
        for needed in info.requires:
            other = by_name.get(needed)
            if other is None:
                why = "which is not installed"
            elif other.status == "disabled":
                why = f"which is disabled ({other.reason})"
            elif other.status == "failed":
                why = "which failed to load"
            else:
                continue
            infos[index] = PluginInfo(
                info.name, info.module, info.distribution, info.version, "failed",
                f"requires plugin '{needed}', {why}; enable '{needed}' or disable "
                f"'{info.name}'", info.requires)


def _module_name(obj: object) -> str:
    return obj.__name__ if isinstance(obj, ModuleType) else type(obj).__module__


def _core_version() -> str:
    from zcore import __version__

    return __version__


def inspect_plugins(
    settings: Settings,
    *,
    entry_points: Iterable[EntryPoint] | None = None,
    extra_plugins: Sequence[tuple[str, object]] = (),
) -> list[PluginInfo]:
    """Every installed plugin and what became of it, without stopping at failures.

    Raises :class:`ConfigError` only when the configuration names an unknown plugin.
    """
    _, infos = _load_all(settings, entry_points, extra_plugins)
    return infos


def build_plugin_manager(
    settings: Settings,
    *,
    entry_points: Iterable[EntryPoint] | None = None,
    extra_plugins: Sequence[tuple[str, object]] = (),
) -> PluginSet:
    """Load the enabled plugins, validate everything they register, and freeze.

    ``entry_points`` replaces discovery (tests); ``extra_plugins`` adds ``(name, plugin)``
    pairs as if they were installed. Raises :class:`StartupError` naming every plugin that
    failed to load or registered something wrong.
    """
    pm, infos = _load_all(settings, entry_points, extra_plugins)
    failed = [i for i in infos if i.status == "failed"]
    if failed:
        lines = "\n".join(f"  - {i.label} from {i.module}: {i.reason}" for i in failed)
        raise StartupError(
            f"{len(failed)} plugin(s) could not be loaded:\n{lines}\n"
            "Fix or uninstall them, or disable them with ZSTACK_DISABLE_PLUGINS=<name>.")
    for info in infos:
        if info.status != "active" and pm.has_plugin(info.name):
            pm.unregister(name=info.name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        plugin = next((i for i in infos if pm.get_plugin(i.name) is exc.plugin), None)
        label = plugin.label if plugin else repr(exc.plugin)
        raise StartupError(f"{label}: {exc}") from None
    active = [i for i in infos if i.status == "active"]
    registry = collect_registry(pm, active)
    pm.frozen = True
    return PluginSet(pm=pm, infos=tuple(infos), registry=registry)


async def call_lifecycle(
    plugins: PluginSet, hook: str, *, node: object, stop_on_error: bool, reverse: bool = False
) -> list[tuple[str, BaseException]]:
    """Call a lifecycle hook on every plugin in registration order, awaiting awaitables.

    ``reverse`` calls them last-registered first (stopping undoes starting in reverse).

    With ``stop_on_error`` the first exception is raised as a :class:`StartupError` naming the
    plugin; otherwise exceptions are returned as ``(plugin name, exception)`` pairs.
    """
    caller = getattr(plugins.pm.hook, hook)
    failures: list[tuple[str, BaseException]] = []
    impls = caller.get_hookimpls()  # registration order
    for impl in reversed(impls) if reverse else impls:
        try:
            result = impl.function(**{arg: node for arg in impl.argnames})
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            if stop_on_error:
                info = plugins.info(impl.plugin_name)
                raise StartupError(f"{info.label}: {hook} failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
            failures.append((impl.plugin_name, exc))
    return failures
