"""zstack-cli against a real node: one-shot for scripts, and interactive in a terminal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest

CLI = shutil.which("zstack-cli", path=str(Path(sys.executable).parent)) or "zstack-cli"


@pytest.fixture
def cli(served: dict[str, str], tmp_path: Path) -> Any:
    port = served["url"].rsplit(":", 1)[1]
    env = {**os.environ, "HOME": str(tmp_path), "ZSTACK_CLI_PORT": port}

    def run(*words: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *words], env=env, input=stdin, capture_output=True,
                              text=True, timeout=60, check=False)

    run.env = env  # type: ignore[attr-defined]
    run.home = tmp_path  # type: ignore[attr-defined]
    return run


def test_one_shot_commands_log_in_create_query_and_fail_clearly(cli: Any) -> None:
    assert cli("QueryZone").returncode == 1  # not logged in yet
    login = cli("LogInByAccount", "accountName=admin", "password=password")
    assert login.returncode == 0, login.stderr
    session = cli.home / ".zstack" / "cli" / "session"
    assert json.loads(session.read_text())["uuid"] == json.loads(login.stdout)["inventory"][
        "uuid"]
    assert session.stat().st_mode & 0o777 == 0o600

    zone = json.loads(cli("CreateZone", "name=cli-zone", "description=from the cli").stdout)
    zone_uuid = zone["inventory"]["uuid"]
    for name in ("c1", "c2"):
        made = cli("CreateCluster", f"zoneUuid={zone_uuid}", f"name={name}",
                   "hypervisorType=KVM")
        assert made.returncode == 0, made.stderr
    query = cli("QueryCluster", "zone.name=cli-zone", "fields=uuid,name", "limit=10",
                "sortBy=name", "sortDirection=desc")
    assert query.returncode == 0, query.stderr
    clusters = json.loads(query.stdout)["inventories"]
    assert [c["name"] for c in clusters] == ["c2", "c1"] and set(clusters[0]) == {"uuid", "name"}
    assert json.loads(cli("QueryZone", "cluster.name?=c1,c9", "count=true").stdout) == {
        "total": 1}

    missing = cli("CreateCluster", "zoneUuid=" + "0" * 32, "name=c3", "hypervisorType=KVM")
    assert missing.returncode == 1 and "SYS.1003" in missing.stderr
    no_name = cli("CreateZone", "description=nameless")
    assert no_name.returncode == 2 and "name" in no_name.stderr
    unknown = cli("QueryZone", "colour=red")
    assert unknown.returncode == 1 and "SYS.1007" in unknown.stderr

    assert cli("DeleteZone", f"uuid={zone_uuid}", "deleteMode=Permissive").returncode == 0
    assert json.loads(cli("QueryCluster", "count=true").stdout) == {"total": 0}  # cascaded
    logout = cli("LogOut")
    assert logout.returncode == 0 and not session.exists()
    after = cli("QueryZone")
    assert after.returncode == 1 and "ID.1001" in after.stderr


def test_piped_commands_run_in_order_and_report_failures(cli: Any) -> None:
    script = "\n".join([
        "LogInByAccount accountName=admin password=password",
        'CreateZone name=piped description="two words"',
        "QueryZone name=piped fields=name,description",
        "UpdateZone uuid=" + "f" * 32 + " name=x",
    ]) + "\n"
    result = cli(stdin=script)
    assert result.returncode == 1
    assert '"description": "two words"' in result.stdout
    assert "SYS.1003" in result.stderr


def test_interactive_with_completion_and_history(cli: Any) -> None:
    child = pexpect.spawn(CLI, env=cli.env, encoding="utf-8", timeout=30,
                          dimensions=(40, 200))
    try:
        child.expect(">>>")
        child.sendline("LogInByAccount accountName=admin password=password")
        child.expect('"accountUuid"')
        child.expect(">>>")
        child.send("CreateZ\t")  # CreateZone and CreateZoneLabel: completes the common part
        child.expect("one")
        child.send(" na\t")
        child.expect("name=")
        child.sendline("tty-zone")
        child.expect('"name": "tty-zone"')
        child.expect(">>>")
        child.send("QueryClus\t")
        child.expect("ter ")
        child.send("zone.na\t")  # a field of the zone expansion; any operator may follow
        child.expect("me")
        child.sendline("=tty-zone")
        child.expect('"inventories": \\[\\]')
        child.expect(">>>")
        child.sendline("QueryZone nope=1")
        child.expect("SYS.1007")
        child.expect(">>>")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    history = (cli.home / ".zstack" / "cli" / "history").read_text()
    assert "CreateZone name=tty-zone" in history
