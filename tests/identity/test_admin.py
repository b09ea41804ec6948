"""The initial admin account: made on first start, once, with an argon2 hash of the digest."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from sqlalchemy import delete, func, select

from zcore.db import ResourceVO
from zcore.node import Node
from zcore.testing import sha512
from zplugins.identity.models import AccountVO
from zplugins.identity.passwords import HASHER
from zplugins.identity.service import ADMIN_UUID, identity

from .helpers import MakeNode


async def admins(node: Node) -> list[AccountVO]:
    return await node.db.run(lambda s: list(s.scalars(
        select(AccountVO).where(AccountVO.name == "admin"))))


async def test_admin_exists_after_first_start(node: Node) -> None:
    [admin] = await admins(node)
    assert (admin.uuid, admin.type) == (ADMIN_UUID, "SystemAdmin")
    owner = await node.db.run(lambda s: s.get_one(ResourceVO, ADMIN_UUID))
    assert (owner.resourceType, owner.ownerAccountUuid) == ("AccountVO", ADMIN_UUID)


async def test_the_stored_password_is_argon2_of_the_digest_never_the_digest(node: Node) -> None:
    [admin] = await admins(node)
    assert admin.password.startswith("$argon2id$")
    assert admin.password != sha512("password")
    assert sha512("password") not in admin.password
    assert PasswordHasher().verify(admin.password, sha512("password"))
    assert not HASHER.check_needs_rehash(admin.password)


async def test_admin_is_not_duplicated_by_a_restart(make_node: MakeNode) -> None:
    first = await make_node()
    await first.stop()
    second = await make_node()
    assert len(await admins(second)) == 1
    assert await identity(second).ensure_admin() is False


async def test_two_nodes_starting_together_make_one_admin(make_node: MakeNode) -> None:
    one, two = await asyncio.gather(make_node(), make_node())
    assert len(await admins(one)) == 1
    # Both find it missing at the same moment: one creates it, the other tolerates that.
    await one.db.run(lambda s: s.execute(delete(ResourceVO).where(ResourceVO.uuid == ADMIN_UUID)))
    assert await one.db.run(lambda s: s.scalar(select(func.count()).select_from(AccountVO))) == 0
    made = await asyncio.gather(identity(one).ensure_admin(), identity(two).ensure_admin())
    assert sorted(made) == [False, True]
    assert len(await admins(two)) == 1
