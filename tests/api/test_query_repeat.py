"""A query asked again, as clients poll, over real HTTP: always fresh rows, each account its
own, and a session refused at once after log out or expiry although it was just used."""

from __future__ import annotations

from typing import Any

import pytest

from zcore.query import Query, parse_condition
from zcore.testing import ApiClient, sha512
from zplugins.identity.service import identity

pytestmark = pytest.mark.db


async def names(client: ApiClient, *conditions: str, **params: Any) -> list[str]:
    reply = await client.call("QueryZone", q=list(conditions), **params)
    return [z["name"] for z in reply["inventories"]]


async def test_the_same_query_again_sees_every_change(api_client: Any) -> None:
    client = await api_client()
    assert await names(client, "name=z1") == []
    zone = (await client.call("CreateZone", name="z1"))["inventory"]
    for _ in range(2):
        assert await names(client, "name=z1") == ["z1"]
    await client.call("UpdateZone", uuid=zone["uuid"], name="z2")
    assert await names(client, "name=z1") == []
    assert await names(client, "name=z2") == ["z2"]
    await client.call("CreateZone", name="z1")
    assert await names(client, "name=z1") == ["z1"]
    reply = await client.call("QueryZone", q=["name?=z1,z2"], replyWithCount=True, limit=1)
    assert (len(reply["inventories"]), reply["total"]) == (1, 2)
    assert (await client.call("QueryZone", q=["name?=z1,z2"], count=True))["total"] == 2
    await client.call("DeleteZone", uuid=zone["uuid"])
    assert (await client.call("QueryZone", q=["name?=z1,z2"], count=True))["total"] == 1
    status, body = await client.request("GET", "/zones", params={"q": "name=z1"})
    assert status == 200
    assert body["schema"] == {"inventories[0]": "org.zstack.header.zone.ZoneInventory"}


async def test_the_same_query_by_two_accounts_sees_each_its_own(api_client: Any) -> None:
    admin = await api_client()
    await admin.call("CreateAccount", name="tenant", password=sha512("secret"), type="Normal")
    tenant = await api_client(login=False, node=admin.node)
    await tenant.login("tenant", "secret")
    await admin.call("CreateZone", name="shared-name")
    assert await names(tenant, "name=shared-name") == []
    assert await names(admin, "name=shared-name") == ["shared-name"]
    await tenant.call("CreateZone", name="shared-name")
    assert await names(tenant, "name=shared-name") == ["shared-name"]
    assert await names(admin, "name=shared-name") == ["shared-name", "shared-name"]
    assert await names(tenant, "name=shared-name") == ["shared-name"]


async def test_a_query_with_conditions_in_a_list_runs_too(api_client: Any) -> None:
    client = await api_client()
    await client.call("CreateZone", name="z1")
    node = client.node
    # Query is meant to hold a tuple; a list (not hashable) is built anew every time.
    q = Query("ZoneVO", [parse_condition("name=z1")])  # type: ignore[arg-type]
    for _ in range(2):
        result = await node.db.read(node.query.run, q)
        assert [row.name for row in result.rows] == ["z1"]


async def test_a_logged_out_session_is_refused_at_once(api_client: Any) -> None:
    admin = await api_client()
    other = await api_client(node=admin.node)
    for client in (admin, other):
        assert await names(client, "name=z1") == []  # the session is cached now
    await other.call("LogOut", sessionUuid=other.session_uuid)
    status, body = await other.call_raw("QueryZone", q=["name=z1"])
    assert status == 503 and body["error"]["code"] == "ID.1001"
    assert "logged out" in body["error"]["details"]
    assert await names(admin, "name=z1") == []  # the other session is not touched


async def test_an_expired_session_is_refused_at_once(api_client: Any) -> None:
    client = await api_client()
    assert await names(client, "name=z1") == []  # the session is cached now
    service = identity(client.node)
    now = service.clock()
    service.clock = lambda: now + 7201  # the default timeout is 7200 s
    status, body = await client.call_raw("QueryZone", q=["name=z1"])
    assert status == 503 and body["error"]["code"] == "ID.1001"
    assert "expired" in body["error"]["details"]
