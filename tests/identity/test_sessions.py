"""Logging in and out, authentication with its cache, expiry, renewal, and two nodes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from zcore.api import Caller
from zcore.db import new_uuid
from zcore.errors import ZError
from zcore.node import Node
from zcore.testing import sha512
from zplugins.identity.models import SessionVO
from zplugins.identity.service import ADMIN_UUID, identity

from .helpers import MakeNode, as_user, caller_of, create_account, login, move_time


async def sessions_in_db(node: Node) -> int:
    return await node.db.run(lambda s: s.scalars(select(func.count()).select_from(SessionVO))
                             .one())


async def test_login_with_the_digest_returns_a_session(node: Node) -> None:
    reply = await node.api.call("LogInByAccount",
                                {"accountName": "admin", "password": sha512("password")})
    session = reply["inventory"]
    assert session.server_class == "org.zstack.header.identity.SessionInventory"
    assert set(session) == {"uuid", "accountUuid", "userUuid", "userType", "createDate",
                            "expiredDate"}
    assert (session["accountUuid"], session["userUuid"], session["userType"]) == \
        (ADMIN_UUID, ADMIN_UUID, "Account")
    assert session["expiredDate"] - session["createDate"] == timedelta(seconds=7200)
    caller = await caller_of(node, session["uuid"])
    assert caller == Caller(account_uuid=ADMIN_UUID, account_name="admin", is_admin=True,
                            session_uuid=session["uuid"], user_uuid=ADMIN_UUID)


async def test_wrong_password_and_unknown_account_look_the_same(node: Node) -> None:
    errors = []
    for name, password in (("admin", "wrong"), ("nobody", "password"), ("admin", "password")):
        with pytest.raises(ZError) as caught:
            await node.api.call("LogInByAccount", {"accountName": name, "password": password})
        errors.append(caught.value)
    assert {e.code for e in errors} == {"ID.1000"}
    assert len({(e.description, e.details) for e in errors}) == 1  # nothing tells them apart
    assert await sessions_in_db(node) == 0


async def test_a_client_sending_raw_passwords_still_logs_in(node: Node) -> None:
    admin = await as_user(node)
    await node.api.call("CreateAccount", {"name": "raw", "password": "plain text"},
                        caller=admin)
    reply = await node.api.call("LogInByAccount", {"accountName": "raw",
                                                   "password": "plain text"})
    assert (await caller_of(node, reply["inventory"]["uuid"])).account_name == "raw"


async def test_missing_and_unknown_sessions_are_id_1001(node: Node) -> None:
    service = identity(node)
    for session, words in ((None, "no session"), ("", "no session"),
                           (new_uuid(), "unknown"), ("not-a-uuid", "unknown")):
        with pytest.raises(ZError) as caught:
            await service.check(session)
        assert caught.value.code == "ID.1001"
        assert words in caught.value.details


async def test_a_cached_session_answers_without_the_database(node: Node) -> None:
    session = await login(node)
    service = identity(node)
    first = service.authenticate(session)
    assert not isinstance(first, Caller)  # a miss reads the database
    caller = await first
    assert service.authenticate(session) is caller  # a hit answers at once
    result = node.plugins.pm.hook.zcore_authenticate(node=node, session_uuid=session)
    assert result is caller


async def test_a_session_expires_after_the_configured_timeout(node: Node) -> None:
    with pytest.raises(ZError) as caught:
        await node.global_config.update("identity", "session.timeout", 59)
    assert caught.value.code == "SYS.1007"
    await node.global_config.update("identity", "session.timeout", 60)
    session = await login(node)
    await caller_of(node, session)  # cached
    move_time(node, seconds=59)
    assert (await caller_of(node, session)).account_name == "admin"
    move_time(node, seconds=2)
    with pytest.raises(ZError) as caught:
        await caller_of(node, session)
    assert caught.value.code == "ID.1001" and "expired at" in caught.value.details
    assert (await node.api.call("ValidateSession", {"sessionUuid": session})) == \
        {"valid": False}
    # The periodic sweep deletes it from the database.
    assert await identity(node).reap() == 1
    assert await sessions_in_db(node) == 0


async def test_an_expiry_in_the_database_is_honoured(make_node: MakeNode) -> None:
    one, two = await make_node(), await make_node()
    session = await login(one)
    await one.db.run(lambda s: s.execute(update(SessionVO).where(SessionVO.uuid == session)
                                         .values(expiredDate=identity(one).now())))
    with pytest.raises(ZError) as caught:
        await caller_of(two, session)
    assert caught.value.code == "ID.1001" and "expired" in caught.value.details


async def test_logout_ends_the_session_on_every_node(make_node: MakeNode) -> None:
    one, two = await make_node(), await make_node()
    session = await login(one)
    await caller_of(one, session)
    await caller_of(two, session)  # both nodes have it cached now
    assert await two.api.call("LogOut", {"sessionUuid": session}) == {}
    for node in (one, two):
        with pytest.raises(ZError) as caught:
            await caller_of(node, session)
        assert caught.value.code == "ID.1001"
        assert await node.api.call("ValidateSession", {"sessionUuid": session}) == \
            {"valid": False}
    # Logging out twice, or an unknown session, is fine.
    assert await one.api.call("LogOut", {"sessionUuid": session}) == {}
    assert await one.api.call("LogOut", {"sessionUuid": new_uuid()}) == {}
    assert await one.api.call("LogOut", {}) == {}


async def test_validate_session(node: Node) -> None:
    session = await login(node)
    assert await node.api.call("ValidateSession", {"sessionUuid": session}) == {"valid": True}
    for other in (new_uuid(), "garbage"):
        assert await node.api.call("ValidateSession", {"sessionUuid": other}) == \
            {"valid": False}
    with pytest.raises(ZError) as caught:
        await node.api.call("ValidateSession", {})
    assert caught.value.code == "SYS.1007"


async def test_renewal_moves_the_expiry_on_every_node(make_node: MakeNode) -> None:
    one, two = await make_node(), await make_node()
    await one.global_config.update("identity", "session.timeout", 60)
    session = await login(one)
    caller = await caller_of(one, session)
    await caller_of(two, session)  # cached on two with the old expiry
    reply = await one.api.call("RenewSession", {"sessionUuid": session, "duration": 3600},
                               caller=caller)
    renewed = reply["inventory"]
    assert renewed.server_class == "org.zstack.header.identity.SessionInventory"
    now = identity(one).now()
    assert timedelta(seconds=3590) < renewed["expiredDate"] - now <= timedelta(seconds=3600)
    move_time(one, two, seconds=120)
    for node in (one, two):
        assert (await caller_of(node, session)).session_uuid == session
    # Without a duration, the configured timeout.
    reply = await one.api.call("RenewSession", {"sessionUuid": session}, caller=caller)
    assert reply["inventory"]["expiredDate"] - identity(one).now() <= timedelta(seconds=60)


async def test_renewal_checks_its_arguments_and_the_owner(node: Node) -> None:
    admin = await as_user(node)
    await create_account(node, admin, "tenant")
    await create_account(node, admin, "other")
    tenant = await as_user(node, "tenant", "secret")
    other = await as_user(node, "other", "secret")
    for duration in (59, 31536001):
        with pytest.raises(ZError) as caught:
            await node.api.call("RenewSession", {"sessionUuid": tenant.session_uuid,
                                                 "duration": duration}, caller=tenant)
        assert caught.value.code == "SYS.1007"
    with pytest.raises(ZError) as caught:
        await node.api.call("RenewSession", {"sessionUuid": other.session_uuid}, caller=tenant)
    assert caught.value.code == "ID.1002"
    with pytest.raises(ZError) as caught:
        await node.api.call("RenewSession", {"sessionUuid": new_uuid()}, caller=admin)
    assert caught.value.code == "ID.1001"
    # An administrator renews anyone's; an account its own.
    await node.api.call("RenewSession", {"sessionUuid": other.session_uuid}, caller=admin)
    await node.api.call("RenewSession", {"sessionUuid": tenant.session_uuid}, caller=tenant)


async def test_the_oldest_sessions_go_beyond_the_maximum(make_node: MakeNode) -> None:
    one, two = await make_node(), await make_node()
    await one.global_config.update("identity", "session.maxConcurrent", 2)
    first = await login(one)
    await caller_of(two, first)
    second, third = await login(one), await login(two)
    with pytest.raises(ZError) as caught:
        await caller_of(two, first)
    assert caught.value.code == "ID.1001"
    for session in (second, third):
        await caller_of(one, session)
    assert await sessions_in_db(one) == 2
