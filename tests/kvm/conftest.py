"""Fixtures of the KVM tests: the virtual environment every deployed agent shares."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def agent_install_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the fake hosts' agents are installed: once per test session, since every fake
    host is this machine (the first deployment installs, later ones find it installed)."""
    path: Path = tmp_path_factory.mktemp("kvmagent-install")
    return path
