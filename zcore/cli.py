"""``zstack-cli``: ZStack's command line, for every API the management node registers.

The node describes its APIs at ``GET /zstack/v1/openapi.json`` (``x-zstack-apis`` and
``x-zstack-resources``); the CLI reads that once per process and speaks ZStack's REST wire
protocol with nothing but the standard library, so that it starts fast::

    zstack-cli LogInByAccount accountName=admin password=password
    zstack-cli CreateZone name=z1 description="first zone"
    zstack-cli QueryZone name=z1 fields=uuid,name sortBy=createDate sortDirection=desc
    zstack-cli                       # interactive, with completion and history

One-shot mode prints the result as JSON on stdout and exits 0; a failed call prints the error
on stderr and exits 1; a command line that cannot be sent (unknown API or parameter, a value of
the wrong type, a missing required parameter) exits 2. The session of the last login is kept in
``~/.zstack/cli/session`` and the interactive history in ``~/.zstack/cli/history``.

Tests drive :func:`main` directly: ``main(argv, stdin=..., stdout=..., stderr=..., home=...)``.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import json
import os
import re
import shlex
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "ApiParam",
    "ApiSpec",
    "Catalog",
    "CliError",
    "Completer",
    "PreparedCall",
    "ResourceSpec",
    "UsageError",
    "main",
    "prepare_call",
]

API_ROOT = "/zstack/v1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
PROMPT = "zstack-cli >>> "
COMMANDS = ("help", "deploy", "exit", "quit")

#: Arguments of a query API that are not conditions, in the order they are sent.
QUERY_SPECIAL_ARGS = ("limit", "start", "count", "replyWithCount", "sortBy", "sortDirection",
                      "sort", "fields", "groupBy", "filterName")
#: Query operators in the order the server tries them (``=`` last so it never matches ``!=``).
QUERY_OPERATORS = ("!=", ">=", "<=", "!?=", "!~=", "~=", "?=", "=", ">", "<", " is null",
                   " not null")
QUERY_TAG_FIELDS = ("__systemTag__", "__userTag__")
#: Parameters whose values are sent as their SHA-512 hex digest, as ZStack's own CLI does.
HASHED_PARAMS = frozenset({"password", "oldPassword"})
#: The APIs whose passwords are account passwords, sent as their SHA-512 digest as ZStack's
#: clients do; other passwords (a host's SSH password) go as given.
HASHED_APIS = frozenset({"LogInByAccount", "CreateAccount", "UpdateAccount", "LogInByUser",
                         "CreateUser", "UpdateUser"})
TAG_PARAMS = ("systemTags", "userTags")

_PATH_VARIABLE = re.compile(r"\{(\w+)\}")
_TYPE_KINDS = {
    "string": "String", "integer": "Integer", "int": "Integer", "short": "Integer",
    "long": "Long", "boolean": "Boolean", "bool": "Boolean", "double": "Double",
    "float": "Double", "list": "List", "set": "List", "collection": "List", "map": "Map",
}


class CliError(Exception):
    """A command that failed: reported on stderr, exit status 1.

    ``error`` is the server's ``{"error": {...}}`` body when there is one; it is printed as
    JSON so that scripts can read the code.
    """

    exit_status = 1

    def __init__(self, message: str, *, error: dict[str, Any] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.hint = hint

    @property
    def code(self) -> str | None:
        inner = (self.error or {}).get("error")
        return inner.get("code") if isinstance(inner, dict) else None


class UsageError(CliError):
    """A command line that cannot be sent as it is: exit status 2, nothing was sent."""

    exit_status = 2

    def __init__(self, message: str, *, catalog_miss: bool = False) -> None:
        super().__init__(message)
        # An unknown API or parameter: a cached description may be stale, worth one refetch.
        self.catalog_miss = catalog_miss


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


# --------------------------------------------------------------------------------------------
# The node's description of its APIs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiParam:
    """One declared parameter of an API, with its type and validation."""

    name: str
    type: str = "String"
    required: bool = False
    valid_values: tuple[str, ...] = ()
    constraints: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ApiParam:
        skip = {"name", "type", "required", "validValues"}
        return cls(name=str(raw["name"]), type=str(raw.get("type") or "String"),
                   required=bool(raw.get("required", False)),
                   valid_values=tuple(str(v) for v in raw.get("validValues") or ()),
                   constraints=tuple((k, v) for k, v in raw.items() if k not in skip))

    @property
    def kind(self) -> str:
        """The type the CLI coerces to: String, Integer, Long, Boolean, Double, List or Map."""
        return _TYPE_KINDS.get(self.type.lower(), "String")

    def coerce(self, api: str, raw: str) -> Any:
        """Turn the text after ``name=`` into the JSON value this parameter takes."""
        kind = self.kind
        where = f"{api}: {self.name}"
        if kind == "List":
            if raw.startswith("["):
                return _loads(where, raw)  # a JSON text that starts with [ is an array
            return [item for item in raw.split(",") if item != ""]
        if kind == "Map":
            if raw.startswith("{"):
                return _loads(where, raw)  # a JSON text that starts with { is an object
            pairs: dict[str, str] = {}
            for item in filter(None, raw.split(",")):
                key, sep, val = item.partition("=")
                if not sep or not key:
                    raise UsageError(f"{where} expects k1=v1,k2=v2 or a JSON object, "
                                     f"got {raw!r}")
                pairs[key] = val
            return pairs
        if kind in ("Integer", "Long"):
            try:
                return int(raw)
            except ValueError:
                raise UsageError(f"{where} expects an integer, got {raw!r}") from None
        if kind == "Double":
            try:
                return float(raw)
            except ValueError:
                raise UsageError(f"{where} expects a number, got {raw!r}") from None
        if kind == "Boolean":
            if raw.lower() in ("true", "false"):
                return raw.lower() == "true"
            raise UsageError(f"{where} expects true or false, got {raw!r}")
        return raw

    def describe(self) -> str:
        notes = ["required"] if self.required else []
        if self.valid_values:
            notes.append("one of " + ", ".join(self.valid_values))
        for key, value in self.constraints:
            if key == "numberRange" and isinstance(value, list) and len(value) == 2:
                notes.append(f"range {value[0]}..{value[1]}")
            elif value is True and key != "default":
                notes.append(key)
            else:
                notes.append(f"{key} {value if isinstance(value, str) else json.dumps(value)}")
        return ", ".join(notes)


def _loads(where: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{where}: {raw!r} is not valid JSON: {exc}") from None


@dataclass(frozen=True)
class ApiSpec:
    """One API as the node registers it: where it lives and what it takes."""

    name: str
    method: str
    path: str
    envelope: str | None = None
    is_async: bool = False
    query: bool = False
    need_session: bool = True
    resource: str | None = None
    params: tuple[ApiParam, ...] = ()

    @classmethod
    def from_json(cls, name: str, raw: dict[str, Any]) -> ApiSpec:
        return cls(name=name, method=str(raw.get("method", "GET")).upper(),
                   path=str(raw.get("path", "")), envelope=raw.get("envelope"),
                   is_async=bool(raw.get("async", False)), query=bool(raw.get("query", False)),
                   need_session=bool(raw.get("needSession", True)),
                   resource=raw.get("resource"),
                   params=tuple(ApiParam.from_json(p) for p in raw.get("params") or ()))

    @property
    def path_variables(self) -> tuple[str, ...]:
        return tuple(_PATH_VARIABLE.findall(self.path))

    def param(self, name: str) -> ApiParam | None:
        for param in self.params:
            if param.name == name:
                return param
        if name in self.path_variables:
            return ApiParam(name, required=True)
        return None

    @property
    def all_params(self) -> tuple[ApiParam, ...]:
        """The declared parameters plus any path variable the declaration leaves out."""
        declared = {p.name for p in self.params}
        extra = tuple(ApiParam(v, required=True) for v in self.path_variables
                      if v not in declared)
        return extra + self.params

    @property
    def action_key(self) -> str:
        return self.envelope or self.name[:1].lower() + self.name[1:]


@dataclass(frozen=True)
class ResourceSpec:
    """A queryable resource: its fields and its expansions (name -> target resource)."""

    name: str
    fields: tuple[str, ...] = ()
    expansions: tuple[tuple[str, str], ...] = ()

    def expansion(self, name: str) -> str | None:
        return dict(self.expansions).get(name)


@dataclass(frozen=True)
class Catalog:
    """Every API and queryable resource the node describes."""

    apis: dict[str, ApiSpec] = field(default_factory=dict)
    resources: dict[str, ResourceSpec] = field(default_factory=dict)

    @classmethod
    def from_openapi(cls, doc: Any, *, source: str = "openapi.json") -> Catalog:
        apis = doc.get("x-zstack-apis") if isinstance(doc, dict) else None
        if not isinstance(apis, dict):
            raise CliError(f"{source} has no x-zstack-apis: the node does not describe its "
                           "APIs for the CLI")
        resources = doc.get("x-zstack-resources") or {}
        return cls(
            apis={name: ApiSpec.from_json(name, spec) for name, spec in apis.items()},
            resources={
                name: ResourceSpec(name, tuple(spec.get("fields") or ()),
                                   tuple((spec.get("expansions") or {}).items()))
                for name, spec in resources.items()
            },
        )

    def api(self, name: str) -> ApiSpec:
        spec = self.apis.get(name)
        if spec is None:
            raise UsageError(f"unknown API {name!r}{_did_you_mean(name, self.apis)} "
                             "(help lists them)", catalog_miss=True)
        return spec

    def walk(self, resource: str | None, path: Sequence[str]) -> ResourceSpec | None:
        """The resource reached from ``resource`` through the expansions named in ``path``."""
        spec = self.resources.get(resource or "")
        for step in path:
            if spec is None:
                return None
            spec = self.resources.get(spec.expansion(step) or "")
        return spec


# --------------------------------------------------------------------------------------------
# From a command line to an HTTP request
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedCall:
    """An API call ready to send: ``path`` is under ``/zstack/v1`` and has its query string."""

    api: ApiSpec
    method: str
    path: str
    body: dict[str, Any] | None = None
    path_values: tuple[tuple[str, str], ...] = ()


def _hash_password(value: str) -> str:
    return hashlib.sha512(value.encode()).hexdigest()


def _fill_path(api: ApiSpec, values: dict[str, str]) -> str:
    return _PATH_VARIABLE.sub(lambda m: urllib.parse.quote(values[m.group(1)], safe=""),
                              api.path)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _query_string(pairs: Sequence[tuple[str, str]]) -> str:
    return urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote, safe=",")


def _with_query(path: str, pairs: Sequence[tuple[str, str]]) -> str:
    return f"{path}?{_query_string(pairs)}" if pairs else path


def prepare_call(api: ApiSpec, args: Sequence[str], *,
                 session_uuid: str | None = None) -> PreparedCall:
    """Check and translate the arguments of one command into the request ZStack expects.

    ``session_uuid`` fills a ``{sessionUuid}`` path variable left out (``LogOut``,
    ``ValidateSession``). Raises :class:`UsageError` before anything is sent.
    """
    if api.query:
        return _prepare_query(api, args)
    values: dict[str, Any] = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        if not sep or not key:
            raise UsageError(f"{api.name}: expected key=value, got {arg!r}")
        param = api.param(key)
        if param is None:
            names = [p.name for p in api.all_params]
            raise UsageError(f"{api.name}: unknown parameter {key!r}"
                             f"{_did_you_mean(key, names)} (help {api.name} lists them)",
                             catalog_miss=True)
        value = param.coerce(api.name, raw)
        if key in HASHED_PARAMS and api.name in HASHED_APIS and isinstance(value, str):
            value = _hash_password(value)
        if param.valid_values:
            for item in value if isinstance(value, list) else [value]:
                if _scalar(item) not in param.valid_values:
                    raise UsageError(f"{api.name}: {key} must be one of "
                                     f"{', '.join(param.valid_values)}; got {_scalar(item)!r}")
        if key in values:
            if param.kind != "List":
                raise UsageError(f"{api.name}: {key} is given twice")
            values[key] = [*values[key], *value]
        else:
            values[key] = value

    if "sessionUuid" in api.path_variables and "sessionUuid" not in values and session_uuid:
        values["sessionUuid"] = session_uuid
    missing = [p.name for p in api.all_params if p.required and p.name not in values]
    missing += [v for v in api.path_variables if v not in values and v not in missing]
    if missing:
        if missing == ["sessionUuid"]:
            raise UsageError(f"{api.name}: no session: give sessionUuid= or log in first")
        raise UsageError(f"{api.name}: missing required parameter"
                         f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}")

    return _request(api, values)


def _request(api: ApiSpec, values: dict[str, Any]) -> PreparedCall:
    """The request for ``api`` with checked, typed parameter values."""
    path_values = {v: _scalar(values.pop(v)) for v in api.path_variables}
    path = _fill_path(api, path_values)
    body: dict[str, Any] | None = None
    if api.method == "POST":
        tags = {t: values.pop(t) for t in TAG_PARAMS if t in values}
        body = {api.envelope or "params": values, **tags}
    elif api.method in ("GET", "DELETE"):
        pairs: list[tuple[str, str]] = []
        for key, value in values.items():
            if isinstance(value, list):
                pairs += [(key, _scalar(item)) for item in value]
            elif isinstance(value, dict):
                pairs += [(f"{key}.{k}", _scalar(v)) for k, v in value.items()]
            else:
                pairs.append((key, _scalar(value)))
        path = _with_query(path, pairs)
    else:
        body = {api.action_key: values}
    return PreparedCall(api, api.method, path, body, tuple(path_values.items()))


def _join_null_conditions(args: Sequence[str]) -> list[str]:
    """``name is null`` and ``name not null`` arrive as three argv words: make them one."""
    joined: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        following = [w.lower() for w in args[i + 1:i + 3]]
        if not any(c in word for c in "=<>") and following in (["is", "null"],
                                                                 ["not", "null"]):
            joined.append(f"{word} {following[0]} null")
            i += 3
            continue
        joined.append(word)
        i += 1
    return joined


def _prepare_query(api: ApiSpec, args: Sequence[str]) -> PreparedCall:
    conditions: list[str] = []
    special: dict[str, str] = {}
    path_values: dict[str, str] = {}
    for arg in _join_null_conditions(args):
        key, sep, raw = arg.partition("=")
        if sep and key in QUERY_SPECIAL_ARGS:
            if key in special:
                raise UsageError(f"{api.name}: {key} is given twice")
            special[key] = raw
        elif sep and key in api.path_variables:
            path_values[key] = raw
        else:
            conditions.append(arg)
    missing = [v for v in api.path_variables if v not in path_values]
    if missing:
        raise UsageError(f"{api.name}: missing required parameter {', '.join(missing)}")

    pairs = [("q", c) for c in conditions]
    for key in ("limit", "start"):
        if key in special:
            try:
                pairs.append((key, str(int(special[key]))))
            except ValueError:
                raise UsageError(f"{api.name}: {key} expects an integer, "
                                 f"got {special[key]!r}") from None
    for key in ("count", "replyWithCount"):
        if key in special:
            if special[key].lower() not in ("true", "false"):
                raise UsageError(f"{api.name}: {key} expects true or false, "
                                 f"got {special[key]!r}")
            pairs.append((key, special[key].lower()))
    if "sortDirection" in special and "sortBy" not in special:
        raise UsageError(f"{api.name}: sortDirection needs sortBy")
    if "sortBy" in special:
        if "sort" in special:
            raise UsageError(f"{api.name}: give sortBy/sortDirection or sort, not both")
        direction = special.get("sortDirection", "asc").lower()
        if direction not in ("asc", "desc"):
            raise UsageError(f"{api.name}: sortDirection must be asc or desc, "
                             f"got {special['sortDirection']!r}")
        pairs.append(("sort", ("+" if direction == "asc" else "-") + special["sortBy"]))
    for key in ("sort", "fields", "groupBy", "filterName"):
        if key in special:
            pairs.append((key, special[key]))
    path = _with_query(_fill_path(api, path_values), pairs)
    return PreparedCall(api, api.method, path, None, tuple(path_values.items()))


# --------------------------------------------------------------------------------------------
# HTTP, sessions
# --------------------------------------------------------------------------------------------


def _strip_schema(body: Any) -> Any:
    if isinstance(body, dict) and "schema" in body:
        return {k: v for k, v in body.items() if k != "schema"}
    return body


class Client:
    """Talks to one management node over HTTP (urllib only, so the CLI starts fast)."""

    def __init__(self, host: str, port: int, *, timeout: float = 600.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.host = host
        self.port = port
        self.base_url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self.timeout = timeout
        self._sleep = sleep
        # A proxy from the environment must not swallow calls to the node on this machine.
        local = host in ("127.0.0.1", "localhost", "::1")
        handlers = [urllib.request.ProxyHandler({})] if local else []
        self._opener = urllib.request.build_opener(*handlers)

    def url(self, path: str) -> str:
        return f"{self.base_url}{API_ROOT}{path}"

    def send(self, method: str, url: str, body: Any = None,
             session: str | None = None) -> tuple[int, Any]:
        """One HTTP exchange; returns the status and the decoded JSON (or text) body."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if session:
            headers["Authorization"] = f"OAuth {session}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the management node at {url}: {reason}") from None
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text) if text.strip() else {}
        except ValueError:
            return status, text

    def fetch_catalog(self) -> Catalog:
        url = self.url("/openapi.json")
        status, body = self.send("GET", url)
        if status != 200:
            raise _failure(f"GET {url}", status, body)
        return Catalog.from_openapi(body, source=url)

    def call(self, call: PreparedCall, session: str | None) -> Any:
        """Send an API call, follow a 202 to its result, and return it without ``schema``."""
        url = self.url(call.path)
        status, body = self.send(call.method, url, call.body, session)
        if status == 202:
            location = body.get("location") if isinstance(body, dict) else None
            if not location:
                raise CliError(f"{call.api.name}: the node answered 202 without a location to "
                               f"poll ({url})")
            timeout = body.get("apiTimeout") if isinstance(body, dict) else None
            return self.poll(call.api.name, urllib.parse.urljoin(url, location), timeout)
        if status == 200:
            return _strip_schema(body)
        raise _failure(call.api.name, status, body, url)

    def poll(self, api: str, location: str, api_timeout_ms: Any = None) -> Any:
        """Poll an async job until it answers 200 (result) or fails, backing off to 0.5 s."""
        limit = api_timeout_ms / 1000 + 30 if isinstance(api_timeout_ms, int | float) else 86400
        deadline = time.monotonic() + limit
        delay = 0.01
        while True:
            status, body = self.send("GET", location)
            if status == 200:
                return _strip_schema(body)
            if status != 202:
                if status == 404:
                    raise CliError(f"{api}: the job at {location} is unknown or expired")
                raise _failure(api, status, body, location)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CliError(f"{api}: no result after {limit:.0f} s; the job may still be "
                               f"running: GET {location}")
            self._sleep(min(delay, remaining))
            delay = min(delay * 2, 0.5)


def _failure(what: str, status: int, body: Any, url: str | None = None) -> CliError:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return CliError(f"{what}: {error.get('code')} {error.get('description') or ''}".strip(),
                        error={"error": error})
    text = body if isinstance(body, str) else json.dumps(body)
    where = f" from {url}" if url else ""
    return CliError(f"{what}: HTTP {status}{where}: {text.strip()[:500]}")


class SessionStore:
    """The session of the last login, in ``<dir>/session`` (mode 0600)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "session"

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("uuid") else None

    def save(self, session: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(session, out)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

#: API descriptions already fetched by this process, by node URL.
_catalogs: dict[str, Catalog] = {}


class Shell:
    """Runs commands (API calls, ``help``) against one node and prints what they return."""

    def __init__(self, client: Client, store: SessionStore, stdout: TextIO,
                 stderr: TextIO) -> None:
        self.client = client
        self.store = store
        self.stdout = stdout
        self.stderr = stderr
        self._catalog: Catalog | None = None
        self._fresh = False

    def catalog(self, *, refresh: bool = False) -> Catalog:
        if self._catalog is None or refresh:
            cached = None if refresh else _catalogs.get(self.client.base_url)
            if cached is None:
                cached = _catalogs[self.client.base_url] = self.client.fetch_catalog()
                self._fresh = True
            self._catalog = cached
        return self._catalog

    def catalog_or_none(self) -> Catalog | None:
        try:
            return self.catalog()
        except CliError:
            return None

    def run(self, words: Sequence[str]) -> int:
        """Run one command, print its result or error; returns the exit status."""
        try:
            output = self.execute(words)
        except CliError as exc:
            self.report(exc)
            return exc.exit_status
        if isinstance(output, str):
            print(output, file=self.stdout)
        elif output is not None:
            print(json.dumps(output, indent=2, ensure_ascii=False), file=self.stdout)
        self.stdout.flush()
        return 0

    def report(self, exc: CliError) -> None:
        if exc.error is not None:
            print(json.dumps(exc.error, indent=2, ensure_ascii=False), file=self.stderr)
        else:
            print(f"zstack-cli: {exc}", file=self.stderr)
        if exc.hint:
            print(f"zstack-cli: {exc.hint}", file=self.stderr)
        self.stderr.flush()

    def execute(self, words: Sequence[str]) -> Any:
        name, args = words[0], list(words[1:])
        if name == "help":
            return self.help(args)
        if name == "deploy":
            return self.deploy(args)
        session = self.store.load()
        session_uuid = session["uuid"] if session else None
        try:
            call = prepare_call(self.catalog().api(name), args, session_uuid=session_uuid)
        except UsageError as exc:
            # An API description cached by an earlier command may predate the node's plugins.
            if not exc.catalog_miss or self._fresh:
                raise
            call = prepare_call(self.catalog(refresh=True).api(name), args,
                                session_uuid=session_uuid)
        try:
            result = self.client.call(call, session_uuid if call.api.need_session else None)
        except CliError as exc:
            if exc.code == "ID.1001" and session is None:
                exc.hint = ("no session: log in first with LogInByAccount accountName=... "
                            "password=...")
            raise
        self._after(call, result, session_uuid)
        return result

    def _after(self, call: PreparedCall, result: Any, session_uuid: str | None) -> None:
        name = call.api.name
        if name.startswith("LogIn") and isinstance(result, dict):
            inventory = result.get("inventory")
            if isinstance(inventory, dict) and inventory.get("uuid"):
                self.store.save({"uuid": inventory["uuid"],
                                 "accountUuid": inventory.get("accountUuid"),
                                 "host": self.client.host, "port": self.client.port})
        elif (name == "LogOut" and session_uuid is not None
              and dict(call.path_values).get("sessionUuid") == session_uuid):
            self.store.clear()

    def deploy(self, args: Sequence[str]) -> Any:
        """``deploy [--skip-existing] [--check] FILE``: build the environment a YAML file
        describes (:mod:`zcore.deploy`) with the stored session; the uuids by kind and name."""
        import asyncio

        from zcore import deploy as builder

        flags = {a for a in args if a.startswith("--")}
        files = [a for a in args if not a.startswith("--")]
        if flags - {"--skip-existing", "--check"} or len(files) != 1:
            raise UsageError("usage: deploy [--skip-existing] [--check] FILE.yaml")
        session = self.store.load()
        if session is None:
            raise CliError("deploy: no session: log in first with LogInByAccount "
                           "accountName=... password=...")
        catalog = self.catalog(refresh=True)
        apis = {name: {p.name for p in api.all_params} | set(TAG_PARAMS)
                for name, api in catalog.apis.items()}
        try:
            steps = builder.plan(builder.load_spec(files[0]), apis=apis, source=files[0])
        except builder.SpecError as exc:
            raise UsageError(str(exc)) from None
        if "--check" in flags:
            return f"{files[0]}: valid; deploying it makes {len(steps)} API calls"
        caller = _DeployCaller(self.client, catalog, session["uuid"])

        def progress(line: str) -> None:
            print(line, file=self.stderr, flush=True)

        try:
            done = asyncio.run(builder.deploy(steps, caller, progress=progress,
                                              skip_existing="--skip-existing" in flags))
        except builder.DeployError as exc:
            raise CliError(str(exc)) from None
        return done.to_dict()

    def help(self, args: Sequence[str]) -> str:
        catalog = self.catalog()
        if not args:
            header = (f"{len(catalog.apis)} APIs; 'help <API>' shows its parameters, "
                      "'exit' leaves:")
            return "\n".join([header, *sorted(catalog.apis)])
        name = args[0]
        api = catalog.apis.get(name)
        if api is None:
            related = sorted(n for n in catalog.apis if name.lower() in n.lower())
            if related:
                return "\n".join(related)
            catalog.api(name)  # raises with a did-you-mean
        assert api is not None
        mode = "async" if api.is_async else "sync"
        session = "needs a session" if api.need_session else "no session needed"
        lines = [f"{api.name}: {api.method} {API_ROOT}{api.path} ({mode}, {session})"]
        if api.query:
            lines += self._help_query(catalog, api)
        # A query's conditions arrive as repeated q=, already explained above.
        params = tuple(p for p in api.all_params if not (api.query and p.name == "q"))
        width = max((len(p.name) for p in params), default=0)
        for param in params:
            notes = param.describe()
            lines.append(f"  {param.name.ljust(width)}  {param.kind:<8} {notes}".rstrip())
        return "\n".join(lines)

    @staticmethod
    def _help_query(catalog: Catalog, api: ApiSpec) -> list[str]:
        lines = ["  conditions: field<op>value, op one of "
                 + " ".join(op.strip() for op in QUERY_OPERATORS)
                 + " (e.g. name=z1 'cpuNum>4' uuid?=a,b description~=%x% state not null)",
                 ("  also: fields=a,b limit=N start=N count=true replyWithCount=true "
                  "sortBy=field sortDirection=asc|desc groupBy=field filterName=name")]
        resource = catalog.resources.get(api.resource or "")
        if resource is not None:
            lines.append(f"  resource {resource.name}: {', '.join(resource.fields)}")
            for exp, target in resource.expansions:
                lines.append(f"  {exp}.<field>: {target}")
        return lines


class _DeployCaller:
    """The environment builder's view of the node: ``await call(api, **params)``."""

    def __init__(self, client: Client, catalog: Catalog, session_uuid: str) -> None:
        self.client = client
        self.catalog = catalog
        self.session_uuid = session_uuid

    async def call(self, api: str, **params: Any) -> Any:
        import asyncio

        spec = self.catalog.api(api)
        if spec.query:
            pairs = [("q", c) for c in params.pop("q", [])]
            pairs += [(k, _scalar(v)) for k, v in params.items()]
            call = PreparedCall(spec, spec.method, _with_query(_fill_path(spec, {}), pairs))
        else:
            call = _request(spec, dict(params))
        session = self.session_uuid if spec.need_session else None
        try:
            return await asyncio.to_thread(self.client.call, call, session)
        except CliError as exc:
            inner = (exc.error or {}).get("error")
            if not isinstance(inner, dict):
                raise
            text = " ".join(str(inner.get(k)) for k in ("code", "description") if inner.get(k))
            details = inner.get("details")
            raise CliError(f"{text}: {details}" if details else text, error=exc.error) from None


# --------------------------------------------------------------------------------------------
# Completion
# --------------------------------------------------------------------------------------------


def _prefixed(words: Iterable[str], prefix: str) -> list[str]:
    words = list(words)
    exact = sorted({w for w in words if w.startswith(prefix)})
    if exact or not prefix:
        return exact
    return sorted({w for w in words if w.lower().startswith(prefix.lower())})


class Completer:
    """Completes API names, parameters, valid values and query fields.

    :meth:`candidates` takes the line up to the cursor and returns replacements for its last
    word; :meth:`complete` is the hook readline calls (word delimiters: whitespace only).
    """

    def __init__(self, catalog: Callable[[], Catalog | None],
                 line_buffer: Callable[[], str] | None = None) -> None:
        self._catalog = catalog
        self._line_buffer = line_buffer
        self._matches: list[str] = []

    def complete(self, text: str, state: int) -> str | None:
        # readline swallows a completer's exceptions; catalog failures are already None here.
        if state == 0:
            line = self._line_buffer() if self._line_buffer else _readline_line()
            self._matches = self.candidates(line)
        return self._matches[state] if state < len(self._matches) else None

    def candidates(self, line: str) -> list[str]:
        catalog = self._catalog()
        if catalog is None:
            return []
        parts = line.split()
        if line and not line[-1].isspace() and parts:
            current = parts.pop()
        else:
            current = ""
        try:
            words = shlex.split(" ".join(parts))
        except ValueError:
            words = parts
        if not words:
            return [w + " " for w in _prefixed([*COMMANDS, *catalog.apis], current)]
        if words[0] == "help":
            return [w + " " for w in _prefixed(catalog.apis, current)] if len(words) == 1 else []
        api = catalog.apis.get(words[0])
        if api is None:
            return []
        if api.query:
            return self._query(catalog, api, words[1:], current)
        return self._params(api, words[1:], current)

    @staticmethod
    def _params(api: ApiSpec, given: Sequence[str], current: str) -> list[str]:
        key, sep, value = current.partition("=")
        if sep:
            param = api.param(key)
            if param is None:
                return []
            choices = param.valid_values or (("true", "false") if param.kind == "Boolean"
                                             else ())
            return [f"{key}={v} " for v in _prefixed(choices, value)]
        used = {w.partition("=")[0] for w in given}
        return [f"{n}=" for n in _prefixed((p.name for p in api.all_params
                                             if p.name not in used), current)]

    @staticmethod
    def _query(catalog: Catalog, api: ApiSpec, given: Sequence[str],
               current: str) -> list[str]:
        resource = catalog.resources.get(api.resource or "")
        fields = resource.fields if resource else ()
        key, sep, value = current.partition("=")
        if sep:
            if key in ("sortBy", "groupBy"):
                return [f"{key}={f} " for f in _prefixed(fields, value)]
            if key == "sortDirection":
                return [f"{key}={v} " for v in _prefixed(("asc", "desc"), value)]
            if key in ("count", "replyWithCount"):
                return [f"{key}={v} " for v in _prefixed(("true", "false"), value)]
            if key == "fields":
                done, _, last = value.rpartition(",")
                head = f"{key}={done}," if done else f"{key}="
                return [head + f for f in _prefixed(fields, last)]
            return []
        if any(op.strip() in current for op in QUERY_OPERATORS[:10]):
            return []
        *path, last = current.split(".")
        target = catalog.walk(api.resource, path)
        if target is None:
            return []
        prefix = "".join(f"{p}." for p in path)
        names = [*target.fields, *(f"{e}." for e, _ in target.expansions)]
        if not path:
            used = {w.partition("=")[0] for w in given}
            names += [*QUERY_TAG_FIELDS, *(f"{s}=" for s in QUERY_SPECIAL_ARGS if s not in used),
                      *(f"{v}=" for v in api.path_variables if v not in used)]
        return [prefix + n for n in _prefixed(names, last)]


def _readline_line() -> str:
    import readline

    return readline.get_line_buffer()[:readline.get_endidx()]


# --------------------------------------------------------------------------------------------
# Modes and entry point
# --------------------------------------------------------------------------------------------


def _split(line: str) -> list[str]:
    if line.lstrip().startswith("#"):
        return []
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse {line.strip()!r}: {exc}") from None


def _run_stream(shell: Shell, lines: Iterable[str]) -> int:
    """Commands piped in, one a line: run them all; status 1 if any failed."""
    failed = False
    for line in lines:
        try:
            words = _split(line)
        except UsageError as exc:
            shell.report(exc)
            failed = True
            continue
        if not words:
            continue
        if words[0] in ("exit", "quit"):
            break
        failed = shell.run(words) != 0 or failed
    return 1 if failed else 0


def _run_tty(shell: Shell, directory: Path) -> int:
    """The interactive prompt: readline editing, completion and history."""
    import readline

    history = directory / "history"
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_history_length(2000)
    readline.set_completer_delims(" \t\n")
    readline.set_completer(Completer(shell.catalog_or_none).complete)
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    try:
        shell.catalog()
    except CliError as exc:
        shell.report(exc)
    try:
        while True:
            try:
                line = input(PROMPT)
            except EOFError:
                print(file=shell.stdout)
                return 0
            except KeyboardInterrupt:
                print(file=shell.stdout)
                continue
            try:
                words = _split(line)
                if not words:
                    continue
                if words[0] in ("exit", "quit"):
                    return 0
                shell.run(words)
            except UsageError as exc:
                shell.report(exc)
            except KeyboardInterrupt:
                print("\nzstack-cli: interrupted", file=shell.stderr)
    finally:
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            readline.write_history_file(history)
        except OSError:
            pass


_USAGE = """\
usage: zstack-cli [--host HOST | -s HOST] [--port PORT | -p PORT] [API [key=value ...]]

With an API, call it once and print the result as JSON (exit 0; 1 if the call failed;
2 if the command line is wrong). Without one, read commands interactively (or line by line
from a pipe). 'help' lists the APIs, 'help <API>' shows a parameter list.
'deploy [--skip-existing] [--check] env.yaml' builds the environment a file describes.
Defaults: host 127.0.0.1 (ZSTACK_CLI_HOST), port 8080 (ZSTACK_CLI_PORT)."""


def _parse_options(argv: Sequence[str]) -> tuple[str, int, list[str]] | None:
    """``(host, port, command words)``, or None for ``--help``."""
    host = os.environ.get("ZSTACK_CLI_HOST") or DEFAULT_HOST
    port_text = os.environ.get("ZSTACK_CLI_PORT") or str(DEFAULT_PORT)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            return None
        if arg == "--":
            i += 1
            break
        option, eq, value = arg.partition("=")
        if option in ("--host", "--port") and eq or arg in ("--host", "-s", "--port", "-p"):
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"{arg} needs a value")
                value = argv[i + 1]
                i += 1
            if option in ("--host", "-s"):
                host = value
            else:
                port_text = value
            i += 1
            continue
        if arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r}")
        break
    try:
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise UsageError(f"port must be a number from 1 to 65535, got {port_text!r}") from None
    return host, port, list(argv[i:])


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None,
         home: str | os.PathLike[str] | None = None) -> int:
    """Run ``zstack-cli`` and return its exit status.

    ``argv`` defaults to ``sys.argv[1:]``; ``home`` replaces the user's home directory, under
    which the session and history live (``<home>/.zstack/cli/``). Without an API in ``argv``
    the commands are read from ``stdin``: with readline when it is the terminal, else line by
    line (the status is then 1 if any command failed).
    """
    words = list(sys.argv[1:] if argv is None else argv)
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        options = _parse_options(words)
    except UsageError as exc:
        print(f"zstack-cli: {exc}\n{_USAGE.splitlines()[0]}", file=err)
        return 2
    if options is None:
        print(_USAGE, file=out)
        return 0
    host, port, command = options
    directory = (Path(home) if home is not None else Path.home()) / ".zstack" / "cli"
    shell = Shell(Client(host, port), SessionStore(directory), out, err)
    try:
        if command:
            return shell.run(command)
        source = stdin or sys.stdin
        if source is sys.stdin and source.isatty():
            return _run_tty(shell, directory)
        return _run_stream(shell, source)
    except KeyboardInterrupt:
        print("zstack-cli: interrupted", file=err)
        return 130


if __name__ == "__main__":
    sys.exit(main())
