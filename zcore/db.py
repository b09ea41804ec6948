"""The database: SQLAlchemy 2 models, Alembic migrations, and short transactions off the loop.

A node builds one :class:`Database` with :func:`create_database` and passes it on; nothing
here is created at import time, so a test can run two nodes in one process.

Database work is short synchronous transactions run in a small thread pool owned by the
:class:`Database` (``await db.run(fn, ...)``): synchronous SQLAlchemy in a worker thread
serves far more short reads per second than an async driver, and the event loop never waits
on the database.

Models subclass :class:`Base`. A resource's model also mixes in :class:`ResourceMixin`
(``uuid``, ``name``, ``description``, ``createDate``, ``lastOpDate``) and every resource has a
row in the common table :class:`ResourceVO`, written in the same transaction by
:func:`add_resource`. Column names are ZStack's inventory field names, camelCase.

Each plugin owns its tables' Alembic revisions, on its own branch that ``depends_on`` the
core's base revision ``zcore_0001`` (see :meth:`Database.upgrade`).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import queue
import random
import re
import sqlite3
import threading
import time
import uuid as _uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Concatenate, ParamSpec, Self, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    CursorResult,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeEngine

from zcore.errors import INVALID_ARGUMENT, StartupError, ZError
from zcore.records import Migrations

__all__ = [
    "CORE_BRANCH",
    "CORE_REVISION",
    "NAMING_CONVENTION",
    "Base",
    "Database",
    "GlobalConfigVO",
    "ResourceMixin",
    "ResourceVO",
    "SystemTagVO",
    "TimestampMixin",
    "UTCDateTime",
    "UserTagVO",
    "add_resource",
    "add_resource_row",
    "check_new_uuid",
    "create_database",
    "delete_resource",
    "insert_checked",
    "insert_unless_taken",
    "is_uuid",
    "new_uuid",
    "sent_together",
    "table_of",
    "utcnow",
    "write_checked",
    "write_held",
]

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")

#: The Alembic branch label and base revision of the core's own tables. A plugin's first
#: revision declares ``depends_on = "zcore_0001"``.
CORE_BRANCH = "zcore"
CORE_REVISION = "zcore_0001"

_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_UUID = re.compile(r"^[0-9a-f]{32}$")
#: Threads that run reads side by side on a server (:meth:`Database.read`).
_SERVER_READERS = 2
_POOL_OVERFLOW = 2  # room for run_sync(), upgrade() and the ctl tool next to the workers
_SQLITE_BUSY_MS = 30_000
#: How many times a transaction chosen as a deadlock's victim is run (MySQL, PostgreSQL).
DEADLOCK_ATTEMPTS = 4
#: MySQL's and MariaDB's "deadlock found", PostgreSQL's "deadlock detected".
_MYSQL_DEADLOCK = 1213
_PG_DEADLOCK = "40P01"


def _is_deadlock(exc: DBAPIError) -> bool:
    original = exc.orig
    args = getattr(original, "args", ())
    return bool(args and args[0] == _MYSQL_DEADLOCK) or \
        getattr(original, "sqlstate", None) == _PG_DEADLOCK or \
        getattr(original, "pgcode", None) == _PG_DEADLOCK


#: At most this many queued transactions commit as one (:class:`_GroupCommit`).
GROUP_COMMIT_MAX = 64
#: At most this many queued reads share one read transaction (:class:`_Reader`).
READ_BATCH_MAX = 64
_MIGRATION_LOCK_WAIT = 600  # seconds a node waits for another one's migrations


# --------------------------------------------------------------------------- helpers


def new_uuid() -> str:
    """A new resource uuid: 32 lower-case hex digits (a uuid4 without dashes)."""
    return _uuid.uuid4().hex


def is_uuid(value: object) -> bool:
    """Whether ``value`` is a resource uuid: exactly 32 lower-case hex digits."""
    return isinstance(value, str) and _UUID.match(value) is not None


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, with microseconds."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC with microseconds on every backend, read back aware (UTC).

    Stored without a time zone (``TIMESTAMP`` on PostgreSQL, ``DATETIME(6)`` on MariaDB and
    MySQL, ISO text on SQLite). Aware values are converted to UTC before they are stored;
    naive values are taken to be UTC already. Use it in models and in migrations::

        sa.Column("lastSeen", UTCDateTime(), nullable=True)
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None:
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value


# --------------------------------------------------------------------------- models

# Every constraint and index gets a predictable name, the same on all three backends, so a
# later migration can drop or alter it by name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """The declarative base of every model, the core's and the plugins'.

    Table and column names follow ZStack (``VmInstanceVO``, ``lastOpDate``). Constraints and
    indexes are named by :data:`NAMING_CONVENTION` (``ix_<table>_<columns>``,
    ``uq_<table>_<columns>``, ``fk_<table>_<columns>_<referred table>``, ``pk_<table>``),
    which the migrations use as well. ``Mapped[datetime]`` maps to :class:`UTCDateTime`.
    String columns need a length (MariaDB has no unbounded ``VARCHAR``); mind MariaDB's
    3072-byte index limit (768 characters of utf8mb4) when indexing them.

    A plugin's tables are created by the plugin's own Alembic revisions, never by
    ``metadata.create_all``. Note that SQLAlchemy orders the INSERTs of one flush by
    ``relationship()``, not by foreign keys alone: to add a row and another that refers to it
    in one transaction, declare the relationship or ``session.flush()`` in between.
    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime}


class TimestampMixin:
    """``createDate`` and ``lastOpDate``, UTC with microseconds; ``lastOpDate`` moves on UPDATE."""

    createDate: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lastOpDate: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ResourceMixin(TimestampMixin):
    """The columns every resource has, as in ZStack's inventories.

    ``uuid`` (32 lower-case hex digits, primary key, and a foreign key to
    :class:`ResourceVO` with ``ON DELETE CASCADE``), ``name``, ``description``,
    ``createDate`` and ``lastOpDate``. Create resources with :func:`add_resource` (which
    writes the :class:`ResourceVO` row in the same transaction) and delete them with
    :func:`delete_resource`. A model::

        class ZoneVO(ResourceMixin, Base):
            __tablename__ = "ZoneVO"
            state: Mapped[str] = mapped_column(String(64))

    Its migration creates the same columns, with
    ``sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE")``.
    """

    uuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("ResourceVO.uuid", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(2048), default=None)


class ResourceVO(Base):
    """The common resource table: one row per resource of any type, any plugin.

    ``resourceType`` is the registered resource type name (``VmInstanceVO``);
    ``ownerAccountUuid`` the account that owns it (``None`` for resources of the system).
    Queries join it to filter by owner and to find a resource's type from its uuid.
    """

    __tablename__ = "ResourceVO"

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True)
    resourceName: Mapped[str | None] = mapped_column(String(255), default=None)
    resourceType: Mapped[str] = mapped_column(String(255), index=True)
    ownerAccountUuid: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    createDate: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GlobalConfigVO(Base):
    """A stored global configuration value, as ZStack's ``GlobalConfigInventory``."""

    __tablename__ = "GlobalConfigVO"
    __table_args__ = (UniqueConstraint("category", "name"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    category: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[str | None] = mapped_column(Text(), default=None)
    defaultValue: Mapped[str | None] = mapped_column(Text(), default=None)
    description: Mapped[str | None] = mapped_column(Text(), default=None)


class _TagMixin(TimestampMixin):
    # ``tag`` is deliberately not indexed: 2048 utf8mb4 characters exceed MariaDB's index
    # limit, and tags are looked up by resource first.
    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    resourceUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("ResourceVO.uuid", ondelete="CASCADE"), index=True
    )
    resourceType: Mapped[str] = mapped_column(String(255), index=True)
    tag: Mapped[str] = mapped_column(String(2048))


class SystemTagVO(_TagMixin, Base):
    """A system tag, as ZStack's ``SystemTagInventory``; it goes when its resource goes.

    ``inherent`` tags are set by the system and cannot be deleted by a user.
    """

    __tablename__ = "SystemTagVO"

    type: Mapped[str] = mapped_column(String(64), default="System")
    inherent: Mapped[bool] = mapped_column(Boolean(), default=False)


class UserTagVO(_TagMixin, Base):
    """A user tag, as ZStack's ``UserTagInventory``; it goes when its resource goes."""

    __tablename__ = "UserTagVO"

    type: Mapped[str] = mapped_column(String(64), default="User")
    tagPatternUuid: Mapped[str | None] = mapped_column(String(32), default=None)


# --------------------------------------------------------------------------- resources


def add_resource(
    session: Session,
    obj: R,
    resource_type: str,
    *,
    owner_account_uuid: str | None = None,
) -> R:
    """Add ``obj`` (a :class:`ResourceMixin` model) and its :class:`ResourceVO` row.

    Call it inside a transaction (``db.run``); both rows commit or roll back together.
    ``resource_type`` is the registered resource type name (``"ZoneVO"``). A uuid already
    set on ``obj`` is the caller's choice: it must be 32 lower-case hex digits and not in use
    by any resource, else :class:`~zcore.errors.ZError` ``SYS.1007``. Without one, a new
    uuid is generated. ``createDate`` and ``lastOpDate`` are set to now if not set. Returns
    ``obj``::

        def create_zone(session: Session, name: str) -> ZoneVO:
            return add_resource(session, ZoneVO(name=name, state="Enabled"), "ZoneVO")

        zone = await db.run(create_zone, "zone-1")
    """
    chosen: Any = getattr(obj, "uuid", None)
    if chosen is None:
        chosen = new_uuid()
        obj.uuid = chosen  # type: ignore[attr-defined]
    else:
        check_new_uuid(session, chosen, resource_type)
    now = utcnow()
    if getattr(obj, "createDate", None) is None:
        obj.createDate = now  # type: ignore[attr-defined]
    if getattr(obj, "lastOpDate", None) is None:
        obj.lastOpDate = obj.createDate  # type: ignore[attr-defined]
    # What the caller added before is written first, as it would have been without this
    # row; then the ResourceVO row, at once (the unit of work orders INSERTs by
    # relationship(), not by foreign key), so that the model's foreign key to it holds.
    if session.new or session.dirty or session.deleted:
        session.flush()
    add_resource_row(session, chosen, resource_type, name=getattr(obj, "name", None),
                     owner_account_uuid=owner_account_uuid,
                     create_date=obj.createDate)  # type: ignore[attr-defined]
    session.add(obj)
    return obj


_INSERT_RESOURCE = insert(cast(Table, ResourceVO.__table__))


def add_resource_row(session: Session, uuid: str, resource_type: str, *, name: str | None,
                     owner_account_uuid: str | None, create_date: datetime) -> None:
    """Write only the :class:`ResourceVO` row of a resource whose own row the caller
    inserts with Core (``table_of``), as :func:`add_resource` does with the ORM. ``uuid``
    is the caller's: a new one, or checked with :func:`check_new_uuid`."""
    session.connection().execute(_INSERT_RESOURCE, {
        "uuid": uuid, "resourceName": name, "resourceType": resource_type,
        "ownerAccountUuid": owner_account_uuid, "createDate": create_date})


_RESOURCE_TYPE_OF = select(ResourceVO.resourceType).where(ResourceVO.uuid == bindparam("uuid"))


def check_new_uuid(session: Session, chosen: Any, resource_type: str) -> None:
    """Refuse (``SYS.1007``) a uuid chosen for a new ``resource_type`` that is not 32
    lower-case hex digits or that a resource already has."""
    if not is_uuid(chosen):
        raise ZError(
            INVALID_ARGUMENT,
            "invalid resource uuid",
            f"{resource_type} uuid {chosen!r} is not 32 lower-case hex digits "
            "(a uuid4 without dashes); omit it to have one generated",
        )
    # A select (not session.get) so that rows still pending in this session count too.
    existing = session.scalar(_RESOURCE_TYPE_OF, {"uuid": chosen})
    if existing is not None:
        raise ZError(
            INVALID_ARGUMENT,
            "resource uuid already exists",
            f"uuid {chosen} chosen for a new {resource_type} is already used by a "
            f"{existing}; choose another uuid or omit it",
        )


def table_of(model: type[Any]) -> Table:
    """The Core :class:`~sqlalchemy.Table` of a mapped model.

    For hot paths, Core statements built once at import time and run with their values,
    ``session.connection().execute(INSERT_NIC, {"uuid": ..., ...})`` with ``INSERT_NIC =
    insert(table_of(VmNicVO))``, skip the unit of work, entity loading and the building of
    the statement, which together cost several times the statement itself. Column defaults
    (``default=``, ``onupdate=``) still apply; no ORM event does.
    """
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


_INSERT_OR_NOTHING: dict[tuple[str, Table], Any] = {}


#: MySQL's and MariaDB's error numbers for a unique key already taken (ER_DUP_ENTRY,
#: ER_DUP_ENTRY_WITH_KEY_NAME).
_MYSQL_DUPLICATE_KEY = frozenset({1062, 1586})


def insert_unless_taken(session: Session, table: Table, values: dict[str, Any]) -> bool:
    """Insert one row into ``table`` unless a unique key of it is already taken; whether
    the row went in. For a value chosen at random that must be unique (a MAC, an IP),
    which the caller then picks again. Any other error (a missing parent) raises.

    On PostgreSQL and SQLite (3.35 or later) the ``INSERT`` says ``ON CONFLICT DO NOTHING
    RETURNING``: one statement. On MariaDB and MySQL, whose ``INSERT IGNORE`` would also let
    other errors pass, it is a plain ``INSERT``: InnoDB undoes only the statement that
    found its key taken, and the transaction goes on. Elsewhere the ``INSERT`` runs in a
    savepoint.
    """
    connection = session.connection()
    dialect = connection.dialect.name
    stmt = _INSERT_OR_NOTHING.get((dialect, table))
    if dialect in ("mysql", "mariadb"):
        if stmt is None:  # its error says whether the key was taken: never held back
            stmt = _INSERT_OR_NOTHING[(dialect, table)] = insert(table).execution_options(
                **{_OUTCOME_READ: True})
        try:
            connection.execute(stmt, values)
        except IntegrityError as exc:
            if _mysql_errno(exc) in _MYSQL_DUPLICATE_KEY:
                return False
            raise
        return True
    if dialect not in ("postgresql", "sqlite") or not connection.dialect.insert_returning:
        try:
            with session.begin_nested():
                connection.execute(insert(table), values)
        except IntegrityError:
            return False
        return True
    if stmt is None:
        module = postgresql_dialect if dialect == "postgresql" else sqlite_dialect
        # RETURNING, not the row count, which psycopg does not give for an INSERT.
        stmt = _INSERT_OR_NOTHING[(dialect, table)] = (
            module.insert(table).on_conflict_do_nothing()
            .returning(*table.primary_key.columns))
    return connection.execute(stmt, values).first() is not None


_INSERT_CHECKED: dict[tuple[str, Table], Any] = {}


def insert_checked(session: Session, table: Table, values: dict[str, Any],
                   error: Callable[[], Exception]) -> None:
    """Insert one row into ``table``; when a unique key of it is already taken, nothing is
    inserted and ``error()`` raises: :func:`insert_unless_taken` for a caller that need not
    know at once, whose round trip is then saved.

    On PostgreSQL the ``INSERT ... ON CONFLICT DO NOTHING`` is a :func:`write_checked`
    statement: inside a :func:`sent_together` block it is held back with the block's other
    writes and its row count is checked once it was sent, so ``error()`` may raise when the
    block ends, or (in the single writer's group) with a later statement of another
    function, which makes the group run again with each function on its own. A caller that
    draws another value and tries again catches ``error()``'s exception around the whole
    block. Elsewhere the row goes in at once and ``error()`` raises there.
    """
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        if not insert_unless_taken(session, table, values):
            raise error()
        return
    stmt = _INSERT_CHECKED.get((dialect, table))
    if stmt is None:
        module = postgresql_dialect if dialect == "postgresql" else sqlite_dialect
        stmt = _INSERT_CHECKED[(dialect, table)] = module.insert(table).on_conflict_do_nothing()
    write_checked(session, stmt, values, error)


class _Holding(threading.local):
    """What this thread holds back on one DBAPI connection (a transaction function runs in
    one thread, its statements too): the writes of a :func:`sent_together` block, and in
    the single writer's groups (:func:`_carried_on`) those of blocks that ended."""

    raw: Any = None
    #: Rendered statements not sent yet, in order; ``None``: nothing is held here.
    held: list[str] | None = None
    #: Inside a :func:`sent_together` block: its writes are held.
    open = False
    #: A group's: a block's writes stay held when it ends (:func:`_carried_on`).
    carrying = False
    #: Some of ``held`` come from a block that ended.
    carried = False
    #: Writes of an ended block failed when they went with a later statement, whose
    #: caller may have taken the error for its own: the group must not commit.
    spoiled = False
    client_cursor: Any = None


_together = _Holding()
#: The drivers whose connection :func:`sent_together` sends several statements at once
#: through (``_send_later`` renders them): PostgreSQL's simple query protocol runs them
#: all, and MySQL's with ``CLIENT_MULTI_STATEMENTS``.
_MULTI_STATEMENT_DRIVERS = frozenset({"psycopg", "mysqldb", "pymysql"})
_CLIENT_MULTI_STATEMENTS = 1 << 16
#: The psycopg connections (by ``id``) whose transaction SQLAlchemy began and whose
#: ``BEGIN`` is still to be sent (:func:`_begin_with_first_statement`).
_BEGIN_PENDING: set[int] = set()
#: Execution option of a write whose outcome (row count, error) its caller reads at once:
#: a :func:`sent_together` block does not hold it back.
_OUTCOME_READ = "zcore_outcome_read"
#: Execution option of a held write that must change a row (:func:`write_checked`): what
#: raises when it changed none.
_ROWS_CHECK = "zcore_rows_check"
#: Execution option of a ``SELECT`` whose rows nobody reads (one that locks them): held
#: back by a :func:`sent_together` block as if it were a write.
_ROWS_UNREAD = "zcore_rows_unread"


@contextmanager
def sent_together(session: Session) -> Iterator[Connection]:
    """The session's connection, for writes whose outcome nobody reads, sent together.

    Inside the block go Core ``INSERT``, ``UPDATE`` and ``DELETE`` statements whose rows
    and row count nobody looks at (the block gives none): several writes of one
    transaction function, such as a resource's ``ResourceVO`` row and its own. On
    PostgreSQL (psycopg) and MySQL or MariaDB (mysqlclient, pymysql) they are held back,
    with their values bound by the driver as it binds them for any statement it sends as
    text, and go to the server as one multi-statement query with the next statement that
    returns rows (a ``SELECT``, an ``INSERT ... RETURNING``), or when the block ends: one
    round trip, which costs more than most such statements. In the single writer's groups
    they go later still: with the group's next statement, or its ``COMMIT``
    (:func:`_carried_on`). The server runs them in order and stops at the first that
    fails, which raises there as SQLAlchemy's error (an
    :class:`~sqlalchemy.exc.IntegrityError` for a missing parent); the transaction is then
    lost, as after any failed statement. A write whose target may be gone goes through
    :func:`write_checked`. SQLite runs each statement at once, as outside the block. No ORM
    work inside (a flush reads row counts)::

        with sent_together(session) as connection:
            connection.execute(INSERT_RESOURCE, resource_values)
            connection.execute(INSERT_VOLUME, volume_values)
    """
    connection = session.connection()
    if connection.dialect.driver not in _MULTI_STATEMENT_DRIVERS or _together.open:
        yield connection
        return
    raw: Any = connection.connection.dbapi_connection
    carrying = _together.carrying
    if carrying and _together.raw not in (None, raw):  # not the group's connection
        yield connection
        return
    if _together.raw is None or not carrying:
        _together.raw, _together.held = raw, []
    held = _together.held
    assert held is not None
    _together.open = True
    try:
        yield connection
    finally:
        _together.open = False
        if carrying:  # they go with the group's next statement, or with its COMMIT
            _together.carried = bool(held)
        else:
            # Sent even when the block raised: a caller that handles the error and goes
            # on finds what the block wrote before it, as outside the block.
            _together.raw = _together.held = None
            if held:
                _send_held(connection, held)


def write_checked(session: Session, statement: Executable, values: dict[str, Any],
                  error: Callable[[], Exception]) -> None:
    """Run a Core ``UPDATE`` or ``DELETE`` that must change at least one row (its target
    may have gone meanwhile): else ``error()`` raises. (Or an ``INSERT`` that may insert
    nothing: :func:`insert_checked`.)

    Inside a :func:`sent_together` block on a server it is held back like the block's
    other writes, and its row count is checked once it was sent: when the block ends, or
    with the statement that carries it, and before any ``COMMIT``. In the single
    writer's group that may be another function's statement: the group then runs again,
    each function on its own, and the error is raised in its own function. Elsewhere it
    runs at once, and ``error()`` raises there.
    """
    connection = session.connection()
    if _together.open and connection.dialect.driver in _MULTI_STATEMENT_DRIVERS and \
            _together.raw is connection.connection.dbapi_connection:
        connection.execute(statement, values, execution_options={_ROWS_CHECK: error})
        return
    if cast(CursorResult[Any], connection.execute(statement, values)).rowcount == 0:
        raise error()


class _NoRowChanged(Exception):
    """A held write of :func:`write_held` changed no row."""


def write_held(session: Session, statement: Executable, values: dict[str, Any]) -> bool:
    """:func:`write_checked` in a :func:`sent_together` block of its own: whether the
    write changed a row.

    On a server it is held back. Alone, it goes when the block ends, and a miss is
    ``False`` there; in the single writer's group it goes with the group's next statement,
    and a miss makes the group run again, each function on its own, where this says
    ``False``. For a write that is not expected to miss (a reservation of a row that a
    locking read took): a miss costs the group a second run.
    """
    try:
        with sent_together(session):
            write_checked(session, statement, values, _NoRowChanged)
    except _NoRowChanged:
        return False
    return True


@contextmanager
def _carried_on() -> Iterator[_Holding]:
    """For the single writer's group (:class:`_GroupCommit`): the writes a
    :func:`sent_together` block holds back stay held when it ends, to go with the next
    statement that is sent, whichever function of the group sends it, or with the
    ``COMMIT`` (:func:`_commit_with_held`). A group of short functions that each end with
    such writes then costs one round trip, not one each.

    A carried write that fails raises with a later statement, maybe in another function,
    which may take the error for its own and handle it: ``spoiled`` then says so, and the
    group must not commit (it runs again with each function on its own). The first block
    names the connection; enter before the transaction begins and leave after it ended:
    what is still held then is dropped.
    """
    _together.carrying, _together.carried, _together.spoiled = True, False, False
    try:
        yield _together
    finally:
        _together.raw = _together.held = None
        _together.carrying = _together.carried = _together.spoiled = False


def _held_for(cursor: Any) -> list[str] | None:
    held = _together.held
    return held if held is not None and cursor.connection is _together.raw else None


def _send_later(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    """``do_execute`` of a server's engine. Inside :func:`sent_together`, a write is held
    back, rendered with its values (True: SQLAlchemy does not execute it), and any other
    statement (one that returns rows, or whose outcome the caller reads) goes in one query
    after what is held, the cursor left on its own result. On PostgreSQL the first
    statement of a transaction carries its ``BEGIN`` (:func:`_begin_with_first_statement`).
    """
    held = _held_for(cursor)
    before = held if held is not None else []
    if _take_begin(cursor):  # a transaction's first statement: nothing is held yet
        before.append("BEGIN")
    options = context.execution_options
    holdable = held is not None and _together.open and (
        (context.isinsert or context.isupdate or context.isdelete) and
        not context.compiled.effective_returning and not options.get(_OUTCOME_READ) or
        options.get(_ROWS_UNREAD, False))
    if not holdable and not before:
        return False  # nothing before it: as usual
    if context.dialect.driver == "psycopg":
        rendered = _client_cursor(cursor.connection).mogrify(statement, parameters)
    else:  # mysqlclient, pymysql: they bind on the client anyway
        rendered = cursor.mogrify(statement, parameters)
    if holdable:
        check = options.get(_ROWS_CHECK)
        before.append(_Checked(rendered, check) if check else rendered)  # the held list
        return True
    statements = [*before, rendered]
    carried = held is not None and _together.carried
    before.clear()
    _together.carried = False
    at = [0]
    try:
        cursor.execute(";\n".join(statements))
        _read_results(cursor, statements, at)  # the cursor stays on this one's
    except Exception:
        # Whose error: MySQL tells by the result it came with; PostgreSQL does not.
        if carried and at[0] < len(statements) - 1:
            _together.spoiled = True
        raise
    return True


class _Checked(str):
    """A held write that must change a row (:func:`write_checked`): its text, and the
    error raised when it changed none."""

    error: Callable[[], Exception]

    def __new__(cls, text: str, error: Callable[[], Exception]) -> Self:
        checked = super().__new__(cls, text)
        checked.error = error
        return checked


def _read_results(cursor: Any, statements: Sequence[str], at: list[int]) -> None:
    """After ``cursor.execute`` of ``statements`` as one query: the result of each in turn
    (``at[0]``: the one being read; MySQL raises a failed statement's error when its
    result is read), each :class:`_Checked` one's row count checked; the cursor is left
    on the last one's result."""
    for i, statement in enumerate(statements):
        at[0] = i
        if i:
            cursor.nextset()
        if isinstance(statement, _Checked) and cursor.rowcount == 0:
            raise statement.error()


def _send_held_first(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    """``do_executemany``: the transaction's ``BEGIN`` and what a :func:`sent_together`
    block holds back go first, so that the statements run in the order given."""
    _send_what_goes_first(cursor, context)
    return False


def _send_held_first_no_params(cursor: Any, statement: str, context: Any) -> bool:
    """``do_execute_no_params``: as :func:`_send_held_first`."""
    _send_what_goes_first(cursor, context)
    return False


def _send_what_goes_first(cursor: Any, context: Any) -> None:
    held = _held_for(cursor)
    if held:  # its BEGIN, if it was the transaction's first, is in it
        carried, _together.carried = _together.carried, False
        try:
            _send_held(context.root_connection, held)
        except Exception:
            _together.spoiled = _together.spoiled or carried
            raise
        finally:
            held.clear()
    elif _take_begin(cursor):
        cursor.execute("BEGIN")


def _commit_with_held(do_commit: Callable[[Any], None], driver: str) -> Callable[[Any], None]:
    """The writer engine's ``do_commit``: what is still held (:func:`_carried_on`) goes to
    the server in one query with the ``COMMIT``, which a failed write keeps from running
    (its error raises as the commit's); else the driver's own commit."""
    def commit(connection: Any) -> None:  # the pool's proxy of the DBAPI connection
        raw = connection.dbapi_connection
        held = _together.held if raw is _together.raw else None
        if not held:
            do_commit(connection)
            return
        # A write whose row count is checked goes before the COMMIT, not with it.
        checked = any(isinstance(statement, _Checked) for statement in held)
        statements = list(held) if checked else [*held, "COMMIT"]
        held.clear()
        _together.carried = False
        _run_all(raw, driver, statements)  # its errors SQLAlchemy wraps as the commit's
        if checked:
            do_commit(connection)
    return commit


def _client_cursor(raw: Any) -> Any:
    """A psycopg cursor that binds values on the client, on the DBAPI connection ``raw``."""
    cursor = _together.client_cursor
    if cursor is None or cursor.connection is not raw:
        import psycopg  # only with PostgreSQL

        cursor = _together.client_cursor = psycopg.ClientCursor(raw)
    return cursor


def _send_held(connection: Connection, held: list[str]) -> None:
    """One query of the statements held back (a transaction's ``BEGIN`` among them when
    the first statement was held); every result is read (MySQL sends one each), and the
    first error raises as SQLAlchemy's."""
    raw: Any = connection.connection.dbapi_connection
    dialect = connection.dialect
    try:
        _run_all(raw, dialect.driver, held)
    except dialect.loaded_dbapi.Error as exc:
        invalidated = dialect.is_disconnect(exc, raw, None)
        query = ";\n".join(held)
        error = DBAPIError.instance(query, None, exc, dialect.loaded_dbapi.Error,
                                    connection_invalidated=invalidated, dialect=dialect)
        if invalidated:
            connection.invalidate(error)
        raise error from exc


def _run_all(raw: Any, driver: str, statements: list[str]) -> None:
    """``statements`` as one query on the DBAPI connection ``raw``, every result read
    (MySQL sends one each) and each checked write's row count checked."""
    cursor = _client_cursor(raw) if driver == "psycopg" else raw.cursor()
    try:
        cursor.execute(";\n".join(statements))
        _read_results(cursor, statements, [0])
        while cursor.nextset():
            pass
    finally:
        if driver != "psycopg":
            cursor.close()


def _send_together_on(engine: Engine) -> None:
    """Let :func:`sent_together` send several statements at once on ``engine``; on
    PostgreSQL, :func:`_begin_with_first_statement` too."""
    if engine.dialect.driver not in _MULTI_STATEMENT_DRIVERS:
        return
    event.listen(engine, "do_execute", _send_later)
    event.listen(engine, "do_executemany", _send_held_first)
    event.listen(engine, "do_execute_no_params", _send_held_first_no_params)
    # The dialect is this engine's own: no other engine commits through it.
    engine.dialect.do_commit = _commit_with_held(  # type: ignore[method-assign,assignment]
        engine.dialect.do_commit, engine.dialect.driver)
    if engine.dialect.driver == "psycopg":
        _begin_with_first_statement(engine)
    else:
        @event.listens_for(engine, "do_connect")
        def _multi_statements(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
            cparams["client_flag"] = cparams.get("client_flag", 0) | _CLIENT_MULTI_STATEMENTS


def _begin_with_first_statement(engine: Engine) -> None:
    """On psycopg connections of ``engine``, a transaction's ``BEGIN`` goes to the server
    in one query with its first statement, not in a round trip of its own.

    psycopg, outside autocommit mode, sends ``BEGIN`` and waits for its answer before the
    first statement of every transaction: for the single writer, whose groups are short,
    more than one round trip in ten. The connections are put in autocommit mode, and
    SQLAlchemy's ``begin`` (still a transaction to it) marks the connection: the next
    statement is sent after ``BEGIN`` (:func:`_send_later`; a batch of values or a statement
    without any gets its own ``BEGIN`` first). ``commit`` and ``rollback`` are psycopg's,
    which end the open transaction, or do nothing when none was begun.
    """
    @event.listens_for(engine, "connect")
    def _autocommit(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.autocommit = True

    @event.listens_for(engine, "begin")
    def _begin_later(connection: Connection) -> None:
        _BEGIN_PENDING.add(id(connection.connection.dbapi_connection))

    def _ended(connection: Connection) -> None:
        try:
            _BEGIN_PENDING.discard(id(connection.connection.dbapi_connection))
        except Exception:  # noqa: BLE001, S110 - invalidated: its BEGIN was never sent
            pass

    event.listen(engine, "commit", _ended)
    event.listen(engine, "rollback", _ended)


def _take_begin(cursor: Any) -> bool:
    """Whether the transaction on ``cursor``'s connection still has to be begun (the flag
    goes: the caller sends ``BEGIN``)."""
    if not _BEGIN_PENDING:
        return False
    key = id(cursor.connection)
    if key not in _BEGIN_PENDING:
        return False
    _BEGIN_PENDING.discard(key)
    return True


def _mysql_errno(exc: DBAPIError) -> int | None:
    """The server's error number of a MySQL driver's error (pymysql, mysqlclient)."""
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def lock_for_update(session: Session, model: Any, uuid: str) -> None:
    """On MySQL and MariaDB, lock row ``uuid`` of ``model`` until the transaction ends.

    Call it before a conditional ``UPDATE`` that reserves something (``... SET available =
    available - n WHERE available >= n``). Under ``READ COMMITTED`` InnoDB evaluates such an
    ``UPDATE`` of a row another transaction holds on a semi-consistent read, and may then
    skip the row (0 rows) although it still qualifies once that transaction commits;
    ``SELECT ... FOR UPDATE`` waits for the row instead. PostgreSQL re-checks the row after
    the wait and SQLite has one writer, so there it does nothing.
    """
    if session.get_bind().dialect.name in ("mysql", "mariadb"):
        # Its row is not read: in the writer's group it is held back like a write, and
        # goes to the server with the UPDATE after it.
        with sent_together(session) as connection:
            connection.execute(select(model.__table__.c.uuid).where(
                model.__table__.c.uuid == uuid).with_for_update()
                .execution_options(**{_ROWS_UNREAD: True}))


def delete_resource(session: Session, obj: object) -> None:
    """Delete ``obj`` and its :class:`ResourceVO` row (and so its tags) in this transaction."""
    session.delete(obj)
    session.flush()
    session.execute(delete(ResourceVO).where(ResourceVO.uuid == obj.uuid))  # type: ignore[attr-defined]


def _sync_resource_names(session: Session, flush_context: Any, instances: Any) -> None:
    # Keep ResourceVO.resourceName equal to the resource's name when it is renamed.
    renamed = []
    for obj in session.dirty:
        if isinstance(obj, ResourceMixin):
            history = sa_inspect(obj).attrs.name.history
            if history.added:
                renamed.append((obj.uuid, history.added[0]))
    if renamed:
        conn = session.connection()
        for resource_uuid, name in renamed:
            conn.execute(
                update(ResourceVO).where(ResourceVO.uuid == resource_uuid).values(resourceName=name)
            )


# --------------------------------------------------------------------------- the database


class _Worker:
    """Threads (``lanes``) serving the calls put in one queue (:meth:`_serve`) until each
    takes a ``None``."""

    def __init__(self, name: str, lanes: int = 1) -> None:
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, daemon=True,
                             name=name if lanes == 1 else f"{name}_{lane}")
            for lane in range(lanes)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, call: _Call) -> None:
        self._queue.put(call)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _serve(self) -> None:
        raise NotImplementedError


class _GroupCommit(_Worker):
    """One worker thread, the node's one writer, that runs the transactions queued
    meanwhile as one.

    SQLite admits one writer at a time anyway. On a server, one writer whose transactions
    commit in groups does more than eight threads each committing its own: per transaction
    there is no thread hand-off, no BEGIN and COMMIT round trip and no fsync of its own, and
    transactions of this node never wait for each other's row locks.

    When transactions queue up, the worker takes every one waiting (up to
    :data:`GROUP_COMMIT_MAX`) and runs them in order inside a single transaction (``BEGIN
    IMMEDIATE`` on SQLite). First without savepoints, which cost more than most of the
    functions; if one of them raises, that whole transaction is rolled back and the group
    runs again with each function in its own savepoint, so that a function that raises
    rolls back its own writes only (the functions are plain transaction functions, which
    may run again, as after a deadlock). Each gets its outcome once the whole group is
    committed; if the commit fails, or the server picks the group as a deadlock's victim,
    each runs again alone (with the deadlock retries of :meth:`Database.run`). So no caller
    ever sees writes that are not durable, and each sees the writes of those before it,
    exactly as when they ran one after the other. Between two functions the session forgets
    every object, so what one returns is not changed by the next. A lone transaction runs
    as usual.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        super().__init__("zcore-db-write")

    def _serve(self) -> None:
        for group in _batches(self._queue, GROUP_COMMIT_MAX):
            outcomes: list[_Outcome] = []
            try:
                if len(group) == 1:
                    outcomes.append(group[0].run_alone(self._database))
                elif not self._run_all_or_none(group, outcomes):
                    self._run_each_in_savepoint(group, outcomes)
            except BaseException as exc:
                done = {id(o[0]) for o in outcomes}
                outcomes += [(c, None, exc) for c in group if id(c) not in done]
                raise
            finally:
                _wake(outcomes)

    def _run_all_or_none(self, group: list[_Call], outcomes: list[_Outcome]) -> bool:
        """The group in one transaction without savepoints, the usual case: whether it
        committed (``outcomes`` then has each one's result). When a function raises or the
        commit fails, everything is rolled back and nobody has an outcome yet: False."""
        results: list[Any] = []
        try:
            with _carried_on() as held, self._database._sessions.begin() as session:
                for call in group:
                    results.append(call.call(session))
                    session.flush()
                    session.expunge_all()
                if held.spoiled:
                    raise _Spoiled
        except Exception:  # noqa: BLE001 - the savepoint run gives each its own fate
            return False
        outcomes += [(call, result, None) for call, result in zip(group, results, strict=True)]
        return True

    def _run_each_in_savepoint(self, group: list[_Call], outcomes: list[_Outcome]) -> None:
        these: list[_Outcome] = []
        try:
            with self._database._sessions.begin() as session:
                for call in group:
                    try:
                        with session.begin_nested():
                            result = call.call(session)
                        these.append((call, result, None))
                    except DBAPIError as exc:
                        if _is_deadlock(exc):  # the whole group is the victim: each alone
                            raise
                        these.append((call, None, exc))
                    except Exception as exc:  # noqa: BLE001 - it is that caller's error
                        these.append((call, None, exc))
                    session.expunge_all()
        except Exception:  # noqa: BLE001 - see below
            # The group could not commit (or one function's error ended the transaction
            # itself): nothing of it holds, so each runs again alone and meets its own fate.
            outcomes += [call.run_alone(self._database) for call in group]
            return
        outcomes += these


class _Spoiled(Exception):
    """A write carried from one function of a group failed with another's statement."""


def _batches(source: queue.SimpleQueue[_Call | None], limit: int) -> Iterator[list[_Call]]:
    """What waits in ``source`` (at least one, at most ``limit``), batch after batch, until
    ``None`` arrives (the batch before it still comes)."""
    while True:
        first = source.get()
        if first is None:
            return
        batch, stop = [first], False
        while len(batch) < limit:
            try:
                more = source.get_nowait()
            except queue.Empty:
                break
            if more is None:
                stop = True
                break
            batch.append(more)
        yield batch
        if stop:
            return


class _Call:
    """A transaction function with its arguments, its caller's context, event loop and
    (asyncio) future, run by a worker thread (:class:`_GroupCommit`, :class:`_Reader`)."""

    __slots__ = ("args", "context", "fn", "future", "kwargs", "loop")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 context: contextvars.Context, loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.args, self.kwargs, self.context, self.loop = fn, args, kwargs, context, loop
        self.future: asyncio.Future[Any] = loop.create_future()

    def call(self, session: Session) -> Any:
        return self.context.run(self.fn, session, *self.args, **self.kwargs)

    def run_alone(self, database: Database) -> _Outcome:
        try:
            result = self.context.run(database._transaction, self.fn, self.args, self.kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            return self, None, exc
        return self, result, None


#: A call, and its result or error.
_Outcome = tuple[_Call, Any, BaseException | None]


class _Reader(_Worker):
    """Worker threads that run read-only transaction functions (:meth:`Database.read`) on
    connections of their own, next to the writer: one thread on a read-only SQLite
    connection, or several (``lanes``) on a server's connections in autocommit mode.

    In SQLite's WAL mode a reader neither waits for the writer nor holds it up, and sees
    every transaction committed before its own began. The functions queued meanwhile (up to
    :data:`READ_BATCH_MAX`) run one after the other in one read transaction, whose snapshot
    is taken after all of them were queued, so each sees every transaction committed before
    it was called; between two functions the session forgets every object. One function
    raising ends that transaction, and the next ones begin another. On a server in
    autocommit mode each statement sees what was committed before it began. The callers of
    a batch are woken by one call into their event loop rather than one each: waking a loop
    from another thread costs more than a short read.
    """

    def __init__(self, engine: Engine, lanes: int = 1) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False, autoflush=False)
        super().__init__("zcore-db-read", lanes)

    def _serve(self) -> None:
        for batch in _batches(self._queue, READ_BATCH_MAX):
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Call]) -> None:
        outcomes: list[_Outcome] = []
        try:
            session = self._sessions()
            for read in batch:
                if read.future.cancelled():  # its caller is gone; nobody wants it
                    continue
                try:
                    result = read.call(session)
                except Exception as exc:  # noqa: BLE001 - it is that caller's error
                    outcomes.append((read, None, exc))
                    session.close()  # rolls back; the next one begins anew
                    session = self._sessions()
                    continue
                outcomes.append((read, result, None))
                session.expunge_all()
            session.close()  # ends the read transaction: nothing was written
        except BaseException as exc:
            # The session itself failed: whoever has no outcome yet gets its error, and
            # the thread goes on serving (unless the process is exiting).
            done = {id(o[0]) for o in outcomes}
            outcomes += [(r, None, exc) for r in batch if id(r) not in done]
            if not isinstance(exc, Exception):
                raise
        finally:
            _wake(outcomes)


def _wake(outcomes: list[_Outcome]) -> None:
    """Hand each call its outcome in its event loop, with one wake-up per loop: waking a
    loop from another thread costs more than a short transaction."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _settle(outcomes: list[_Outcome]) -> None:
    for read, result, error in outcomes:
        if read.future.done():  # cancelled meanwhile
            continue
        if error is None:
            read.future.set_result(result)
        else:
            read.future.set_exception(error)


class Database:
    """One database, its connection pool and the worker threads that run transactions on it.

    Build it with :func:`create_database`. Work is a plain function taking a
    :class:`~sqlalchemy.orm.Session` first; :meth:`run` calls it in a worker thread inside
    one transaction, committed when it returns and rolled back when it raises::

        def rename(session: Session, uuid: str, name: str) -> ZoneVO:
            zone = session.get_one(ZoneVO, uuid)
            zone.name = name
            return zone

        zone = await db.run(rename, zone_uuid, "west")

    Keep transactions short and indexed; never await or call the bus inside one. Objects
    returned stay readable after the commit (``expire_on_commit=False``) but are detached
    from the session: load what the caller needs before returning. Cancelling the awaiting
    task does not stop a transaction already running in its thread; it still commits or
    rolls back on its own.

    On SQLite every transaction begins ``IMMEDIATE`` (SQLite admits one writer at a time
    anyway, and a transaction that reads and then writes can then never fail halfway with
    "database is locked"); on MariaDB and MySQL the isolation level is ``READ COMMITTED``,
    as PostgreSQL's default, so the backends behave alike.
    """

    def __init__(self, engine: Engine, *, threads: int,
                 read_engine: Engine | None = None) -> None:
        self._engine = engine
        self._threads = threads
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        event.listen(self._sessions, "before_flush", _sync_resource_names)
        # One writer: transactions that queue meanwhile commit as one.
        self._group: _GroupCommit | None = _GroupCommit(self) if threads == 1 else None
        # SQLite files: reads on a read-only connection of their own, beside the writer.
        # Servers: reads on connections in autocommit mode (see read()), in threads of
        # their own when there is one writer, else in the writers' threads.
        self._read_engine = read_engine
        sqlite = engine.dialect.name == "sqlite"
        self._reader: _Reader | None = None
        self._autocommit: sessionmaker[Session] | None = None
        if read_engine is not None and (sqlite or threads == 1):
            self._reader = _Reader(read_engine, 1 if sqlite else _SERVER_READERS)
        elif read_engine is not None:
            self._autocommit = sessionmaker(read_engine, expire_on_commit=False,
                                            autoflush=False)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="zcore-db")
        self._closed = False

    def __repr__(self) -> str:
        return f"<Database {self.masked_url} threads={self._threads}>"

    # ----------------------------------------------------------------- properties

    @property
    def engine(self) -> Engine:
        """The synchronous SQLAlchemy engine; use it only from a worker or at start-up."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL, with the password in it; never log it, use :attr:`masked_url`."""
        return self._engine.url.render_as_string(hide_password=False)

    @property
    def masked_url(self) -> str:
        """The database URL with the password shown as ``***``, for messages and logs."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """The backend: ``sqlite``, ``postgresql``, ``mysql`` or ``mariadb``."""
        return self._engine.dialect.name

    @property
    def threads(self) -> int:
        """How many transactions run at once."""
        return self._threads

    # ----------------------------------------------------------------- transactions

    async def run(
        self,
        fn: Callable[Concatenate[Session, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(session, *args, **kwargs)`` in a worker thread inside one transaction.

        Commits when ``fn`` returns and gives its result; rolls back when it raises and
        re-raises the same exception. The context variables of the caller are visible in
        ``fn``.
        """
        if self._closed:
            raise RuntimeError(f"database {self.masked_url} is closed")
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn.__qualname__} is a coroutine function; Database.run needs a "
                            "plain function, which it runs in a worker thread")
        ctx = contextvars.copy_context()
        if self._group is not None:
            call = _Call(fn, args, kwargs, ctx, asyncio.get_running_loop())
            self._group.submit(call)
            return await call.future  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, ctx.run, self._transaction, fn, args, kwargs
        )

    def run_sync(
        self,
        fn: Callable[Concatenate[Session, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """As :meth:`run`, but in the calling thread: for start-up and the ctl tool only."""
        if self._closed:
            raise RuntimeError(f"database {self.masked_url} is closed")
        return self._transaction(fn, args, kwargs)

    async def read(
        self,
        fn: Callable[Concatenate[Session, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """As :meth:`run`, for a function that only reads: a query, a lookup.

        ``fn`` sees every transaction committed before the call, as with :meth:`run`. On a
        SQLite file it runs on a read-only connection of its own (a write fails with
        ``attempt to write a readonly database``), in a thread beside the writer's, so it
        neither waits for writes nor holds them up, and reads queued together share one
        transaction and one wake-up of the event loop. On PostgreSQL, MariaDB and MySQL it
        runs on a connection in autocommit mode: under ``READ COMMITTED`` each statement
        sees what was committed before it began, in a transaction or not, so ``fn`` sees the
        same, without the round trips of ``BEGIN`` and ``COMMIT``; with one writer it runs
        in reader threads of its own, which take the reads queued together one after the
        other and wake the event loop once for them, else in the writers' threads. On an
        in-memory SQLite database it is :meth:`run`. ``fn`` must not write.
        """
        if self._reader is None and self._autocommit is None:
            return await self.run(fn, *args, **kwargs)
        if self._closed:
            raise RuntimeError(f"database {self.masked_url} is closed")
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn.__qualname__} is a coroutine function; Database.read needs "
                            "a plain function, which it runs in a worker thread")
        if self._autocommit is not None:
            ctx = contextvars.copy_context()
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, ctx.run, self._read_autocommit, fn, args, kwargs)
        assert self._reader is not None
        read = _Call(fn, args, kwargs, contextvars.copy_context(), asyncio.get_running_loop())
        self._reader.submit(read)
        return await read.future  # type: ignore[no-any-return]

    def _read_autocommit(self, fn: Callable[..., T], args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> T:
        assert self._autocommit is not None
        with self._autocommit() as session:
            return fn(session, *args, **kwargs)

    def _transaction(self, fn: Callable[..., T], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> T:
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                with self._sessions.begin() as session:
                    return fn(session, *args, **kwargs)
            except DBAPIError as exc:
                # The server chose this transaction as a deadlock's victim and rolled it
                # back whole: running it again is what the server asks for.
                if attempt == DEADLOCK_ATTEMPTS or not _is_deadlock(exc):
                    raise
                time.sleep(random.uniform(0.001, 0.01) * attempt)
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- migrations

    def upgrade(self, sources: Iterable[Migrations] = ()) -> list[str]:
        """Apply the core's revisions and every branch in ``sources`` up to its head.

        ``sources`` are the plugins' :class:`~zcore.records.Migrations` (from the
        ``zcore_db_migrations`` hook). Each is a directory of Alembic revisions whose first
        revision has ``branch_labels = ("<branch>",)`` and ``depends_on = "zcore_0001"``.
        Returns the revision ids applied, in order; an up-to-date database gives ``[]``.

        Raises :class:`~zcore.errors.StartupError`, with a message naming the database, the
        revision or branch and the fix, when the server cannot be reached, a source is
        wrong, the database holds a revision that no enabled plugin provides, or a
        migration fails. Blocking: call it at start-up, or :meth:`migrate` from the loop.
        """
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        sources = list(sources)
        config = self._alembic_config(sources)
        script = self._load_scripts(config, sources)
        applied: list[str] = []

        def on_apply(*, step: Any, **_: Any) -> None:
            if step.is_upgrade:
                applied.append(step.up_revision_id)

        with self._connect() as conn, self._migration_transaction(conn):
            current = MigrationContext.configure(conn).get_current_heads()
            self._check_current(script, current, sources)
            config.attributes["connection"] = conn
            config.attributes["on_version_apply"] = on_apply
            plan: list[str] = []
            try:
                plan = [s.revision for s in reversed(list(
                    script.iterate_revisions("heads", current or "base", implicit_base=True)))]
                command.upgrade(config, "heads")
            except Exception as exc:
                failed = next((r for r in plan if r not in applied), None)
                where = ""
                if failed is not None:
                    path = script.get_revision(failed).path
                    where = f" while applying revision {failed!r} ({path})"
                raise StartupError(
                    f"migrating the database {self.masked_url} failed{where}: "
                    f"{type(exc).__name__}: {exc}\nRevisions applied before the failure: "
                    f"{', '.join(applied) or 'none'}. Fix the migration (or the database), "
                    "then start again; on MariaDB/MySQL, DDL is not transactional, so check "
                    "what the failed revision left behind."
                ) from exc
        return applied

    async def migrate(self, sources: Iterable[Migrations] = ()) -> list[str]:
        """:meth:`upgrade` in a worker thread, for use from the event loop."""
        sources = list(sources)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.upgrade, sources)

    def current_revisions(self) -> set[str]:
        """The revisions the database is at: one head per branch; empty when never migrated."""
        from alembic.runtime.migration import MigrationContext

        with self._connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())

    @contextmanager
    def _migration_transaction(self, conn: Connection) -> Iterator[None]:
        # Nodes starting together on one database migrate one after the other; the second
        # finds the database up to date. SQLite needs no lock: the transaction begins
        # IMMEDIATE, which already excludes other writers.
        if self.dialect == "postgresql":
            with conn.begin():
                # Per schema; released by the commit or rollback.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock("
                                     "hashtext(current_schema() || '.zcore_migrations'))")
                yield
        elif self.dialect in ("mysql", "mariadb"):
            # DDL commits implicitly on MySQL: a session lock, held across those commits.
            lock = "LEFT(CONCAT('zcore_migrations.', DATABASE()), 64)"
            got = conn.execute(text(f"SELECT GET_LOCK({lock}, :wait)"),
                               {"wait": _MIGRATION_LOCK_WAIT}).scalar()
            conn.commit()
            if got != 1:
                raise StartupError(
                    f"waited {_MIGRATION_LOCK_WAIT} s for another node to finish migrating the "
                    f"database {self.masked_url}; look for a stuck `zstack-ctl deploydb` or "
                    "node start-up, then start again")
            try:
                with conn.begin():
                    yield
            finally:
                conn.exec_driver_sql(f"SELECT RELEASE_LOCK({lock})")
                conn.commit()
        else:
            with conn.begin():
                yield

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            conn = self._engine.connect()
        except DBAPIError as exc:
            raise StartupError(
                f"cannot connect to the database {self.masked_url}: "
                f"{str(exc.orig).strip() or type(exc.orig).__name__}\n"
                "Check that the server is running and reachable and that the URL names an "
                "existing database and a user allowed to use it (database.url in zstack.yaml, "
                "ZSTACK_DATABASE_URL, or --db-url)."
            ) from exc
        with conn:
            yield conn

    def _alembic_config(self, sources: list[Migrations]) -> Any:
        from alembic.config import Config

        locations = [str(_MIGRATIONS_DIR / "versions")]
        branches: dict[str, Path] = {CORE_BRANCH: _MIGRATIONS_DIR / "versions"}
        for source in sources:
            path = Path(source.path).resolve()
            if source.branch in branches:
                raise StartupError(
                    f"two sets of migrations claim the branch {source.branch!r}: "
                    f"{branches[source.branch]} and {path}; each plugin needs its own branch")
            if not path.is_dir():
                raise StartupError(
                    f"the migrations of branch {source.branch!r} are missing: {path} is not a "
                    "directory; reinstall the plugin that provides them")
            if str(path) in locations:
                raise StartupError(f"the migrations directory {path} is given twice (branch "
                                   f"{source.branch!r}); each branch needs its own directory")
            branches[source.branch] = path
            locations.append(str(path))
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS_DIR).replace("%", "%%"))
        # version_locations is split on os.pathsep; path_separator is Alembic >= 1.16's name
        # for the option, version_path_separator the older one.
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_path_separator", "os")
        # ConfigParser interpolates "%": double it.
        config.set_main_option(
            "version_locations", os.pathsep.join(locations).replace("%", "%%"))
        return config

    def _load_scripts(self, config: Any, sources: list[Migrations]) -> Any:
        from alembic.script import ScriptDirectory

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                script = ScriptDirectory.from_config(config)
                revisions = list(script.walk_revisions())
        except KeyError as exc:
            raise StartupError(
                f"cannot read the migrations ({', '.join(_describe(sources))}): a revision's "
                f"down_revision or depends_on names {exc.args[0]!r}, which none of these "
                "directories provides; fix that revision, or enable the plugin that provides "
                f"{exc.args[0]!r}"
            ) from exc
        except Exception as exc:
            raise StartupError(
                f"cannot read the migrations ({', '.join(_describe(sources))}): "
                f"{type(exc).__name__}: {exc}\nFix the revision file named, or the plugin's "
                "migrations directory."
            ) from exc
        for warning in caught:
            if "present more than once" in str(warning.message):
                raise StartupError(f"migrations conflict: {warning.message}; revision ids must "
                                   "be unique across plugins (prefix them with the branch name)")
        labels: dict[str, Path] = {}
        for rev in revisions:
            for label in rev.branch_labels:
                labels[label] = Path(rev.path).resolve().parent
        for source in sources:
            where = labels.get(source.branch)
            if where is None:
                raise StartupError(
                    f"the migrations in {Path(source.path).resolve()} declare no branch "
                    f"{source.branch!r}: its first revision needs branch_labels = "
                    f"({source.branch!r},) and depends_on = {CORE_REVISION!r}")
            if where != Path(source.path).resolve():
                raise StartupError(
                    f"branch {source.branch!r} is declared in {where}, not in the plugin's "
                    f"migrations directory {Path(source.path).resolve()}")
        return script

    def _check_current(self, script: Any, current: tuple[str, ...],
                       sources: list[Migrations]) -> None:
        known = {rev.revision for rev in script.walk_revisions()}
        missing = sorted(rev for rev in current if rev not in known)
        if not missing:
            return
        branches = ", ".join([CORE_BRANCH, *(s.branch for s in sources)])
        guesses = {m.rsplit("_", 1)[0] for m in missing if re.match(r"^.+_\d+$", m)}
        hint = (f" (by its name, from the plugin branch {', '.join(map(repr, sorted(guesses)))})"
                if guesses else "")
        raise StartupError(
            f"the database {self.masked_url} is at revision "
            f"{', '.join(map(repr, missing))}{hint}, which none of the enabled plugins' "
            f"migrations provides (branches: {branches}).\n"
            "The plugin that created it is disabled or no longer installed: enable it again "
            "(plugins: in zstack.yaml, ZSTACK_DISABLE_PLUGINS), or point database.url at a "
            "database made for this set of plugins."
        )

    # ----------------------------------------------------------------- shutdown

    async def close(self) -> None:
        """Wait for running transactions, stop the worker threads and close every connection."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown)

    def close_sync(self) -> None:
        """As :meth:`close`, from a thread without an event loop (the ctl tool)."""
        if not self._closed:
            self._closed = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._group is not None:
            self._group.shutdown()
        if self._reader is not None:
            self._reader.shutdown()
        self._executor.shutdown(wait=True)
        self._engine.dispose()
        if self._read_engine is not None:
            self._read_engine.dispose()


def _describe(sources: list[Migrations]) -> list[str]:
    return [f"{CORE_BRANCH} in {_MIGRATIONS_DIR / 'versions'}",
            *(f"{s.branch} in {s.path}" for s in sources)]


def create_database(url: str, *, threads: int | None = None, echo: bool = False) -> Database:
    """Build a :class:`Database` for ``url``; connect lazily; migrate with :meth:`~Database.upgrade`.

    ``url`` is a SQLAlchemy URL: ``sqlite:///path/zstack.db`` (the default backend; the
    parent directory is created; ``sqlite://`` is a private in-memory database),
    ``postgresql+psycopg://user:pw@host/db``, ``mysql+pymysql://user:pw@host/db`` or
    ``mysql+mysqldb://user:pw@host/db`` (MySQL's C client, the faster).
    ``threads`` is how many write transactions run at once, by default 1 on every backend:
    one writer whose queued transactions commit as one (SQLite admits one writer at a time
    anyway; on a server, one writer committing groups does more than several committing
    one transaction each, see :class:`_GroupCommit`), with reads in two threads of their own
    on a server. More than 1 (servers only) runs each transaction on its own in that many
    threads, reads among them. The connection pool holds as many connections, plus two for
    start-up work. ``echo`` logs every statement.

    SQLite files are opened in WAL mode with ``synchronous=NORMAL``, foreign keys enforced
    and a 30 s busy timeout; :meth:`Database.read` has one more thread and a read-only
    connection of its own. Nothing connects until the first use.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StartupError(f"the database URL {url!r} is not valid: {exc}; expected e.g. "
                           "sqlite:////var/lib/zstack/zstack.db or "
                           "postgresql+psycopg://user@host/zstack") from exc
    backend = parsed.get_backend_name()
    if threads is None:
        threads = 1
    if threads < 1:
        raise StartupError(f"database threads must be at least 1, not {threads}")
    options: dict[str, Any] = {"echo": echo}
    read_engine: Engine | None = None

    if backend == "sqlite":
        database = parsed.database or ""
        memory = database in ("", ":memory:") or "mode=memory" in database
        if memory:
            if threads != 1:
                raise StartupError(f"an in-memory SQLite database ({url}) serves one thread, "
                                   f"not {threads}; use a file for more")
            # One shared connection, or each thread would see its own empty database.
            options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            if not database.startswith("file:"):
                directory = Path(database).expanduser().resolve().parent
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StartupError(
                        f"cannot create the directory {directory} for the SQLite database "
                        f"{parsed}: {exc.strerror or exc}; choose a writable node.data_dir or "
                        "database.url") from exc
            options.update(pool_size=threads, max_overflow=_POOL_OVERFLOW)
        engine = create_engine(parsed, **options)
        _configure_sqlite(engine, wal=not memory)
        if not memory:
            read_engine = create_engine(parsed, echo=echo, pool_size=1, max_overflow=1)
            _configure_sqlite(read_engine, wal=False, read_only=True)
    else:
        options.update(pool_size=threads, max_overflow=_POOL_OVERFLOW, pool_recycle=3600)
        if backend in ("mysql", "mariadb"):
            options["isolation_level"] = "READ COMMITTED"
        try:
            engine = create_engine(parsed, **{**options, "pool_reset_on_return": None})
            _send_together_on(engine)
            _roll_back_unless_ended(engine)
            # Reads (Database.read), in autocommit mode: no transaction is ever left open
            # on these connections, so none is rolled back when they return to the pool.
            read_engine = create_engine(parsed, **{
                **options, "pool_size": max(threads, _SERVER_READERS),
                "isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None})
        except Exception as exc:
            raise StartupError(
                f"cannot use the database URL {parsed.render_as_string(hide_password=True)}: "
                f"{type(exc).__name__}: {exc}; install the driver it names (psycopg for "
                "postgresql+psycopg, pymysql for mysql+pymysql, mysqlclient for "
                "mysql+mysqldb)") from exc
    return Database(engine, threads=threads, read_engine=read_engine)


#: Key in a pooled connection's ``info``: False once SQLAlchemy ended its transaction.
_MAY_BE_IN_TRANSACTION = "zcore_may_be_in_transaction"


def _roll_back_unless_ended(engine: Engine) -> None:
    """A connection going back to ``engine``'s pool is rolled back unless its transaction
    was committed or rolled back and nothing began since; the pool's own reset, off on
    this engine (``pool_reset_on_return=None``), rolls back every time.

    The single writer hands its connection back after each group it commits: on MariaDB
    and MySQL that ``ROLLBACK`` is one more round trip (psycopg skips it by itself). A
    connection checked out by any other means (``raw_connection``) counts as in a
    transaction.
    """
    def maybe_in_transaction(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        record.info[_MAY_BE_IN_TRANSACTION] = True

    def began(connection: Connection) -> None:
        connection.connection.info[_MAY_BE_IN_TRANSACTION] = True

    def ended_by(end: Callable[[Any], None]) -> Callable[[Any], None]:
        def end_then_mark(connection: Any) -> None:  # the pool's proxy
            end(connection)  # a failed COMMIT leaves the transaction to the pool's reset
            try:
                connection.info[_MAY_BE_IN_TRANSACTION] = False
            except NotImplementedError:  # first connect's ad hoc proxy: not pooled yet
                pass
        return end_then_mark

    def reset(dbapi_connection: Any, record: Any, state: Any) -> None:
        if state.terminate_only:
            return
        if record is None or record.info.get(_MAY_BE_IN_TRANSACTION, True):
            dbapi_connection.rollback()

    # The dialect is this engine's own (see _send_together_on).
    dialect: Any = engine.dialect
    dialect.do_commit = ended_by(dialect.do_commit)
    dialect.do_rollback = ended_by(dialect.do_rollback)
    event.listen(engine, "checkout", maybe_in_transaction)
    event.listen(engine, "begin", began)
    event.listen(engine, "reset", reset)


def _configure_sqlite(engine: Engine, *, wal: bool, read_only: bool = False) -> None:
    """``read_only``: the connections refuse writes and begin deferred transactions, whose
    snapshot starts at their first read (the writer's connections set up WAL mode)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Take transaction control from the sqlite3 module (which would not BEGIN before
        # SELECT, DDL or SAVEPOINT): SQLAlchemy's begin event below emits it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # The busy timeout first: switching to WAL waits for other connections' locks.
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
            if wal:
                _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            if read_only:
                cursor.execute("PRAGMA query_only=ON")
        finally:
            cursor.close()

    begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)


def _enable_wal(cursor: Any) -> None:
    # WAL is persistent, so this switches a file once. The switch needs an exclusive lock,
    # and SQLite answers "locked" at once, without waiting, to the connection that would
    # deadlock with another one's write transaction: back off and retry.
    deadline = time.monotonic() + _SQLITE_BUSY_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
