"""The agent's HTTP server: ZStack's KVM agent protocol over aiohttp.

Every command is a ``POST`` of a JSON object to its path; :class:`Route` ties a path to the
:mod:`zkvmagent.commands` struct its body decodes to and the coroutine that runs it.

* Without the ``taskuuid`` and ``callbackurl`` headers the agent answers with the command's
  reply (HTTP 200, ``{"success": ..., "error": ..., ...}``).
* With them it answers ``{"success": true}`` at once, runs the command, and posts the reply
  to ``callbackurl`` with header ``taskuuid``. A task uuid it ran or is running (kept
  :data:`TASK_MEMORY` seconds after it finished) is not run again: the agent answers at once
  and posts the known result again.
* A body that is not JSON, not an object, or lacks a required field or has a wrong type is
  answered HTTP 400 ``{"success": false, "error": "<path>: <what is wrong>"}`` and nothing
  runs; an unknown path is HTTP 404 with the same shape.

:class:`Agent` holds what the commands share: the configuration, the libvirt connection
(:class:`zkvmagent.virt.Libvirt`), the system layer (:class:`zkvmagent.system.System`), the
persisted state (the node's host uuid and ``sendCommandUrl``) and the VM state reporter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import libvirt
import msgspec
from aiohttp import web

from zkvmagent import __version__
from zkvmagent.commands import REPORT_VM_STATE_PATH, AgentCommand, AgentReply, ReportVmStateCmd
from zkvmagent.config import AgentConfig
from zkvmagent.system import System, SystemFailure
from zkvmagent.virt import Libvirt

__all__ = ["AGENT", "TASK_MEMORY", "Agent", "AgentError", "Route", "make_app"]

log = logging.getLogger(__name__)

#: Seconds a finished task's result is remembered (duplicate task uuids are not run again).
TASK_MEMORY = 600.0
#: Attempts and pause (seconds) when posting a result to a callback URL.
CALLBACK_ATTEMPTS = 3
CALLBACK_PAUSE = 1.0

Handler = Callable[["Agent", Any], Awaitable[AgentReply | None]]


class AgentError(Exception):
    """A command cannot be carried out; the message says what and why (it becomes the
    reply's ``error``)."""


@dataclass(frozen=True, slots=True)
class Route:
    """A command path, the struct its body decodes to, and the coroutine that runs it
    (``None`` as a result answers an empty body, as ``/host/echo`` does)."""

    path: str
    command: type[AgentCommand]
    handler: Handler


@dataclass(slots=True)
class _Task:
    job: asyncio.Task[bytes] | None = None
    result: bytes | None = None
    finished: float = 0.0


@dataclass(slots=True)
class AgentState:
    """What the agent keeps across restarts (the state file)."""

    hostUuid: str | None = None
    sendCommandUrl: str | None = None


@dataclass
class Agent:
    """What the commands of one agent share; :meth:`start` and :meth:`stop` bracket it."""

    config: AgentConfig
    routes: dict[str, Route] = field(default_factory=dict)
    state: AgentState = field(default_factory=AgentState)

    def __post_init__(self) -> None:
        self.system = System(self.config.root)
        self.virt = Libvirt(self.config.libvirt_uri, test_node=self.config.test_node,
                            on_state=self.report_vm_state)
        self._tasks: dict[str, _Task] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._http: aiohttp.ClientSession | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def state_file(self) -> Path:
        return self.config.state_path() / "state.json"

    async def start(self) -> None:
        """Load the state file and open the libvirt connection."""
        self._load_state()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self.virt.open()
        log.info("KVM agent %s: libvirt %s, root %s", __version__, self.virt.uri,
                 self.system.root)

    async def stop(self) -> None:
        for job in list(self._background):
            job.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.virt.close()
        if self._http is not None:
            await self._http.close()

    def _load_state(self) -> None:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable state file %s: %s", self.state_file, exc)
            return
        if isinstance(data, dict):
            self.state = AgentState(hostUuid=data.get("hostUuid"),
                                    sendCommandUrl=data.get("sendCommandUrl"))

    def save_state(self) -> None:
        """Write the state file (atomically)."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temp = self.state_file.with_suffix(".tmp")
        temp.write_text(json.dumps({"hostUuid": self.state.hostUuid,
                                    "sendCommandUrl": self.state.sendCommandUrl}))
        temp.replace(self.state_file)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; it is cancelled when the agent stops."""
        job = asyncio.ensure_future(coro)
        self._background.add(job)
        job.add_done_callback(self._background.discard)
        return job

    # ----------------------------------------------------------------- running commands

    async def execute(self, route: Route, cmd: AgentCommand) -> bytes | None:
        """Run ``cmd``; the reply's JSON (``None`` for an empty body). Failures become
        ``{"success": false, "error": ...}``."""
        try:
            reply = await route.handler(self, cmd)
        except (AgentError, SystemFailure, ConnectionError) as exc:
            log.warning("%s failed: %s", route.path, exc)
            reply = AgentReply(success=False, error=f"{route.path}: {exc}")
        except libvirt.libvirtError as exc:
            log.warning("%s failed in libvirt: %s", route.path, exc)
            reply = AgentReply(success=False,
                               error=f"{route.path}: libvirt: {exc.get_error_message()}")
        except Exception as exc:
            log.exception("%s failed", route.path)
            reply = AgentReply(success=False,
                               error=f"{route.path}: {type(exc).__name__}: {exc}")
        return None if reply is None else msgspec.json.encode(reply)

    def submit(self, task_uuid: str, callback: str, route: Route, cmd: AgentCommand) -> None:
        """Run ``cmd`` as task ``task_uuid`` and post its result to ``callback``; a task
        uuid seen before is not run again (its known result is posted again)."""
        now = time.monotonic()
        for uuid in [u for u, t in self._tasks.items()
                     if t.result is not None and now - t.finished > TASK_MEMORY]:
            del self._tasks[uuid]
        known = self._tasks.get(task_uuid)
        if known is not None:
            log.info("task %s (%s) is %s; not running it again", task_uuid, route.path,
                     "done" if known.result is not None else "running")
            if known.result is not None:
                self.spawn(self.post_result(callback, task_uuid, known.result))
            return
        task = self._tasks[task_uuid] = _Task()

        async def run() -> bytes:
            result = await self.execute(route, cmd) or b'{"success": true, "error": null}'
            task.result, task.finished = result, time.monotonic()
            await self.post_result(callback, task_uuid, result)
            return result

        task.job = self.spawn(run())

    async def post_result(self, callback: str, task_uuid: str, result: bytes) -> None:
        """Post a task's result to its callback URL (a few attempts; failures logged)."""
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            try:
                assert self._http is not None
                async with self._http.post(callback, data=result, headers={
                        "taskuuid": task_uuid, "Content-Type": "application/json"}) as reply:
                    if reply.status < 300:
                        return
                    problem = f"HTTP {reply.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            log.warning("posting the result of task %s to %s failed (attempt %d of %d): %s",
                        task_uuid, callback, attempt, CALLBACK_ATTEMPTS, problem)
            if attempt < CALLBACK_ATTEMPTS:
                await asyncio.sleep(CALLBACK_PAUSE)

    # ----------------------------------------------------------------- events

    def report_vm_state(self, vm_uuid: str, vm_state: str) -> None:
        """Tell the node (``sendCommandUrl``) that VM ``vm_uuid`` is now ``vm_state``."""
        url = self.state.sendCommandUrl
        if not url:
            log.debug("VM %s is %s; no node to tell (not connected)", vm_uuid, vm_state)
            return
        event = ReportVmStateCmd(hostUuid=self.state.hostUuid, vmUuid=vm_uuid,
                                 vmState=vm_state)
        self.spawn(self._post_event(url, event))

    async def _post_event(self, url: str, event: ReportVmStateCmd) -> None:
        try:
            assert self._http is not None
            async with self._http.post(url, data=msgspec.json.encode(event), headers={
                    "commandpath": REPORT_VM_STATE_PATH,
                    "Content-Type": "application/json"}) as reply:
                if reply.status >= 300:
                    log.warning("reporting VM %s %s to %s: HTTP %d", event.vmUuid,
                                event.vmState, url, reply.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("reporting VM %s %s to %s failed: %s", event.vmUuid, event.vmState,
                        url, exc)


#: The application key of the running :class:`Agent`.
AGENT = web.AppKey("agent", Agent)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"success": False, "error": message}, status=status)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT]
    path = request.path
    route = agent.routes.get(path)
    if route is None:
        return _error(404, f"{path}: no such command on the KVM agent")
    if request.method != "POST":
        return _error(405, f"{path}: commands are POSTed, not {request.method}")
    raw = await request.read()
    try:
        cmd = msgspec.json.decode(raw if raw.strip() else b"{}", type=route.command)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        log.warning("%s: malformed command: %s", path, exc)
        return _error(400, f"{path}: {exc}")
    task_uuid = request.headers.get("taskuuid")
    callback = request.headers.get("callbackurl")
    if task_uuid and callback:
        agent.submit(task_uuid, callback, route, cmd)
        return web.json_response({"success": True, "error": None})
    result = await agent.execute(route, cmd)
    if result is None:
        return web.Response(text="")
    return web.Response(body=result, content_type="application/json")


def all_routes() -> Iterable[Route]:
    """Every command the agent serves."""
    from zkvmagent import host, network, storage, vm

    for module in (host, vm, network, storage):
        yield from module.routes()


def make_app(config: AgentConfig, routes: Iterable[Route] | None = None) -> web.Application:
    """The agent's aiohttp application: it starts the agent on start-up and stops it on
    clean-up."""
    table: dict[str, Route] = {}
    for route in all_routes() if routes is None else routes:
        if route.path in table:
            raise ValueError(f"two handlers for {route.path}")
        table[route.path] = route
    agent = Agent(config, table)
    app = web.Application(client_max_size=16 * 1024**2)
    app[AGENT] = agent

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await agent.start()
        yield
        await agent.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app
