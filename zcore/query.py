"""The query engine: ZStack query conditions compiled into one SQLAlchemy SELECT.

A query names a resource type (``VmInstanceVO``) and conditions such as ``name=vm1``,
``cpuNum>=2``, ``vmNics.l3Network.l2Network.name?=a,b`` or ``__userTag__~=gold%``.
:func:`parse_condition` splits the text of one condition; :class:`QueryEngine` checks every
field against the models and the registered :class:`~zcore.records.QueryExpansion` records,
converts each value to its column's type and builds one statement for the rows (and one for
the total). Values only ever reach the database as bound parameters, and field names only as
mapped attributes that exist, so a query cannot inject SQL.

Expansions compile to semi-joins, one per condition, each level on a table alias of its own,
so a row never appears twice, a one-to-many expansion matches when any related row matches,
and the same table may appear at several depths (``QueryCluster zone.cluster.name=c2``). A
negative operator on an expanded field applies inside: ``cluster.name!=c1`` matches a zone
that has a cluster not named ``c1``, as in ZStack. As in SQL, a NULL column matches no
comparison (not even ``!=``); only ``is null`` matches it.

A semi-join is written one of two ways, with the same rows. Nested ``IN (SELECT ...)`` lets the
database start from the related rows: best when they are few, but it collects every related
key before the first row comes out. Nested correlated ``EXISTS`` lets it walk the rows in the
order asked and stop at ``limit``: best when most rows match, slow when few do. Without a
limit every row is wanted, and ``IN`` is used. With one, a count of the related rows that
match, capped at a few thousand, chooses before the rows are read: ``EXISTS`` when it reaches
the cap, ``IN`` otherwise. When a related row may match several rows (``host.cluster``, not
``cluster.host``), a low count is followed by a capped count of the rows they match. Once a
condition matches fewer rows than the cap, the database starts from those rows, and the
conditions not yet probed are tested on each of them.

When the rows are asked in an index's order (the primary key's, by default), each ``EXISTS``
is written as a correlated scalar subquery, ``(SELECT ... LIMIT 1) IS NOT NULL``, the same
test. PostgreSQL and MariaDB turn ``EXISTS`` back into a semi-join, which they may then plan
without regard to the limit, collecting every related key (MariaDB always, PostgreSQL while
the tables have no statistics yet); a scalar subquery they run row by row as they walk the
index, each level an index lookup. In any other order every row is read and sorted anyway,
and ``EXISTS`` leaves them free to collect the keys once.

Values arrive as text and are converted to the column's Python type: integers, numbers,
booleans (``true``/``false``), times (ISO 8601, naive meaning UTC, or epoch milliseconds);
``?=``/``!?=`` split their lists on ``,`` and convert each item; ``~=``/``!~=`` take SQL LIKE
patterns (``%``, ``_``) and compare a non-text column as text.

``__systemTag__`` and ``__userTag__`` (on models with a ``uuid`` column, also at the end of
an expansion path) match the row's :class:`~zcore.db.SystemTagVO` / :class:`~zcore.db.UserTagVO`
rows: a positive operator means "some tag matches", a negative one "no tag matches the
positive operator", ``is null`` "no tag at all" and ``not null`` "some tag".

A normal account (``account_uuid``) sees only rows whose ``owned_through`` column holds the
uuid of a :class:`~zcore.db.ResourceVO` it owns; an administrator (``None``) sees every row,
and so does every account for a resource type with ``owned_through=None``.

The engine is synchronous: call :meth:`QueryEngine.run` inside ``await db.run(...)``::

    result = await node.db.run(engine.run, Query("ZoneVO", (parse_condition("name=z1"),)),
                               account_uuid=session_account)
"""

from __future__ import annotations

import difflib
import functools
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    String,
    UniqueConstraint,
    bindparam,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper, Session, aliased, undefer
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.types import DateTime, TypeDecorator, TypeEngine

from zcore.db import ResourceVO, SystemTagVO, UserTagVO, UTCDateTime
from zcore.errors import INVALID_ARGUMENT, StartupError, ZError
from zcore.records import QueryExpansion, ResourceType
from zcore.registry import Provided

__all__ = [
    "OPERATORS",
    "Condition",
    "Query",
    "QueryEngine",
    "QueryResult",
    "QuerySyntaxError",
    "parse_condition",
]

#: The operators of a query condition, in the order ZStack tries them, so that ``=`` is not
#: taken for the end of ``!=``. ``is null`` and ``not null`` take no value.
OPERATORS: tuple[str, ...] = ("!=", ">=", "<=", "!?=", "!~=", "~=", "?=", "=", ">", "<",
                              " is null", " not null")

_NULL_OPS = ("is null", "not null")
_VALUE_OPS = frozenset(op for op in OPERATORS if not op.startswith(" "))
_ALL_OPS = _VALUE_OPS | frozenset(_NULL_OPS)
#: A negative operator on a tag field means "no tag matches the positive one".
_POSITIVE = {"!=": "=", "!~=": "~=", "!?=": "?="}
_TAG_FIELDS: dict[str, type] = {"__systemTag__": SystemTagVO, "__userTag__": UserTagVO}
_INT = re.compile(r"^\s*[+-]?\d+\s*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CACHE_SIZE = 4096
#: Built statements kept for queries asked again (see QueryEngine._statements).
_STATEMENT_CACHE_SIZE = 1024
#: A condition on related rows is tested row by row when at least this many related rows
#: match: ``_PROBE_PER_ROW`` per row up to ``start + limit``, within ``_PROBE_MIN`` and
#: ``_PROBE_MAX`` (the most a probe reads). Below it, IN collects few keys; above it, walking
#: the rows finds those asked for within about as many tests per row.
_PROBE_MIN = 1000
_PROBE_MAX = 10_000
_PROBE_PER_ROW = 20
_SHOWN = ", ".join(op.strip() for op in OPERATORS)


class QuerySyntaxError(ZError):
    """A query condition that cannot be parsed: ``SYS.1007``, answered with HTTP 400."""

    def __init__(self, details: str) -> None:
        super().__init__(INVALID_ARGUMENT, "invalid query condition", details)


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition: ``field`` (a column or a dotted expansion path), ``op``, ``value``.

    ``op`` is one of :data:`OPERATORS` without the leading space (``is null``, ``not null``);
    ``value`` is ``None`` for those two and the raw text otherwise (for ``?=`` and ``!?=``
    the comma-separated list, split when the query is compiled).
    """

    field: str
    op: str
    value: str | None = None


@functools.lru_cache(maxsize=4096)
def parse_condition(text: str) -> Condition:
    """Split ``name=vm1``, ``cpuNum>=2``, ``zone.name?=a,b``, ``description is null``.

    The operator is the first one that occurs in ``text``; when two start at the same place
    (``>=`` and ``>``) the one listed first in :data:`OPERATORS` wins. For a well-formed
    condition (a field holds no operator characters) this is ZStack's rule of trying the
    operators in order; in addition a value may itself contain an operator
    (``name=a>=b`` is ``name`` ``=`` ``a>=b``). The field is stripped, the value is not.
    Raises :class:`QuerySyntaxError` when there is no operator, the field is empty, or text
    follows ``is null`` / ``not null``. The conditions parsed last are remembered: a client
    asks the same ones again and again, and a :class:`Condition` cannot change.
    """
    best: tuple[int, str] | None = None
    for op in OPERATORS:
        pos = text.find(op)
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, op)
    if best is None:
        raise QuerySyntaxError(
            f"query condition {text!r} has no operator; use <field><operator><value> with "
            f"one of the operators {_SHOWN} (e.g. name=vm1, cpuNum>=2, name?=a,b, "
            "name~=web%, description is null)")
    pos, op = best
    field = text[:pos].strip()
    rest = text[pos + len(op):]
    if not field:
        raise QuerySyntaxError(f"query condition {text!r} names no field before the operator "
                               f"'{op.strip()}'; use <field><operator><value>, e.g. name=vm1")
    if op.startswith(" "):
        if rest.strip():
            raise QuerySyntaxError(f"query condition {text!r}: nothing may follow "
                                   f"'{op.strip()}', found {rest!r}")
        return Condition(field, op.strip(), None)
    return Condition(field, op, rest)


@dataclass(frozen=True, slots=True)
class Query:
    """A query on ``resource_type``: every condition must hold (they are ANDed).

    ``limit`` (``None``: no limit) and ``start`` page the rows; ``sort_by`` is a column of
    the resource type's model, ``sort_direction`` ``asc`` or ``desc``; without ``sort_by``
    rows come in primary-key order. ``count`` returns only the total; ``reply_with_count``
    the rows and the total of all matches.
    """

    resource_type: str
    conditions: tuple[Condition, ...] = ()
    limit: int | None = 1000
    start: int = 0
    sort_by: str | None = None
    sort_direction: str = "asc"
    count: bool = False
    reply_with_count: bool = False


@dataclass
class QueryResult:
    """The rows (detached model instances) and, when asked for, the total of all matches."""

    rows: list[Any]
    total: int | None = None


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True, slots=True)
class _Column:
    key: str
    python_type: type | None  # None: not known, compared as given
    naive: bool  # a plain DateTime without time zone: bind naive UTC


_TAG_TEXT = _Column("tag", str, False)


@dataclass(slots=True)
class _Type:
    name: str
    plugin: str
    model: type
    columns: dict[str, _Column]
    pk: tuple[str, ...]
    owned_through: str | None
    expansions: dict[str, QueryExpansion]
    indexed: frozenset[str]  # the columns an index (or the primary key) begins with

    @property
    def has_uuid(self) -> bool:
        return "uuid" in self.columns

    def field_names(self) -> list[str]:
        return sorted(self.columns)

    def vocabulary(self) -> list[str]:
        tags = list(_TAG_FIELDS) if self.has_uuid else []
        return [*sorted(self.columns), *sorted(self.expansions), *tags]


@dataclass(frozen=True, slots=True)
class _Path:
    hops: tuple[tuple[QueryExpansion, _Type], ...]  # each expansion and the type it reaches
    terminal: str  # a column key of the last type, or a tag field
    owner: _Type  # the type the terminal belongs to


@dataclass(frozen=True, slots=True)
class _Term:
    """One condition compiled: ``plain``, the predicate with nested ``IN`` semi-joins.

    A condition on related rows (an expansion, a positive tag condition) may also be tested
    row by row: ``correlated`` is the same test with nested correlated ``EXISTS``, and
    ``scalar`` with nested correlated scalar subqueries (``(SELECT ... LIMIT 1) IS NOT
    NULL``), which no database turns into a semi-join (see the module's documentation).
    ``keys`` is the outermost subquery of ``plain`` (the keys of the related rows that
    match), which the probes count, and ``local_key`` the row's column they are compared
    with; ``unique`` whether one key matches at most one row (``local_key`` is the row's
    primary key), so that counting keys bounds the rows.
    """

    plain: ColumnElement[bool]
    keys: Select[Any] | None = None
    correlated: ColumnElement[bool] | None = None
    scalar: ColumnElement[bool] | None = None
    local_key: str = "uuid"
    unique: bool = True


@dataclass(frozen=True, slots=True)
class _Probe:
    """How to tell whether condition ``term`` of a query is dense (matches at least the
    plan's cap): ``keys`` counts its related keys, up to the cap; or, when ``rows`` is set
    (a key may match several rows), selects them, up to the cap, and ``rows`` counts, up to
    the cap, the rows that have one of them (bound as ``keys``: a plain index lookup, where
    a semi-join may be planned as a scan on MariaDB)."""

    term: int
    keys: Select[Any]
    rows: Select[Any] | None


@dataclass(slots=True)
class _Plan:
    """The statements of one query, built once and reused while the query is cached.

    ``probes`` tell which conditions that may be tested either way are dense.
    ``indexed_order``: the rows are asked in the order of an index (the primary key's, or
    ascending by a column an index begins with), so a database can walk them in order and
    stop at the limit. The rows statement is built once for each set of conditions found
    dense.
    """

    model: Any
    terms: tuple[_Term, ...]
    account: tuple[ColumnElement[bool], ...]
    order: tuple[Any, ...]
    indexed_order: bool
    start: int
    limit: int | None
    counted: Select[Any] | None
    probes: tuple[_Probe, ...]
    cap: int
    variants: dict[tuple[frozenset[int], bool, tuple[str, ...] | None], Select[Any]]

    def choose(self, session: Session) -> frozenset[int]:
        """The conditions to test row by row: those found dense, until one is not; fewer
        rows than the cap match that one, and so the query: the database starts from them
        (``IN``) and the conditions left are tested on each of them, without probing."""
        dense: set[int] = set()
        for n, probe in enumerate(self.probes):
            if self.dense(session, probe):
                dense.add(probe.term)
            else:
                dense.update(p.term for p in self.probes[n + 1:])
                break
        return frozenset(dense)

    def dense(self, session: Session, probe: _Probe) -> bool:
        """Whether the condition ``probe`` is about matches at least ``cap`` rows."""
        if probe.rows is None:
            return int(session.execute(probe.keys).scalar_one()) >= self.cap
        keys = list(session.scalars(probe.keys))
        if len(keys) >= self.cap:
            return True
        keys = [key for key in keys if key is not None]
        return bool(keys) and int(session.execute(probe.rows, {"keys": keys}).scalar_one()
                                  ) >= self.cap

    def rows(self, dense: frozenset[int], scalar: bool,
             columns: tuple[str, ...] | None = None) -> Select[Any]:
        """The rows statement testing the conditions ``dense`` row by row: with ``EXISTS``,
        or, when ``scalar``, with scalar subqueries. It selects the model, or only
        ``columns`` (mapped attribute keys) when given."""
        key = (dense, scalar, columns)
        stmt = self.variants.get(key)
        if stmt is None:  # two threads may both build it: the same statement, harmless
            where: list[ColumnElement[bool]] = []
            for i, term in enumerate(self.terms):
                form = term.scalar if scalar else term.correlated
                where.append(form if i in dense and form is not None else term.plain)
            if columns is None:
                stmt = select(self.model).options(undefer("*"))
            else:
                stmt = select(*(_labelled(getattr(self.model, c), c) for c in columns))
            stmt = stmt.where(*where, *self.account).order_by(*self.order)
            if self.start:
                stmt = stmt.offset(self.start)
            if self.limit is not None:
                stmt = stmt.limit(self.limit)
            self.variants[key] = stmt
        return stmt


def _labelled(attribute: Any, key: str) -> Any:
    """A mapped column, named by its attribute key in a row (it may differ from the
    column's name)."""
    return attribute if attribute.expression.name == key else attribute.label(key)


def _python_type(column_type: TypeEngine[Any]) -> type | None:
    while isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    try:
        return column_type.python_type
    except NotImplementedError:
        return None


def _columns(mapper: Mapper[Any], hidden: tuple[str, ...] = ()) -> dict[str, _Column]:
    out: dict[str, _Column] = {}
    for prop in mapper.column_attrs:
        if prop.key in hidden:
            continue
        column_type = prop.columns[0].type
        naive = (isinstance(column_type, DateTime) and not column_type.timezone
                 and not isinstance(column_type, UTCDateTime))
        out[prop.key] = _Column(prop.key, _python_type(column_type), naive)
    return out


def _indexed(mapper: Mapper[Any]) -> frozenset[str]:
    """The attribute keys of the columns the primary key, an index or a unique constraint
    begins with: the orders a database can read rows in without sorting them."""
    firsts = [mapper.primary_key[0]]
    for table in mapper.tables:
        firsts += [index.columns[0] for index in getattr(table, "indexes", ()) if index.columns]
        firsts += [constraint.columns[0] for constraint in getattr(table, "constraints", ())
                   if isinstance(constraint, UniqueConstraint) and constraint.columns]
    keys = set()
    for column in firsts:
        try:
            keys.add(mapper.get_property_by_column(column).key)
        except UnmappedColumnError:
            continue
    return frozenset(keys)


def _mapper(model: object) -> Mapper[Any] | None:
    mapper = sa_inspect(model, raiseerr=False)
    return mapper if isinstance(mapper, Mapper) else None


def _suggest(name: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" Did you mean '{prefix}{close[0]}'?" if close else ""


def _listing(t: _Type) -> str:
    text = f"valid fields of {t.name}: {', '.join(t.field_names())}"
    if t.expansions:
        text += f"; expansions: {', '.join(sorted(t.expansions))}"
    if t.has_uuid:
        text += f"; tags: {', '.join(_TAG_FIELDS)}"
    return text


def _bad_value(field: str, value: str, what: str) -> ZError:
    return ZError(INVALID_ARGUMENT, "invalid query value",
                  f"query field '{field}' holds {what}, not {value!r}")


def _parse_datetime(field: str, raw: str, naive: bool) -> datetime:
    text = raw.strip()
    try:
        if _INT.match(text):
            value = _EPOCH + timedelta(milliseconds=int(text))
        else:
            value = datetime.fromisoformat(text)
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise _bad_value(field, raw, "a time: ISO 8601 (2024-01-31T12:00:00, with or without an "
                         "offset; without one it is UTC) or epoch milliseconds") from exc
    return value.replace(tzinfo=None) if naive else value


def _convert(field: str, column: _Column, raw: str) -> Any:
    kind = column.python_type
    if kind is bool:
        low = raw.strip().lower()
        if low not in ("true", "false"):
            raise _bad_value(field, raw, "a boolean: true or false")
        return low == "true"
    if kind is int:
        if not _INT.match(raw):
            raise _bad_value(field, raw, "an integer")
        return int(raw)
    if kind is float:
        try:
            return float(raw)
        except ValueError as exc:
            raise _bad_value(field, raw, "a number") from exc
    if kind is Decimal:
        try:
            return Decimal(raw.strip())
        except InvalidOperation as exc:
            raise _bad_value(field, raw, "a number") from exc
    if kind is datetime:
        return _parse_datetime(field, raw, column.naive)
    if kind is date:
        try:
            return date.fromisoformat(raw.strip())
        except ValueError as exc:
            raise _bad_value(field, raw, "a date: YYYY-MM-DD") from exc
    return raw


def _found(related: Select[Any], form: str) -> ColumnElement[bool]:
    """Whether ``related`` (correlated, selecting a column never NULL) finds a row: with
    ``EXISTS``, or in ``scalar`` form with ``(SELECT ... LIMIT 1) IS NOT NULL``."""
    if form == "scalar":
        return related.limit(1).scalar_subquery().is_not(None)
    return related.exists()


_COMPARE: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
}


class QueryEngine:
    """Runs :class:`Query` objects against the models of the registered resource types.

    Built once at start-up from the registry's resource types and query expansions; every
    expansion is checked then (both resource types declared and backed by a model, both
    keys columns, the name shadowing no column), and every problem found is reported at
    once in a :class:`~zcore.errors.StartupError` naming the plugin. Resource types
    without a model are not queryable. The engine is immutable afterwards and safe to use
    from several worker threads.
    """

    def __init__(
        self,
        resource_types: Mapping[str, Provided],
        expansions: Mapping[tuple[str, str], Provided],
        labels: Mapping[str, str] | None = None,
    ) -> None:
        labels = labels or {}

        def label(plugin: str) -> str:
            return labels.get(plugin, f"plugin '{plugin}'")

        problems: list[str] = []
        self._types: dict[str, _Type] = {}
        declared: dict[str, ResourceType] = {}
        for name, provided in resource_types.items():
            rt: ResourceType = provided.record
            declared[name] = rt
            if rt.model is None:
                continue
            mapper = _mapper(rt.model)
            if mapper is None:
                problems.append(f"{label(provided.plugin)}: resource type {name}: model "
                                f"{rt.model!r} is not a mapped SQLAlchemy class")
                continue
            columns = _columns(mapper, rt.hidden)
            if rt.owned_through is not None and rt.owned_through not in columns:
                problems.append(
                    f"{label(provided.plugin)}: resource type {name}: owned_through "
                    f"'{rt.owned_through}' is not a column of {rt.model.__name__} (columns: "
                    f"{', '.join(sorted(columns))}); name the column holding the uuid whose "
                    "owner may see the row, or None for rows every account may read")
            pk = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
            self._types[name] = _Type(name, provided.plugin, rt.model, columns, pk,
                                      rt.owned_through, {}, _indexed(mapper))

        for (resource, exp_name), provided in expansions.items():
            exp: QueryExpansion = provided.record
            where = f"{label(provided.plugin)}: query expansion '{exp_name}' of {resource}"
            found = len(problems)
            if "." in exp_name:
                problems.append(f"{where}: the name must not contain '.', which separates the "
                                "steps of a field path")
            ends: list[_Type | None] = []
            for role, type_name in (("resource", resource), ("target", exp.target)):
                t = self._types.get(type_name)
                if t is None:
                    if type_name in declared:
                        problems.append(f"{where}: its {role} {type_name} has no model, so it "
                                        "cannot be queried")
                    else:
                        problems.append(f"{where}: its {role} {type_name} is not a declared "
                                        "resource type (is the plugin that declares it "
                                        "enabled?)" + _suggest(type_name, list(declared)))
                ends.append(t)
            source, target = ends
            if source is not None:
                if exp.local_key not in source.columns:
                    problems.append(f"{where}: local_key '{exp.local_key}' is not a column of "
                                    f"{source.name} (columns: "
                                    f"{', '.join(source.field_names())})"
                                    + _suggest(exp.local_key, source.field_names()))
                if exp_name in source.columns:
                    problems.append(f"{where}: the name shadows the column '{exp_name}' of "
                                    f"{source.name}; choose another name")
            if exp.through is not None:
                link, from_column, to_column = exp.through
                link_mapper = _mapper(link)
                if link_mapper is None:
                    problems.append(f"{where}: through={link!r} is not a mapped SQLAlchemy "
                                    "class")
                else:
                    link_columns = _columns(link_mapper)
                    for column in (from_column, to_column):
                        if column not in link_columns:
                            problems.append(
                                f"{where}: '{column}' is not a column of the link table "
                                f"{getattr(link, '__name__', link)} (columns: "
                                f"{', '.join(sorted(link_columns))})")
            if target is not None and exp.foreign_key not in target.columns:
                problems.append(f"{where}: foreign_key '{exp.foreign_key}' is not a column of "
                                f"{target.name} (columns: {', '.join(target.field_names())})"
                                + _suggest(exp.foreign_key, target.field_names()))
            if len(problems) == found and source is not None:
                source.expansions[exp_name] = exp

        if problems:
            raise StartupError("the query engine cannot start:\n"
                               + "\n".join(f"  - {p}" for p in problems))
        self._paths: dict[tuple[str, str], _Path] = {}
        self._built: dict[tuple[Query, str | None], _Plan] = {}
        self._probe_cap = (_PROBE_MIN, _PROBE_MAX)  # read here, so tests may build others
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- introspection

    def queryable(self, resource_type: str) -> bool:
        """Whether ``resource_type`` is declared with a model, so it can be queried."""
        return resource_type in self._types

    def plain(self, resource_type: str) -> bool:
        """Whether the resource type's model is one class, with no inheritance: its rows may
        be read as columns (``run(columns=...)``)."""
        mapper: Any = sa_inspect(self._type(resource_type).model)
        return mapper.inherits is None and mapper.polymorphic_on is None

    def fields(self, resource_type: str) -> list[str]:
        """The columns (mapped attribute keys) of the resource type's model, sorted."""
        return self._type(resource_type).field_names()

    def expansions(self, resource_type: str) -> dict[str, str]:
        """The resource type's expansions: name -> target resource type."""
        t = self._type(resource_type)
        return {name: exp.target for name, exp in sorted(t.expansions.items())}

    def describe(self) -> dict[str, dict[str, Any]]:
        """Fields and expansions of every queryable resource type, in registration order."""
        return {name: {"fields": self.fields(name), "expansions": self.expansions(name)}
                for name in self._types}

    # ----------------------------------------------------------------- running

    def run(self, session: Session, query: Query, *, account_uuid: str | None = None,
            columns: tuple[str, ...] | None = None) -> QueryResult:
        """Run ``query`` in ``session``; ``account_uuid`` ``None`` is an administrator.

        The rows are detached model instances or, with ``columns`` (mapped attribute keys
        of the model), rows of those columns, in that order and with those names as
        attributes: no ORM object is built, which costs more than running a short query.
        Ask for columns only of a model without inheritance (:meth:`plain`).

        One statement for the rows and, for ``count``/``reply_with_count``, one for the
        total; with a limit, before the rows, one or two capped probes for each condition on
        related rows, which choose how the rows statement tests it (see the module's
        documentation), unless the total is known to be below the cap. A normal account
        sees only rows whose ``owned_through`` column names a resource it owns. Raises
        :class:`~zcore.errors.ZError` ``SYS.1007`` for an unknown field, expansion or sort
        field, an unknown operator or a value of the wrong type.
        """
        plan = self._statements(query, account_uuid)
        total: int | None = None
        if plan.counted is not None:
            total = int(session.execute(plan.counted).scalar_one())
            if query.count:
                return QueryResult([], total)
        dense: frozenset[int] = frozenset()
        # A total below the cap: the rows are few, and IN finds them without probing.
        if plan.probes and (total is None or total >= plan.cap):
            dense = plan.choose(session)
        stmt = plan.rows(dense, bool(dense) and plan.indexed_order, columns)
        if columns is None:
            return QueryResult(list(session.scalars(stmt).all()), total)
        return QueryResult(list(session.execute(stmt)), total)

    def _statements(self, query: Query, account_uuid: str | None) -> _Plan:
        # A query asked again (the same conditions and values, by the same account) reuses
        # its statements: building one and computing its SQLAlchemy cache key cost more
        # than running it. The statements are immutable and hold the values as bound
        # parameters, so the rows are exactly those of a freshly built statement.
        key = (query, account_uuid)
        try:
            cached = self._built.get(key)
        except TypeError:  # conditions given as a list: not hashable, built every time
            return self._build(query, account_uuid)
        if cached is None:
            cached = self._build(query, account_uuid)
            with self._lock:
                if len(self._built) >= _STATEMENT_CACHE_SIZE:
                    self._built.clear()
                self._built[key] = cached
        return cached

    def _build(self, query: Query, account_uuid: str | None) -> _Plan:
        """The statement for the total (``None`` unless asked for) and those for the rows."""
        t = self._type(query.resource_type)
        if query.limit is not None and query.limit < 0:
            raise ZError(INVALID_ARGUMENT, "invalid query limit",
                         f"limit must be 0 or more, not {query.limit}")
        if query.start < 0:
            raise ZError(INVALID_ARGUMENT, "invalid query start",
                         f"start must be 0 or more, not {query.start}")
        direction = query.sort_direction.lower()
        if direction not in ("asc", "desc"):
            raise ZError(INVALID_ARGUMENT, "invalid sort direction",
                         f"sort direction must be asc or desc, not {query.sort_direction!r}")
        sort_column = None
        if query.sort_by is not None:
            if query.sort_by not in t.columns:
                raise ZError(INVALID_ARGUMENT, "unknown sort field",
                             f"cannot sort {t.name} by '{query.sort_by}': it is not a column; "
                             f"{_listing(t)}" + _suggest(query.sort_by, t.field_names()))
            sort_column = getattr(t.model, query.sort_by)

        model = t.model
        terms = tuple(self._term(t, model, c) for c in query.conditions)
        account: tuple[ColumnElement[bool], ...] = ()
        if account_uuid is not None and t.owned_through is not None:
            owner = aliased(ResourceVO)
            account = (getattr(model, t.owned_through).in_(
                select(owner.uuid).where(owner.ownerAccountUuid == account_uuid)),)

        counted: Select[Any] | None = None
        if query.count or query.reply_with_count:  # every row is counted: IN is never worse
            counted = (select(func.count()).select_from(model)
                       .where(*(term.plain for term in terms), *account))

        pk = [getattr(model, key) for key in t.pk]
        if sort_column is not None:
            ordered = sort_column.desc() if direction == "desc" else sort_column.asc()
            order = (ordered, *(c for c in pk if c is not sort_column))
        else:
            order = tuple(c.desc() if direction == "desc" else c for c in pk)

        low, high = self._probe_cap
        cap = high
        probes: list[_Probe] = []
        if query.limit and not query.count:
            cap = min(max(_PROBE_PER_ROW * (query.start + query.limit), low), high)
            for i, term in enumerate(terms):
                if term.keys is None:
                    continue
                if term.unique:
                    probes.append(_Probe(i, select(func.count()).select_from(
                        term.keys.limit(cap).subquery()), None))
                    continue
                # Few keys may still match many rows (one cluster, many hosts): count those.
                local = getattr(model, term.local_key)
                rows = select(func.count()).select_from(
                    select(pk[0]).where(local.in_(bindparam("keys", expanding=True)))
                    .limit(cap).subquery())
                probes.append(_Probe(i, term.keys.limit(cap), rows))
        # Ties are broken by the primary key ascending: with a descending sort that is an
        # index's order only to a database that sorts each run of ties (not MariaDB, which
        # would then test every row with the scalar subquery before sorting).
        indexed_order = (query.sort_by is None or query.sort_by in t.pk
                         or (query.sort_by in t.indexed and direction == "asc"))
        return _Plan(model, terms, account, order, indexed_order, query.start, query.limit,
                     counted, tuple(probes), cap, {})

    # ----------------------------------------------------------------- compiling

    def _type(self, name: str) -> _Type:
        t = self._types.get(name)
        if t is None:
            raise ZError(INVALID_ARGUMENT, "resource type not queryable",
                         f"{name!r} is not a queryable resource type; queryable types: "
                         f"{', '.join(sorted(self._types))}"
                         + _suggest(name, list(self._types)))
        return t

    def _resolve(self, root: _Type, field: str) -> _Path:
        key = (root.name, field)
        path = self._paths.get(key)
        if path is not None:
            return path
        steps = field.split(".")
        if not all(steps):
            raise ZError(INVALID_ARGUMENT, "unknown query field",
                         f"query field {field!r} of {root.name} has an empty step; write "
                         f"<column>, <expansion>.<column>, ...; {_listing(root)}")
        current = root
        hops: list[tuple[QueryExpansion, _Type]] = []
        for i, step in enumerate(steps):
            via = ".".join(steps[:i])
            prefix = via + "." if via else ""
            reached = f" (reached through '{via}' from {root.name})" if via else ""
            last = i == len(steps) - 1
            if step in current.expansions:
                if last:
                    target = self._types[current.expansions[step].target]
                    raise ZError(INVALID_ARGUMENT, "unknown query field",
                                 f"query field '{field}' of {root.name} ends at the expansion "
                                 f"'{step}' of {current.name}{reached}, which reaches "
                                 f"{target.name}; name one of its fields, e.g. "
                                 f"'{field}.{target.field_names()[0]}'; {_listing(target)}")
                exp = current.expansions[step]
                current = self._types[exp.target]
                hops.append((exp, current))
                continue
            known = step in current.columns or (step in _TAG_FIELDS and current.has_uuid)
            if known and last:
                path = _Path(tuple(hops), step, current)
                with self._lock:
                    if len(self._paths) >= _CACHE_SIZE:
                        self._paths.clear()
                    self._paths[key] = path
                return path
            if known:
                raise ZError(INVALID_ARGUMENT, "unknown query field",
                             f"query field '{field}' of {root.name}: '{step}' is a field of "
                             f"{current.name}{reached}, not an expansion, so nothing may "
                             f"follow it; {_listing(current)}")
            raise ZError(INVALID_ARGUMENT, "unknown query field",
                         f"query field '{field}' of {root.name}: '{step}' is not a field or "
                         f"expansion of {current.name}{reached}; {_listing(current)}."
                         + _suggest(step, current.vocabulary(), prefix))
        raise AssertionError("unreachable")  # pragma: no cover

    def _term(self, root: _Type, entity: Any, cond: Condition) -> _Term:
        if cond.op in (" is null", " not null"):  # as spelled in OPERATORS
            cond = Condition(cond.field, cond.op.strip(), None)
        if cond.op not in _ALL_OPS:
            raise QuerySyntaxError(f"query condition on '{cond.field}' has the unknown "
                                   f"operator {cond.op!r}; valid operators: {_SHOWN}")
        if cond.op not in _NULL_OPS and cond.value is None:
            raise QuerySyntaxError(f"query condition '{cond.field}{cond.op}' has no value")
        path = self._resolve(root, cond.field)
        plain, keys = self._predicate(path, entity, cond, "in")
        if keys is None:
            return _Term(plain)
        correlated, _ = self._predicate(path, entity, cond, "exists")
        scalar, _ = self._predicate(path, entity, cond, "scalar")
        local_key = path.hops[0][0].local_key if path.hops else "uuid"
        return _Term(plain, keys, correlated, scalar, local_key, root.pk == (local_key,))

    def _predicate(self, path: _Path, entity: Any, cond: Condition, form: str
                   ) -> tuple[ColumnElement[bool], Select[Any] | None]:
        """The predicate of ``cond`` on ``entity`` in ``form`` (``in``, ``exists`` or
        ``scalar``: see :class:`_Term`) and, for a condition on related rows in ``in``
        form, its outermost subquery (the keys of the related rows that match)."""
        entities = [entity, *(aliased(t.model) for _, t in path.hops)]
        keys: Select[Any] | None = None
        if path.terminal in _TAG_FIELDS and path.terminal not in path.owner.columns:
            predicate, keys = self._tag(path.terminal, entities[-1], cond, form)
        else:
            predicate = self._compare(cond, path.owner.columns[path.terminal],
                                      getattr(entities[-1], path.terminal))
        for i in range(len(path.hops) - 1, -1, -1):
            exp = path.hops[i][0]
            parent_key = getattr(entities[i], exp.local_key)
            child_key = getattr(entities[i + 1], exp.foreign_key)
            if exp.through is None:
                if form == "in":
                    keys = select(child_key).where(predicate)
                    predicate = parent_key.in_(keys)
                else:
                    predicate = _found(select(child_key).where(child_key == parent_key,
                                                               predicate), form)
                continue
            link: Any = aliased(exp.through[0])
            from_key, to_key = getattr(link, exp.through[1]), getattr(link, exp.through[2])
            if form == "in":
                keys = select(from_key).where(to_key.in_(select(child_key).where(predicate)))
                predicate = parent_key.in_(keys)
            else:
                predicate = _found(select(from_key).where(
                    from_key == parent_key,
                    _found(select(child_key).where(child_key == to_key, predicate), form)),
                    form)
        return predicate, keys

    def _compare(self, cond: Condition, column: _Column, attr: Any) -> ColumnElement[bool]:
        op = cond.op
        if op == "is null":
            return attr.is_(None)
        if op == "not null":
            return attr.is_not(None)
        raw = cond.value
        assert raw is not None
        if op in ("~=", "!~="):
            text = attr if column.python_type is str else cast(attr, String)
            return text.like(raw) if op == "~=" else text.not_like(raw)
        if op in ("?=", "!?="):
            values = [_convert(cond.field, column, item) for item in raw.split(",")]
            return attr.in_(values) if op == "?=" else attr.not_in(values)
        value = _convert(cond.field, column, raw)
        if isinstance(value, bool):  # SQLAlchemy compares True/False with = and != only
            value = literal(value, Boolean())
        return _COMPARE[op](attr, value)

    def _tag(self, field: str, entity: Any, cond: Condition, form: str
             ) -> tuple[ColumnElement[bool], Select[Any] | None]:
        # Positive: the row's uuid is IN the uuids of the matching tags (a semi-join, whose
        # subquery is returned as _predicate's is), or a matching tag of the row is found.
        # Negative and "is null": NOT EXISTS a (matching) tag of the row, which every backend
        # runs as an anti-join or an index probe per row; NOT IN could degrade to a nested
        # scan on PostgreSQL once the tags no longer fit in work_mem.
        tag: Any = aliased(_TAG_FIELDS[field])
        uuid = entity.uuid
        matches: list[ColumnElement[bool]] = []
        if cond.op not in _NULL_OPS:
            positive = _POSITIVE.get(cond.op, cond.op)
            matches.append(self._compare(Condition(cond.field, positive, cond.value),
                                         _TAG_TEXT, tag.tag))
        if cond.op == "is null" or cond.op in _POSITIVE:
            return ~select(tag.uuid).where(tag.resourceUuid == uuid, *matches).exists(), None
        if form != "in":
            return _found(select(tag.uuid).where(tag.resourceUuid == uuid, *matches), form), None
        keys = select(tag.resourceUuid).where(*matches)
        return uuid.in_(keys), keys
