"""Every extension point is documented: in its docstring and in docs/plugins.md."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from zcore import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("zcore_"))


def test_there_are_hooks() -> None:
    assert "zcore_node_starting" in HOOKS and "zcore_flow_steps" in HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_each_hook_says_when_it_is_called_and_what_it_returns(name: str) -> None:
    hook = getattr(hookspecs, name)
    doc = inspect.getdoc(hook) or ""
    assert "Called once" in doc, f"{name} does not say when it is called"
    assert len(doc.split()) >= 25, f"{name} is documented too briefly"
    params = inspect.signature(hook).parameters
    assert all(p.annotation is not inspect.Parameter.empty for p in params.values())


@pytest.mark.parametrize("name", HOOKS)
def test_each_hook_is_in_the_plugin_guide(name: str) -> None:
    assert f"`{name}`" in (ROOT / "docs" / "plugins.md").read_text()
