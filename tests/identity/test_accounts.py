"""Creating, querying, updating and deleting accounts, and who may do which."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from zcore.db import ResourceVO, UserTagVO, new_uuid
from zcore.errors import ZError
from zcore.node import Node
from zcore.testing import sha512
from zplugins.identity.models import AccountVO, SessionVO
from zplugins.identity.service import ADMIN_UUID

from .helpers import MakeNode, as_user, caller_of, create_account, login

ACCOUNT_FIELDS = {"uuid", "name", "description", "type", "createDate", "lastOpDate"}


async def count(node: Node, model: Any) -> int:
    return await node.db.run(lambda s: s.scalars(select(func.count()).select_from(model)).one())


async def names(node: Node, caller: Any, *q: str) -> list[str]:
    reply = await node.api.call("QueryAccount", {"q": list(q)}, caller=caller)
    return sorted(inv["name"] for inv in reply["inventories"])


async def expect(code: str, node: Node, api: str, params: dict[str, Any], caller: Any) -> ZError:
    with pytest.raises(ZError) as caught:
        await node.api.call(api, params, caller=caller)
    assert caught.value.code == code, caught.value
    return caught.value


async def test_create_query_update_delete(node: Node) -> None:
    admin = await as_user(node)
    created = await create_account(node, admin, "tenant", description="a tenant")
    assert created.server_class == "org.zstack.header.identity.AccountInventory"
    assert set(created) == ACCOUNT_FIELDS
    assert (created["name"], created["type"], created["description"]) == \
        ("tenant", "Normal", "a tenant")
    owner = await node.db.run(lambda s: s.get_one(ResourceVO, created["uuid"]))
    assert owner.ownerAccountUuid == created["uuid"]
    assert await names(node, admin) == ["admin", "tenant"]
    assert await names(node, admin, "type=Normal") == ["tenant"]

    updated = (await node.api.call("UpdateAccount", {"uuid": created["uuid"],
                                                     "name": "renamed",
                                                     "description": "new"},
                                   caller=admin))["inventory"]
    assert (updated["name"], updated["description"]) == ("renamed", "new")
    assert updated["lastOpDate"] >= created["lastOpDate"]

    assert await node.api.call("DeleteAccount", {"uuid": created["uuid"]}, caller=admin) == {}
    assert await names(node, admin) == ["admin"]
    assert await node.db.run(lambda s: s.get(ResourceVO, created["uuid"])) is None


async def test_created_accounts_log_in_and_may_be_admins(node: Node) -> None:
    admin = await as_user(node)
    uuid = new_uuid()
    await create_account(node, admin, "ops", type="SystemAdmin", resourceUuid=uuid)
    ops = await as_user(node, "ops", "secret")
    assert (ops.account_uuid, ops.is_admin) == (uuid, True)
    await create_account(node, ops, "made-by-ops")
    assert await names(node, ops) == ["admin", "made-by-ops", "ops"]


async def test_the_password_never_leaves(node: Node) -> None:
    admin = await as_user(node)
    await create_account(node, admin, "tenant")
    reply = await node.api.call("QueryAccount", {}, caller=admin)
    for inventory in reply["inventories"]:
        assert set(inventory) == ACCOUNT_FIELDS
    for params in ({"fields": ["name,password"]}, {"q": ["password~=$argon2%"]}, {"q": ["password is null"]},
                   {"sortBy": "password"}, {"sort": "-password"}):
        await expect("SYS.1007", node, "QueryAccount", params, admin)


async def test_a_duplicate_name_is_refused_and_creates_nothing(node: Node) -> None:
    admin = await as_user(node)
    await create_account(node, admin, "tenant")
    before = (await count(node, AccountVO), await count(node, ResourceVO))
    error = await expect("SYS.1007", node, "CreateAccount",
                         {"name": "tenant", "password": sha512("x")}, admin)
    assert "tenant" in error.details
    error = await expect("SYS.1007", node, "CreateAccount",
                         {"name": "admin", "password": sha512("x")}, admin)
    assert "admin" in error.details
    assert (await count(node, AccountVO), await count(node, ResourceVO)) == before
    other = await create_account(node, admin, "other")
    await expect("SYS.1007", node, "UpdateAccount", {"uuid": other["uuid"], "name": "tenant"},
                 admin)
    assert await names(node, admin) == ["admin", "other", "tenant"]


async def test_create_checks_its_parameters(node: Node) -> None:
    admin = await as_user(node)
    for params in ({"name": "x"}, {"password": sha512("x")},
                   {"name": "x", "password": sha512("x"), "type": "Root"},
                   {"name": "x" * 256, "password": sha512("x")},
                   {"name": "x", "password": sha512("x"), "tagUuids": [new_uuid()]},
                   {"name": "x", "password": sha512("x"), "resourceUuid": ADMIN_UUID}):
        await expect("SYS.1007", node, "CreateAccount", params, admin)
    assert await names(node, admin) == ["admin"]


async def test_tags_are_attached_to_the_new_account(node: Node) -> None:
    admin = await as_user(node)
    created = await create_account(node, admin, "tagged", userTags=["gold", "team::a"])
    tags = await node.db.run(lambda s: sorted(s.scalars(
        select(UserTagVO.tag).where(UserTagVO.resourceUuid == created["uuid"]))))
    assert tags == ["gold", "team::a"]
    assert await names(node, admin, "__userTag__=gold") == ["tagged"]
    # No system tag pattern is declared for accounts: any system tag is refused.
    await expect("SYS.1007", node, "CreateAccount",
                 {"name": "x", "password": sha512("x"), "systemTags": ["a::b"]}, admin)


async def test_a_normal_account_sees_and_changes_only_itself(node: Node) -> None:
    admin = await as_user(node)
    await create_account(node, admin, "tenant")
    other = await create_account(node, admin, "other")
    tenant = await as_user(node, "tenant", "secret")
    assert tenant.is_admin is False
    assert await names(node, tenant) == ["tenant"]
    assert await names(node, tenant, "name=other") == []
    await expect("ID.1002", node, "UpdateAccount", {"uuid": other["uuid"], "description": "x"},
                 tenant)
    await expect("ID.1002", node, "UpdateAccount", {"uuid": ADMIN_UUID, "description": "x"},
                 tenant)
    await expect("ID.1002", node, "CreateAccount", {"name": "x", "password": sha512("x")},
                 tenant)
    await expect("ID.1002", node, "DeleteAccount", {"uuid": other["uuid"]}, tenant)
    await expect("ID.1002", node, "DeleteAccount", {"uuid": tenant.account_uuid}, tenant)
    reply = await node.api.call("UpdateAccount", {"uuid": tenant.account_uuid,
                                                  "description": "mine"}, caller=tenant)
    assert reply["inventory"]["description"] == "mine"
    assert await names(node, admin) == ["admin", "other", "tenant"]


async def test_changing_a_password(node: Node) -> None:
    admin = await as_user(node)
    await create_account(node, admin, "tenant", password="old")
    tenant = await as_user(node, "tenant", "old")
    uuid = tenant.account_uuid
    await expect("SYS.1007", node, "UpdateAccount",
                 {"uuid": uuid, "password": sha512("new")}, tenant)
    await expect("ID.1000", node, "UpdateAccount",
                 {"uuid": uuid, "password": sha512("new"), "oldPassword": sha512("wrong")},
                 tenant)
    await login(node, "tenant", "old")  # still the old password
    await node.api.call("UpdateAccount", {"uuid": uuid, "password": sha512("new"),
                                          "oldPassword": sha512("old")}, caller=tenant)
    await login(node, "tenant", "new")
    with pytest.raises(ZError) as caught:
        await login(node, "tenant", "old")
    assert caught.value.code == "ID.1000"
    stored = await node.db.run(lambda s: s.get_one(AccountVO, uuid))
    assert stored.password.startswith("$argon2id$") and sha512("new") not in stored.password
    # An administrator resets it without the old one.
    await node.api.call("UpdateAccount", {"uuid": uuid, "password": sha512("reset")},
                        caller=admin)
    await login(node, "tenant", "reset")


async def test_the_admin_account_keeps_its_name_and_is_never_deleted(node: Node) -> None:
    admin = await as_user(node)
    await expect("SYS.1006", node, "UpdateAccount", {"uuid": ADMIN_UUID, "name": "root"}, admin)
    await expect("SYS.1006", node, "DeleteAccount", {"uuid": ADMIN_UUID}, admin)
    reply = await node.api.call("UpdateAccount", {"uuid": ADMIN_UUID, "name": "admin",
                                                  "description": "the boss"}, caller=admin)
    assert reply["inventory"]["description"] == "the boss"
    await node.api.call("UpdateAccount", {"uuid": ADMIN_UUID, "password": sha512("changed")},
                        caller=admin)
    await login(node, "admin", "changed")


async def test_renaming_updates_the_cached_caller_everywhere(make_node: MakeNode) -> None:
    one, two = await make_node(), await make_node()
    admin = await as_user(one)
    await create_account(one, admin, "tenant")
    tenant = await as_user(one, "tenant", "secret")
    assert tenant.session_uuid is not None
    await caller_of(two, tenant.session_uuid)
    await one.api.call("UpdateAccount", {"uuid": tenant.account_uuid, "name": "renamed"},
                       caller=admin)
    for node in (one, two):
        assert (await caller_of(node, tenant.session_uuid)).account_name == "renamed"


async def test_deleting_an_account_ends_its_sessions_everywhere(make_node: MakeNode) -> None:
    one, two = await make_node(), await make_node()
    admin = await as_user(one)
    created = await create_account(one, admin, "tenant")
    tenant = await as_user(one, "tenant", "secret")
    assert tenant.session_uuid is not None
    await caller_of(two, tenant.session_uuid)
    await two.api.call("DeleteAccount", {"uuid": created["uuid"]}, caller=admin)
    for node in (one, two):
        with pytest.raises(ZError) as caught:
            await caller_of(node, tenant.session_uuid)
        assert caught.value.code == "ID.1001"
    assert await one.db.run(lambda s: s.scalar(select(func.count()).select_from(SessionVO)
                                               .where(SessionVO.accountUuid
                                                      == created["uuid"]))) == 0
    with pytest.raises(ZError) as caught:
        await login(one, "tenant", "secret")
    assert caught.value.code == "ID.1000"
    await expect("SYS.1003", one, "DeleteAccount", {"uuid": created["uuid"]}, admin)


async def _tenant_with_a_zone(node: Node) -> tuple[Any, str, str]:
    admin = await as_user(node)
    created = await create_account(node, admin, "tenant")
    tenant = await as_user(node, "tenant", "secret")
    zone = await node.api.call("CreateZone", {"name": "tenant-zone"}, caller=tenant)
    return admin, created["uuid"], zone["inventory"]["uuid"]


async def test_an_account_owning_resources_is_refused_without_cascade(
        make_node: MakeNode) -> None:
    node = await make_node(disable=("cascade",))
    admin, account, zone = await _tenant_with_a_zone(node)
    error = await expect("SYS.1004", node, "DeleteAccount", {"uuid": account}, admin)
    assert zone in error.details and "ZoneVO" in error.details
    assert await names(node, admin) == ["admin", "tenant"]


async def test_an_account_owning_resources_cascades_with_cascade(node: Node) -> None:
    admin, account, zone = await _tenant_with_a_zone(node)
    assert await node.api.call("DeleteAccount", {"uuid": account}, caller=admin) == {}
    assert await names(node, admin) == ["admin"]
    assert await node.db.run(lambda s: s.get(ResourceVO, zone)) is None
