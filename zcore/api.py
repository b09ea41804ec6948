"""The API framework: message classes with declared parameters, checked before they run.

Each API is a subclass of :class:`APIMessage` named as ZStack names it, declaring its REST
route in the class statement and its parameters as :class:`Param` attributes::

    class CreateZone(APIMessage, method="POST", path="/zones", resource_type="ZoneVO",
                     result={"inventory": "ZoneInventory"}):
        name = Param(str, required=True, max_length=255, valid_regex=NAME_REGEX)
        description = Param(str, max_length=2048)

        async def handle(self, ctx: ApiContext) -> dict[str, Any]:
            zone = await ctx.run(create_zone, self.name, self.description, ctx.owner)
            return {"inventory": ctx.inventory("ZoneVO", zone)}

A plugin registers it with ``yield ApiMessage(CreateZone)`` from ``zcore_api_messages``. The
node's :class:`ApiService` checks every parameter (type, required, length, valid values,
regex, number range, non-empty, and that a uuid names an existing resource the caller may
see) before ``handle`` runs, so bad input creates nothing. Calls travel over the bus to the
``api`` service as :class:`ApiCall` messages; the REST server (:mod:`zcore.rest`) is one
client of it.

Handlers return the reply body: a dict whose inventories are :class:`Inventory` dicts (made
by :meth:`ApiContext.inventory`) so that the reply's ``schema`` map can name their classes.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

import msgspec
from sqlalchemy import Row, select
from sqlalchemy import delete as sa_delete
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from zcore import progress
from zcore.bus import Message, Reply, deadline_scope
from zcore.db import ResourceVO, delete_resource, is_uuid, new_uuid
from zcore.errors import (
    DELETE_FAILED,
    INTERNAL,
    INVALID_ARGUMENT,
    RESOURCE_NOT_FOUND,
    TIMEOUT,
    UNKNOWN_MESSAGE,
    ZError,
)
from zcore.query import Condition, Query, QueryEngine, parse_condition
from zcore.records import GlobalConfigOption

if TYPE_CHECKING:
    from zcore.node import Node
    from zcore.registry import Provided, Registry

__all__ = [
    "NAME_REGEX",
    "PERMISSION_DENIED",
    "SESSION_INVALID",
    "WRONG_CREDENTIALS",
    "APIMessage",
    "ApiCall",
    "ApiContext",
    "ApiResult",
    "ApiService",
    "Caller",
    "Inventory",
    "Param",
    "QueryMessage",
    "format_time",
]

log = logging.getLogger("zcore.api")

P = ParamSpec("P")
T = TypeVar("T")

#: ZStack's identity error codes.
WRONG_CREDENTIALS = "ID.1000"
SESSION_INVALID = "ID.1001"
PERMISSION_DENIED = "ID.1002"

#: ZStack's rule for resource names: no leading or trailing space, letters (Latin and CJK),
#: digits and ``-_.():+" ``.
NAME_REGEX = r'^(?! )[\u4e00-\u9fa5a-zA-Z0-9\-_.():+" ]*(?<! )$'

#: The global configuration category of per-API timeouts (seconds): ``apiTimeout.CreateZone``.
TIMEOUT_CATEGORY = "apiTimeout"

#: Body keys ZStack's SDKs may send that are not parameters of the API.
_SDK_KEYS = frozenset({"sessionId", "accessKeyId", "accessKeySecret", "requestIp", "timeout",
                       "pollingInterval", "apiId"})

_API_TYPES: dict[type, str] = {str: "String", int: "Integer", float: "Double", bool: "Boolean",
                               list: "List", dict: "Map"}


class Caller(msgspec.Struct, frozen=True, kw_only=True):
    """Who makes an API call: the account (``None`` for the system itself) and its rights."""

    account_uuid: str | None = None
    account_name: str | None = None
    is_admin: bool = True
    session_uuid: str | None = None
    user_uuid: str | None = None

    @property
    def filter_account(self) -> str | None:
        """The account whose resources alone this caller sees, or ``None`` to see all."""
        return None if self.is_admin else self.account_uuid


SYSTEM = Caller()


# --------------------------------------------------------------------------- parameters


_MISSING: Any = object()


class Param:
    """One declared parameter of an API, checked before the API runs.

    ``type`` is ``str``, ``int``, ``float``, ``bool``, ``list`` or ``dict``; ``api_type``
    overrides the type name in the API description (``"Long"``). ``resource_type`` (a type
    name or a tuple of them) makes the value a uuid that must name an existing resource of
    that type which the caller may see. ``non_empty`` refuses blank strings and empty lists.
    ``number_range`` is inclusive. Values from a query string arrive as text and are
    converted.
    """

    def __init__(
        self,
        type: type = str,
        *,
        required: bool = False,
        default: Any = None,
        max_length: int | None = None,
        min_length: int | None = None,
        valid_values: Iterable[Any] | None = None,
        valid_regex: str | None = None,
        number_range: tuple[float, float] | None = None,
        non_empty: bool = False,
        resource_type: str | tuple[str, ...] | None = None,
        api_type: str | None = None,
        description: str = "",
    ) -> None:
        if type not in _API_TYPES:
            raise TypeError(f"Param type must be one of {sorted(t.__name__ for t in _API_TYPES)}")
        self.type = type
        self.required = required
        self.default = default
        self.max_length = max_length
        self.min_length = min_length
        self.valid_values = tuple(valid_values) if valid_values is not None else None
        self.valid_regex = valid_regex
        self._regex = re.compile(valid_regex) if valid_regex else None
        self.number_range = number_range
        self.non_empty = non_empty
        self.resource_types: tuple[str, ...] = (
            (resource_type,) if isinstance(resource_type, str) else tuple(resource_type or ()))
        self.api_type = api_type or _API_TYPES[type]
        self.description = description
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(self.name, self.default)

    def describe(self) -> dict[str, Any]:
        """This parameter in the shape of ZStack's API description (``apis.json``)."""
        out: dict[str, Any] = {"name": self.name, "type": self.api_type}
        if self.required:
            out["required"] = True
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.min_length is not None:
            out["minLength"] = self.min_length
        if self.valid_values is not None:
            out["validValues"] = list(self.valid_values)
        if self.valid_regex is not None:
            out["validRegex"] = self.valid_regex
        if self.number_range is not None:
            out["numberRange"] = list(self.number_range)
        if self.non_empty:
            out["nonempty"] = True
        if self.default is not None:
            out["default"] = self.default
        if self.resource_types:
            out["resourceType"] = list(self.resource_types)
        return out

    def convert(self, api: str, value: Any) -> Any:
        """The value as this parameter's type, checked; raises ``SYS.1007`` naming it."""
        def bad(why: str) -> ZError:
            return ZError(INVALID_ARGUMENT, "invalid argument",
                          f"parameter '{self.name}' of {api}: {why}")

        kind = self.type
        if kind is str:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise bad(f"expects a string, got {_shown(value)}")
            value = str(value)
        elif kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            elif not isinstance(value, bool):
                raise bad(f"expects true or false, got {_shown(value)}")
        elif kind is int:
            if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()) or isinstance(value, float) and value.is_integer():
                value = int(value)
            elif isinstance(value, bool) or not isinstance(value, int):
                raise bad(f"expects an integer, got {_shown(value)}")
        elif kind is float:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise bad(f"expects a number, got {_shown(value)}") from None
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(f"expects a number, got {_shown(value)}")
            value = float(value)
        elif kind is list:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise bad(f"expects a list, got {_shown(value)}")
        elif kind is dict and not isinstance(value, dict):
            raise bad(f"expects a map (a JSON object), got {_shown(value)}")

        if isinstance(value, str):
            if self.non_empty and not value.strip():
                raise bad("must not be empty")
            if self.max_length is not None and len(value) > self.max_length:
                raise bad(f"is {len(value)} characters long; at most {self.max_length} "
                          "are allowed")
            if self.min_length is not None and len(value) < self.min_length:
                raise bad(f"is {len(value)} characters long; at least {self.min_length} "
                          "are needed")
            if self._regex is not None and not self._regex.fullmatch(value):
                raise bad(f"value {value!r} does not match {self.valid_regex}")
        if isinstance(value, list) and self.non_empty and not value:
            raise bad("must not be an empty list")
        if self.valid_values is not None:
            values = value if isinstance(value, list) else [value]
            for item in values:
                if item not in self.valid_values:
                    raise bad(f"value {item!r} is not one of "
                              + ", ".join(repr(v) for v in self.valid_values))
        if self.number_range is not None and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            low, high = self.number_range
            if not low <= value <= high:
                raise bad(f"value {value} is out of the range [{low:g}, {high:g}]")
        if self.resource_types:
            for item in value if isinstance(value, list) else [value]:
                if not is_uuid(item):
                    raise bad(f"value {item!r} is not a resource uuid (32 lower-case hex "
                              "digits)")
        return value


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


# --------------------------------------------------------------------------- messages


class APIMessage:
    """The base of every API. Subclasses declare their route in the class statement.

    Keywords: ``method`` (``POST`` create, ``PUT`` action, ``GET``, ``DELETE``), ``path``
    (under ``/zstack/v1``; ``{name}`` parts are filled from parameters of that name),
    ``envelope`` (the body key: ``params`` for POST, the API name with a lower-case first
    letter for PUT, none for GET and DELETE), ``is_async`` (answer 202 and a job to poll;
    default for POST, PUT and DELETE), ``result`` (the reply's fields and their types, as in
    ZStack's API description), ``resource_type`` (the type the API creates or acts on: its
    system tags are checked against that type's patterns), ``need_session`` (default true),
    ``admin_only`` and ``timeout`` (seconds; the default of the global configuration
    ``apiTimeout.<name>``).

    Every API takes ``systemTags`` and ``userTags``. The ``validationOnly`` system tag makes
    the call a dry run: parameters are checked and nothing is done.
    """

    api_name: ClassVar[str] = ""
    api_method: ClassVar[str] = ""
    api_path: ClassVar[str] = ""
    envelope: ClassVar[str | None] = None
    is_async: ClassVar[bool] = False
    is_query: ClassVar[bool] = False
    result: ClassVar[Mapping[str, str]] = {}
    resource_type: ClassVar[str | None] = None
    need_session: ClassVar[bool] = True
    admin_only: ClassVar[bool] = False
    timeout: ClassVar[float] = 1800.0
    params: ClassVar[dict[str, Param]] = {}

    systemTags = Param(list)
    userTags = Param(list)

    def __init_subclass__(
        cls,
        *,
        method: str | None = None,
        path: str | None = None,
        envelope: str | None | object = _MISSING,
        is_async: bool | None = None,
        result: Mapping[str, str] | None = None,
        resource_type: str | None = None,
        need_session: bool | None = None,
        admin_only: bool | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        params: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Param):
                    params[key] = value
        cls.params = params
        if resource_type is not None:
            cls.resource_type = resource_type
        if result is not None:
            cls.result = dict(result)
        if need_session is not None:
            cls.need_session = need_session
        if admin_only is not None:
            cls.admin_only = admin_only
        if timeout is not None:
            cls.timeout = float(timeout)
        if path is None:
            return  # an abstract base such as QueryMessage
        method = (method or "").upper()
        if method not in ("GET", "POST", "PUT", "DELETE"):
            raise TypeError(f"API {cls.__name__}: method must be GET, POST, PUT or DELETE")
        cls.api_name = cls.__name__
        cls.api_method = method
        cls.api_path = path
        if envelope is _MISSING:
            envelope = {"POST": "params",
                        "PUT": cls.__name__[0].lower() + cls.__name__[1:]}.get(method)
        cls.envelope = envelope  # type: ignore[assignment]
        cls.is_async = (method != "GET") if is_async is None else is_async
        for var in re.findall(r"\{(\w+)\}", path):
            if var not in params:
                raise TypeError(f"API {cls.__name__}: path variable {{{var}}} is not a "
                                "declared parameter")

    @classmethod
    def path_variables(cls) -> list[str]:
        return re.findall(r"\{(\w+)\}", cls.api_path)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """This API in the shape of ZStack's API description, plus its resource type."""
        return {
            "method": cls.api_method,
            "path": cls.api_path,
            "envelope": cls.envelope,
            "async": cls.is_async,
            "query": cls.is_query,
            "needSession": cls.need_session,
            "resource": getattr(cls, "query_resource", None),
            "params": [p.describe() for p in cls.params.values()],
            "result": dict(cls.result),
        }

    async def validate(self, ctx: ApiContext) -> None:
        """Checks beyond the declared parameters; raise a ``ZError`` to refuse the call.

        Runs after the parameters are checked and before ``handle``, and also for a
        ``validationOnly`` dry run, so put here every check that needs the node (a driver
        name, another resource's state) and does not change anything.
        """

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        """Do the work and return the reply body (``{"inventory": ...}``)."""
        raise NotImplementedError


class QueryMessage(APIMessage):
    """A ZStack query API over one resource type: ``class QueryZone(QueryMessage, ...)``.

    Declare ``path`` and ``resource`` (the resource type queried) in the class statement.
    Conditions, paging, sorting and ``fields`` come from the query string; the reply holds
    ``inventories`` and, when asked, ``total``.
    """

    is_query = True
    query_resource: ClassVar[str] = ""

    q = Param(list)
    limit = Param(int, default=1000, number_range=(0, 2**31 - 1))
    start = Param(int, default=0, number_range=(0, 2**63 - 1))
    count = Param(bool, default=False)
    replyWithCount = Param(bool, default=False)
    sort = Param(str)
    sortBy = Param(str)
    sortDirection = Param(str, valid_values=("asc", "desc"))
    fields = Param(list)
    groupBy = Param(str)
    filterName = Param(str)

    def __init_subclass__(cls, *, resource: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("method", "GET")
        kwargs.setdefault("is_async", False)
        kwargs.setdefault("result", {"inventories": "List", "total": "Long"})
        super().__init_subclass__(**kwargs)
        if resource is not None:
            cls.query_resource = resource
        if kwargs.get("path") is not None and not cls.query_resource:
            raise TypeError(f"query API {cls.__name__} needs resource=<resource type>")

    def build(self, extra: Iterable[Condition] = ()) -> tuple[Query, list[str]]:
        """The :class:`~zcore.query.Query` these parameters describe, and the fields asked."""
        conditions = [parse_condition(text) for text in self.q or []]
        conditions.extend(extra)
        sort_by, direction = self.sortBy, self.sortDirection or "asc"
        if self.sort is not None:
            text = self.sort.strip()
            if text[:1] in ("+", "-"):
                direction = "desc" if text[0] == "-" else "asc"
                text = text[1:].strip()
            if not text:
                raise ZError(INVALID_ARGUMENT, "invalid argument",
                             f"sort of {self.api_name}: {self.sort!r} names no field; use "
                             "sort=+field or sort=-field")
            sort_by = text
        if self.groupBy:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"{self.api_name}: groupBy is not supported; query without it")
        fields: list[str] = []
        for item in self.fields or []:
            fields.extend(f.strip() for f in str(item).split(",") if f.strip())
        query = Query(self.query_resource, tuple(conditions), limit=self.limit,
                      start=self.start, sort_by=sort_by, sort_direction=direction,
                      count=bool(self.count), reply_with_count=bool(self.replyWithCount))
        return query, fields

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        return await ctx.node.api.query(ctx, self)


# --------------------------------------------------------------------------- inventories


class Inventory(dict[str, Any]):
    """An inventory in a reply: a dict that knows its server class for the ``schema`` map."""

    __slots__ = ("server_class",)

    def __init__(self, server_class: str,
                 fields: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        super().__init__(fields)
        self.server_class = server_class


def format_time(value: datetime) -> str:
    """A timestamp on the wire: ISO 8601 in UTC with an offset (``2026-11-22T10:00:00.5+00:00``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def to_wire(body: Any) -> tuple[Any, dict[str, str]]:
    """The reply body as JSON-ready values and its ``schema`` map, parents first."""
    schema: dict[str, str] = {}
    return _walk(body, "", schema), schema


def _walk(value: Any, path: str, schema: dict[str, str]) -> Any:
    # A module function, not a closure over itself: that would be a reference cycle per
    # reply, left for the garbage collector.
    if isinstance(value, Inventory) and path:
        schema[path] = value.server_class
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            # Plain values, most of an inventory, go as they are without a path.
            if type(v) in _PLAIN:
                out[k] = v
            else:
                out[k] = _walk(v, f"{path}.{k}" if path else k, schema)
        return out
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _PLAIN else _walk(v, f"{path}[{i}]", schema)
                for i, v in enumerate(value)]
    if isinstance(value, datetime):
        return format_time(value)
    return value


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _columns(model: type) -> list[str]:
    mapper: Any = sa_inspect(model)
    return [attr.key for attr in mapper.column_attrs]


# --------------------------------------------------------------------------- the context


@dataclass
class ApiContext:
    """What a handler knows about the call it serves."""

    node: Node
    caller: Caller
    api: str
    job_uuid: str
    system_tags: list[str] = field(default_factory=list)
    user_tags: list[str] = field(default_factory=list)

    @property
    def owner(self) -> str | None:
        """The account that owns what this call creates."""
        return self.caller.account_uuid

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(session, *args)`` in one database transaction (:meth:`Database.run`)."""
        return await self.node.db.run(fn, *args)

    def inventory(self, resource_type: str, row: Any) -> Inventory:
        """The inventory of ``row``, a model instance of ``resource_type``."""
        return self.node.api.inventory(resource_type, row)

    def add_tags(self, session: Session, resource_uuid: str, resource_type: str) -> None:
        """Attach this call's system and user tags to a resource it just created.

        Call it in the creating transaction, so the tags and the resource commit together.
        System tags were already checked against the type's patterns before the call ran.
        """
        tags = self.node.tags
        for tag in self.system_tags:
            tags.add_system_tag(session, resource_uuid, resource_type, tag)
        for tag in self.user_tags:
            tags.add_user_tag(session, resource_uuid, resource_type, tag)

    async def delete(self, resource_type: str, uuid: str, mode: str,
                     delete_rows: Callable[[Session, str], None], *,
                     also: Iterable[tuple[str, str]] = ()) -> None:
        """Delete a resource after dealing with its dependants through the cascade edges.

        Dependants are found through the cascade edges that name a ``field``; ``also`` adds
        ``(type, uuid)`` pairs found otherwise (an account's resources), children first.
        With none, ``delete_rows(session, uuid)`` runs. With some, the
        ``zcore_delete_dependants`` hook deletes them (the ``cascade`` plugin) or, with no
        plugin to do it, the deletion is refused with ``SYS.1004`` naming them.
        """
        api = self.node.api
        dependants = list(also)
        known = {u for _, u in dependants}
        dependants += [d for d in await self.run(api.dependants, resource_type, uuid)
                       if d[1] not in known]
        if dependants:
            result = self.node.plugins.pm.hook.zcore_delete_dependants(
                node=self.node, caller=self.caller, resource_type=resource_type, uuid=uuid,
                dependants=dependants, mode=mode)
            if inspect.isawaitable(result):
                result = await result
            if not result:
                shown = ", ".join(f"{t} {u}" for t, u in dependants[:10])
                more = f" and {len(dependants) - 10} more" if len(dependants) > 10 else ""
                raise ZError(DELETE_FAILED, f"cannot delete {resource_type} {uuid}",
                             f"it still has dependants: {shown}{more}; delete them first "
                             "or enable the cascade plugin")
        await self.run(delete_rows, uuid)


# --------------------------------------------------------------------------- bus messages


class ApiCall(Message, frozen=True, kw_only=True):
    """An API call on its way to the ``api`` service: the name and the raw parameters."""

    api: str
    params: dict[str, Any]
    caller: Caller
    job_uuid: str
    system_tags: list[str] = msgspec.field(default_factory=list)
    user_tags: list[str] = msgspec.field(default_factory=list)


class ApiResult(Reply, frozen=True, kw_only=True):
    """The reply body of an API call, JSON-ready, with its ``schema`` map."""

    body: dict[str, Any]
    schema: dict[str, str]


# --------------------------------------------------------------------------- the service

SERVICE = "api"


@dataclass
class _Visibility:
    found: set[str]
    owners: dict[str, str | None]
    types: dict[str, str]


class ApiService:
    """Every registered API of a node: checks, dispatch, inventories, queries, deletion.

    ``node.api`` is the node's instance. :meth:`call` runs an API on this node;
    :meth:`send` goes through the bus to the ``api`` service.
    """

    def __init__(self, node: Node, registry: Registry, query: QueryEngine) -> None:
        self.node = node
        self.registry = registry
        self.query_engine = query
        self.messages: dict[str, type[APIMessage]] = {
            name: p.record.message for name, p in registry.api_messages.items()}
        self._types = {name: p.record for name, p in registry.resource_types.items()}
        self._columns: dict[str, list[str]] = {}
        self._plain: dict[str, tuple[str, ...] | None] = {}
        self._edges: list[tuple[str, str, str]] = [
            (p.record.child, p.record.parent, p.record.field)
            for p in registry.cascade_edges.values() if p.record.field]
        self._extensions: dict[str, list[Any]] = {}
        for provided in registry.inventory_extensions.values():
            self._extensions.setdefault(provided.record.resource, []).append(provided.record)

    @staticmethod
    def check_declarations(registry: Registry) -> None:
        """Refuse, at start-up, API classes that are not :class:`APIMessage` or clash in routes."""
        from zcore.errors import StartupError

        problems = []
        routes: dict[tuple[str, str, str | None], str] = {}
        for name, provided in registry.api_messages.items():
            cls = provided.record.message
            who = registry.label(provided.plugin)
            if not (isinstance(cls, type) and issubclass(cls, APIMessage)) or not cls.api_path:
                problems.append(f"{who}: API {name} is not a zcore.api.APIMessage subclass "
                                "with method= and path=")
                continue
            resource = getattr(cls, "query_resource", None) or cls.resource_type
            if resource and resource not in registry.resource_types:
                problems.append(f"{who}: API {name} names resource type {resource}, which no "
                                "plugin declares")
            for param in cls.params.values():
                for rtype in param.resource_types:
                    if rtype not in registry.resource_types:
                        problems.append(f"{who}: parameter '{param.name}' of API {name} "
                                        f"names resource type {rtype}, which no plugin declares")
            key = (cls.api_method, cls.api_path, cls.envelope)
            if key in routes:
                problems.append(f"{who}: API {name} has the same route as {routes[key]}: "
                                f"{cls.api_method} {cls.api_path} {cls.envelope or ''}".rstrip())
            routes[key] = name
        for (resource, field_name), provided in registry.inventory_extensions.items():
            if resource not in registry.resource_types:
                problems.append(f"{registry.label(provided.plugin)}: inventory extension "
                                f"'{field_name}' extends resource type {resource}, which no "
                                "plugin declares")
        if problems:
            raise StartupError("API declarations are invalid:\n"
                               + "\n".join(f"  - {p}" for p in problems))

    @staticmethod
    def timeout_options(registry: Registry) -> dict[str, Provided]:
        """A global configuration option ``apiTimeout.<API>`` per registered API."""
        from zcore.registry import Provided

        options: dict[str, Provided] = {}
        for name, provided in registry.api_messages.items():
            cls = provided.record.message
            option = GlobalConfigOption(
                TIMEOUT_CATEGORY, name, int, int(getattr(cls, "timeout", 1800)),
                f"Seconds a {name} call may take before it fails with SYS.1001", min=1)
            options[option.key] = Provided(provided.plugin, option)
        return options

    def start(self) -> None:
        self.node.bus.register_types(ApiCall, ApiResult)
        self.node.bus.register(SERVICE, self._on_call)

    def message(self, name: str) -> type[APIMessage]:
        try:
            return self.messages[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.messages, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ZError(UNKNOWN_MESSAGE, "unknown API",
                         f"no API is named {name!r}{hint}") from None

    # ----------------------------------------------------------------- calling

    async def send(self, call: ApiCall) -> ApiResult:
        """Run an API through the bus, within its timeout."""
        timeout = self.timeout_of(call.api)
        try:
            with deadline_scope(timeout):
                reply = await self.node.bus.send(SERVICE, call)
        except (TimeoutError, ZError) as exc:
            if isinstance(exc, ZError) and exc.code != TIMEOUT:
                raise
            raise ZError(TIMEOUT, "API timed out",
                         f"{call.api} did not finish within {timeout:g} s (global "
                         f"configuration {TIMEOUT_CATEGORY}.{call.api})",
                         cause=exc if isinstance(exc, ZError) else None) from None
        assert isinstance(reply, ApiResult)
        return reply

    def timeout_of(self, name: str) -> float:
        """Seconds API ``name`` may take: global configuration ``apiTimeout.<name>``."""
        try:
            return float(self.node.global_config.get(TIMEOUT_CATEGORY, name))
        except (KeyError, ZError):
            return 1800.0

    async def _on_call(self, msg: Message) -> ApiResult:
        assert isinstance(msg, ApiCall)
        body = await self.call(msg.api, msg.params, caller=msg.caller, job_uuid=msg.job_uuid,
                               system_tags=msg.system_tags, user_tags=msg.user_tags)
        wire, schema = to_wire(body)
        return ApiResult(body=wire, schema=schema)

    async def call(self, name: str, params: Mapping[str, Any], *, caller: Caller = SYSTEM,
                   job_uuid: str | None = None, system_tags: Iterable[str] = (),
                   user_tags: Iterable[str] = ()) -> dict[str, Any]:
        """Check the parameters of API ``name`` and run it on this node; the reply body."""
        cls = self.message(name)
        if cls.admin_only and not caller.is_admin:
            raise ZError(PERMISSION_DENIED, "permission denied",
                         f"{name} is for administrators only; account "
                         f"{caller.account_name or caller.account_uuid} is not one")
        raw = dict(params)
        system_tags = list(system_tags) + list(raw.pop("systemTags", None) or [])
        user_tags = list(user_tags) + list(raw.pop("userTags", None) or [])
        msg = cls()
        self._assign(msg, raw)
        validation_only = "validationOnly" in system_tags
        system_tags = [t for t in system_tags if t != "validationOnly"]
        for label, tags in (("systemTags", system_tags), ("userTags", user_tags)):
            for tag in tags:
                if not isinstance(tag, str) or not tag.strip():
                    raise ZError(INVALID_ARGUMENT, "invalid argument",
                                 f"{label} of {name}: {tag!r} is not a tag")
        if system_tags and cls.resource_type:
            for tag in system_tags:
                self.node.tags.patterns.check(tag, cls.resource_type)
        await self._check_resources(msg, caller)
        ctx = ApiContext(node=self.node, caller=caller, api=name,
                         job_uuid=job_uuid or new_uuid(), system_tags=system_tags,
                         user_tags=user_tags)
        try:
            await msg.validate(ctx)
            if validation_only:
                return {}
            token = progress.current_job.set(ctx.job_uuid)
            try:
                body = await msg.handle(ctx)
            finally:
                progress.current_job.reset(token)
        except ZError:
            raise
        except (TimeoutError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("API %s failed", name)
            raise ZError(INTERNAL, "internal error",
                         f"{name} failed: {type(exc).__name__}: {exc}") from exc
        return body if body is not None else {}

    def _assign(self, msg: APIMessage, raw: dict[str, Any]) -> None:
        cls = type(msg)
        unknown = [k for k in raw if k not in cls.params and k not in _SDK_KEYS]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, cls.params, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"{cls.api_name} has no parameter '{key}'{hint} It takes: "
                         + ", ".join(cls.params))
        for name, param in cls.params.items():
            value = raw.get(name)
            if value is None:
                if param.required:
                    raise ZError(INVALID_ARGUMENT, "invalid argument",
                                 f"parameter '{name}' of {cls.api_name} is required")
                continue
            msg.__dict__[name] = param.convert(cls.api_name, value)

    async def _check_resources(self, msg: APIMessage, caller: Caller) -> None:
        wanted: list[tuple[Param, str]] = []
        for param in type(msg).params.values():
            if not param.resource_types:
                continue
            value = msg.__dict__.get(param.name)
            for item in value if isinstance(value, list) else [value] if value else []:
                wanted.append((param, item))
        if not wanted:
            return
        uuids = list({u for _, u in wanted})

        def look(session: Session) -> _Visibility:
            rows = session.execute(select(ResourceVO.uuid, ResourceVO.resourceType,
                                          ResourceVO.ownerAccountUuid)
                                   .where(ResourceVO.uuid.in_(uuids))).all()
            return _Visibility({r[0] for r in rows}, {r[0]: r[2] for r in rows},
                               {r[0]: r[1] for r in rows})

        seen = await self.node.db.read(look)
        api = type(msg).api_name
        for param, item in wanted:
            kind = seen.types.get(item)
            if kind is None or kind not in param.resource_types:
                raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                             f"parameter '{param.name}' of {api}: no "
                             f"{' or '.join(param.resource_types)} has uuid {item}")
            if not caller.is_admin and seen.owners.get(item) != caller.account_uuid:
                raise ZError(PERMISSION_DENIED, "permission denied",
                             f"parameter '{param.name}' of {api}: {kind} {item} belongs to "
                             "another account")

    # ----------------------------------------------------------------- inventories

    def inventory(self, resource_type: str, row: Any) -> Inventory:
        record = self._types[resource_type]
        if record.to_inventory is not None:
            fields = record.to_inventory(row)
            if isinstance(fields, Inventory):  # a subtype's own class (a VLAN L2 network)
                return fields
        else:
            columns = self._columns.get(resource_type)
            if columns is None:
                columns = self._columns[resource_type] = [
                    c for c in _columns(record.model) if c not in record.hidden]
            fields = {c: getattr(row, c) for c in columns}
        return Inventory(record.inventory or resource_type, fields)

    def _plain_columns(self, resource_type: str) -> tuple[str, ...] | None:
        """The columns a query reads of the resource type when its inventory is made of
        them alone (no ``to_inventory``, or one that is ``columns_only``) and its model has
        no inheritance: rows of those columns instead of model instances, which cost more
        to build than a short query costs to run. ``None``: model instances."""
        try:
            return self._plain[resource_type]
        except KeyError:
            pass
        record = self._types[resource_type]
        columns = None
        if (record.to_inventory is None or record.columns_only) and \
                self.query_engine.plain(resource_type):
            columns = tuple(c for c in _columns(record.model) if c not in record.hidden)
            # A row's own attributes (count, index, ...) would hide a column of that name.
            if record.to_inventory is not None and any(hasattr(Row, c) for c in columns):
                columns = None
        self._plain[resource_type] = columns
        return columns

    def inventories(self, session: Session, resource_type: str, rows: Iterable[Any]
                    ) -> list[Inventory]:
        """The inventories of ``rows`` with every plugin's :class:`InventoryExtension` fields.

        Call it inside the transaction that read the rows (``ctx.run``).
        """
        return self.extend(session, resource_type,
                           [self.inventory(resource_type, row) for row in rows])

    def extend(self, session: Session, resource_type: str, inventories: list[Inventory]
               ) -> list[Inventory]:
        """Add the fields of every extension of ``resource_type`` to ``inventories``."""
        extensions = self._extensions.get(resource_type)
        if not extensions or not inventories:
            return inventories
        for extension in extensions:
            found = extension.fields(session, inventories)
            for inventory in inventories:
                extra = found.get(inventory.get("uuid"))
                if extra is not None:
                    inventory.update(extra)
                else:
                    for key, value in extension.defaults:
                        inventory.setdefault(key, list(value) if isinstance(value, tuple)
                                             else value)
        return inventories

    # ----------------------------------------------------------------- queries

    async def query(self, ctx: ApiContext, msg: QueryMessage,
                    extra: Iterable[Condition] = ()) -> dict[str, Any]:
        query, fields = msg.build(extra)
        resource = msg.query_resource
        if fields:
            known = set(self.query_engine.fields(resource))
            for name in fields:
                if name not in known:
                    close = difflib.get_close_matches(name, known, n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    raise ZError(INVALID_ARGUMENT, "invalid argument",
                                 f"fields of {msg.api_name}: {resource} has no field "
                                 f"'{name}'{hint}")
        engine = self.query_engine
        account = ctx.caller.filter_account
        columns = self._plain_columns(resource)
        record = self._types[resource]
        server_class = record.inventory or resource

        def run(session: Session) -> tuple[list[Inventory], int | None]:
            result = engine.run(session, query, account_uuid=account, columns=columns)
            if columns is None or record.to_inventory is not None:
                return self.inventories(session, resource, result.rows), result.total
            return self.extend(session, resource, [
                Inventory(server_class, zip(columns, row, strict=True))
                for row in result.rows]), result.total

        inventories, total = await self.node.db.read(run)
        if fields:
            inventories = [Inventory(inv.server_class, {k: inv[k] for k in fields if k in inv})
                           for inv in inventories]
        if query.count:
            return {"total": total}
        body: dict[str, Any] = {"inventories": inventories}
        if total is not None:
            body["total"] = total
        return body

    # ----------------------------------------------------------------- deletion

    def dependants(self, session: Session, resource_type: str, uuid: str
                   ) -> list[tuple[str, str]]:
        """Every resource below ``uuid`` through the cascade edges, children first."""
        found: list[tuple[str, str]] = []
        seen: set[str] = {uuid}

        def below(kind: str, parent_uuid: str) -> None:
            for child, parent, column in self._edges:
                if parent != kind:
                    continue
                model = self._types[child].model
                if model is None:
                    continue
                for child_uuid in session.scalars(
                        select(model.uuid).where(getattr(model, column) == parent_uuid)):
                    if child_uuid not in seen:
                        seen.add(child_uuid)
                        below(child, child_uuid)
                        found.append((child, child_uuid))

        below(resource_type, uuid)
        return found

    async def remove(self, caller: Caller, resource_type: str, uuid: str, mode: str) -> None:
        """Delete one resource the way its type says (``ResourceType.delete``), or its rows.

        The ``cascade`` plugin calls this for each dependant, children first.
        """
        record = self._types[resource_type]
        if record.delete is not None:
            await record.delete(self.node, caller, uuid, mode)
            return

        def delete_rows(session: Session) -> None:
            row = session.get(record.model, uuid) if record.model is not None else None
            if row is not None:
                delete_resource(session, row)
            else:
                session.execute(sa_delete(ResourceVO).where(ResourceVO.uuid == uuid))

        await self.node.db.run(delete_rows)
