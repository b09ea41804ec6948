"""A plugin made of modules gathers each module's contributions, in order."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from zcore.parts import Parts


@pytest.fixture
def package() -> Iterator[str]:
    calls: list[str] = []
    root = types.ModuleType("zparts_test")
    root.__path__ = []  # a package
    first = types.ModuleType("zparts_test.first")
    first.resource_types = lambda: ["A", "B"]  # type: ignore[attr-defined]
    first.node_starting = lambda node: calls.append(f"first {node}")  # type: ignore[attr-defined]
    second = types.ModuleType("zparts_test.second")

    def resource_types() -> Iterator[str]:
        yield "C"

    async def node_starting(node: Any) -> None:
        calls.append(f"second {node}")

    second.resource_types = resource_types  # type: ignore[attr-defined]
    second.node_starting = node_starting  # type: ignore[attr-defined]
    silent = types.ModuleType("zparts_test.silent")
    modules = {m.__name__: m for m in (root, first, second, silent)}
    sys.modules.update(modules)
    root.calls = calls  # type: ignore[attr-defined]
    yield "zparts_test"
    for name in modules:
        sys.modules.pop(name, None)


def test_records_are_gathered_from_every_module_in_order(package: str) -> None:
    parts = Parts(package, ("first", "silent", "second"))
    assert list(parts.collect("resource_types")) == ["A", "B", "C"]
    assert list(parts.collect("api_messages")) == []


async def test_lifecycle_calls_reach_every_module_sync_or_async(package: str) -> None:
    await Parts(package, ("second", "silent", "first")).notify("node_starting", "n1")
    assert sys.modules[package].calls == ["second n1", "first n1"]  # type: ignore[attr-defined]


def test_a_missing_module_is_an_import_error_not_silence(package: str) -> None:
    with pytest.raises(ModuleNotFoundError):
        list(Parts(package, ("first", "nope")).collect("resource_types"))
