"""A plugin made of several modules, each contributing to the plugin's hooks.

A large plugin (``compute``: zones, clusters, hosts, offerings) keeps each resource family in
its own module. Each module contributes through plain functions named after the hooks without
the ``zcore_`` prefix (``resource_types()``, ``api_messages()``, ``node_starting(node)``), and
the plugin's own hook implementations gather them::

    PARTS = Parts(__name__, ("hosts", "offerings"))

    @hookimpl
    def zcore_resource_types():
        yield from PARTS.collect("resource_types")

    @hookimpl
    async def zcore_node_starting(node):
        await PARTS.notify("node_starting", node)

Modules are imported on first use, so the plugin's entry-point module stays light.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any

__all__ = ["Parts"]


class Parts:
    """The modules ``<package>.<name>`` of a plugin, in order."""

    def __init__(self, package: str, names: Sequence[str]) -> None:
        self.package = package
        self.names = tuple(names)

    def modules(self) -> list[ModuleType]:
        return [importlib.import_module(f"{self.package}.{name}") for name in self.names]

    def collect(self, hook: str) -> Iterator[Any]:
        """Every record the modules' ``hook()`` functions return or yield."""
        for module in self.modules():
            contribute = getattr(module, hook, None)
            if contribute is not None:
                produced: Iterable[Any] | None = contribute()
                yield from produced or ()

    async def notify(self, hook: str, node: Any) -> None:
        """Call each module's ``hook(node)`` in order, awaiting it when it is async."""
        for module in self.modules():
            react = getattr(module, hook, None)
            if react is not None:
                result = react(node)
                if inspect.isawaitable(result):
                    await result
