"""Sessions and accounts at run time: log in and out, authenticate, renew, reap, the admin.

Each node holds one :class:`IdentityService` (``node.app[IDENTITY]``), made when the node
starts. It answers ``zcore_authenticate`` on every API call from an in-memory cache of valid
sessions (uuid → :class:`~zcore.api.Caller` and expiry), filled from the database on a miss.
Whatever makes a cached session wrong (log out, renew, an account renamed or deleted, sessions
dropped beyond ``identity.session.maxConcurrent``) publishes :class:`SessionChanged` on the
bus, and every node, this one included, forgets the sessions it names before the publish
returns. Expired sessions are refused from the cache by their expiry time and deleted from the
database by a background task every :data:`REAP_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from aiohttp import web
from sqlalchemy import CursorResult, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore.api import PERMISSION_DENIED, SESSION_INVALID, WRONG_CREDENTIALS, Caller, Inventory
from zcore.bus import Event, Subscription
from zcore.db import add_resource, is_uuid, new_uuid
from zcore.errors import NOT_READY, ZError
from zplugins.identity.models import AccountVO, SessionVO
from zplugins.identity.passwords import digest, hash_password, needs_rehash, verify_password

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "ACCOUNT_INVENTORY",
    "ADMIN_NAME",
    "ADMIN_UUID",
    "CATEGORY",
    "IDENTITY",
    "MAX_CONCURRENT",
    "REAP_INTERVAL",
    "SESSION_INVENTORY",
    "SESSION_TIMEOUT",
    "IdentityService",
    "SessionChanged",
    "account_inventory",
    "identity",
    "session_inventory",
]

log = logging.getLogger("zplugins.identity")

#: The initial administrator, as ZStack names it (``AccountConstant``); its password is
#: ``password`` until changed.
ADMIN_UUID = "36c27e8ff05c4780bf6d2fa65700f22e"
ADMIN_NAME = "admin"
ADMIN_PASSWORD = "password"

SYSTEM_ADMIN = "SystemAdmin"
NORMAL = "Normal"
USER_TYPE_ACCOUNT = "Account"

ACCOUNT_INVENTORY = "org.zstack.header.identity.AccountInventory"
SESSION_INVENTORY = "org.zstack.header.identity.SessionInventory"

#: Global configuration (category ``identity``).
CATEGORY = "identity"
SESSION_TIMEOUT = "session.timeout"
MAX_CONCURRENT = "session.maxConcurrent"

#: Seconds between two sweeps of expired sessions out of the database.
REAP_INTERVAL = 60.0
#: At most this many sessions are cached per node; the oldest are forgotten beyond it.
MAX_CACHED = 100_000

IDENTITY: web.AppKey[IdentityService] = web.AppKey("zplugins.identity.service")


class SessionChanged(Event, frozen=True, kw_only=True):
    """Cached sessions are wrong: forget ``sessionUuids`` and every session of ``accountUuid``.

    Published after a log out, a renewal, an account renamed or deleted, or sessions dropped
    beyond ``identity.session.maxConcurrent``. The next use reads the database again.
    """

    sessionUuids: tuple[str, ...] = ()
    accountUuid: str | None = None


def identity(node: Node) -> IdentityService:
    """The identity service of a started node."""
    service = node.app.get(IDENTITY)
    if service is None:
        raise ZError(NOT_READY, "identity is not ready",
                     f"management node {node.uuid} has not started the identity plugin yet; "
                     "retry once it serves")
    return service


# --------------------------------------------------------------------------- inventories


def account_inventory(row: AccountVO) -> dict[str, Any]:
    """ZStack's AccountInventory of an account; the password hash is never part of it."""
    return {"uuid": row.uuid, "name": row.name, "description": row.description,
            "type": row.type, "createDate": row.createDate, "lastOpDate": row.lastOpDate}


def session_inventory(row: SessionVO) -> Inventory:
    """ZStack's SessionInventory of a session."""
    return Inventory(SESSION_INVENTORY, {
        "uuid": row.uuid, "accountUuid": row.accountUuid, "userUuid": row.userUuid,
        "userType": row.userType, "createDate": row.createDate,
        "expiredDate": row.expiredDate})


# --------------------------------------------------------------------------- errors


def wrong_credentials() -> ZError:
    # One message for an unknown account and a wrong password: never say which.
    return ZError(WRONG_CREDENTIALS, "wrong account name or password",
                  "the account name or the password is wrong (ZStack clients send the SHA-512 "
                  "hex digest of the password)")


def _invalid_session(details: str) -> ZError:
    return ZError(SESSION_INVALID, "invalid session", details)


def _expired(session_uuid: str, expired: datetime) -> ZError:
    return _invalid_session(f"session {session_uuid} expired at {expired.isoformat()}; "
                            "log in again (LogInByAccount)")


def _unknown(session_uuid: str) -> ZError:
    return _invalid_session(f"session {session_uuid} is unknown or was logged out; "
                            "log in again (LogInByAccount)")


_MISSING_SESSION = ("the request carries no session: send 'Authorization: OAuth <session "
                    "uuid>' with the uuid that LogInByAccount returned")


# --------------------------------------------------------------------------- transactions


class _Found(NamedTuple):
    uuid: str
    name: str
    type: str
    password: str


class _Live(NamedTuple):
    account_uuid: str
    user_uuid: str
    expired: datetime
    name: str
    type: str


def _account_by_name(session: Session, name: str) -> _Found | None:
    row = session.execute(select(AccountVO.uuid, AccountVO.name, AccountVO.type,
                                 AccountVO.password).where(AccountVO.name == name)).first()
    return _Found(*row) if row is not None else None


def _find_session(session: Session, session_uuid: str) -> _Live | None:
    row = session.execute(
        select(SessionVO.accountUuid, SessionVO.userUuid, SessionVO.expiredDate,
               AccountVO.name, AccountVO.type)
        .join(AccountVO, AccountVO.uuid == SessionVO.accountUuid)
        .where(SessionVO.uuid == session_uuid)).first()
    return _Live(*row) if row is not None else None


def _create_session(session: Session, account_uuid: str, now: datetime, expires: datetime,
                    limit: int, rehashed: str | None) -> tuple[SessionVO, list[str]]:
    row = SessionVO(uuid=new_uuid(), accountUuid=account_uuid, userUuid=account_uuid,
                    userType=USER_TYPE_ACCOUNT, createDate=now, expiredDate=expires)
    session.add(row)
    if rehashed is not None:
        session.execute(update(AccountVO).where(AccountVO.uuid == account_uuid)
                        .values(password=rehashed))
    session.flush()
    count = session.scalar(select(func.count()).select_from(SessionVO)
                           .where(SessionVO.accountUuid == account_uuid)) or 0
    dropped: list[str] = []
    if count > limit:
        dropped = list(session.scalars(
            select(SessionVO.uuid).where(SessionVO.accountUuid == account_uuid,
                                         SessionVO.uuid != row.uuid)
            .order_by(SessionVO.createDate.desc(), SessionVO.uuid.desc())
            .offset(limit - 1).limit(count)))
        if dropped:
            session.execute(delete(SessionVO).where(SessionVO.uuid.in_(dropped)))
    return row, dropped


def _delete_session(session: Session, session_uuid: str) -> int:
    result = session.execute(delete(SessionVO).where(SessionVO.uuid == session_uuid))
    return cast(CursorResult[Any], result).rowcount


def _get_session(session: Session, session_uuid: str) -> SessionVO | None:
    return session.get(SessionVO, session_uuid)


def _extend(session: Session, session_uuid: str, expires: datetime) -> SessionVO | None:
    row = session.get(SessionVO, session_uuid)
    if row is not None:
        row.expiredDate = expires
    return row


def _delete_expired(session: Session, now: datetime) -> int:
    result = session.execute(delete(SessionVO).where(SessionVO.expiredDate <= now))
    return cast(CursorResult[Any], result).rowcount


def _admin_exists(session: Session) -> bool:
    return session.scalar(select(AccountVO.uuid).where(
        or_(AccountVO.uuid == ADMIN_UUID, AccountVO.name == ADMIN_NAME)).limit(1)) is not None


def _create_admin(session: Session, hashed: str) -> None:
    add_resource(session, AccountVO(uuid=ADMIN_UUID, name=ADMIN_NAME, type=SYSTEM_ADMIN,
                                    password=hashed),
                 "AccountVO", owner_account_uuid=ADMIN_UUID)


# --------------------------------------------------------------------------- the service


class IdentityService:
    """One node's sessions: the cache, log in and out, renewal, reaping; see the module."""

    def __init__(self, node: Node) -> None:
        self.node = node
        #: Seconds since the epoch, now. Tests move time by replacing it.
        self.clock: Callable[[], float] = time.time
        self._cache: dict[str, tuple[Caller, float]] = {}
        # Bumped by every invalidation: a database read that overlapped one is not cached.
        self._generation = 0
        self._subscription: Subscription | None = None
        self._dummy_hash = ""

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        bus = self.node.bus
        bus.register_types(SessionChanged)
        self._subscription = bus.subscribe(SessionChanged, self._on_changed)
        # Unknown accounts are checked against this, so they take as long as wrong passwords.
        self._dummy_hash = await hash_password(secrets.token_hex(64))
        await self.ensure_admin()
        self.node.spawn(self._reap_forever(), name=f"identity-reaper-{self.node.uuid}")

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        self._cache.clear()

    async def ensure_admin(self) -> bool:
        """Create the initial ``admin`` account unless it exists; True if this call made it.

        Nodes starting together on one database may both try: the account's fixed uuid and
        unique name let one win, and the other finds it made.
        """
        db = self.node.db
        if await db.run(_admin_exists):
            return False
        hashed = await hash_password(digest(ADMIN_PASSWORD))
        try:
            await db.run(_create_admin, hashed)
        except (IntegrityError, ZError):
            if await db.run(_admin_exists):
                return False
            raise
        log.info("created the initial account %r (uuid %s) with the default password; change "
                 "it with UpdateAccount", ADMIN_NAME, ADMIN_UUID)
        return True

    # ----------------------------------------------------------------- authentication

    def authenticate(self, session_uuid: str | None) -> Caller | Awaitable[Caller]:
        """The caller behind a session: at once from the cache, else an awaitable.

        Raises (or the awaitable raises) ZError ``ID.1001`` for a missing, unknown or
        expired session.
        """
        if not session_uuid:
            raise _invalid_session(_MISSING_SESSION)
        entry = self._cache.get(session_uuid)
        if entry is None:
            return self._load(session_uuid)
        caller, expires = entry
        if expires > self.clock():
            return caller
        self._cache.pop(session_uuid, None)
        raise _expired(session_uuid, datetime.fromtimestamp(expires, UTC))

    async def check(self, session_uuid: str | None) -> Caller:
        """As :meth:`authenticate`, always awaited."""
        found = self.authenticate(session_uuid)
        return found if isinstance(found, Caller) else await found

    async def _load(self, session_uuid: str) -> Caller:
        if not is_uuid(session_uuid):
            raise _unknown(session_uuid)
        generation = self._generation
        live = await self.node.db.read(_find_session, session_uuid)
        if live is None:
            raise _unknown(session_uuid)
        if live.expired <= self.now():
            raise _expired(session_uuid, live.expired)
        caller = Caller(account_uuid=live.account_uuid, account_name=live.name,
                        is_admin=live.type == SYSTEM_ADMIN, session_uuid=session_uuid,
                        user_uuid=live.user_uuid)
        if generation == self._generation:
            self._remember(session_uuid, caller, live.expired)
        return caller

    def _remember(self, session_uuid: str, caller: Caller, expires: datetime) -> None:
        cache = self._cache
        if len(cache) >= MAX_CACHED and session_uuid not in cache:
            now = self.clock()
            for stale in [k for k, (_, e) in cache.items() if e <= now]:
                del cache[stale]
            while len(cache) >= MAX_CACHED:
                del cache[next(iter(cache))]
        cache[session_uuid] = (caller, expires.timestamp())

    def _on_changed(self, event: SessionChanged) -> None:
        self._generation += 1
        self._forget(event.sessionUuids, event.accountUuid)

    def _forget(self, session_uuids: Iterable[str], account_uuid: str | None) -> None:
        cache = self._cache
        for session_uuid in session_uuids:
            cache.pop(session_uuid, None)
        if account_uuid is not None:
            for key in [k for k, (c, _) in cache.items() if c.account_uuid == account_uuid]:
                del cache[key]

    async def invalidate(self, session_uuids: Iterable[str] = (),
                         account_uuid: str | None = None) -> None:
        """Make every node forget these sessions (and every session of ``account_uuid``)."""
        uuids = list(session_uuids)
        if not uuids and account_uuid is None:
            return
        self._generation += 1
        self._forget(uuids, account_uuid)
        await self.node.bus.publish(SessionChanged(sessionUuids=tuple(uuids),
                                                    accountUuid=account_uuid))

    # ----------------------------------------------------------------- sessions

    async def log_in(self, account_name: str, password: str) -> SessionVO:
        """A new session for the account, or ZError ``ID.1000`` (the same for both mistakes)."""
        db = self.node.db
        found = await db.run(_account_by_name, account_name)
        if found is None:
            await verify_password(self._dummy_hash, password)
            raise wrong_credentials()
        if not await verify_password(found.password, password):
            raise wrong_credentials()
        rehashed = await hash_password(password) if needs_rehash(found.password) else None
        config = self.node.global_config
        timeout = int(config.get(CATEGORY, SESSION_TIMEOUT))
        limit = int(config.get(CATEGORY, MAX_CONCURRENT))
        now = self.now()
        expires = now + timedelta(seconds=timeout)
        try:
            row, dropped = await db.run(_create_session, found.uuid, now, expires, limit,
                                        rehashed)
        except IntegrityError:  # the account was deleted meanwhile
            raise wrong_credentials() from None
        # Not cached yet: the first call with it reads it, as a call on any other node does.
        if dropped:
            await self.invalidate(dropped)
        return row

    async def log_out(self, session_uuid: str | None) -> bool:
        """End a session; False when there was none (not an error)."""
        if not session_uuid:
            return False
        deleted = await self.node.db.run(_delete_session, session_uuid)
        self._cache.pop(session_uuid, None)
        if deleted:
            await self.invalidate([session_uuid])
        return bool(deleted)

    async def is_valid(self, session_uuid: str | None) -> bool:
        try:
            await self.check(session_uuid)
        except ZError as exc:
            if exc.code == SESSION_INVALID:
                return False
            raise
        return True

    async def renew(self, caller: Caller, session_uuid: str, duration: int | None) -> SessionVO:
        """Move a live session's expiry to ``duration`` seconds from now (default: the timeout).

        Only an administrator may renew a session of another account (``ID.1002``); an
        unknown or expired session is ``ID.1001``.
        """
        db = self.node.db
        row = await db.run(_get_session, session_uuid)
        if row is None:
            raise _unknown(session_uuid)
        if not caller.is_admin and row.accountUuid != caller.account_uuid:
            raise ZError(PERMISSION_DENIED, "permission denied",
                         f"session {session_uuid} belongs to another account; account "
                         f"{caller.account_name or caller.account_uuid} may renew only its own")
        now = self.now()
        if row.expiredDate <= now:
            raise _expired(session_uuid, row.expiredDate)
        if duration is None:
            duration = int(self.node.global_config.get(CATEGORY, SESSION_TIMEOUT))
        renewed = await db.run(_extend, session_uuid, now + timedelta(seconds=duration))
        if renewed is None:
            raise _unknown(session_uuid)
        await self.invalidate([session_uuid])
        return renewed

    async def forget_account(self, account_uuid: str) -> None:
        """Make every node forget the cached sessions of an account (renamed or deleted)."""
        await self.invalidate(account_uuid=account_uuid)

    # ----------------------------------------------------------------- reaping

    async def reap(self) -> int:
        """Delete expired sessions from the database and the cache; how many rows went."""
        deleted = await self.node.db.run(_delete_expired, self.now())
        now = self.clock()
        for key in [k for k, (_, e) in self._cache.items() if e <= now]:
            self._cache.pop(key, None)
        return deleted

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            try:
                deleted = await self.reap()
                if deleted:
                    log.debug("deleted %d expired sessions", deleted)
            except Exception:
                log.exception("deleting expired sessions failed; retrying in %g s",
                              REAP_INTERVAL)
