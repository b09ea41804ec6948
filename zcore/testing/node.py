"""Fixtures that build plugin sets and nodes, for the project's tests and plugin authors.

* ``make_settings(**sections)``: settings from the shipped configuration, with an isolated
  ``data_dir`` under the test's tmp_path and the test's database URL.
* ``make_plugins(*plugins, installed=True, disable=())``: a fresh, frozen
  :class:`~zcore.plugins.PluginSet` from the installed plugins plus ``(name, module)`` pairs.
* ``make_node(...)``: an async factory of started nodes (not serving HTTP unless asked) that
  are stopped after the test; nodes made in one test share one in-process broker and the
  test's database, so two of them behave like two management nodes.
* ``node``: one started node with the installed plugins.
* ``fake_distribution(name, version, entry_points, files)``: installs a throwaway
  distribution on ``sys.path`` so entry-point discovery finds it, as pip would.
"""

from __future__ import annotations

import importlib
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from zcore.bus import InProcessBroker
from zcore.config import Settings, load_settings
from zcore.node import Node, create_node
from zcore.plugins import PluginSet, build_plugin_manager
from zcore.testing.db import DatabaseTemplate

__all__ = [
    "fake_distribution",
    "free_port",
    "make_node",
    "make_plugins",
    "make_settings",
    "node",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build settings isolated to this test: its own data_dir and a free port."""

    def make(**sections: Mapping[str, Any]) -> Settings:
        overrides: dict[str, dict[str, Any]] = {
            "node": {"data_dir": str(tmp_path / "zstack"), "port": free_port()},
        }
        for section, values in sections.items():
            overrides.setdefault(section, {}).update(values)
        return load_settings(environ={}, overrides=overrides)

    return make


@pytest.fixture
def make_plugins(make_settings: Callable[..., Settings]) -> Callable[..., PluginSet]:
    """Build a frozen plugin set: installed plugins (unless ``installed=False``) + extras."""

    def make(*plugins: tuple[str, object], installed: bool = True,
             disable: tuple[str, ...] = (), settings: Settings | None = None) -> PluginSet:
        settings = settings or make_settings(plugins={"disable": list(disable)})
        return build_plugin_manager(settings, extra_plugins=plugins,
                                    entry_points=None if installed else [])

    return make


@pytest_asyncio.fixture
async def make_node(
    make_settings: Callable[..., Settings], make_plugins: Callable[..., PluginSet],
    database_url: str, database_template: DatabaseTemplate,
) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """An async factory of started nodes sharing one broker and the test's database.

    Every node is stopped at teardown. Tests using it run once per ``--db`` backend. The
    first node on the test's database finds it a copy of a template migrated with its
    plugins' migrations (see :mod:`zcore.testing.db`), unless the test is marked
    ``no_db_template``.
    """
    broker = InProcessBroker(strict=True)
    nodes: list[Node] = []

    async def make(*plugins: tuple[str, object], installed: bool = True,
                   disable: tuple[str, ...] = (), serve: bool = False,
                   settings: Settings | None = None) -> Node:
        settings = settings or make_settings(plugins={"disable": list(disable)},
                                             database={"url": database_url})
        plugin_set = make_plugins(*plugins, installed=installed, disable=disable,
                                  settings=settings)
        made = await create_node(settings, plugins=plugin_set, broker=broker)
        if settings.database_url == database_url:
            await database_template.apply(made.registry.records("db_migrations"))
        await made.start(serve=serve)
        nodes.append(made)
        return made

    yield make
    for made in reversed(nodes):
        if made.started:
            await made.stop()


@pytest_asyncio.fixture
async def node(make_node: Callable[..., Awaitable[Node]]) -> Node:
    """One started node with every installed plugin, on this test's database."""
    return await make_node()


@pytest.fixture
def fake_distribution(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Install throwaway distributions that ``importlib.metadata`` discovers.

    ``fake_distribution("acme-plugin", "1.2", {"zcore.plugins": {"acme": "acme_plugin"}},
    {"acme_plugin/__init__.py": "..."})`` writes the files and a ``.dist-info`` with those
    entry points into a directory on ``sys.path``; both are removed after the test.
    """
    site = tmp_path / "site-packages"
    site.mkdir()
    sys.path.insert(0, str(site))
    before = set(sys.modules)

    def install(name: str, version: str, entry_points: Mapping[str, Mapping[str, str]],
                files: Mapping[str, str]) -> Path:
        for relative, text in files.items():
            path = site / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                       f"Version: {version}\n")
        groups = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
                         for group, eps in entry_points.items())
        (info / "entry_points.txt").write_text(groups)
        _forget_entry_points()
        return site

    yield install
    sys.path.remove(str(site))
    for module in set(sys.modules) - before:
        if getattr(sys.modules[module], "__file__", None) and \
                str(site) in str(sys.modules[module].__file__):
            del sys.modules[module]
    _forget_entry_points()


def _forget_entry_points() -> None:
    # stevedore caches each namespace's entry points for the life of the process; a
    # distribution installed by a test must be seen, and forgotten after it.
    from stevedore import ExtensionManager

    ExtensionManager.ENTRY_POINT_CACHE.clear()
    importlib.invalidate_caches()
