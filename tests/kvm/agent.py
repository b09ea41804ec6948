"""A fake KVM agent: an aiohttp app that answers ZStack's KVM agent protocol, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from zkvmagent import __version__

Reply = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


class FakeAgent:
    """Answers every POST with a JSON reply; records what it was sent.

    ``replies`` maps a path to a reply dict or a function of the body; by default the agent
    reports 4 CPUs in 2 sockets at 2600 MHz and 16 GiB, CentOS 7.9 on x86_64, and echoes the
    host uuid of pings. ``/vm/vmsync`` reports ``vm_states`` (libvirt's ``Running``,
    ``Paused``, ``Shutdown``, ... by VM uuid) and ``/vm/getvncport`` port 5900; other ``/vm/*``
    commands succeed (see :meth:`vm_calls`). ``/host/version`` answers the node's agent
    version, so the node does not deploy over it.

    A command sent with the headers ``taskuuid`` and ``callbackurl`` is answered at once;
    its reply is posted to ``callbackurl`` after ``callback_delay`` seconds (never, for the
    paths in ``silent``). ``callbacks`` records what the node answered to each post.
    """

    def __init__(self, ip: str = "127.0.0.1") -> None:
        self.ip = ip
        self.port = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.replies: dict[str, Reply] = {
            "/host/connect": {"libvirtVersion": "8.0.0", "qemuVersion": "6.2.0"},
            "/host/fact": {"osDistribution": "CentOS", "osVersion": "7.9.2009",
                           "osRelease": "Core", "cpuArchitecture": "x86_64"},
            "/host/capacity": {"cpuNum": 4, "cpuSockets": 2, "cpuSpeed": 2600,
                               "totalMemory": 16 * 1024**3, "usedCpu": 0, "usedMemory": 0},
            "/host/ping": lambda body: {"hostUuid": body.get("hostUuid")},
            "/vm/vmsync": lambda body: {"states": dict(self.vm_states)},
            "/vm/getvncport": {"port": 5900, "protocol": "vnc"},
            "/host/version": {"version": __version__},
        }
        self.vm_states: dict[str, str] = {}
        self.callback_delay = 0.0
        self.silent: set[str] = set()
        self.callbacks: list[tuple[str, int, dict[str, Any]]] = []
        #: ``(path, taskuuid, callbackurl)`` of each command sent asynchronously.
        self.async_calls: list[tuple[str, str, str]] = []
        self._posting: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        self.calls.append((request.path, body))
        if request.path == "/host/echo":
            return web.Response(text="")
        reply = self.replies.get(request.path, {})
        data = reply(body) if callable(reply) else reply
        answer = {"success": True, "error": None, **data}
        task, url = request.headers.get("taskuuid"), request.headers.get("callbackurl")
        if task and url:
            self.async_calls.append((request.path, task, url))
            if request.path not in self.silent:
                posting = asyncio.create_task(self.post_callback(url, task, answer))
                self._posting.add(posting)
                posting.add_done_callback(self._posting.discard)
            return web.json_response({"success": True, "error": None})
        return web.json_response(answer)

    async def post_callback(self, url: str, task: str, reply: dict[str, Any]) -> None:
        """Post ``reply`` of task ``task`` to ``url`` after ``callback_delay`` seconds."""
        await asyncio.sleep(self.callback_delay)
        async with aiohttp.ClientSession() as http, \
                http.post(url, json=reply, headers={"taskuuid": task}) as answer:
            self.callbacks.append((task, answer.status, await answer.json()))

    def paths(self) -> list[str]:
        return [path for path, _ in self.calls]

    def vm_calls(self) -> list[tuple[str, dict[str, Any]]]:
        """The ``/vm/*`` commands received, in order."""
        return [(path, body) for path, body in self.calls if path.startswith("/vm/")]

    async def start(self, port: int = 0) -> int:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.ip, port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.port

    async def stop(self) -> None:
        for posting in list(self._posting):
            posting.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
