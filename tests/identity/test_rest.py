"""The identity APIs over real HTTP, as ZStack's SDKs call them."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from zcore.node import Node
from zcore.testing import sha512

from .helpers import MakeNode

SESSION = "org.zstack.header.identity.SessionInventory"
ACCOUNT = "org.zstack.header.identity.AccountInventory"


async def send(http: aiohttp.ClientSession, method: str, url: str, *,
               session: str | None = None, **kwargs: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"OAuth {session}"} if session else {}
    async with http.request(method, url, headers=headers, **kwargs) as reply:
        return reply.status, await reply.json(content_type=None)


async def finish(http: aiohttp.ClientSession, status: int, body: Any) -> tuple[int, Any]:
    """Poll an asynchronous API's job until it is done."""
    assert status == 202, body
    while True:
        async with http.get(body["location"], headers={"Authorization": "OAuth null"}) as reply:
            if reply.status != 202:
                return reply.status, await reply.json(content_type=None)
        await asyncio.sleep(0.01)


async def test_a_session_over_http(make_node: MakeNode) -> None:
    node: Node = await make_node(serve=True)
    base = f"{node.url}/zstack/v1"
    async with aiohttp.ClientSession() as http:
        status, body = await send(http, "PUT", f"{base}/accounts/login", json={
            "logInByAccount": {"accountName": "admin", "password": sha512("password")}})
        assert status == 200, body
        assert body["schema"] == {"inventory": SESSION}
        session = body["inventory"]["uuid"]
        assert body["inventory"]["expiredDate"].endswith("+00:00")

        status, body = await send(http, "GET", f"{base}/accounts", session=session)
        assert status == 200 and [a["name"] for a in body["inventories"]] == ["admin"]
        assert body["schema"] == {"inventories[0]": ACCOUNT}
        assert "password" not in body["inventories"][0]

        status, body = await send(http, "GET", f"{base}/accounts/sessions/{session}/valid")
        assert (status, body["valid"]) == (200, True)

        status, body = await finish(http, *await send(
            http, "PUT", f"{base}/accounts/sessions/{session}/renew", session=session,
            json={"renewSession": {"duration": 600}}))
        assert status == 200 and body["inventory"]["uuid"] == session

        status, body = await send(http, "DELETE", f"{base}/accounts/sessions/{session}")
        assert (status, body) == (200, {"schema": {}})
        status, body = await send(http, "GET", f"{base}/accounts", session=session)
        assert status == 503 and body["error"]["code"] == "ID.1001"
        status, body = await send(http, "GET", f"{node.url}/v1/accounts/sessions/{session}/valid")
        assert (status, body["valid"]) == (200, False)


async def test_wrong_credentials_over_http(make_node: MakeNode) -> None:
    node: Node = await make_node(serve=True)
    async with aiohttp.ClientSession() as http:
        for name, password in (("admin", sha512("wrong")), ("nobody", sha512("password"))):
            status, body = await send(http, "PUT", f"{node.url}/v1/accounts/login", json={
                "logInByAccount": {"accountName": name, "password": password}})
            assert status == 503 and body["error"]["code"] == "ID.1000"


async def test_accounts_over_http(make_node: MakeNode) -> None:
    node: Node = await make_node(serve=True)
    base = f"{node.url}/zstack/v1"
    async with aiohttp.ClientSession() as http:
        _, body = await send(http, "PUT", f"{base}/accounts/login", json={
            "logInByAccount": {"accountName": "admin", "password": sha512("password")}})
        admin = body["inventory"]["uuid"]
        status, body = await finish(http, *await send(
            http, "POST", f"{base}/accounts", session=admin,
            json={"params": {"name": "tenant", "password": sha512("secret")},
                  "userTags": ["blue"]}))
        assert status == 200 and body["schema"] == {"inventory": ACCOUNT}
        tenant_uuid = body["inventory"]["uuid"]

        _, body = await send(http, "PUT", f"{base}/accounts/login", json={
            "logInByAccount": {"accountName": "tenant", "password": sha512("secret")}})
        tenant = body["inventory"]["uuid"]
        status, body = await send(http, "GET", f"{base}/accounts", session=tenant)
        assert [a["name"] for a in body["inventories"]] == ["tenant"]
        status, body = await send(http, "GET", f"{base}/accounts",
                                  params=[("q", "__userTag__=blue")], session=admin)
        assert [a["name"] for a in body["inventories"]] == ["tenant"]

        status, body = await finish(http, *await send(
            http, "PUT", f"{base}/accounts/{tenant_uuid}", session=tenant,
            json={"updateAccount": {"password": sha512("new"), "oldPassword": sha512("no")}}))
        assert status == 503 and body["error"]["code"] == "ID.1000"
        status, body = await finish(http, *await send(
            http, "DELETE", f"{base}/accounts/{tenant_uuid}", session=tenant))
        assert status == 503 and body["error"]["code"] == "ID.1002"
        status, body = await finish(http, *await send(
            http, "DELETE", f"{base}/accounts/{tenant_uuid}", session=admin))
        assert (status, body) == (200, {"schema": {}})
        status, body = await send(http, "GET", f"{base}/accounts", session=tenant)
        assert status == 503 and body["error"]["code"] == "ID.1001"
