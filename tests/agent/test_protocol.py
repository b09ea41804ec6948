"""The agent's protocol: host commands, asynchronous tasks, malformed commands, the state
file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from zkvmagent import __version__
from zkvmagent.commands import body
from zkvmagent.config import AgentConfig
from zkvmagent.server import AGENT, make_app

from .conftest import AgentClient, FakeNode, vm_cmd

VM = "0d1f6f1ea4a94d2a9f2bb0f7a1c3e001"


async def test_echo_version_fact_and_capacity(agent: AgentClient) -> None:
    status, reply = await agent.post("/host/echo")
    assert (status, reply) == (200, None)
    assert (await agent.ok("/host/version"))["version"] == __version__

    fact = await agent.ok("/host/fact")
    assert fact["cpuArchitecture"] == "x86_64"
    assert fact["osDistribution"] and fact["libvirtVersion"]

    # The test driver's host is the configured one: 4 CPUs, 8 GiB.
    capacity = await agent.ok("/host/capacity")
    assert capacity["cpuNum"] == 4 and capacity["totalMemory"] == 8 * 1024**3
    assert capacity["cpuSpeed"] == 2600 and capacity["cpuSockets"] == 1
    assert (capacity["usedCpu"], capacity["usedMemory"]) == (0, 0)
    await agent.ok("/vm/start", body(vm_cmd(VM, cpus=2, memory=1024**3)))
    capacity = await agent.ok("/host/capacity")
    assert (capacity["usedCpu"], capacity["usedMemory"]) == (2, 1024**3)


async def test_connect_is_remembered_across_restarts(agent: AgentClient,
                                                     config: AgentConfig) -> None:
    assert (await agent.ok("/host/ping", {"hostUuid": "h1"}))["hostUuid"] is None
    reply = await agent.ok("/host/connect", {"hostUuid": "h1",
                                             "sendCommandUrl": "http://node:8080/callback"})
    assert reply["libvirtVersion"] and reply["qemuVersion"]
    state = json.loads((Path(config.root) / "var/lib/zstack/kvmagent/state.json").read_text())
    assert state == {"hostUuid": "h1", "sendCommandUrl": "http://node:8080/callback"}

    # Another agent on the same root (a restarted one) knows the host.
    app = make_app(config)
    async with TestClient(TestServer(app)) as client:
        async with client.post("/host/ping", json={"hostUuid": "h1"}) as response:
            assert (await response.json())["hostUuid"] == "h1"
        assert app[AGENT].state.sendCommandUrl == "http://node:8080/callback"


async def test_an_async_command_answers_at_once_and_posts_its_result(
        agent: AgentClient, node: FakeNode) -> None:
    callback = f"{node.url}callback"
    status, reply = await agent.post("/host/capacity", headers={
        "taskuuid": "task-1", "callbackurl": callback})
    assert (status, reply) == (200, {"success": True, "error": None})

    post = await node.wait_for(lambda p: p.headers.get("taskuuid") == "task-1")
    assert post.path == "/callback"
    assert post.body["success"] is True and post.body["cpuNum"] == 4


async def test_a_duplicate_task_runs_once(agent: AgentClient, node: FakeNode) -> None:
    headers = {"taskuuid": "start-1", "callbackurl": f"{node.url}callback"}
    await agent.post("/vm/start", body(vm_cmd(VM)), headers=headers)
    first = await node.wait_for(lambda p: p.headers.get("taskuuid") == "start-1")
    assert first.body["success"] is True
    await agent.ok("/vm/stop", {"uuid": VM, "type": "cold"})

    # The same task again: answered, its result posted again, and the VM not started again.
    status, reply = await agent.post("/vm/start", body(vm_cmd(VM)), headers=headers)
    assert (status, reply["success"]) == (200, True)
    await node.wait_for(lambda p: sum(q.headers.get("taskuuid") == "start-1"
                                      for q in node.posts) == 2)
    assert (await agent.ok("/vm/vmsync"))["states"] == {}


async def test_a_failing_async_command_posts_its_error(agent: AgentClient,
                                                       node: FakeNode) -> None:
    await agent.post("/vm/pause", {"uuid": VM}, headers={
        "taskuuid": "pause-1", "callbackurl": f"{node.url}callback"})
    post = await node.wait_for(lambda p: p.headers.get("taskuuid") == "pause-1")
    assert post.body["success"] is False and VM in post.body["error"]


@pytest.mark.parametrize("raw, expected", [
    (b"{not json", "malformed"),
    (b"[1, 2]", "Expected `object`, got `array`"),
    (b'{"type": "cold"}', "missing required field `uuid`"),
    (b'{"uuid": 42}', "Expected `str`, got `int` - at `$.uuid`"),
])
async def test_malformed_commands_get_400_and_the_agent_keeps_serving(
        agent: AgentClient, node: FakeNode, raw: bytes, expected: str) -> None:
    await agent.ok("/vm/start", body(vm_cmd(VM)))
    for headers in (None, {"taskuuid": "bad-1", "callbackurl": f"{node.url}callback"}):
        status, reply = await agent.post("/vm/stop", raw=raw, headers=headers)
        assert status == 400
        assert reply["success"] is False
        assert reply["error"].startswith("/vm/stop: ") and expected in reply["error"]
    await asyncio.sleep(0.1)
    assert node.posts == []  # nothing ran, nothing was posted
    assert (await agent.ok("/vm/vmsync"))["states"] == {VM: "Running"}


async def test_an_unknown_path_is_404(agent: AgentClient) -> None:
    status, reply = await agent.post("/vm/explode", {"uuid": VM})
    assert status == 404
    assert reply == {"success": False, "error": "/vm/explode: no such command on the KVM agent"}
    assert (await agent.ok("/host/version"))["version"] == __version__
