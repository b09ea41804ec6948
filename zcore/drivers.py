"""Drivers: a name stored in configuration or a database row picks an implementation.

A plugin declares a namespace and the base class of its drivers
(:class:`~zcore.records.DriverNamespace`, e.g. ``zcore.hypervisors``); distributions register
drivers as entry points in that namespace (``KVM = "zplugins.kvm.driver:KvmHypervisor"``).
Only drivers whose module belongs to an active plugin are available, so disabling the ``kvm``
plugin also removes the ``KVM`` hypervisor. Loading goes through stevedore.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from stevedore import NamedExtensionManager

from zcore.errors import INVALID_ARGUMENT, StartupError, ZError
from zcore.registry import Registry

__all__ = ["Drivers", "load_drivers"]


class Drivers:
    """The loaded, checked drivers of every declared namespace."""

    def __init__(self, classes: Mapping[str, Mapping[str, type]]) -> None:
        self._classes = {ns: dict(found) for ns, found in classes.items()}

    @property
    def namespaces(self) -> list[str]:
        return sorted(self._classes)

    def names(self, namespace: str) -> list[str]:
        """The driver names available in ``namespace``, sorted."""
        return sorted(self._namespace(namespace))

    def get(self, namespace: str, name: str) -> type:
        """The driver class called ``name``; ``SYS.1007`` listing the available ones if none."""
        found = self._namespace(namespace)
        try:
            return found[name]
        except KeyError:
            raise ZError(INVALID_ARGUMENT, "no such driver",
                         f"no driver '{name}' in {namespace}; available: "
                         f"{', '.join(sorted(found)) or 'none (is its plugin enabled?)'}") from None

    def create(self, namespace: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """An instance of the driver ``name``."""
        return self.get(namespace, name)(*args, **kwargs)

    def _namespace(self, namespace: str) -> dict[str, type]:
        try:
            return self._classes[namespace]
        except KeyError:
            raise ZError(INVALID_ARGUMENT, "no such driver namespace",
                         f"no driver namespace '{namespace}'; declared: "
                         f"{', '.join(self.namespaces) or 'none'}") from None


def _belongs(ep: EntryPoint, modules: Mapping[str, str]) -> str | None:
    target = ep.value.split(":", 1)[0].strip()
    for plugin, module in modules.items():
        if target == module or target.startswith(module + "."):
            return plugin
    return None


def load_drivers(registry: Registry) -> Drivers:
    """Load every driver of every declared namespace that belongs to an active plugin.

    Raises :class:`StartupError` naming each driver that does not import or does not subclass
    its namespace's base class.
    """
    problems: list[str] = []
    classes: dict[str, dict[str, type]] = {}
    for namespace, provided in registry.driver_namespaces.items():
        base = provided.record.base
        owners = {}
        for ep in entry_points(group=namespace):
            owner = _belongs(ep, registry.plugin_modules)
            if owner is not None:
                owners[ep.name] = owner
        failures: list[str] = []

        def failed(_manager: Any, ep: EntryPoint, exc: BaseException,
                   failures: list[str] = failures, namespace: str = namespace) -> None:
            failures.append(f"driver '{ep.name}' in {namespace} ({ep.value}) cannot be "
                            f"loaded: {type(exc).__name__}: {exc}")

        found: dict[str, type] = {}
        if owners:
            manager = NamedExtensionManager(namespace, names=sorted(owners),
                                            on_load_failure_callback=failed)
            for ext in manager.extensions:
                if not (isinstance(ext.plugin, type) and issubclass(ext.plugin, base)):
                    failures.append(
                        f"driver '{ext.name}' in {namespace} ({ext.entry_point.value}) of plugin "
                        f"'{owners[ext.name]}' is not a subclass of "
                        f"{base.__module__}.{base.__qualname__}")
                    continue
                found[ext.name] = ext.plugin
        problems.extend(failures)
        classes[namespace] = found
    if problems:
        raise StartupError("drivers could not be loaded:\n"
                           + "\n".join(f"  - {p}" for p in problems))
    return Drivers(classes)
