"""The REST server: ZStack's wire protocol over the node's APIs.

Every registered API (:mod:`zcore.api`) is mounted under ``/zstack/v1`` and ``/v1`` as
ZStack's REST API does it (see ``ZSTACK_REST.md``): creates are ``POST`` with a ``params``
envelope, actions ``PUT .../actions`` with one key naming the action, deletes and other
``GET``s take the query string, queries take ``q=`` conditions. Synchronous APIs answer 200
(or 503 with an ``error``); asynchronous ones answer 202 with a ``location`` under
``/zstack/v1/api-jobs/`` to poll, and a repeated ``X-Job-UUID`` returns the same job instead
of running the call twice. ``GET /zstack/v1/openapi.json`` describes every API.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from multidict import MultiMapping

from zcore.api import (
    SESSION_INVALID,
    SYSTEM,
    ApiCall,
    APIMessage,
    ApiResult,
    Caller,
    QueryMessage,
)
from zcore.db import is_uuid, new_uuid
from zcore.errors import INTERNAL, INVALID_ARGUMENT, ZError
from zcore.query import parse_condition
from zcore.records import GlobalConfigOption

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = ["JOB_RETENTION", "POLL_WAIT", "PREFIXES", "REST", "ApiJobs", "RestServer",
           "add_rest_routes", "global_configs", "route_groups"]

log = logging.getLogger("zcore.rest")

PREFIXES = ("/zstack/v1", "/v1")

#: Seconds a finished job's result stays available to polls.
JOB_RETENTION = 6 * 3600.0
#: Global configuration ``rest.jobPollWait``: how long a poll of a running job waits for
#: its end before answering 202.
POLL_WAIT = ("rest", "jobPollWait")


def global_configs() -> list[GlobalConfigOption]:
    """The REST server's settings, declared by the core plugin."""
    return [GlobalConfigOption(
        *POLL_WAIT, float, 1.0,
        "Seconds a poll of a running API job (GET /zstack/v1/api-jobs/{uuid}) waits for the "
        "job to end before it answers 202; it answers as soon as the job ends. 0 answers at "
        "once", min=0, max=60)]

# A synchronous call's job uuid is never shown to anyone, so it need not be unguessable
# like an asynchronous one's (which is what a poll presents): a random prefix per process
# and a counter, instead of reading the system's random source for every call.
_SYNC_JOB_PREFIX = new_uuid()[:16]
_sync_job_numbers = itertools.count()


def _sync_job_uuid() -> str:
    return f"{_SYNC_JOB_PREFIX}{next(_sync_job_numbers) & 0xFFFFFFFFFFFFFFFF:016x}"


_HANDLER = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status,
                        content_type="application/json")


def _error(error: ZError, status: int) -> web.Response:
    return _json({"error": error.to_dict()}, status)


def _bad_request(description: str, details: str) -> web.Response:
    return _error(ZError(INVALID_ARGUMENT, description, details), 400)


# --------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One asynchronous API call and, once it ends, its answer."""

    uuid: str
    api: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    body: dict[str, Any] | None = None
    error: ZError | None = None
    finished: float | None = None


class ApiJobs:
    """The asynchronous calls of a node, by job uuid, kept for :data:`JOB_RETENTION` seconds."""

    def __init__(self, node: Node, retention: float = JOB_RETENTION) -> None:
        self._node = node
        self._jobs: dict[str, Job] = {}
        self._retention = retention
        self._swept = time.monotonic()

    def get(self, uuid: str) -> Job | None:
        job = self._jobs.get(uuid)
        if job is not None and job.finished is not None \
                and time.monotonic() - job.finished > self._retention:
            del self._jobs[uuid]
            return None
        return job

    def __len__(self) -> int:
        return len(self._jobs)

    def submit(self, uuid: str, api: str, work: Callable[[], Awaitable[ApiResult]]) -> Job:
        """Start ``work`` as job ``uuid``; a job with that uuid already known is returned."""
        existing = self.get(uuid)
        if existing is not None:
            return existing
        self._sweep()
        job = self._jobs[uuid] = Job(uuid, api)
        self._node.spawn(self._run(job, work), name=f"api-job-{api}-{uuid}")
        return job

    async def _run(self, job: Job, work: Callable[[], Awaitable[ApiResult]]) -> None:
        try:
            result = await work()
            job.body = {**result.body, "schema": result.schema}
        except ZError as exc:
            job.error = exc
        except asyncio.CancelledError:
            job.error = ZError(INTERNAL, "job cancelled",
                               f"{job.api} was cancelled because the node stopped")
            raise
        except Exception as exc:  # the caller polls for it; nothing may be lost
            log.exception("API job %s (%s) failed", job.uuid, job.api)
            job.error = ZError(INTERNAL, "internal error", f"{job.api} failed: {exc}")
        finally:
            job.finished = time.monotonic()
            job.done.set()

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < 60:
            return
        self._swept = now
        stale = [u for u, j in self._jobs.items()
                 if j.finished is not None and now - j.finished > self._retention]
        for uuid in stale:
            del self._jobs[uuid]


# --------------------------------------------------------------------------- the server


class RestServer:
    """Routes, request parsing and answers for every API of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.jobs = ApiJobs(node)
        pm = node.plugins.pm
        self._authenticates = bool(pm.hook.zcore_authenticate.get_hookimpls())
        if not self._authenticates:
            log.warning("no plugin authenticates API calls (is the identity plugin "
                        "disabled?): every call runs as the system administrator")
        self._openapi: dict[str, Any] | None = None

    # ----------------------------------------------------------------- routing

    def routes(self) -> list[tuple[str, str, _HANDLER]]:
        """``(method, path, handler)`` for every API, without the prefix."""
        groups = route_groups(self.node.api.messages.values())
        routes: list[tuple[str, str, _HANDLER]] = []
        for (method, path), apis in groups.items():
            routes.append((method, path, self._handler(method, apis)))
            queries = [a for a in apis if issubclass(a, QueryMessage)]
            if method == "GET" and queries and ("GET", f"{path}/{{uuid}}") not in groups:
                routes.append(("GET", f"{path}/{{uuid}}", self._get_one(queries[0])))
        routes.append(("GET", "/api-jobs/{uuid}", self.poll))
        routes.append(("GET", "/openapi.json", self.openapi))
        # Literal paths before parameterised ones, so /zones/candidates is not a {uuid}.
        routes.sort(key=lambda r: (r[1].count("{"), r[1]))
        return routes

    def _handler(self, method: str, apis: list[type[APIMessage]]) -> _HANDLER:
        if method == "PUT":
            by_key = {a.envelope or a.api_name: a for a in apis}

            async def put(request: web.Request) -> web.StreamResponse:
                body = await self._body(request)
                if isinstance(body, web.Response):
                    return body
                keys = list(body)
                if len(keys) != 1 or keys[0] not in by_key:
                    return _bad_request("invalid request body",
                                        f"PUT {request.path} takes exactly one of the keys "
                                        + ", ".join(repr(k) for k in by_key)
                                        + f"; got {', '.join(map(repr, keys)) or 'none'}")
                api = by_key[keys[0]]
                params = body[keys[0]]
                if params is None:
                    params = {}
                if not isinstance(params, dict):
                    return _bad_request("invalid request body",
                                        f"'{keys[0]}' must be a JSON object of parameters")
                return await self._call(request, api, dict(params))

            return put

        if method == "POST":
            api = apis[0]

            async def post(request: web.Request) -> web.StreamResponse:
                body = await self._body(request)
                if isinstance(body, web.Response):
                    return body
                # ZStack declares a few POSTs whose parameters are all in the path with the
                # envelope "null"; accept the usual "params" envelope for them too.
                envelope = api.envelope or "params"
                if envelope not in body and "params" in body:
                    envelope = "params"
                params = body.get(envelope)
                if params is None:
                    params = {}
                if not isinstance(params, dict):
                    return _bad_request("invalid request body",
                                        f"'{envelope}' must be a JSON object of parameters")
                params = dict(params)
                for key in ("systemTags", "userTags"):
                    if key in body and body[key] is not None:
                        outer = body[key]
                        if not isinstance(outer, list):
                            return _bad_request("invalid request body",
                                                f"'{key}' must be a list of strings")
                        params[key] = list(params.get(key) or []) + outer
                extra = [k for k in body if k not in (envelope, "systemTags", "userTags")]
                if extra:
                    return _bad_request("invalid request body",
                                        f"POST {request.path} takes '{envelope}', "
                                        f"'systemTags' and 'userTags'; got {extra[0]!r}")
                return await self._call(request, api, params)

            return post

        api = apis[0]

        async def get_or_delete(request: web.Request) -> web.StreamResponse:
            params = self._query_params(api, request.query)
            if isinstance(params, web.Response):
                return params
            return await self._call(request, api, params)

        return get_or_delete

    def _get_one(self, api: type[QueryMessage]) -> _HANDLER:
        async def get_one(request: web.Request) -> web.StreamResponse:
            params = self._query_params(api, request.query)
            if isinstance(params, web.Response):
                return params
            params["q"] = [*params.get("q", []), f"uuid={request.match_info['uuid']}"]
            return await self._call(request, api, params, path_vars=False)

        return get_one

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            body = _decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return _bad_request("malformed JSON", f"the request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return _bad_request("invalid request body", "the request body must be a JSON object")
        return body

    def _query_params(self, api: type[APIMessage], query: MultiMapping[str]
                      ) -> dict[str, Any] | web.Response:
        params: dict[str, Any] = {}
        for key in set(query.keys()):
            values = query.getall(key)
            param = api.params.get(key)
            if "." in key and param is None:
                head, _, sub = key.partition(".")
                target = api.params.get(head)
                if target is not None and target.type is dict:
                    params.setdefault(head, {})[sub] = values[-1]
                    continue
            if param is not None and param.type is list:
                params[key] = values
            else:
                params[key] = values[-1]
        if issubclass(api, QueryMessage):
            for text in params.get("q", []):
                try:
                    parse_condition(text)
                except ZError as exc:
                    return _error(exc, 400)
        return params

    # ----------------------------------------------------------------- calling

    async def _call(self, request: web.Request, api: type[APIMessage],
                    params: dict[str, Any], *, path_vars: bool = True) -> web.StreamResponse:
        if path_vars:
            # APIs sharing a route may name its variables differently ({uuid}, {imageUuid}):
            # the values go by position to this API's own names.
            for name, value in zip(api.path_variables(), request.match_info.values(),
                                   strict=False):
                params[name] = value
        job_uuid = request.headers.get("X-Job-UUID")
        if not job_uuid:  # ours, well formed
            job_uuid = new_uuid() if api.is_async else _sync_job_uuid()
        elif not is_uuid(job_uuid):
            return _bad_request("invalid X-Job-UUID",
                                f"X-Job-UUID {job_uuid!r} is not 32 lower-case hex digits")
        if api.is_async:
            job = self.jobs.get(job_uuid)
            if job is None:
                authorization = request.headers.get("Authorization")

                async def work() -> ApiResult:
                    caller = await self.authenticate(api, authorization)
                    return await self._send(api, params, caller, job_uuid)

                job = self.jobs.submit(job_uuid, api.api_name, work)
            return _json({"location": f"http://{request.host}/zstack/v1/api-jobs/{job.uuid}",
                          "apiTimeout": int(self.node.api.timeout_of(api.api_name) * 1000)},
                         202)
        try:
            caller = await self.authenticate(api, request.headers.get("Authorization"))
            result = await self._send(api, params, caller, job_uuid)
        except ZError as exc:
            return _error(exc, 503)
        return _json({**result.body, "schema": result.schema})

    async def _send(self, api: type[APIMessage], params: dict[str, Any], caller: Caller,
                    job_uuid: str) -> ApiResult:
        call = ApiCall(api=api.api_name, params=params, caller=caller, job_uuid=job_uuid)
        try:
            return await self.node.api.send(call)
        except ZError:
            raise
        except Exception as exc:
            log.exception("API %s failed", api.api_name)
            raise ZError(INTERNAL, "internal error",
                         f"{api.api_name} failed: {type(exc).__name__}: {exc}") from exc

    async def authenticate(self, api: type[APIMessage], authorization: str | None) -> Caller:
        """The caller behind an ``Authorization: OAuth <session uuid>`` header."""
        if not self._authenticates or not api.need_session:
            return SYSTEM
        session: str | None = None
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            value = value.strip()
            if scheme.lower() == "oauth" and value and value != "null":
                session = value
        result = self.node.plugins.pm.hook.zcore_authenticate(node=self.node,
                                                               session_uuid=session)
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if not isinstance(result, Caller):
            raise ZError(SESSION_INVALID, "invalid session",
                         "no session was given: log in with LogInByAccount and send "
                         "'Authorization: OAuth <session uuid>'" if session is None else
                         f"session {session} is not valid")
        return result

    async def poll(self, request: web.Request) -> web.StreamResponse:
        """``GET /zstack/v1/api-jobs/{uuid}``: 202 running, 200 result, 503 error, 404 unknown."""
        job = self.jobs.get(request.match_info["uuid"])
        if job is None:
            return _json({"error": ZError("SYS.1003", "job not found",
                                          f"no API job {request.match_info['uuid']} is known "
                                          "(unknown, or its result expired)").to_dict()}, 404)
        if not job.done.is_set():
            # A long poll: answer when the job ends, or 202 after rest.jobPollWait seconds.
            # Clients polling in a loop then make one or two requests per job instead of
            # dozens, and learn the end at once rather than at their next poll.
            wait = float(self.node.global_config.get(*POLL_WAIT))
            if wait <= 0:
                return _json({}, 202)
            try:
                await asyncio.wait_for(job.done.wait(), wait)
            except TimeoutError:
                return _json({}, 202)
        if job.error is not None:
            return _error(job.error, 503)
        return _json(job.body)

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        if self._openapi is None:
            from zcore.openapi import openapi_document

            self._openapi = openapi_document(self.node)
        return _json(self._openapi)


def route_groups(apis: Iterable[type[APIMessage]]
                 ) -> dict[tuple[str, str], list[type[APIMessage]]]:
    """The APIs by ``(method, path)``, where paths that differ only in the names of their
    variables (``/images/{uuid}/actions``, ``/images/{imageUuid}/actions``) are one route,
    spelt as the first API spells it."""
    groups: dict[tuple[str, str], list[type[APIMessage]]] = {}
    spelling: dict[tuple[str, str], str] = {}
    for cls in apis:
        shape = (cls.api_method, re.sub(r"\{\w+\}", "{}", cls.api_path))
        path = spelling.setdefault(shape, cls.api_path)
        groups.setdefault((cls.api_method, path), []).append(cls)
    return groups


@web.middleware
async def _errors_as_json(request: web.Request, handler: _HANDLER) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status in (404, 405) and request.path.startswith(PREFIXES):
            what = "no such API path" if exc.status == 404 else "method not allowed"
            return _json({"error": ZError(INVALID_ARGUMENT if exc.status == 405 else "SYS.1003",
                                          what, f"{request.method} {request.path}").to_dict()},
                         exc.status)
        raise


REST: web.AppKey[RestServer] = web.AppKey("zcore.rest")


def add_rest_routes(node: Node) -> RestServer:
    """Mount the REST API of ``node`` on its aiohttp application; returns the server."""
    server = RestServer(node)
    node.app[REST] = server
    node.app.middlewares.append(_errors_as_json)
    for method, path, handler in server.routes():
        for prefix in PREFIXES:
            node.app.router.add_route(method, prefix + path, handler)
    return server

