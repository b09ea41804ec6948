"""The identity APIs, named, routed and checked as ZStack's (``apis.json``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore.api import (
    PERMISSION_DENIED,
    WRONG_CREDENTIALS,
    ApiContext,
    APIMessage,
    Param,
    QueryMessage,
)
from zcore.db import ResourceVO, add_resource, delete_resource, new_uuid
from zcore.errors import (
    INVALID_ARGUMENT,
    OPERATION_ERROR,
    RESOURCE_NOT_FOUND,
    ZError,
)
from zplugins.identity.models import AccountVO, SessionVO
from zplugins.identity.passwords import hash_password, verify_password
from zplugins.identity.service import (
    ADMIN_UUID,
    NORMAL,
    SYSTEM_ADMIN,
    identity,
    session_inventory,
)

__all__ = [
    "CreateAccount",
    "DeleteAccount",
    "LogInByAccount",
    "LogOut",
    "QueryAccount",
    "RenewSession",
    "UpdateAccount",
    "ValidateSession",
]

ACCOUNT = "AccountVO"


# --------------------------------------------------------------------------- sessions


class LogInByAccount(APIMessage, method="PUT", path="/accounts/login", is_async=False,
                     need_session=False, result={"inventory": "SessionInventory"}):
    """Log in with an account name and password; the reply's inventory is the new session.

    ``password`` is what the account was created with: ZStack's clients send the SHA-512 hex
    digest of the password. ``accountType``, ``captchaUuid``, ``verifyCode`` and
    ``clientInfo`` are accepted for compatibility and not used.
    """

    accountName = Param(str, required=True)
    password = Param(str, required=True)
    accountType = Param(str)
    captchaUuid = Param(str)
    verifyCode = Param(str)
    clientInfo = Param(dict)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        row = await identity(ctx.node).log_in(self.accountName, self.password)
        return {"inventory": session_inventory(row)}


class LogOut(APIMessage, method="DELETE", path="/accounts/sessions/{sessionUuid}",
             is_async=False, need_session=False, result={}):
    """End a session. An unknown or already ended session is not an error."""

    sessionUuid = Param(str)
    clientInfo = Param(dict)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await identity(ctx.node).log_out(self.sessionUuid)
        return {}


class ValidateSession(APIMessage, method="GET", path="/accounts/sessions/{sessionUuid}/valid",
                      need_session=False, result={"valid": "boolean"}):
    """Whether a session exists and has not expired."""

    sessionUuid = Param(str, required=True)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        return {"valid": await identity(ctx.node).is_valid(self.sessionUuid)}


class RenewSession(APIMessage, method="PUT", path="/accounts/sessions/{sessionUuid}/renew",
                   result={"inventory": "SessionInventory"}):
    """Make a live session last ``duration`` more seconds from now.

    The default is the global configuration ``identity.session.timeout``. A normal account
    renews only its own sessions.
    """

    sessionUuid = Param(str, required=True)
    duration = Param(int, api_type="Long", number_range=(60, 31536000))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        row = await identity(ctx.node).renew(ctx.caller, self.sessionUuid, self.duration)
        return {"inventory": session_inventory(row)}


# --------------------------------------------------------------------------- accounts


def _name_taken(name: str, uuid: str | None = None) -> ZError:
    return ZError(INVALID_ARGUMENT, "invalid argument",
                  f"an account named {name!r} already exists{f' ({uuid})' if uuid else ''}; "
                  "account names are unique")


def _check_name_free(session: Session, name: str, me: str | None = None) -> None:
    other = session.scalar(select(AccountVO.uuid).where(AccountVO.name == name))
    if other is not None and other != me:
        raise _name_taken(name, other)


class CreateAccount(APIMessage, method="POST", path="/accounts", resource_type=ACCOUNT,
                    admin_only=True, result={"inventory": "AccountInventory"}):
    """Create an account (administrators only). ``password`` is what its clients will send
    to log in: for ZStack's clients, the SHA-512 hex digest of the password."""

    name = Param(str, required=True, max_length=255)
    password = Param(str, required=True, max_length=255)
    type = Param(str, valid_values=(SYSTEM_ADMIN, NORMAL), default=NORMAL)
    description = Param(str, max_length=2048)
    resourceUuid = Param(str)
    tagUuids = Param(list)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        if self.tagUuids:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         "parameter 'tagUuids' of CreateAccount is not supported; tag the "
                         "account with systemTags or userTags instead")
        hashed = await hash_password(self.password)
        uuid = self.resourceUuid or new_uuid()

        def create(session: Session) -> AccountVO:
            _check_name_free(session, self.name)
            account = add_resource(
                session, AccountVO(uuid=uuid, name=self.name, description=self.description,
                                   type=self.type, password=hashed),
                ACCOUNT, owner_account_uuid=uuid)
            session.flush()
            ctx.add_tags(session, uuid, ACCOUNT)
            return account

        try:
            account = await ctx.run(create)
        except IntegrityError:  # another call took the name between the check and the insert
            raise _name_taken(self.name) from None
        return {"inventory": ctx.inventory(ACCOUNT, account)}


class QueryAccount(QueryMessage, path="/accounts", resource=ACCOUNT):
    """Query accounts; a normal account sees only itself.

    The password hash is a hidden column of ``AccountVO`` (``ResourceType.hidden``): no
    condition, sort or ``fields`` may name it, since that would reveal the hash a character
    at a time.
    """


class UpdateAccount(APIMessage, method="PUT", path="/accounts/{uuid}", resource_type=ACCOUNT,
                    result={"inventory": "AccountInventory"}):
    """Rename an account, describe it or change its password.

    An administrator updates any account; a normal account only itself, and must give its
    current password as ``oldPassword`` to change it. The initial ``admin`` account keeps
    its name.
    """

    uuid = Param(str, required=True, resource_type=ACCOUNT)
    password = Param(str, max_length=255)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)
    oldPassword = Param(str, max_length=255)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        caller = ctx.caller
        if not caller.is_admin and caller.account_uuid != self.uuid:
            raise ZError(PERMISSION_DENIED, "permission denied",
                         f"account {caller.account_name or caller.account_uuid} is a normal "
                         f"account; it may update only itself, not account {self.uuid}")
        hashed: str | None = None
        if self.password is not None:
            if self.oldPassword is None and not caller.is_admin:
                raise ZError(INVALID_ARGUMENT, "invalid argument",
                             "parameter 'oldPassword' of UpdateAccount is required to change "
                             "the password of your own account")
            if self.oldPassword is not None:
                stored = await ctx.run(lambda s: s.scalar(
                    select(AccountVO.password).where(AccountVO.uuid == self.uuid)))
                if stored is None or not await verify_password(stored, self.oldPassword):
                    raise ZError(WRONG_CREDENTIALS, "wrong password",
                                 f"oldPassword is not the current password of account "
                                 f"{self.uuid}; the password was not changed")
            hashed = await hash_password(self.password)

        def update(session: Session) -> tuple[AccountVO, bool]:
            account = session.get(AccountVO, self.uuid)
            if account is None:
                raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                             f"no AccountVO has uuid {self.uuid}")
            renamed = self.name is not None and self.name != account.name
            if renamed:
                if account.uuid == ADMIN_UUID:
                    raise ZError(OPERATION_ERROR, "cannot rename the admin account",
                                 f"the initial account {account.name!r} ({ADMIN_UUID}) keeps "
                                 "its name")
                _check_name_free(session, self.name, account.uuid)
                account.name = self.name
            if self.description is not None:
                account.description = self.description
            if hashed is not None:
                account.password = hashed
            session.flush()
            return account, renamed

        try:
            account, renamed = await ctx.run(update)
        except IntegrityError:
            raise _name_taken(self.name) from None
        if renamed:  # cached callers carry the account's name
            await identity(ctx.node).forget_account(account.uuid)
        return {"inventory": ctx.inventory(ACCOUNT, account)}


def _owned(session: Session, account_uuid: str) -> list[tuple[str, str]]:
    rows = session.execute(select(ResourceVO.resourceType, ResourceVO.uuid).where(
        ResourceVO.ownerAccountUuid == account_uuid, ResourceVO.uuid != account_uuid)
        .order_by(ResourceVO.createDate.desc())).all()
    return [(r[0], r[1]) for r in rows]


def _delete_account(session: Session, uuid: str) -> None:
    session.execute(delete(SessionVO).where(SessionVO.accountUuid == uuid))
    account = session.get(AccountVO, uuid)
    if account is not None:
        delete_resource(session, account)


class DeleteAccount(APIMessage, method="DELETE", path="/accounts/{uuid}", resource_type=ACCOUNT,
                    admin_only=True, result={}):
    """Delete an account and its sessions (administrators only; never the initial admin).

    The resources the account owns are deleted first by the ``cascade`` plugin; without it
    the deletion is refused, naming them.
    """

    uuid = Param(str, required=True, resource_type=ACCOUNT)
    deleteMode = Param(str, default="Permissive")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        if self.uuid == ADMIN_UUID:
            raise ZError(OPERATION_ERROR, "cannot delete the admin account",
                         f"the initial account ({ADMIN_UUID}) cannot be deleted")
        node = ctx.node
        owned = await ctx.run(_owned, self.uuid)
        cascade = node.cascade

        def depth(item: tuple[str, str]) -> int:
            # Fewer types below it first: children before their parents.
            try:
                return len(cascade.deletion_order(item[0]))
            except KeyError:
                return 1 << 30

        owned.sort(key=depth)
        await ctx.delete(ACCOUNT, self.uuid, self.deleteMode, _delete_account, also=owned)
        await identity(node).forget_account(self.uuid)
        return {}
