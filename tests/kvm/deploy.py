"""Fake KVM hosts on this machine: the node deploys real agents to them with Ansible.

Each fake host is a loopback address (127.0.0.2, 127.0.0.3, ...; all answer on ``lo``)
reached through Ansible's ``local`` connection. Its agent listens on that address, keeps its
files under ``<base>/<ip>`` and drives libvirt's test driver on ``<base>/<ip>/node.xml``; all
of them share one virtual environment (``install_dir``), so only the first deployment of a
test session installs anything.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zcore.testing import ApiClient


@dataclass
class FakeHosts:
    """Where the fake hosts' agents live and the port they listen on."""

    base: Path
    port: int
    install_dir: Path

    def settings(self) -> dict[str, str]:
        """The global configuration (category ``kvm``) that deploys to fake hosts."""
        return {
            "agent.port": str(self.port),
            "agent.connection": "local",
            "agent.serviceManager": "daemon",
            "agent.listenAddress": "{managementIp}",
            "agent.libvirtUri": f"test://{self.base}/{{managementIp}}/node.xml",
            "agent.root": f"{self.base}/{{managementIp}}",
            "agent.installDir": str(self.install_dir),
        }

    async def configure(self, client: ApiClient, **changes: str) -> None:
        for name, value in {**self.settings(), **changes}.items():
            await client.call("UpdateGlobalConfig", category="kvm", name=name, value=value)

    def pid_file(self, ip: str) -> Path:
        return self.base / ip / "var" / "run" / "zstack" / "kvmagent.pid"

    def pid(self, ip: str) -> int | None:
        """The pid of the agent of ``ip`` when it runs."""
        try:
            pid = int(self.pid_file(ip).read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def post(self, ip: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send a command to the agent of ``ip`` directly, as the node would."""
        request = urllib.request.Request(
            f"http://{ip}:{self.port}{path}", data=json.dumps(body or {}).encode(),
            method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            text = reply.read()
            return json.loads(text) if text else None

    def stop_agents(self) -> None:
        """Stop every agent deployed under ``base`` (through its pid file)."""
        pids = []
        for pid_file in self.base.glob("*/var/run/zstack/kvmagent.pid"):
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except (OSError, ValueError):
                continue
        deadline = time.monotonic() + 15
        for pid in pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
