"""``zstack-kvmagent --config PATH`` runs the agent as a process that answers over TCP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import yaml
from zkvmagent import __version__
from zkvmagent.commands import body

from .conftest import vm_cmd

VM = "0d1f6f1ea4a94d2a9f2bb0f7a1c3e001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def agent_command() -> list[str]:
    script = Path(sys.executable).parent / "zstack-kvmagent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "zkvmagent"]


async def test_the_agent_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "host": "127.0.0.1", "port": port, "libvirt_uri": f"test://{tmp_path}/node.xml",
        "test_node": {"cpus": 2, "memory": 4 * 1024**3}, "root": str(tmp_path / "root"),
        "log_file": str(tmp_path / "agent.log"), "pid_file": str(tmp_path / "agent.pid")}))
    proc = await asyncio.create_subprocess_exec(*agent_command(), "--config", str(config))
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 15
            while True:
                try:
                    async with http.post(f"{url}/host/version", json={}) as reply:
                        assert (await reply.json())["version"] == __version__
                        break
                except aiohttp.ClientConnectionError:
                    assert proc.returncode is None, "the agent exited"
                    assert time.monotonic() < deadline, "the agent did not answer in 15 s"
                    await asyncio.sleep(0.1)
            assert (tmp_path / "agent.pid").read_text().strip() == str(proc.pid)
            async with http.post(f"{url}/host/capacity", json={}) as reply:
                assert (await reply.json())["cpuNum"] == 2
            async with http.post(f"{url}/vm/start", json=body(vm_cmd(VM))) as reply:
                assert (await reply.json())["success"] is True
            async with http.post(f"{url}/vm/vmsync", json={}) as reply:
                assert (await reply.json())["states"] == {VM: "Running"}
            async with http.post(f"{url}/vm/start", data=b"{") as reply:
                assert reply.status == 400
        os.kill(proc.pid, signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert not (tmp_path / "agent.pid").exists()
        assert "listening on 127.0.0.1" in (tmp_path / "agent.log").read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
