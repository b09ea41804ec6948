"""The KVM agent's tests: a real agent (in process) on libvirt's test driver and a
temporary root, and a fake management node that records what the agent posts to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from zkvmagent.commands import AgentNic, AgentVolume, StartVmCmd
from zkvmagent.config import AgentConfig, TestNode
from zkvmagent.server import AGENT, Agent, make_app


@dataclass
class Posted:
    """One POST the agent made to the fake node."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeNode:
    """An HTTP server standing for the management node: callbacks and event reports."""

    posts: list[Posted] = field(default_factory=list)
    url: str = ""
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _record(self, request: web.Request) -> web.Response:
        posted = Posted(request.path, {k.lower(): v for k, v in request.headers.items()},
                        await request.json())
        async with self._arrived:
            self.posts.append(posted)
            self._arrived.notify_all()
        return web.json_response({"success": True})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._record)
        return app

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> Posted:
        """The first post for which ``predicate(post)`` holds, waiting for it if needed."""
        async def find() -> Posted:
            async with self._arrived:
                while True:
                    for post in self.posts:
                        if predicate(post):
                            return post
                    await self._arrived.wait()

        return await asyncio.wait_for(find(), timeout)

    def events(self, vm_uuid: str) -> list[str]:
        """The states reported for ``vm_uuid``, in order."""
        return [p.body["vmState"] for p in self.posts
                if p.headers.get("commandpath") == "/kvm/reportvmstate"
                and p.body.get("vmUuid") == vm_uuid]


class AgentClient:
    """Talks to an in-process agent; ``agent`` is the running :class:`Agent`."""

    def __init__(self, client: TestClient[Any, Any], agent: Agent) -> None:
        self.client = client
        self.agent = agent

    async def post(self, path: str, body: Any = None, *, raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else msgspec.json.encode(
            {} if body is None else body)
        async with self.client.post(path, data=data, headers=headers) as reply:
            text = await reply.text()
            return reply.status, (msgspec.json.decode(text) if text else None)

    async def ok(self, path: str, body: Any = None) -> dict[str, Any]:
        """Send a command that must succeed; its reply."""
        status, reply = await self.post(path, body)
        assert status == 200, reply
        assert reply["success"] is True, reply
        return dict(reply)

    async def libvirt(self, fn: Any) -> Any:
        """Run ``fn(connection)`` on the agent's own libvirt connection."""
        return await self.agent.virt.call(fn)


def agent_config(tmp_path: Path, **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1", "port": 0, "libvirt_uri": f"test://{tmp_path}/node.xml",
        "root": str(tmp_path / "root"), "test_node": TestNode(cpus=4, memory=8 * 1024**3)}
    values.update(overrides)
    return AgentConfig(**values)


@pytest.fixture
def config(tmp_path: Path) -> AgentConfig:
    return agent_config(tmp_path)


@pytest_asyncio.fixture
async def agent(config: AgentConfig) -> AsyncIterator[AgentClient]:
    app = make_app(config)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield AgentClient(client, app[AGENT])
    finally:
        await client.close()


@pytest_asyncio.fixture
async def node() -> AsyncIterator[FakeNode]:
    fake = FakeNode()
    server = TestServer(fake.app())
    await server.start_server()
    fake.url = str(server.make_url("/"))
    try:
        yield fake
    finally:
        await server.close()


def vm_cmd(uuid: str = "0d1f6f1ea4a94d2a9f2bb0f7a1c3e001", *, name: str = "web-1",
           cpus: int = 2, memory: int = 1024**3, data_volumes: int = 1,
           nics: int = 1) -> StartVmCmd:
    """A VM with a root volume, ``data_volumes`` data volumes and ``nics`` NICs."""
    root = AgentVolume(volumeUuid=f"{uuid[:-4]}r000", deviceId=0,
                       installPath=f"/ps/rootVolumes/vol-{uuid}/root.qcow2")
    data = [AgentVolume(volumeUuid=f"{uuid[:-4]}d{i:03d}", deviceId=i + 1,
                        installPath=f"/ps/dataVolumes/vol-{uuid}/data{i}.qcow2")
            for i in range(data_volumes)]
    vnics = [AgentNic(uuid=f"{uuid[:-4]}n{i:03d}", mac=f"fa:16:3e:00:{uuid[:2]}:{i:02x}",
                      deviceId=i, bridgeName=f"br_eth{i}", nicInternalName=f"vnic1.{i}")
             for i in range(nics)]
    return StartVmCmd(vmInstanceUuid=uuid, vmName=name, cpuNum=cpus, memory=memory,
                      rootVolume=root, dataVolumes=data, nics=vnics)
