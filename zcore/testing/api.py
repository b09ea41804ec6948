"""A REST client for tests: calls a served node's APIs by name, as ZStack's SDKs do.

``client.call("CreateZone", name="z1")`` builds the request from the API's declaration
(method, path, envelope), sends it over real HTTP, polls the job of an asynchronous API and
returns the result body, or raises :class:`~zcore.errors.ZError` with the error the node
answered. ``client.request(...)`` sends anything, for tests of malformed input.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest_asyncio

from zcore.api import APIMessage
from zcore.errors import ZError
from zcore.node import Node

__all__ = ["ApiClient", "api_client", "sha512"]


def sha512(password: str) -> str:
    """What ZStack clients send as a password: its SHA-512 hex digest."""
    return hashlib.sha512(password.encode()).hexdigest()


class ApiClient:
    """One HTTP client of a served node, with an optional session."""

    def __init__(self, node: Node, http: aiohttp.ClientSession) -> None:
        self.node = node
        self.http = http
        self.base = f"{node.url}/zstack/v1"
        self.session_uuid: str | None = None

    async def login(self, account: str = "admin", password: str = "password") -> str:
        reply = await self.call("LogInByAccount", accountName=account, password=sha512(password))
        self.session_uuid = reply["inventory"]["uuid"]
        return self.session_uuid

    def headers(self, job_uuid: str | None = None) -> dict[str, str]:
        headers = {}
        if self.session_uuid:
            headers["Authorization"] = f"OAuth {self.session_uuid}"
        if job_uuid:
            headers["X-Job-UUID"] = job_uuid
        return headers

    async def request(self, method: str, path: str, *, json: Any = None, data: Any = None,
                      params: Any = None, headers: dict[str, str] | None = None
                      ) -> tuple[int, Any]:
        """Send one request under ``/zstack/v1``; the status and the decoded JSON body."""
        merged = {**self.headers(), **(headers or {})}
        async with self.http.request(method, self.base + path, json=json, data=data,
                                     params=params, headers=merged) as reply:
            text = await reply.text()
            try:
                body = await reply.json(content_type=None) if text else None
            except ValueError:
                body = text
            return reply.status, body

    async def poll(self, location: str, timeout: float = 60) -> tuple[int, Any]:
        """Poll a job location until it answers something other than 202."""
        delay = 0.005
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            async with self.http.get(location) as reply:
                if reply.status != 202:
                    return reply.status, await reply.json(content_type=None)
            if loop.time() > deadline:
                raise TimeoutError(f"job {location} still runs after {timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    def build(self, api: str, params: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """Method, path and request keyword arguments for calling ``api`` with ``params``."""
        cls: type[APIMessage] = self.node.api.message(api)
        params = dict(params)
        path = cls.api_path
        for var in cls.path_variables():
            path = path.replace("{" + var + "}", str(params.pop(var)))
        kwargs: dict[str, Any] = {}
        if cls.api_method in ("GET", "DELETE"):
            query: list[tuple[str, str]] = []
            for key, value in params.items():
                for item in value if isinstance(value, list) else [value]:
                    text = ("true" if item else "false") if isinstance(item, bool) else str(item)
                    query.append((key, text))
            kwargs["params"] = query
        elif cls.api_method == "POST":
            body: dict[str, Any] = {"params": params}
            for key in ("systemTags", "userTags"):
                if key in params:
                    body[key] = params.pop(key)
            kwargs["json"] = body
        else:
            kwargs["json"] = {cls.envelope: params}
        return cls.api_method, path, kwargs

    async def call(self, api: str, *, job_uuid: str | None = None, **params: Any) -> Any:
        """Call ``api``; the result body (without ``schema``), or :class:`ZError`."""
        status, body = await self.call_raw(api, job_uuid=job_uuid, **params)
        if status != 200:
            raise ZError.from_dict(body["error"]) if isinstance(body, dict) and "error" in body \
                else AssertionError(f"{api}: HTTP {status}: {body}")
        body.pop("schema", None)
        return body

    async def call_raw(self, api: str, *, job_uuid: str | None = None, **params: Any
                       ) -> tuple[int, Any]:
        """Call ``api``; the final status and body, after polling an asynchronous job."""
        method, path, kwargs = self.build(api, params)
        status, body = await self.request(method, path, headers=self.headers(job_uuid),
                                          **kwargs)
        if status == 202:
            status, body = await self.poll(body["location"])
        return status, body


@pytest_asyncio.fixture
async def api_client(make_node: Callable[..., Awaitable[Node]]
                     ) -> AsyncIterator[Callable[..., Awaitable[ApiClient]]]:
    """A factory of :class:`ApiClient`: ``await api_client()`` serves a node with every
    installed plugin and returns a client logged in as admin. ``login=False``: not logged
    in; ``node=``: a client of a node already served; extra plugins (``("name", module)``)
    and ``make_node`` options (``disable=``) serve a new node. Later calls without them
    reuse the last node."""
    async with aiohttp.ClientSession() as http:
        served: list[Node] = []

        async def make(*plugins: tuple[str, object], login: bool = True,
                       node: Node | None = None, **node_options: Any) -> ApiClient:
            if node is None:
                if not served or plugins or node_options:
                    served.append(await make_node(*plugins, serve=True, **node_options))
                node = served[-1]
            client = ApiClient(node, http)
            if login:
                await client.login()
            return client

        yield make
