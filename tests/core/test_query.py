"""The query engine: ZStack query conditions compiled into one SELECT, on every backend.

The models below exist only for these tests (tables ``Qt*VO``, created per test with
``Base.metadata.create_all``). Hosts are chosen so that primary-key order (h2, h4, h1, h3)
differs from name order (h1, h2, h3, h4).

Comparisons follow SQL: a NULL column matches no comparison, not even ``!=``, ``!?=`` or
``!~=``; only ``is null`` matches it (as in ZStack). Test strings are lower case because
SQLite's LIKE ignores ASCII case while PostgreSQL's and MariaDB's (utf8mb4_bin) do not.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Boolean, Float, Integer, String, event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapped, Session, mapped_column

import zcore.query
from zcore.db import (
    Base,
    Database,
    ResourceMixin,
    SystemTagVO,
    UserTagVO,
    add_resource,
)
from zcore.errors import StartupError, ZError
from zcore.query import (
    OPERATORS,
    Condition,
    Query,
    QueryEngine,
    QueryResult,
    QuerySyntaxError,
    parse_condition,
)
from zcore.records import QueryExpansion, ResourceType
from zcore.registry import Provided

# --------------------------------------------------------------------------- models


class QtZoneVO(ResourceMixin, Base):
    __tablename__ = "QtZoneVO"
    state: Mapped[str] = mapped_column(String(32), default="Enabled")


class QtClusterVO(ResourceMixin, Base):
    __tablename__ = "QtClusterVO"
    zoneUuid: Mapped[str] = mapped_column(String(32), index=True)


class QtHostVO(ResourceMixin, Base):
    __tablename__ = "QtHostVO"
    clusterUuid: Mapped[str] = mapped_column(String(32), index=True)
    cpu: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)
    memory: Mapped[int | None] = mapped_column(BigInteger, default=None)
    load: Mapped[float | None] = mapped_column(Float, default=None)
    lastSeen: Mapped[datetime | None] = mapped_column(default=None)


class QtVmVO(ResourceMixin, Base):
    __tablename__ = "QtVmVO"
    hostUuid: Mapped[str | None] = mapped_column(String(32), index=True, default=None)


class QtCounterVO(Base):
    """Not a resource: an integer primary key and no uuid."""

    __tablename__ = "QtCounterVO"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(Integer)


class NotAModel:
    pass


TABLES = [Base.metadata.tables[m.__tablename__]
          for m in (QtZoneVO, QtClusterVO, QtHostVO, QtVmVO, QtCounterVO)]

LABELS = {"qt": "plugin 'qt' (1.0, qt-dist)", "qt-extra": "plugin 'qt-extra' (2.0, extra)"}

RESOURCE_TYPES: dict[str, Provided] = {
    rt.name: Provided("qt", rt)
    for rt in (
        ResourceType("QtZoneVO", model=QtZoneVO),
        ResourceType("QtClusterVO", model=QtClusterVO),
        ResourceType("QtHostVO", model=QtHostVO),
        ResourceType("QtVmVO", model=QtVmVO),
        ResourceType("QtCounterVO", model=QtCounterVO, owned_through=None),
        ResourceType("QtPublicZoneVO", model=QtZoneVO, owned_through=None),
        ResourceType("QtUserTagVO", model=UserTagVO, owned_through="resourceUuid"),
        ResourceType("QtAbstractVO"),
    )
}

EXPANSION_LIST = [
    QueryExpansion("QtZoneVO", "cluster", "QtClusterVO", foreign_key="zoneUuid"),
    QueryExpansion("QtClusterVO", "zone", "QtZoneVO", local_key="zoneUuid"),
    QueryExpansion("QtClusterVO", "host", "QtHostVO", foreign_key="clusterUuid"),
    QueryExpansion("QtHostVO", "cluster", "QtClusterVO", local_key="clusterUuid"),
    QueryExpansion("QtHostVO", "vm", "QtVmVO", foreign_key="hostUuid"),
    QueryExpansion("QtVmVO", "host", "QtHostVO", local_key="hostUuid"),
]
EXPANSIONS = {(e.resource, e.name): Provided("qt-extra", e) for e in EXPANSION_LIST}

ENGINE = QueryEngine(RESOURCE_TYPES, EXPANSIONS, LABELS)


# --------------------------------------------------------------------------- the world


def u(kind: int, n: int) -> str:
    """A fixed uuid: the kind of resource, then a number (so the primary-key order is known)."""
    return f"{kind:02x}{n:030x}"


ACCOUNT_A = u(0xA, 1)
ACCOUNT_B = u(0xB, 1)
T0 = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
INJECTION = "x' OR '1'='1"

ZONES = {"z1": u(1, 1), "z2": u(1, 2)}
CLUSTERS = {"c1": u(2, 1), "c2": u(2, 2), "c3": u(2, 3)}
HOSTS = {"h1": u(3, 3), "h2": u(3, 1), "h3": u(3, 4), "h4": u(3, 2)}
VMS = {"v1": u(4, 1), "v2": u(4, 2), "v3": u(4, 3), "v4": u(4, 4)}
HOSTS_BY_PK = ["h2", "h4", "h1", "h3"]


def populate(session: Session) -> None:
    """Two zones, three clusters, four hosts, four VMs, tags; accounts A and B own some."""
    for name, zone_owner in (("z1", ACCOUNT_A), ("z2", ACCOUNT_B)):
        add_resource(session, QtZoneVO(uuid=ZONES[name], name=name), "QtZoneVO",
                     owner_account_uuid=zone_owner)
    for name, zone, owner in (("c1", "z1", ACCOUNT_A), ("c2", "z1", ACCOUNT_A),
                              ("c3", "z2", ACCOUNT_B)):
        add_resource(session, QtClusterVO(uuid=CLUSTERS[name], name=name, zoneUuid=ZONES[zone]),
                     "QtClusterVO", owner_account_uuid=owner)
    hosts = [
        # name, cluster, cpu, enabled, memory, load, lastSeen, description, owner
        ("h1", "c1", 4, True, 1024, 0.5, T0, "web host", ACCOUNT_A),
        ("h2", "c1", 8, False, None, 1.5, T0 + timedelta(hours=1), None, ACCOUNT_A),
        ("h3", "c3", 16, True, 4096, None, None, "db_host", ACCOUNT_B),
        ("h4", "c2", 2, False, 2048, 2.5, T0 + timedelta(hours=2), INJECTION, None),
    ]
    for name, cluster, cpu, enabled, memory, load, seen, description, host_owner in hosts:
        add_resource(session, QtHostVO(uuid=HOSTS[name], name=name,
                                       clusterUuid=CLUSTERS[cluster], cpu=cpu, enabled=enabled,
                                       memory=memory, load=load, lastSeen=seen,
                                       description=description),
                     "QtHostVO", owner_account_uuid=host_owner)
    for name, host, owner in (("v1", "h1", ACCOUNT_A), ("v2", "h1", ACCOUNT_A),
                              ("v3", "h3", ACCOUNT_B), ("v4", None, ACCOUNT_B)):
        add_resource(session, QtVmVO(uuid=VMS[name], name=name,
                                     hostUuid=HOSTS[host] if host else None),
                     "QtVmVO", owner_account_uuid=owner)
    system_tags = [("h1", "hostname::web-1"), ("h1", "capability::kvm"),
                   ("h3", "hostname::db-1")]
    user_tags = [("h2", "gold"), ("h3", "silver"), ("c3", "blue")]
    uuids = {**HOSTS, **CLUSTERS}
    types = {**dict.fromkeys(HOSTS, "QtHostVO"), **dict.fromkeys(CLUSTERS, "QtClusterVO")}
    session.add_all([SystemTagVO(resourceUuid=uuids[r], resourceType=types[r], tag=t)
                     for r, t in system_tags])
    session.add_all([UserTagVO(resourceUuid=uuids[r], resourceType=types[r], tag=t)
                     for r, t in user_tags])
    session.add_all([QtCounterVO(id=2, name="b", value=20), QtCounterVO(id=1, name="a", value=10)])


@pytest.fixture
async def tables(database: Database) -> Database:
    """The database with the test tables, empty."""
    Base.metadata.create_all(database.engine, tables=TABLES)
    return database


@pytest.fixture
async def world(tables: Database) -> Database:
    """The database with the test tables and :func:`populate`'s rows."""
    await tables.run(populate)
    return tables


async def query(db: Database, resource_type: str, *conditions: str,
                account: str | None = None, engine: QueryEngine = ENGINE,
                **options: Any) -> QueryResult:
    q = Query(resource_type, tuple(parse_condition(c) for c in conditions), **options)
    return await db.run(engine.run, q, account_uuid=account)


async def names(db: Database, resource_type: str, *conditions: str,
                account: str | None = None, **options: Any) -> list[str]:
    result = await query(db, resource_type, *conditions, account=account, **options)
    return [row.name for row in result.rows]


async def check(db: Database, resource_type: str,
                cases: list[tuple[str | tuple[str, ...], list[str]]]) -> None:
    """Run every case and report every mismatch at once."""
    failures = []
    for conditions, expected in cases:
        conds = (conditions,) if isinstance(conditions, str) else conditions
        try:
            got = sorted(await names(db, resource_type, *conds))
        except Exception as exc:  # noqa: BLE001 - reported with the others
            failures.append(f"{resource_type} {conds}: raised {exc!r}")
            continue
        if got != sorted(expected):
            failures.append(f"{resource_type} {conds}: expected {sorted(expected)}, got {got}")
    assert not failures, "\n".join(failures)


def run_unbound(q: Query, **kwargs: Any) -> QueryResult:
    """Run with a session bound to nothing: for queries that must fail before any SQL."""
    with Session() as session:
        return ENGINE.run(session, q, **kwargs)


def error_of(q: Query, **kwargs: Any) -> ZError:
    with pytest.raises(ZError) as caught:
        run_unbound(q, **kwargs)
    assert caught.value.code == "SYS.1007", caught.value
    return caught.value


def conds(*texts: str) -> tuple[Condition, ...]:
    return tuple(parse_condition(t) for t in texts)


@dataclass
class Statements:
    """The SELECT statements and parameters sent to the database."""

    seen: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def selects(self) -> list[tuple[str, Any]]:
        return [(s, p) for s, p in self.seen if s.lstrip().upper().startswith("SELECT")]


@pytest.fixture
def statements(world: Database) -> Iterator[Statements]:
    recorded = Statements()

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        recorded.seen.append((statement, parameters))

    event.listen(world.engine, "before_cursor_execute", record)
    yield recorded
    event.remove(world.engine, "before_cursor_execute", record)


# --------------------------------------------------------------------------- parsing


def test_operators_are_zstacks_in_order() -> None:
    assert OPERATORS == ("!=", ">=", "<=", "!?=", "!~=", "~=", "?=", "=", ">", "<",
                         " is null", " not null")


@pytest.mark.parametrize(("text", "expected"), [
    ("name=vm1", ("name", "=", "vm1")),
    ("name!=vm1", ("name", "!=", "vm1")),
    ("cpu>=2", ("cpu", ">=", "2")),
    ("cpu<=2", ("cpu", "<=", "2")),
    ("name!?=a,b", ("name", "!?=", "a,b")),
    ("name!~=web%", ("name", "!~=", "web%")),
    ("name~=web%", ("name", "~=", "web%")),
    ("name?=a,b", ("name", "?=", "a,b")),
    ("cpu>2", ("cpu", ">", "2")),
    ("cpu<2", ("cpu", "<", "2")),
    ("description is null", ("description", "is null", None)),
    ("description not null", ("description", "not null", None)),
    ("zone.cluster.name=c1", ("zone.cluster.name", "=", "c1")),
    ("__userTag__~=gold%", ("__userTag__", "~=", "gold%")),
])
def test_parse_each_operator(text: str, expected: tuple[str, str, str | None]) -> None:
    assert parse_condition(text) == Condition(*expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("a!=b", ("a", "!=", "b")),  # not "a!" "=" "b"
    ("a!?=b", ("a", "!?=", "b")),  # not "a!" "?=" "b" nor "a!?" "=" "b"
    ("a!~=b", ("a", "!~=", "b")),
    ("name=a=b", ("name", "=", "a=b")),
    ("name!=a=b", ("name", "!=", "a=b")),
    ("name==", ("name", "=", "=")),
    ("name=a!=b", ("name", "=", "a!=b")),  # the first operator in the text wins
    ("name=a>=b", ("name", "=", "a>=b")),
    ("name~=%is null%", ("name", "~=", "%is null%")),
    ("name= is null", ("name", "=", " is null")),
    ("name=", ("name", "=", "")),
    ("  name  =  x ", ("name", "=", "  x ")),  # the field is stripped, the value is not
    ("  description   is null", ("description", "is null", None)),
    ("description is null  ", ("description", "is null", None)),
    ("name?=a, b,", ("name", "?=", "a, b,")),  # lists stay raw until compiled
])
def test_parse_edge_cases(text: str, expected: tuple[str, str, str | None]) -> None:
    assert parse_condition(text) == Condition(*expected)


@pytest.mark.parametrize("text", ["name", "", "name vm1", "name:vm1", "nameisnull"])
def test_a_condition_without_operator_is_a_syntax_error(text: str) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_condition(text)
    err = caught.value
    assert isinstance(err, ZError)
    assert err.code == "SYS.1007"
    assert repr(text) in err.details
    for op in OPERATORS:
        assert op.strip() in err.details


@pytest.mark.parametrize("text", ["=x", "  !=x", " is null", "?=a,b"])
def test_a_condition_without_field_is_a_syntax_error(text: str) -> None:
    with pytest.raises(QuerySyntaxError, match="names no field") as caught:
        parse_condition(text)
    assert caught.value.code == "SYS.1007"


def test_nothing_may_follow_a_null_check() -> None:
    with pytest.raises(QuerySyntaxError, match="nothing may follow 'is null'"):
        parse_condition("description is null x")


@given(field=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}(\.[A-Za-z_][A-Za-z0-9_]{0,8}){0,3}",
                           fullmatch=True),
       op=st.sampled_from([op for op in OPERATORS if not op.startswith(" ")]),
       value=st.text(max_size=12))
def test_parse_round_trips_any_value(field: str, op: str, value: str) -> None:
    # The longest operator wins: "a>=" is a >= "", never a > "=".
    assume(not any(len(other) > len(op) and (op + value).startswith(other)
                   for other in OPERATORS))
    assert parse_condition(f"{field}{op}{value}") == Condition(field, op, value)


def test_the_longest_operator_wins() -> None:
    assert parse_condition("a>=") == Condition("a", ">=", "")
    assert parse_condition("a<==") == Condition("a", "<=", "=")


# --------------------------------------------------------------------------- operators


async def test_operators_on_string_columns(world: Database) -> None:
    await check(world, "QtHostVO", [
        ("name=h1", ["h1"]),
        ("name=H1", []),
        ("name!=h1", ["h2", "h3", "h4"]),
        ("name>h2", ["h3", "h4"]),
        ("name>=h2", ["h2", "h3", "h4"]),
        ("name<h2", ["h1"]),
        ("name<=h2", ["h1", "h2"]),
        ("name?=h1,h3", ["h1", "h3"]),
        ("name?=h1", ["h1"]),
        ("name?=h1,nope", ["h1"]),
        ("name!?=h1,h3", ["h2", "h4"]),
        ("name~=h%", ["h1", "h2", "h3", "h4"]),
        ("name~=%3", ["h3"]),
        ("name~=h_", ["h1", "h2", "h3", "h4"]),
        ("name~=h", []),
        ("name!~=%3", ["h1", "h2", "h4"]),
        ("description~=%host", ["h1", "h3"]),
        ("description~=web_host", ["h1"]),  # _ is any one character
        ("description!~=web%", ["h3", "h4"]),  # h2's NULL matches no comparison
        ("description!=web host", ["h3", "h4"]),
        ("description=", []),
        ("description is null", ["h2"]),
        ("description not null", ["h1", "h3", "h4"]),
        ("name is null", []),
        ("name not null", ["h1", "h2", "h3", "h4"]),
    ])


async def test_operators_on_integer_columns(world: Database) -> None:
    await check(world, "QtHostVO", [
        ("cpu=4", ["h1"]),
        ("cpu=+4", ["h1"]),
        ("cpu!=4", ["h2", "h3", "h4"]),
        ("cpu>4", ["h2", "h3"]),
        ("cpu>=4", ["h1", "h2", "h3"]),
        ("cpu<4", ["h4"]),
        ("cpu<=4", ["h1", "h4"]),
        ("cpu>-1", ["h1", "h2", "h3", "h4"]),
        ("cpu?=2,16", ["h3", "h4"]),
        ("cpu?=2, 16", ["h3", "h4"]),
        ("cpu!?=2,16", ["h1", "h2"]),
        ("cpu~=1%", ["h3"]),  # LIKE on a number compares its text
        ("cpu!~=1%", ["h1", "h2", "h4"]),
        ("memory>1024", ["h3", "h4"]),
        ("memory!=1024", ["h3", "h4"]),
        ("memory!?=1024", ["h3", "h4"]),
        ("memory is null", ["h2"]),
        ("memory not null", ["h1", "h3", "h4"]),
        ("memory=4294967296", []),  # a BIGINT value
    ])


async def test_operators_on_boolean_and_float_columns(world: Database) -> None:
    await check(world, "QtHostVO", [
        ("enabled=true", ["h1", "h3"]),
        ("enabled=TRUE", ["h1", "h3"]),
        ("enabled=False", ["h2", "h4"]),
        ("enabled!=true", ["h2", "h4"]),
        ("enabled?=true,false", ["h1", "h2", "h3", "h4"]),
        ("enabled!?=false", ["h1", "h3"]),
        ("enabled>false", ["h1", "h3"]),
        ("load=1.5", ["h2"]),
        ("load>1", ["h2", "h4"]),
        ("load<=1.5", ["h1", "h2"]),
        ("load?=0.5,2.5", ["h1", "h4"]),
        ("load is null", ["h3"]),
        ("load!=0.5", ["h2", "h4"]),
    ])


async def test_operators_on_datetime_columns(world: Database) -> None:
    hour = T0 + timedelta(hours=1)
    hour_ms = int((hour - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)
    await check(world, "QtHostVO", [
        ("lastSeen=2024-01-02T03:04:05.123456", ["h1"]),  # naive is UTC
        ("lastSeen=2024-01-02T03:04:05.123456Z", ["h1"]),
        ("lastSeen=2024-01-02T05:04:05.123456+02:00", ["h1"]),
        ("lastSeen=2024-01-02 03:04:05.123456", ["h1"]),
        ("lastSeen=2024-01-02T03:04:05", []),  # microseconds count
        ("lastSeen!=2024-01-02T03:04:05.123456Z", ["h2", "h4"]),
        ("lastSeen>2024-01-02T03:04:05.123456Z", ["h2", "h4"]),
        ("lastSeen>=2024-01-02T03:04:05.123456Z", ["h1", "h2", "h4"]),
        ("lastSeen<2024-01-02T04:04:05.123456Z", ["h1"]),
        ("lastSeen<=2024-01-02T04:04:05.123456Z", ["h1", "h2"]),
        ("lastSeen?=2024-01-02T03:04:05.123456Z,2024-01-02T05:04:05.123456Z", ["h1", "h4"]),
        ("lastSeen!?=2024-01-02T03:04:05.123456Z", ["h2", "h4"]),
        (f"lastSeen>={hour_ms}", ["h2", "h4"]),  # epoch milliseconds, .123 < .123456
        (f"lastSeen<{hour_ms}", ["h1"]),
        ("lastSeen>2024-01-02", ["h1", "h2", "h4"]),
        ("lastSeen is null", ["h3"]),
        ("lastSeen not null", ["h1", "h2", "h4"]),
        ("createDate>2000-01-01T00:00:00Z", ["h1", "h2", "h3", "h4"]),
        ("createDate<0", []),
    ])


@pytest.mark.parametrize(("condition", "words"), [
    ("cpu=four", ["'cpu'", "'four'", "integer"]),
    ("cpu=4.0", ["'cpu'", "'4.0'", "integer"]),
    ("cpu=", ["'cpu'", "''", "integer"]),
    ("cpu?=1,x", ["'cpu'", "'x'", "integer"]),
    ("cpu>", ["'cpu'", "integer"]),
    ("enabled=yes", ["'enabled'", "'yes'", "true or false"]),
    ("load=heavy", ["'load'", "'heavy'", "number"]),
    ("lastSeen=yesterday", ["'lastSeen'", "'yesterday'", "ISO 8601"]),
    ("cluster.host.cpu=x", ["'cluster.host.cpu'", "'x'"]),
])
def test_values_of_the_wrong_type_are_refused(condition: str, words: list[str]) -> None:
    err = error_of(Query("QtHostVO", conds(condition)))
    for word in words:
        assert word in err.details, err.details


# --------------------------------------------------------------------------- expansions


async def test_expansions_from_child_to_parent(world: Database) -> None:
    await check(world, "QtHostVO", [
        ("cluster.name=c1", ["h1", "h2"]),
        ("cluster.name!=c1", ["h3", "h4"]),
        ("cluster.zone.name=z1", ["h1", "h2", "h4"]),
        ("cluster.zone.name?=z1,z2", ["h1", "h2", "h3", "h4"]),
        ("cluster.zone.state=Enabled", ["h1", "h2", "h3", "h4"]),
        ("cluster.uuid=" + CLUSTERS["c3"], ["h3"]),
        (("cluster.zone.name=z1", "cpu>2"), ["h1", "h2"]),
    ])
    await check(world, "QtVmVO", [
        ("host.cluster.zone.name=z2", ["v3"]),  # three levels
        ("host.cluster.zone.name!=z1", ["v3"]),
        ("host.cluster.zone.name~=z%", ["v1", "v2", "v3"]),
        ("host.cpu>=4", ["v1", "v2", "v3"]),
        ("host.name is null", []),  # v4 has no host: no related row exists
        ("host.name not null", ["v1", "v2", "v3"]),
        ("hostUuid is null", ["v4"]),
    ])


async def test_expansions_from_parent_to_children(world: Database) -> None:
    result = await query(world, "QtZoneVO", "cluster.name~=c%")
    assert sorted(z.name for z in result.rows) == ["z1", "z2"]  # z1 has two: no duplicate
    await check(world, "QtZoneVO", [
        ("cluster.name=c1", ["z1"]),
        ("cluster.name!=c1", ["z1", "z2"]),  # z1 also has c2: the negation applies inside
        ("cluster.name!?=c1,c2", ["z2"]),
        ("cluster.host.cpu>1", ["z1", "z2"]),
        ("cluster.host.enabled=false", ["z1"]),
        ("cluster.host.vm.name=v3", ["z2"]),  # three levels
        ("cluster.host.vm.name?=v1,v3", ["z1", "z2"]),
        ("cluster.host.vm.name is null", []),
        ("cluster.host.vm.hostUuid not null", ["z1", "z2"]),
        (("cluster.name=c1", "cluster.name=c2"), ["z1"]),  # each condition on its own
        (("cluster.name=c1", "cluster.name=c3"), []),
    ])
    assert await names(world, "QtZoneVO", "cluster.host.vm.name?=v1,v2,v3",
                       reply_with_count=True) == ["z1", "z2"]
    assert (await query(world, "QtZoneVO", "cluster.host.vm.name~=v%", count=True)).total == 2


async def test_the_same_table_at_two_depths(world: Database) -> None:
    await check(world, "QtClusterVO", [
        ("zone.cluster.name=c2", ["c1", "c2"]),  # the clusters of c2's zone
        ("zone.cluster.name=c3", ["c3"]),
        ("zone.cluster.zone.cluster.name=c1", ["c1", "c2"]),
        ("host.cluster.name=c1", ["c1"]),
    ])
    await check(world, "QtHostVO", [
        ("cluster.host.name=h2", ["h1", "h2"]),  # hosts sharing a cluster with h2
        ("cluster.host.vm.host.name=h1", ["h1", "h2"]),
    ])
    await check(world, "QtVmVO", [("host.vm.name=v2", ["v1", "v2"])])
    await check(world, "QtZoneVO", [("cluster.zone.name=z2", ["z2"])])


# --------------------------------------------------------------------------- tags


async def test_system_tag_conditions(world: Database) -> None:
    await check(world, "QtHostVO", [
        ("__systemTag__=hostname::web-1", ["h1"]),
        ("__systemTag__=capability::kvm", ["h1"]),
        ("__systemTag__~=hostname::%", ["h1", "h3"]),
        ("__systemTag__?=capability::kvm,hostname::db-1", ["h1", "h3"]),
        ("__systemTag__>hostname::a", ["h1", "h3"]),
        ("__systemTag__!=hostname::web-1", ["h2", "h3", "h4"]),  # no such tag
        ("__systemTag__!=capability::kvm", ["h2", "h3", "h4"]),
        ("__systemTag__!~=hostname::%", ["h2", "h4"]),
        ("__systemTag__!?=capability::kvm,hostname::db-1", ["h2", "h4"]),
        ("__systemTag__ is null", ["h2", "h4"]),
        ("__systemTag__ not null", ["h1", "h3"]),
        ("__systemTag__=gold", []),  # a user tag
    ])


async def test_user_tag_conditions(world: Database) -> None:
    await check(world, "QtHostVO", [
        ("__userTag__=gold", ["h2"]),
        ("__userTag__~=%l%", ["h2", "h3"]),
        ("__userTag__?=gold,silver,blue", ["h2", "h3"]),
        ("__userTag__!=gold", ["h1", "h3", "h4"]),
        ("__userTag__!~=g%", ["h1", "h3", "h4"]),
        ("__userTag__!?=gold,silver", ["h1", "h4"]),
        ("__userTag__ is null", ["h1", "h4"]),
        ("__userTag__ not null", ["h2", "h3"]),
        ("__userTag__=hostname::web-1", []),  # a system tag
        (("__userTag__ is null", "__systemTag__ is null"), ["h4"]),
    ])


async def test_tag_conditions_at_the_end_of_an_expansion(world: Database) -> None:
    await check(world, "QtZoneVO", [
        ("cluster.__userTag__=blue", ["z2"]),
        ("cluster.__userTag__!=blue", ["z1"]),  # z1's clusters have no such tag
        ("cluster.__userTag__ is null", ["z1"]),
        ("cluster.__userTag__ not null", ["z2"]),
        ("cluster.host.__systemTag__~=hostname::%", ["z1", "z2"]),
        ("cluster.host.__systemTag__ is null", ["z1"]),  # h2 and h4 have none
    ])
    await check(world, "QtVmVO", [
        ("host.__systemTag__=hostname::db-1", ["v3"]),
        ("host.__systemTag__~=hostname::%", ["v1", "v2", "v3"]),
        ("host.__userTag__ is null", ["v1", "v2"]),
    ])


def test_tag_fields_need_a_uuid_column() -> None:
    err = error_of(Query("QtCounterVO", conds("__userTag__=x")))
    assert "'__userTag__'" in err.details and "QtCounterVO" in err.details
    assert "tags:" not in err.details


# --------------------------------------------------------------------------- errors


def test_an_unknown_field_is_named_with_the_valid_ones() -> None:
    err = error_of(Query("QtHostVO", conds("nmae=h1")))
    assert err.description == "unknown query field"
    assert "'nmae'" in err.details and "QtHostVO" in err.details
    assert "clusterUuid, cpu, createDate, description, enabled" in err.details
    assert "expansions: cluster, vm" in err.details
    assert "__systemTag__, __userTag__" in err.details
    assert "Did you mean 'name'?" in err.details


def test_an_unknown_expansion_is_named_with_a_suggestion() -> None:
    err = error_of(Query("QtHostVO", conds("clustr.name=c1")))
    assert "'clustr'" in err.details and "QtHostVO" in err.details
    assert "Did you mean 'cluster'?" in err.details


def test_an_unknown_field_behind_an_expansion() -> None:
    err = error_of(Query("QtVmVO", conds("host.cluster.nmae=c1")))
    assert "'host.cluster.nmae'" in err.details
    assert "not a field or expansion of QtClusterVO" in err.details
    assert "reached through 'host.cluster' from QtVmVO" in err.details
    assert "zoneUuid" in err.details and "expansions: host, zone" in err.details
    assert "Did you mean 'host.cluster.name'?" in err.details


def test_no_suggestion_when_nothing_is_close() -> None:
    err = error_of(Query("QtHostVO", conds("qqqqqqqq=1")))
    assert "Did you mean" not in err.details


@pytest.mark.parametrize(("condition", "words"), [
    ("cluster=c1", ["ends at the expansion 'cluster'", "QtClusterVO", "'cluster.",
                    "valid fields of QtClusterVO"]),
    ("cluster.zone is null", ["ends at the expansion 'zone'", "QtZoneVO"]),
    ("name.first=x", ["'name' is a field of QtHostVO, not an expansion"]),
    ("__userTag__.x=y", ["'__userTag__' is a field of QtHostVO"]),
    ("cluster..name=x", ["empty step"]),
    (".name=x", ["empty step"]),
    ("name.=x", ["empty step"]),
    ("name) OR 1=1 --=x", ["'name) OR 1'"]),
])
def test_malformed_field_paths(condition: str, words: list[str]) -> None:
    err = error_of(Query("QtHostVO", conds(condition)))
    for word in words:
        assert word in err.details, err.details


def test_bad_sorting_and_paging_are_refused() -> None:
    err = error_of(Query("QtHostVO", sort_by="nmae"))
    assert err.description == "unknown sort field"
    assert "'nmae'" in err.details and "QtHostVO" in err.details
    assert "Did you mean 'name'?" in err.details
    assert "'cluster.name'" in error_of(Query("QtHostVO", sort_by="cluster.name")).details
    assert "'__userTag__'" in error_of(Query("QtHostVO", sort_by="__userTag__")).details
    assert "'up'" in error_of(Query("QtHostVO", sort_direction="up")).details
    assert "-1" in error_of(Query("QtHostVO", limit=-1)).details
    assert "-1" in error_of(Query("QtHostVO", start=-1)).details


def test_unknown_or_model_less_resource_types_are_refused() -> None:
    err = error_of(Query("QtHsotVO"))
    assert "'QtHsotVO'" in err.details and "Did you mean 'QtHostVO'?" in err.details
    assert "'QtAbstractVO' is not a queryable" in error_of(Query("QtAbstractVO")).details


def test_conditions_built_by_hand_are_checked() -> None:
    with pytest.raises(QuerySyntaxError, match="unknown operator '<>'"):
        run_unbound(Query("QtHostVO", (Condition("name", "<>", "x"),)))
    with pytest.raises(QuerySyntaxError, match="has no value"):
        run_unbound(Query("QtHostVO", (Condition("name", "=", None),)))


async def test_conditions_built_by_hand_run(world: Database) -> None:
    q = Query("QtHostVO", (Condition("description", " is null"), Condition("cpu", ">", "4"),
                           Condition("cluster.zone.name", "?=", "z1,z2")))
    assert [r.name for r in (await world.run(ENGINE.run, q)).rows] == ["h2"]


async def test_values_are_data_never_sql(world: Database, statements: Statements) -> None:
    assert await names(world, "QtHostVO", f"name={INJECTION}") == []
    assert await names(world, "QtHostVO", f"description={INJECTION}") == ["h4"]
    assert await names(world, "QtHostVO", f"description?={INJECTION},web host") == ["h4", "h1"]
    assert await names(world, "QtHostVO", "description~=%' OR '1'='1") == ["h4"]
    assert await names(world, "QtHostVO", f"cluster.name={INJECTION}") == []
    assert await names(world, "QtHostVO", f"__userTag__={INJECTION}") == []
    assert await names(world, "QtHostVO", "name=h1; DROP TABLE QtHostVO; --") == []
    for sql, _ in statements.selects:
        assert "'1'='1" not in sql and "DROP" not in sql
    assert await names(world, "QtHostVO", "name~=h1") == ["h1"]  # the table is still there


# --------------------------------------------------------------------------- accounts


async def test_normal_accounts_see_only_what_they_own(world: Database) -> None:
    assert await names(world, "QtHostVO", account=ACCOUNT_A) == ["h2", "h1"]
    assert await names(world, "QtHostVO", account=ACCOUNT_B) == ["h3"]
    assert await names(world, "QtHostVO") == HOSTS_BY_PK  # an administrator sees all
    assert await names(world, "QtHostVO", account=u(0xC, 1)) == []
    assert await names(world, "QtHostVO", "cpu>4", account=ACCOUNT_A) == ["h2"]
    assert await names(world, "QtVmVO", "host.cluster.zone.name=z1", account=ACCOUNT_B) == []
    result = await query(world, "QtHostVO", account=ACCOUNT_A, count=True)
    assert (result.rows, result.total) == ([], 2)
    result = await query(world, "QtHostVO", account=ACCOUNT_A, limit=1, reply_with_count=True)
    assert ([r.name for r in result.rows], result.total) == (["h2"], 2)


async def test_rows_owned_through_no_resource_are_visible_to_all(world: Database) -> None:
    assert await names(world, "QtPublicZoneVO", account=ACCOUNT_A) == ["z1", "z2"]
    assert await names(world, "QtZoneVO", account=ACCOUNT_A) == ["z1"]
    assert await names(world, "QtCounterVO", account=ACCOUNT_B) == ["a", "b"]


async def test_rows_owned_through_another_column(world: Database) -> None:
    async def tags(account: str | None) -> list[str]:
        result = await query(world, "QtUserTagVO", account=account, sort_by="tag")
        return [row.tag for row in result.rows]

    assert await tags(ACCOUNT_A) == ["gold"]  # on h2
    assert await tags(ACCOUNT_B) == ["blue", "silver"]  # on c3 and h3
    assert await tags(None) == ["blue", "gold", "silver"]


# --------------------------------------------------------------------------- paging


async def test_sorting(world: Database) -> None:
    assert await names(world, "QtHostVO") == HOSTS_BY_PK  # primary-key order by default
    assert await names(world, "QtHostVO", sort_by="name") == ["h1", "h2", "h3", "h4"]
    assert await names(world, "QtHostVO", sort_by="name", sort_direction="desc") == \
        ["h4", "h3", "h2", "h1"]
    assert await names(world, "QtHostVO", sort_by="name", sort_direction="DESC") == \
        ["h4", "h3", "h2", "h1"]
    assert await names(world, "QtHostVO", sort_by="cpu", sort_direction="desc") == \
        ["h3", "h2", "h1", "h4"]
    # ties are broken by the primary key, ascending, whatever the direction
    assert await names(world, "QtHostVO", sort_by="enabled") == ["h2", "h4", "h1", "h3"]
    assert await names(world, "QtHostVO", sort_by="enabled", sort_direction="desc") == \
        ["h1", "h3", "h2", "h4"]
    assert await names(world, "QtHostVO", "cluster.zone.name=z1", sort_by="cpu") == \
        ["h4", "h1", "h2"]
    assert await names(world, "QtCounterVO") == ["a", "b"]  # an integer primary key
    assert await names(world, "QtCounterVO", sort_by="value", sort_direction="desc") == \
        ["b", "a"]


async def test_limit_and_start(world: Database) -> None:
    assert await names(world, "QtHostVO", limit=2) == ["h2", "h4"]
    assert await names(world, "QtHostVO", start=1, limit=2) == ["h4", "h1"]
    assert await names(world, "QtHostVO", start=3, limit=10) == ["h3"]
    assert await names(world, "QtHostVO", start=2, limit=None) == ["h1", "h3"]
    assert await names(world, "QtHostVO", start=9) == []
    assert await names(world, "QtHostVO", limit=0) == []
    assert await names(world, "QtHostVO", limit=None) == HOSTS_BY_PK
    assert await names(world, "QtHostVO", sort_by="name", start=1, limit=2) == ["h2", "h3"]


async def test_count_and_reply_with_count(world: Database, statements: Statements) -> None:
    plain = await query(world, "QtHostVO", "cpu>2")
    assert ([r.name for r in plain.rows], plain.total) == (["h2", "h1", "h3"], None)
    assert len(statements.selects) == 1  # one statement, no count

    statements.seen.clear()
    counted = await query(world, "QtHostVO", "cpu>2", count=True, limit=1, start=1)
    assert (counted.rows, counted.total) == ([], 3)  # the total ignores the paging
    assert len(statements.selects) == 1
    assert "count" in statements.selects[0][0].lower()

    statements.seen.clear()
    both = await query(world, "QtHostVO", "cpu>2", reply_with_count=True, limit=1, start=1)
    assert ([r.name for r in both.rows], both.total) == (["h1"], 3)
    assert len(statements.selects) == 2

    statements.seen.clear()
    deep = await query(world, "QtZoneVO", "cluster.host.vm.name=v3", "cluster.__userTag__=blue",
                       reply_with_count=True)
    assert ([r.name for r in deep.rows], deep.total) == (["z2"], 1)
    assert len(statements.selects) == 2  # expansions and tags are subqueries, not queries

    nothing = await query(world, "QtHostVO", "cpu>100", reply_with_count=True)
    assert (nothing.rows, nothing.total) == ([], 0)


async def test_rows_are_detached_instances_with_every_column_loaded(world: Database) -> None:
    result = await query(world, "QtHostVO", "name=h1")
    (host,) = result.rows
    assert isinstance(host, QtHostVO)
    state = sa_inspect(host)
    assert state.detached and not state.unloaded
    assert (host.uuid, host.cpu, host.enabled, host.memory, host.load, host.description) == \
        (HOSTS["h1"], 4, True, 1024, 0.5, "web host")
    assert host.lastSeen == T0 and host.clusterUuid == CLUSTERS["c1"]


# --------------------------------------------------------------------------- row by row


def row_by_row_engine(monkeypatch: pytest.MonkeyPatch, cap: int = 0,
                      expansions: dict[tuple[str, str], Provided] = EXPANSIONS
                      ) -> QueryEngine:
    """A fresh engine whose probes' cap is ``cap``: with 0, a query with a limit tests every
    condition on related rows row by row (a correlated scalar subquery or EXISTS),
    whatever the data."""
    monkeypatch.setattr(zcore.query, "_PROBE_MIN", cap)
    monkeypatch.setattr(zcore.query, "_PROBE_MAX", cap)
    return QueryEngine(RESOURCE_TYPES, expansions, LABELS)


UUIDS = {**ZONES, **CLUSTERS, **HOSTS, **VMS}
OWNED_BY_A = {"z1", "c1", "c2", "h1", "h2", "v1", "v2"}

#: Conditions on related rows and what they match, negative operators applying inside.
RELATED_CASES: list[tuple[str, str, list[str]]] = [
    ("QtHostVO", "cluster.name=c1", ["h1", "h2"]),
    ("QtHostVO", "cluster.name!=c1", ["h3", "h4"]),
    ("QtHostVO", "cluster.zone.name!=z1", ["h3"]),
    ("QtHostVO", "cluster.host.name=h2", ["h1", "h2"]),
    ("QtHostVO", "cluster.host.name!=h2", ["h1", "h2", "h3", "h4"]),
    ("QtHostVO", "__userTag__=gold", ["h2"]),
    ("QtHostVO", "__userTag__ not null", ["h2", "h3"]),
    ("QtHostVO", "__systemTag__~=hostname::%", ["h1", "h3"]),
    ("QtVmVO", "host.cluster.zone.name!=z1", ["v3"]),
    ("QtVmVO", "host.cluster.zone.name?=z1,z2", ["v1", "v2", "v3"]),
    ("QtVmVO", "host.name not null", ["v1", "v2", "v3"]),
    ("QtVmVO", "host.__systemTag__=hostname::db-1", ["v3"]),
    ("QtZoneVO", "cluster.name!=c1", ["z1", "z2"]),
    ("QtZoneVO", "cluster.name!?=c1,c2", ["z2"]),
    ("QtZoneVO", "cluster.host.vm.name!=v1", ["z1", "z2"]),
    ("QtZoneVO", "cluster.host.vm.name!?=v1,v2", ["z2"]),
    ("QtZoneVO", "cluster.host.vm.name=nope", []),
    ("QtZoneVO", "cluster.__userTag__!=blue", ["z1"]),
    ("QtZoneVO", "cluster.host.__systemTag__ is null", ["z1"]),
    ("QtClusterVO", "zone.cluster.name=c2", ["c1", "c2"]),
]


async def test_conditions_on_related_rows_give_the_same_rows_either_way(
        world: Database, statements: Statements, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a limit, a condition on related rows is tested with IN when few related rows
    match (always, on this little data) or row by row when many do (here: always)."""
    row_by_row = row_by_row_engine(monkeypatch)
    failures = []
    for resource_type, condition, expected in RELATED_CASES:
        by_pk = sorted(expected, key=UUIDS.__getitem__)
        pages: list[tuple[dict[str, Any], list[str]]] = [
            ({}, by_pk),
            ({"limit": 1}, by_pk[:1]),
            ({"start": 1, "limit": 2}, by_pk[1:3]),
            ({"sort_by": "name", "sort_direction": "desc", "limit": 2},
             sorted(expected, reverse=True)[:2]),
            ({"account": ACCOUNT_A, "limit": 5}, [n for n in by_pk if n in OWNED_BY_A]),
            ({"limit": None}, by_pk),
        ]
        for engine, how in ((ENGINE, "IN"), (row_by_row, "row by row")):
            for options, want in pages:
                statements.seen.clear()
                result = await query(world, resource_type, condition, engine=engine, **options)
                got = [row.name for row in result.rows]
                if got != want:
                    failures.append(f"{how}: {resource_type} {condition} {options}: expected "
                                    f"{want}, got {got}")
                rows_sql = statements.selects[-1][0]
                semi_join = "IN (SELECT" in rows_sql  # the account's filter is one too
                limited = options.get("limit", Query(resource_type).limit) is not None
                # in an index's order, row by row is scalar subqueries, each with a LIMIT
                scalar = how != "IN" and limited and "sort_by" not in options
                if (semi_join != (how == "IN" or "account" in options or not limited)
                        or (rows_sql.count("LIMIT") > 1) != scalar):
                    failures.append(f"{how}: {resource_type} {condition} {options}: not "
                                    f"tested as expected: {rows_sql}")
    assert not failures, "\n".join(failures)


async def test_a_capped_count_chooses_how_related_rows_are_tested(
        world: Database, statements: Statements, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = row_by_row_engine(monkeypatch, cap=2)
    cases: list[tuple[str, str, int, bool | None, list[str]]] = [
        # type, condition, probes run, tested row by row (None: nothing to test so), rows
        ("QtClusterVO", "host.cpu>1", 1, True, ["c1", "c2", "c3"]),  # 4 hosts reach the cap
        ("QtClusterVO", "host.name=h3", 1, False, ["c3"]),  # 1 host: 1 cluster at most
        ("QtHostVO", "cluster.zone.name=z1", 1, True, ["h2", "h4", "h1"]),  # 2 clusters
        ("QtHostVO", "cluster.name=c1", 2, True, ["h2", "h1"]),  # 1 cluster, 2 hosts in it
        ("QtHostVO", "cluster.name=c3", 2, False, ["h3"]),  # 1 cluster, 1 host
        ("QtHostVO", "__userTag__~=%l%", 1, True, ["h2", "h3"]),  # 3 tags (one on c3)
        ("QtHostVO", "cpu>2", 0, None, ["h2", "h1", "h3"]),  # no related rows: no probe
    ]
    for resource_type, condition, probes, row_by_row, rows in cases:
        statements.seen.clear()
        result = await query(world, resource_type, condition, engine=engine, limit=10)
        assert [r.name for r in result.rows] == rows, condition
        selects = [sql for sql, _ in statements.selects]
        assert len(selects) == probes + 1, (condition, selects)
        for probe in selects[:-1]:  # each reads at most the cap
            assert "LIMIT" in probe, probe
        if row_by_row is not None:
            assert ("IN (SELECT" not in selects[-1]) == row_by_row, (condition, selects[-1])

    # a condition matching few rows: those after it are tested on its rows, unprobed
    statements.seen.clear()
    result = await query(world, "QtHostVO", "cluster.name=c3", "cluster.zone.name?=z1,z2",
                         "__userTag__ not null", engine=engine, limit=10)
    assert [r.name for r in result.rows] == ["h3"]
    selects = [sql for sql, _ in statements.selects]
    assert len(selects) == 3, selects  # two probes, for the first condition only
    assert selects[-1].count("IN (SELECT") == 1, selects[-1]

    # without a limit every row is wanted: no probe, IN
    statements.seen.clear()
    result = await query(world, "QtHostVO", "cluster.zone.name=z1", engine=engine, limit=None)
    assert [r.name for r in result.rows] == ["h2", "h4", "h1"]
    assert len(statements.selects) == 1 and "IN (SELECT" in statements.selects[0][0]
    # a total below the cap: few rows, no probe
    statements.seen.clear()
    result = await query(world, "QtHostVO", "cluster.name=c3", engine=engine,
                         reply_with_count=True)
    assert ([r.name for r in result.rows], result.total) == (["h3"], 1)
    assert len(statements.selects) == 2


# --------------------------------------------------------------------------- introspection


def test_introspection() -> None:
    assert ENGINE.queryable("QtHostVO") and ENGINE.queryable("QtPublicZoneVO")
    assert not ENGINE.queryable("QtAbstractVO") and not ENGINE.queryable("NopeVO")
    assert ENGINE.fields("QtHostVO") == [
        "clusterUuid", "cpu", "createDate", "description", "enabled", "lastOpDate",
        "lastSeen", "load", "memory", "name", "uuid"]
    assert ENGINE.fields("QtCounterVO") == ["id", "name", "value"]
    assert ENGINE.expansions("QtHostVO") == {"cluster": "QtClusterVO", "vm": "QtVmVO"}
    assert ENGINE.expansions("QtCounterVO") == {}
    described = ENGINE.describe()
    assert list(described) == ["QtZoneVO", "QtClusterVO", "QtHostVO", "QtVmVO", "QtCounterVO",
                               "QtPublicZoneVO", "QtUserTagVO"]
    assert described["QtZoneVO"] == {
        "fields": ["createDate", "description", "lastOpDate", "name", "state", "uuid"],
        "expansions": {"cluster": "QtClusterVO"}}
    with pytest.raises(ZError, match="SYS.1007"):
        ENGINE.fields("QtAbstractVO")


# --------------------------------------------------------------------------- start-up


def build(*expansions: QueryExpansion, plugin: str = "qt-extra",
          types: dict[str, Provided] | None = None,
          labels: dict[str, str] | None = LABELS) -> QueryEngine:
    return QueryEngine(types if types is not None else RESOURCE_TYPES,
                       {(e.resource, e.name): Provided(plugin, e) for e in expansions}, labels)


def test_valid_expansions_build() -> None:
    engine = build(*EXPANSION_LIST)
    assert engine.describe() == ENGINE.describe()
    assert build().expansions("QtHostVO") == {}


def test_every_bad_expansion_is_reported_at_once_naming_the_plugin() -> None:
    with pytest.raises(StartupError) as caught:
        build(
            QueryExpansion("QtNopeVO", "zone", "QtZoneVO"),
            QueryExpansion("QtHostVO", "ghost", "QtGohstVO"),
            QueryExpansion("QtHostVO", "abstract", "QtAbstractVO"),
            QueryExpansion("QtAbstractVO", "zone", "QtZoneVO"),
            QueryExpansion("QtHostVO", "cluster", "QtClusterVO", local_key="clusterUid"),
            QueryExpansion("QtClusterVO", "host", "QtHostVO", foreign_key="clusterUid"),
            QueryExpansion("QtHostVO", "cpu", "QtVmVO", foreign_key="hostUuid"),
            QueryExpansion("QtHostVO", "a.b", "QtVmVO", foreign_key="hostUuid"),
            QueryExpansion("QtVmVO", "host", "QtHostVO", local_key="hostUuid"),  # fine
        )
    message = str(caught.value)
    problems = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(problems) == 8, message
    assert all(p.startswith("  - plugin 'qt-extra' (2.0, extra): query expansion ")
               for p in problems), message
    assert "'zone' of QtNopeVO: its resource QtNopeVO is not a declared resource type" in message
    assert "its target QtGohstVO is not a declared resource type" in message
    assert "Did you mean 'QtHostVO'?" in message
    assert "its target QtAbstractVO has no model" in message
    assert "its resource QtAbstractVO has no model" in message
    assert "local_key 'clusterUid' is not a column of QtHostVO" in message
    assert "foreign_key 'clusterUid' is not a column of QtHostVO" in message
    assert "Did you mean 'clusterUuid'?" in message
    assert "'cpu' of QtHostVO: the name shadows the column 'cpu' of QtHostVO" in message
    assert "'a.b' of QtHostVO: the name must not contain '.'" in message


def test_start_up_errors_name_plugins_without_labels() -> None:
    with pytest.raises(StartupError, match="plugin 'mine': query expansion 'x' of QtHostVO"):
        build(QueryExpansion("QtHostVO", "x", "QtNopeVO"), plugin="mine", labels=None)


def test_bad_resource_types_are_reported() -> None:
    types = {
        **RESOURCE_TYPES,
        "QtBadOwnerVO": Provided("qt", ResourceType("QtBadOwnerVO", model=QtCounterVO)),
        "QtUnmappedVO": Provided("qt", ResourceType("QtUnmappedVO", model=NotAModel)),
    }
    with pytest.raises(StartupError) as caught:
        build(types=types)
    message = str(caught.value)
    assert ("plugin 'qt' (1.0, qt-dist): resource type QtBadOwnerVO: owned_through 'uuid' is "
            "not a column of QtCounterVO") in message
    assert "plugin 'qt' (1.0, qt-dist): resource type QtUnmappedVO: model" in message
    assert "is not a mapped SQLAlchemy class" in message


# --------------------------------------------------------------------------- property


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PLUS_2 = timezone(timedelta(hours=2))
_TAGS = ["gold", "silver", "blue"]


@dataclass
class Host:
    uuid: str
    name: str
    description: str | None
    cpu: int
    memory: int | None
    enabled: bool
    load: float | None
    lastSeen: datetime | None
    cluster: str
    tags: list[str]


@dataclass
class Crowd:
    hosts: list[Host]
    clusters: dict[str, tuple[str, str]]  # uuid -> (name, zone uuid)
    zones: dict[str, str]  # uuid -> name
    times: list[datetime]

    def value(self, host: Host, field: str) -> Any:
        if field == "cluster.name":
            return self.clusters[host.cluster][0]
        if field == "cluster.zone.name":
            return self.zones[self.clusters[host.cluster][1]]
        return getattr(host, field)


def make_crowd(seed: int = 7) -> Crowd:
    rnd = random.Random(seed)

    def word() -> str:
        return "".join(rnd.choice("abc") for _ in range(rnd.randint(0, 3)))

    zones = {u(5, i): word() for i in range(3)}
    clusters = {u(6, i): (word(), rnd.choice(list(zones))) for i in range(6)}
    base = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    times = [base + timedelta(seconds=rnd.randint(0, 5), microseconds=rnd.choice([0, 1, 999]))
             for _ in range(6)]
    hosts = [
        Host(uuid=u(7, rnd.randrange(16 ** 8) * 64 + i), name=word(),
             description=rnd.choice([None, word()]), cpu=rnd.randint(0, 16),
             memory=rnd.choice([None, rnd.randint(0, 4)]), enabled=rnd.random() < 0.5,
             load=rnd.choice([None, rnd.randint(0, 4) / 2]), lastSeen=rnd.choice([None, *times]),
             cluster=rnd.choice(list(clusters)),
             tags=rnd.sample(_TAGS, rnd.randint(0, 2)))
        for i in range(40)
    ]
    return Crowd(hosts, clusters, zones, times)


def store_crowd(session: Session, crowd: Crowd) -> None:
    for uuid, name in crowd.zones.items():
        add_resource(session, QtZoneVO(uuid=uuid, name=name), "QtZoneVO")
    for uuid, (name, zone) in crowd.clusters.items():
        add_resource(session, QtClusterVO(uuid=uuid, name=name, zoneUuid=zone), "QtClusterVO")
    for h in crowd.hosts:
        add_resource(session, QtHostVO(
            uuid=h.uuid, name=h.name, description=h.description, cpu=h.cpu, memory=h.memory,
            enabled=h.enabled, load=h.load, lastSeen=h.lastSeen, clusterUuid=h.cluster),
            "QtHostVO")
        session.add_all([UserTagVO(resourceUuid=h.uuid, resourceType="QtHostVO", tag=t)
                         for t in h.tags])


def like(pattern: str, text: str) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    "~=": lambda a, b: like(b, str(a)), "!~=": lambda a, b: not like(b, str(a)),
    "?=": lambda a, b: a in b, "!?=": lambda a, b: a not in b,
}


def holds(op: str, actual: Any, value: Any) -> bool:
    """SQL's answer: NULL matches only ``is null``."""
    if op == "is null":
        return actual is None
    if op == "not null":
        return actual is not None
    return actual is not None and _COMPARE[op](actual, value)


def tag_holds(op: str, tags: list[str], value: Any) -> bool:
    if op == "is null":
        return not tags
    if op == "not null":
        return bool(tags)
    negative = {"!=": "=", "!~=": "~=", "!?=": "?="}
    if op in negative:
        return not any(_COMPARE[negative[op]](t, value) for t in tags)
    return any(_COMPARE[op](t, value) for t in tags)


_ORDER_OPS = ["=", "!=", ">", ">=", "<", "<="]
_LIST_OPS = ["?=", "!?="]
_NULL_OPS = ["is null", "not null"]


@st.composite
def conditions(draw: st.DrawFn, crowd: Crowd) -> tuple[str, str, str | None, Any]:
    """A condition on a host: (field, op, text of the value, the value for Python)."""
    field = draw(st.sampled_from(["name", "description", "cpu", "memory", "enabled", "load",
                                  "lastSeen", "cluster.name", "cluster.zone.name",
                                  "__userTag__"]))
    word = st.text(alphabet="abc", max_size=3)
    if field in ("name", "description", "cluster.name", "cluster.zone.name", "__userTag__"):
        single: st.SearchStrategy[tuple[str, Any]] = (
            st.sampled_from(_TAGS) if field == "__userTag__" else word).map(lambda s: (s, s))
        likes = True
    elif field in ("cpu", "memory"):
        single = st.integers(-1, 17).map(lambda i: (str(i), i))
        likes = True
    elif field == "enabled":
        single = st.sampled_from(["true", "false", "TRUE", "False"]).map(
            lambda s: (s, s.lower() == "true"))
        likes = False
    elif field == "load":
        single = st.integers(-1, 5).map(lambda i: (str(i / 2), i / 2))
        likes = False
    else:
        moment = st.builds(lambda t, d: t + timedelta(microseconds=d),
                           st.sampled_from(crowd.times), st.sampled_from([-1, 0, 1, 1000]))
        single = moment.flatmap(lambda t: st.sampled_from(
            [(t.isoformat(), t), (t.replace(tzinfo=None).isoformat(sep=" "), t),
             (t.astimezone(UTC).isoformat().replace("+00:00", "Z"), t),
             (t.astimezone(PLUS_2).isoformat(), t)]
            + ([(str((t - _EPOCH) // timedelta(milliseconds=1)), t)]
               if t.microsecond % 1000 == 0 else [])))
        likes = False
    ops = _ORDER_OPS + _LIST_OPS + _NULL_OPS + (["~=", "!~="] if likes else [])
    op = draw(st.sampled_from(ops))
    if op in _NULL_OPS:
        return field, op, None, None
    if op in _LIST_OPS:
        items = draw(st.lists(single, min_size=1, max_size=3))
        return field, op, ",".join(t for t, _ in items), [v for _, v in items]
    if op in ("~=", "!~="):
        pattern = draw(st.text(alphabet="abc1%_", max_size=4))
        return field, op, pattern, pattern
    text, value = draw(single)
    return field, op, text, value


@pytest.mark.parametrize("row_by_row", [False, True], ids=["in", "row-by-row"])
async def test_results_match_a_python_filter(tables: Database, row_by_row: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    engine = row_by_row_engine(monkeypatch) if row_by_row else ENGINE
    crowd = make_crowd()
    await tables.run(store_crowd, crowd)
    by_cluster: dict[str, list[Host]] = {}
    for h in crowd.hosts:
        by_cluster.setdefault(h.cluster, []).append(h)

    def matches(host: Host, cond: tuple[str, str, str | None, Any]) -> bool:
        field, op, _, value = cond
        if field == "__userTag__":
            return tag_holds(op, host.tags, value)
        return holds(op, crowd.value(host, field), value)

    @settings(max_examples=100 if row_by_row else 200, deadline=None, derandomize=True)
    @given(conds=st.lists(conditions(crowd), min_size=1, max_size=3),
           sort_by=st.sampled_from([None, "name", "cpu", "enabled"]),
           desc=st.booleans(), start=st.integers(0, 5), limit=st.sampled_from([None, 0, 3, 50]))
    def check_hosts(conds: list[tuple[str, str, str | None, Any]], sort_by: str | None,
                    desc: bool, start: int, limit: int | None) -> None:
        parsed = tuple(parse_condition(f"{f}{op}{text}" if text is not None else f"{f} {op}")
                       for f, op, text, _ in conds)
        # hosts: every condition on the host itself
        q = Query("QtHostVO", parsed, limit=limit, start=start, sort_by=sort_by,
                  sort_direction="desc" if desc else "asc", reply_with_count=True)
        result = tables.run_sync(engine.run, q)
        expected = sorted((h for h in crowd.hosts if all(matches(h, c) for c in conds)),
                          key=lambda h: h.uuid)
        if sort_by is not None:
            expected.sort(key=lambda h: getattr(h, sort_by), reverse=desc)
        elif desc:
            expected.reverse()
        note_event("hosts matching: " + ("none" if not expected else "all"
                                    if len(expected) == len(crowd.hosts) else "some"))
        assert result.total == len(expected), parsed
        page = expected[start:None if limit is None else start + limit]
        assert [r.uuid for r in result.rows] == [h.uuid for h in page], parsed

        # clusters: the same conditions through the one-to-many expansion "host"
        through = tuple(Condition(f"host.{c.field}", c.op, c.value) for c in parsed)
        clusters = tables.run_sync(engine.run, Query("QtClusterVO", through,
                                                     limit=100 if row_by_row else None))
        want = sorted(uuid for uuid in crowd.clusters
                      if all(any(matches(h, c) for h in by_cluster.get(uuid, []))
                             for c in conds))
        note_event(f"clusters matching: {len(want)} of {len(crowd.clusters)}")
        assert [r.uuid for r in clusters.rows] == want, through

    check_hosts()


# --------------------------------------------------------------------------- many to many


class QtPinVO(Base):
    """Which VMs are pinned to which zones: a link table with no resource row."""

    __tablename__ = "QtPinVO"
    id: Mapped[int] = mapped_column(Integer(), primary_key=True)
    zoneUuid: Mapped[str] = mapped_column(String(32))
    vmUuid: Mapped[str] = mapped_column(String(32))


PIN_EXPANSIONS = {
    **EXPANSIONS,
    ("QtZoneVO", "vm"): Provided("qt", QueryExpansion(
        "QtZoneVO", "vm", "QtVmVO", through=(QtPinVO, "zoneUuid", "vmUuid"))),
    ("QtVmVO", "zone"): Provided("qt", QueryExpansion(
        "QtVmVO", "zone", "QtZoneVO", through=(QtPinVO, "vmUuid", "zoneUuid"))),
}
PIN_ENGINE = QueryEngine(RESOURCE_TYPES, PIN_EXPANSIONS, LABELS)


@pytest.mark.parametrize("row_by_row", [False, True], ids=["in", "row-by-row"])
async def test_many_to_many_expansions_go_through_a_link_table(
        world: Database, row_by_row: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = (row_by_row_engine(monkeypatch, expansions=PIN_EXPANSIONS) if row_by_row
              else PIN_ENGINE)
    Base.metadata.create_all(world.engine, tables=[Base.metadata.tables["QtPinVO"]])

    def pin(session: Session) -> None:
        session.add_all([QtPinVO(zoneUuid=ZONES[z], vmUuid=VMS[v])
                         for z, v in (("z1", "v1"), ("z1", "v3"), ("z2", "v3"))])

    await world.run(pin)

    async def found(resource_type: str, condition: str) -> list[str]:
        result = await query(world, resource_type, condition, engine=engine, limit=10)
        return sorted(row.name for row in result.rows)

    assert await found("QtZoneVO", "vm.name=v3") == ["z1", "z2"]
    assert await found("QtZoneVO", "vm.name=v1") == ["z1"]
    assert await found("QtZoneVO", "vm.name=v4") == []
    assert await found("QtVmVO", "zone.name=z2") == ["v3"]
    assert await found("QtVmVO", "zone.cluster.name=c1") == ["v1", "v3"]
    assert await found("QtZoneVO", "vm.host.name=h3") == ["z1", "z2"]


def test_a_link_table_is_checked_at_start_up() -> None:
    with pytest.raises(StartupError, match="'zoneUid' is not a column of the link table QtPinVO"):
        QueryEngine(RESOURCE_TYPES, {("QtZoneVO", "vm"): Provided("qt", QueryExpansion(
            "QtZoneVO", "vm", "QtVmVO", through=(QtPinVO, "zoneUid", "vmUuid")))}, LABELS)


async def test_rows_of_columns_hold_what_the_model_instances_hold(world: Database) -> None:
    columns = ("uuid", "name", "cpu", "enabled", "memory", "load", "lastSeen", "createDate")
    cases: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        ((), {}),
        (("cpu>2",), {"sort_by": "cpu", "sort_direction": "desc"}),
        (("cluster.zone.name=z1",), {"limit": 1, "start": 1}),
        (("vm.name?=v1,v3", "__systemTag__~=hostname::%"), {"sort_by": "name"}),
        (("enabled=false",), {"account": ACCOUNT_A}),
        ((), {"reply_with_count": True, "limit": 2}),
    ]
    for conditions, options in cases:
        account = options.pop("account", None)
        q = Query("QtHostVO", tuple(parse_condition(c) for c in conditions), **options)
        models = await world.run(ENGINE.run, q, account_uuid=account)
        rows = await world.run(ENGINE.run, q, account_uuid=account, columns=columns)
        assert models.rows, (conditions, options)
        assert [tuple(getattr(m, c) for c in columns) for m in models.rows] == \
            [tuple(r) for r in rows.rows], (conditions, options)
        assert [r.name for r in rows.rows] == [m.name for m in models.rows]
        assert rows.total == models.total
    assert ENGINE.plain("QtHostVO") and ENGINE.plain("QtCounterVO")
