"""Identity: accounts, login sessions with expiry, and who is calling each API.

The essential plugin behind ZStack's ``LogInByAccount``, ``LogOut``, ``ValidateSession``,
``RenewSession`` and the account APIs (``CreateAccount``, ``QueryAccount``,
``UpdateAccount``, ``DeleteAccount``). It answers ``zcore_authenticate`` for every API call
that needs a session, from a per-node cache kept consistent across nodes through the bus.

On first start it creates the administrator ``admin`` (uuid
``36c27e8ff05c4780bf6d2fa65700f22e``, as in ZStack) with the password ``password``.
Clients log in with the SHA-512 hex digest of the password, as ZStack's do; passwords are
stored as argon2id hashes of that digest (see :mod:`zplugins.identity.passwords`).

Global configuration: ``identity.session.timeout`` (seconds a new session lives, default
7200) and ``identity.session.maxConcurrent`` (sessions an account may hold; the oldest go
beyond it, default 500).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from zcore import ApiMessage, GlobalConfigOption, Migrations, ResourceType, hookimpl

if TYPE_CHECKING:
    from zcore.api import Caller
    from zcore.node import Node

CATEGORY = "identity"


@hookimpl
def zcore_resource_types() -> Iterator[ResourceType]:
    from zplugins.identity.models import AccountVO
    from zplugins.identity.service import ACCOUNT_INVENTORY, account_inventory

    yield ResourceType("AccountVO", model=AccountVO, inventory=ACCOUNT_INVENTORY,
                       description="An account: it owns resources and logs in",
                       to_inventory=account_inventory, hidden=("password",),
                       columns_only=True)


@hookimpl
def zcore_db_migrations() -> Iterator[Migrations]:
    yield Migrations("identity", Path(__file__).parent / "migrations")


@hookimpl
def zcore_global_configs() -> Iterator[GlobalConfigOption]:
    yield GlobalConfigOption(CATEGORY, "session.timeout", int, 7200,
                             "Seconds a new session lasts before it expires", min=60,
                             max=31536000)
    yield GlobalConfigOption(CATEGORY, "session.maxConcurrent", int, 500,
                             "Sessions one account may hold at once; logging in beyond it ends "
                             "the oldest", min=1)


@hookimpl
def zcore_api_messages() -> Iterator[ApiMessage]:
    from zplugins.identity import api

    for name in api.__all__:
        yield ApiMessage(getattr(api, name))


@hookimpl
async def zcore_node_starting(node: Node) -> None:
    from zplugins.identity.service import IDENTITY, IdentityService

    service = IdentityService(node)
    node.app[IDENTITY] = service
    await service.start()


@hookimpl
def zcore_node_stopping(node: Node) -> None:
    from zplugins.identity.service import IDENTITY

    service = node.app.get(IDENTITY)
    if service is not None:
        service.stop()


@hookimpl
def zcore_authenticate(node: Node, session_uuid: str | None) -> Caller | Awaitable[Caller]:
    # Called on every API call: a cached session answers at once, without a coroutine.
    from zplugins.identity.service import identity

    return identity(node).authenticate(session_uuid)
