"""zstack-ctl as an operator runs it: real processes, real files, messages not tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from zcore.testing import free_port


@pytest.fixture
def ctl(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSTACK_")}
    env.update(ZSTACK_NODE_DATA_DIR=str(tmp_path / "data"), ZSTACK_NODE_PORT=str(free_port()))
    started: list[bool] = []

    def run(*args: str, extra_env: dict[str, str] | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess[str]:
        if args[:1] == ("start",):
            started.append(True)
        return subprocess.run([sys.executable, "-m", "zcore.ctl", *args], capture_output=True,
                              text=True, check=False, timeout=timeout,
                              env={**env, **(extra_env or {})})

    run.env = env  # type: ignore[attr-defined]
    yield run
    if started:
        run("stop")


def test_start_status_stop(ctl: Callable[..., subprocess.CompletedProcess[str]],
                           tmp_path: Path) -> None:
    started = ctl("start")
    assert started.returncode == 0, started.stderr
    assert "is running on http://127.0.0.1:" in started.stdout
    port = ctl.env["ZSTACK_NODE_PORT"]  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
        health = json.load(reply)
    assert health["status"] == "ok" and health["database"] == "sqlite"
    assert (tmp_path / "data" / "zstack.db").exists()
    assert (tmp_path / "data" / "logs" / "management-server.log").exists()

    again = ctl("start")
    assert again.returncode == 0 and "already running" in again.stdout

    status = ctl("status")
    assert status.returncode == 0
    assert f"management node {health['nodeUuid']} is running" in status.stdout
    assert "mgmtnode" in status.stdout

    stopped = ctl("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not (tmp_path / "data" / "management-server.pid").exists()
    after = ctl("status")
    assert after.returncode == 3 and "stopped" in after.stdout
    log = (tmp_path / "data" / "logs" / "management-server.log").read_text()
    assert f"management node {health['nodeUuid']} stopped" in log


@pytest.mark.parametrize(("env", "message"), [
    ({"ZSTACK_DISABLE_PLUGINS": "metrix"}, "unknown plugin 'metrix'; did you mean 'metrics'?"),
    ({"ZSTACK_NODE_PROT": "9"}, "unknown variable ZSTACK_NODE_PROT"),
    ({"ZSTACK_NODE_PORT": "http"}, "ZSTACK_NODE_PORT='http': Expected `int`"),
])
def test_bad_configuration_stops_start_up_with_a_message(
        ctl: Callable[..., subprocess.CompletedProcess[str]], env: dict[str, str],
        message: str) -> None:
    result = ctl("start", extra_env=env)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_configuration_file_stops_start_up(
        ctl: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    config = tmp_path / "zstack.yaml"
    config.write_text("node:\n  port: 8080\n  colour: blue\n")
    result = ctl("--config", str(config), "start")
    assert result.returncode == 1
    assert f"{config}: unknown key 'node.colour'" in result.stderr
    assert "Traceback" not in result.stderr


def broken_plugin(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    (site / "acme_broken").mkdir(parents=True)
    (site / "acme_broken" / "__init__.py").write_text("raise RuntimeError('licence expired')\n")
    info = site / "acme_broken-3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-broken\nVersion: 3.1\n")
    (info / "entry_points.txt").write_text("[zcore.plugins]\nacme = acme_broken\n")
    return {"PYTHONPATH": str(site)}


def test_a_broken_plugin_is_named_at_start(
        ctl: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    env = broken_plugin(tmp_path)
    result = ctl("start", extra_env=env)
    assert result.returncode == 1
    assert "plugin 'acme' (3.1, acme-broken)" in result.stderr
    assert "RuntimeError: licence expired" in result.stderr
    assert "Traceback" not in result.stderr

    listed = ctl("plugins", extra_env=env)
    assert listed.returncode == 1
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("acme "))
    assert "failed" in line and "licence expired" in line
    assert any(ln.startswith("metrics ") and "active" in ln for ln in listed.stdout.splitlines())

    disabled = ctl("plugins", extra_env={**env, "ZSTACK_DISABLE_PLUGINS": "acme"})
    assert disabled.returncode == 0
    assert "disabled" in next(ln for ln in disabled.stdout.splitlines()
                              if ln.startswith("acme "))


def test_plugins_as_json(ctl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = ctl("plugins", "--json", extra_env={"ZSTACK_DISABLE_PLUGINS": "metrics"})
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["metrics"]["status"] == "disabled"
    assert plugins["mgmtnode"]["status"] == "active"
    assert plugins["mgmtnode"]["version"] == "0.1.0"


def test_deploydb_creates_and_then_keeps_the_schema(
        ctl: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deploy.db'}"
    first = ctl("deploydb", "--db-url", url)
    assert first.returncode == 0, first.stderr
    assert "migrated: " in first.stdout and "zcore_0001" in first.stdout \
        and "mgmtnode_0001" in first.stdout
    second = ctl("deploydb", "--db-url", url)
    assert second.returncode == 0 and "is up to date" in second.stdout


def test_an_unreachable_database_is_a_message(
        ctl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = ctl("start", "--foreground", "--db-url",
                 f"postgresql+psycopg://nobody:secret@127.0.0.1:{free_port()}/none")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr
    assert "127.0.0.1" in result.stderr


def test_a_port_in_use_is_a_message(ctl: Callable[..., subprocess.CompletedProcess[str]]
                                    ) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = ctl("start", "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on http://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_show_config_prints_the_effective_values(
        ctl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = ctl("show-config", extra_env={"ZSTACK_DATABASE_ECHO": "true"})
    assert result.returncode == 0
    assert "echo: true" in result.stdout
    assert f"port: {ctl.env['ZSTACK_NODE_PORT']}" in result.stdout  # type: ignore[attr-defined]
