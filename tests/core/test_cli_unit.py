"""zstack-cli against a fake node: what it sends, what it prints, what it keeps on disk.

The fake node is a tiny ``http.server`` in a thread that serves an ``openapi.json`` with the
``x-zstack-apis`` and ``x-zstack-resources`` extensions, records every request and answers
with replies queued per (method, path).
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from zcore import cli
from zcore.cli import Catalog, Completer, UsageError, main, prepare_call
from zcore.testing import free_port

SESSION = "5e55107a" * 4
ACCOUNT = "a5c0a5c0" * 4
ZONE = "20fe20fe" * 4
PASSWORD_DIGEST = hashlib.sha512(b"password").hexdigest()

TAGS = [{"name": "systemTags", "type": "List"}, {"name": "userTags", "type": "List"}]

APIS: dict[str, Any] = {
    "CreateZone": {
        "method": "POST", "path": "/zones", "envelope": "params", "async": True,
        "query": False, "needSession": True, "resource": None,
        "params": [{"name": "name", "type": "String", "required": True, "maxLength": 255},
                   {"name": "description", "type": "String", "maxLength": 2048},
                   {"name": "isDefault", "type": "Boolean"},
                   {"name": "resourceUuid", "type": "String"}, *TAGS]},
    "UpdateZone": {
        "method": "PUT", "path": "/zones/{uuid}/actions", "envelope": "updateZone",
        "async": True, "query": False, "needSession": True,
        "params": [{"name": "uuid", "type": "String", "required": True},
                   {"name": "name", "type": "String"},
                   {"name": "description", "type": "String"}, *TAGS]},
    "ChangeZoneState": {
        "method": "PUT", "path": "/zones/{uuid}/actions", "envelope": "changeZoneState",
        "async": True, "query": False, "needSession": True,
        "params": [{"name": "uuid", "type": "String", "required": True},
                   {"name": "stateEvent", "type": "String", "required": True,
                    "validValues": ["enable", "disable"]}, *TAGS]},
    "DeleteZone": {
        "method": "DELETE", "path": "/zones/{uuid}", "envelope": None, "async": True,
        "query": False, "needSession": True,
        "params": [{"name": "uuid", "type": "String", "required": True},
                   {"name": "deleteMode", "type": "String",
                    "validValues": ["Permissive", "Enforcing"]}, *TAGS]},
    "CreateThing": {
        "method": "POST", "path": "/things", "envelope": "params", "async": False,
        "query": False, "needSession": True,
        "params": [{"name": "name", "type": "String", "required": True},
                   {"name": "cpuNum", "type": "Integer", "numberRange": [1, 1024]},
                   {"name": "memorySize", "type": "Long"},
                   {"name": "ratio", "type": "Double"},
                   {"name": "enabled", "type": "boolean"},
                   {"name": "labels", "type": "Map"},
                   {"name": "l3NetworkUuids", "type": "List", "nonempty": True},
                   {"name": "vmNicParams", "type": "String"},
                   {"name": "mode", "type": "org.zstack.sdk.SomeEnum"},
                   {"name": "force", "type": "Boolean", "default": False}, *TAGS]},
    "GetThing": {
        "method": "GET", "path": "/things/{uuid}/details", "envelope": None, "async": False,
        "query": False, "needSession": True,
        "params": [{"name": "uuid", "type": "String", "required": True},
                   {"name": "clientInfo", "type": "Map"},
                   {"name": "depth", "type": "Integer"},
                   {"name": "all", "type": "Boolean"}, *TAGS]},
    "UpdateGlobalConfig": {
        "method": "PUT", "path": "/global-configurations/{category}/{name}/actions",
        "envelope": "updateGlobalConfig", "async": True, "query": False, "needSession": True,
        "params": [{"name": "category", "type": "String", "required": True},
                   {"name": "name", "type": "String", "required": True},
                   {"name": "value", "type": "String"}, *TAGS]},
    "QueryZone": {"method": "GET", "path": "/zones", "envelope": None, "async": False,
                  "query": True, "needSession": True, "resource": "ZoneVO", "params": []},
    "QueryCluster": {"method": "GET", "path": "/clusters", "envelope": None, "async": False,
                     "query": True, "needSession": True, "resource": "ClusterVO",
                     "params": []},
    "QueryThingRef": {"method": "GET", "path": "/things/{thingUuid}/refs", "envelope": None,
                      "async": False, "query": True, "needSession": True,
                      "resource": "ZoneVO", "params": []},
    "LogInByAccount": {
        "method": "PUT", "path": "/accounts/login", "envelope": "logInByAccount",
        "async": False, "query": False, "needSession": False,
        "params": [{"name": "accountName", "type": "String", "required": True},
                   {"name": "password", "type": "String", "required": True},
                   {"name": "clientInfo", "type": "Map"}, *TAGS]},
    "LogOut": {
        "method": "DELETE", "path": "/accounts/sessions/{sessionUuid}", "envelope": None,
        "async": False, "query": False, "needSession": False,
        "params": [{"name": "sessionUuid", "type": "String"}, *TAGS]},
    "ValidateSession": {
        "method": "GET", "path": "/accounts/sessions/{sessionUuid}/valid", "envelope": None,
        "async": False, "query": False, "needSession": False,
        "params": [{"name": "sessionUuid", "type": "String", "required": True}, *TAGS]},
    "UpdateAccount": {
        "method": "PUT", "path": "/accounts/{uuid}", "envelope": "updateAccount",
        "async": True, "query": False, "needSession": True,
        "params": [{"name": "uuid", "type": "String", "required": True},
                   {"name": "password", "type": "String", "maxLength": 255},
                   {"name": "oldPassword", "type": "String", "maxLength": 255}, *TAGS]},
    "AddKVMHost": {
        "method": "POST", "path": "/hosts/kvm", "envelope": "params",
        "async": False, "query": False, "needSession": True,
        "params": [{"name": "managementIp", "type": "String", "required": True},
                   {"name": "password", "type": "String", "required": True}, *TAGS]},
}

RESOURCES: dict[str, Any] = {
    "ZoneVO": {"fields": ["createDate", "description", "isDefault", "lastOpDate", "name",
                          "state", "type", "uuid"],
               "expansions": {"cluster": "ClusterVO"}},
    "ClusterVO": {"fields": ["createDate", "hypervisorType", "name", "state", "uuid",
                             "zoneUuid"],
                  "expansions": {"zone": "ZoneVO", "host": "HostVO"}},
    "HostVO": {"fields": ["managementIp", "name", "status", "uuid"],
               "expansions": {"cluster": "ClusterVO"}},
}


def openapi() -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "zstack", "version": "test"}, "paths": {},
            "x-zstack-apis": json.loads(json.dumps(APIS)),
            "x-zstack-resources": json.loads(json.dumps(RESOURCES))}


@dataclass
class Recorded:
    method: str
    path: str
    raw_query: str
    headers: dict[str, str]
    raw_body: bytes

    @property
    def query(self) -> list[tuple[str, str]]:
        return urllib.parse.parse_qsl(self.raw_query, keep_blank_values=True)

    @property
    def body(self) -> Any:
        return json.loads(self.raw_body) if self.raw_body else None


Reply = tuple[int, Any]


class FakeNode:
    """Serves openapi.json, records requests, answers from queues of replies."""

    def __init__(self) -> None:
        self.doc = openapi()
        self.requests: list[Recorded] = []
        self._replies: dict[tuple[str, str], list[Reply]] = {}
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                path, _, query = self.path.partition("?")
                node.requests.append(Recorded(self.command, path, query, dict(self.headers),
                                              self.rfile.read(length)))
                status, body = node.answer(self.command, path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def on(self, method: str, path: str, *replies: Reply) -> None:
        """Queue replies for ``method path`` (path under /zstack/v1); the last one repeats."""
        self._replies[(method, "/zstack/v1" + path)] = list(replies)

    def answer(self, method: str, path: str) -> Reply:
        if method == "GET" and path == "/zstack/v1/openapi.json":
            return 200, self.doc
        queue = self._replies.get((method, path))
        if not queue:
            return 200, {"schema": {}}
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return status, body(self) if callable(body) else body

    def job(self, uuid: str) -> Callable[[FakeNode], dict[str, Any]]:
        return lambda node: {"location": f"http://127.0.0.1:{node.port}/zstack/v1/api-jobs/"
                                         f"{uuid}", "apiTimeout": 60000}

    @property
    def calls(self) -> list[Recorded]:
        """Requests other than fetching openapi.json."""
        return [r for r in self.requests if not r.path.endswith("/openapi.json")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_catalogs", {})
    monkeypatch.delenv("ZSTACK_CLI_HOST", raising=False)
    monkeypatch.delenv("ZSTACK_CLI_PORT", raising=False)


@pytest.fixture
def node() -> Iterator[FakeNode]:
    fake = FakeNode()
    yield fake
    fake.close()


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def run(node: FakeNode, tmp_path: Path) -> Callable[..., Run]:
    def go(*argv: str, stdin: str | None = None) -> Run:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--port", str(node.port), *argv], home=tmp_path, stdout=out, stderr=err,
                     stdin=io.StringIO(stdin) if stdin is not None else None)
        return Run(code, out.getvalue(), err.getvalue())

    return go


def login(tmp_path: Path) -> None:
    directory = tmp_path / ".zstack" / "cli"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "session").write_text(json.dumps({"uuid": SESSION, "accountUuid": ACCOUNT,
                                                   "host": "127.0.0.1", "port": 1}))


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.from_openapi(openapi())


# ---------------------------------------------------------------------------------------------
# Arguments: coercion per declared type
# ---------------------------------------------------------------------------------------------


def test_values_are_coerced_by_declared_type(catalog: Catalog) -> None:
    call = prepare_call(catalog.api("CreateThing"), [
        "name=123", "cpuNum=4", "memorySize=8589934592", "ratio=1.5", "enabled=TRUE",
        "labels=a=1,b=x=y", "l3NetworkUuids=a,b,c", 'vmNicParams=[{"l3NetworkUuid": "x"}]',
        "mode=7", "systemTags=hostname::h1",
    ])
    assert call.method == "POST" and call.path == "/things"
    assert call.body == {
        "params": {"name": "123", "cpuNum": 4, "memorySize": 8589934592, "ratio": 1.5,
                   "enabled": True, "labels": {"a": "1", "b": "x=y"},
                   "l3NetworkUuids": ["a", "b", "c"],
                   "vmNicParams": '[{"l3NetworkUuid": "x"}]', "mode": "7"},
        "systemTags": ["hostname::h1"],
    }


def test_json_lists_and_maps_and_repeated_list_keys(catalog: Catalog) -> None:
    call = prepare_call(catalog.api("CreateThing"), [
        "name=t", 'l3NetworkUuids=["a", "b"]', 'labels={"k": {"n": 1}}', "enabled=false",
        "systemTags=a::1", "systemTags=b::2,c::3", "userTags=",
    ])
    assert call.body == {"params": {"name": "t", "l3NetworkUuids": ["a", "b"],
                                    "labels": {"k": {"n": 1}}, "enabled": False},
                         "systemTags": ["a::1", "b::2", "c::3"], "userTags": []}


@pytest.mark.parametrize(("args", "message"), [
    (["name=t", "cpuNum=four"], "CreateThing: cpuNum expects an integer, got 'four'"),
    (["name=t", "memorySize=1.5"], "memorySize expects an integer"),
    (["name=t", "ratio=x"], "ratio expects a number"),
    (["name=t", "enabled=yes"], "enabled expects true or false"),
    (["name=t", "labels=nokey"], "labels expects k1=v1,k2=v2 or a JSON object"),
    (["name=t", 'labels=["a"]'], "labels expects k1=v1,k2=v2 or a JSON object"),
    (["name=t", "labels={oops"], "is not valid JSON"),
    (["name=t", "l3NetworkUuids=[1,"], "is not valid JSON"),
    (["name=t", "nmae=x"], "unknown parameter 'nmae'; did you mean 'name'?"),
    (["name"], "expected key=value, got 'name'"),
    (["cpuNum=1"], "missing required parameter name"),
])
def test_bad_arguments_are_usage_errors(catalog: Catalog, args: list[str],
                                        message: str) -> None:
    with pytest.raises(UsageError) as caught:
        prepare_call(catalog.api("CreateThing"), args)
    assert message in str(caught.value)
    assert caught.value.exit_status == 2


def test_valid_values_and_duplicates_are_checked(catalog: Catalog) -> None:
    with pytest.raises(UsageError, match="stateEvent must be one of enable, disable; got 'on'"):
        prepare_call(catalog.api("ChangeZoneState"), [f"uuid={ZONE}", "stateEvent=on"])
    with pytest.raises(UsageError, match="name is given twice"):
        prepare_call(catalog.api("UpdateZone"), [f"uuid={ZONE}", "name=a", "name=b"])


def test_unknown_api_suggests_the_closest(catalog: Catalog) -> None:
    with pytest.raises(UsageError, match="unknown API 'CreateZon'; did you mean 'CreateZone'"):
        catalog.api("CreateZon")


# ---------------------------------------------------------------------------------------------
# Body and query-string shapes per method
# ---------------------------------------------------------------------------------------------


def test_put_action_body_and_path_variables(catalog: Catalog) -> None:
    call = prepare_call(catalog.api("UpdateZone"),
                        [f"uuid={ZONE}", "name=z2", "description=a b", "systemTags=x::y"])
    assert (call.method, call.path) == ("PUT", f"/zones/{ZONE}/actions")
    assert call.body == {"updateZone": {"name": "z2", "description": "a b",
                                        "systemTags": ["x::y"]}}
    empty = prepare_call(catalog.api("UpdateZone"), [f"uuid={ZONE}"])
    assert empty.body == {"updateZone": {}}
    config = prepare_call(catalog.api("UpdateGlobalConfig"),
                          ["category=vm", "name=deletionPolicy", "value=Direct"])
    assert config.path == "/global-configurations/vm/deletionPolicy/actions"
    assert config.body == {"updateGlobalConfig": {"value": "Direct"}}


def test_delete_and_get_put_parameters_in_the_query_string(catalog: Catalog) -> None:
    delete = prepare_call(catalog.api("DeleteZone"),
                          [f"uuid={ZONE}", "deleteMode=Enforcing", "systemTags=a,b"])
    assert delete.body is None
    assert delete.path == f"/zones/{ZONE}?deleteMode=Enforcing&systemTags=a&systemTags=b"
    get = prepare_call(catalog.api("GetThing"),
                       ["uuid=t 1", "clientInfo=ip=1.2.3.4,agent=cli", "depth=2", "all=true"])
    path, _, query = get.path.partition("?")
    assert path == "/things/t%201/details"
    assert urllib.parse.parse_qsl(query) == [("clientInfo.ip", "1.2.3.4"),
                                             ("clientInfo.agent", "cli"), ("depth", "2"),
                                             ("all", "true")]


def test_query_arguments_become_q_conditions_and_special_parameters(catalog: Catalog) -> None:
    call = prepare_call(catalog.api("QueryCluster"), [
        "zone.name=z1", "name!=c2", "cpuNum>4", "uuid?=a,b", "description~=%x%",
        "state", "not", "null", "hypervisorType", "is", "null", "name is null",
        "sortBy=createDate", "sortDirection=desc", "fields=uuid,name", "limit=10",
        "start=5", "count=true", "replyWithCount=TRUE", "groupBy=zoneUuid",
        "filterName=mine",
    ])
    path, _, query = call.path.partition("?")
    assert (call.method, path, call.body) == ("GET", "/clusters", None)
    assert urllib.parse.parse_qsl(query) == [
        ("q", "zone.name=z1"), ("q", "name!=c2"), ("q", "cpuNum>4"), ("q", "uuid?=a,b"),
        ("q", "description~=%x%"), ("q", "state not null"), ("q", "hypervisorType is null"),
        ("q", "name is null"), ("limit", "10"), ("start", "5"), ("count", "true"),
        ("replyWithCount", "true"), ("sort", "-createDate"), ("fields", "uuid,name"),
        ("groupBy", "zoneUuid"), ("filterName", "mine"),
    ]
    # '+' must not reach the server as a space, '%' must survive, commas stay readable
    ascending = prepare_call(catalog.api("QueryZone"), ["description~=%x%", "sortBy=name"])
    assert ascending.path == "/zones?q=description~%3D%25x%25&sort=%2Bname"
    plain = prepare_call(catalog.api("QueryZone"), ["sort=-name", "fields=uuid,name"])
    assert plain.path == "/zones?sort=-name&fields=uuid,name"


def test_query_path_variables_and_bad_special_arguments(catalog: Catalog) -> None:
    call = prepare_call(catalog.api("QueryThingRef"), ["thingUuid=t1", "name=x"])
    assert call.path == "/things/t1/refs?q=name%3Dx"
    query = catalog.api("QueryZone")
    for args, message in [(["sortDirection=desc"], "sortDirection needs sortBy"),
                          (["sortBy=name", "sortDirection=up"], "must be asc or desc"),
                          (["sortBy=name", "sort=-name"], "not both"),
                          (["limit=ten"], "limit expects an integer"),
                          (["count=yes"], "count expects true or false"),
                          (["limit=1", "limit=2"], "limit is given twice")]:
        with pytest.raises(UsageError, match=message):
            prepare_call(query, args)
    with pytest.raises(UsageError, match="missing required parameter thingUuid"):
        prepare_call(catalog.api("QueryThingRef"), ["name=x"])


# ---------------------------------------------------------------------------------------------
# Against the fake node
# ---------------------------------------------------------------------------------------------


def test_login_sends_the_sha512_digest_and_keeps_the_session(
        node: FakeNode, run: Callable[..., Run], tmp_path: Path) -> None:
    inventory = {"uuid": SESSION, "accountUuid": ACCOUNT, "userUuid": ACCOUNT,
                 "expiredDate": "Jan 6, 2037 3:51:16 AM"}
    node.on("PUT", "/accounts/login",
            (200, {"inventory": inventory,
                   "schema": {"inventory": "org.zstack.header.identity.SessionInventory"}}))
    result = run("LogInByAccount", "accountName=admin", "password=password")
    assert result.code == 0, result.err
    assert result.json == {"inventory": inventory}  # schema dropped

    [sent] = node.calls
    assert (sent.method, sent.path) == ("PUT", "/zstack/v1/accounts/login")
    assert sent.body == {"logInByAccount": {"accountName": "admin",
                                            "password": PASSWORD_DIGEST}}
    assert b'"password"' not in sent.raw_body.replace(b'"password":', b"")
    assert "Authorization" not in sent.headers

    session_file = tmp_path / ".zstack" / "cli" / "session"
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert json.loads(session_file.read_text()) == {
        "uuid": SESSION, "accountUuid": ACCOUNT, "host": "127.0.0.1", "port": node.port}

    node.on("GET", "/zones", (200, {"inventories": [], "schema": {}}))
    assert run("QueryZone").code == 0
    assert node.calls[-1].headers["Authorization"] == f"OAuth {SESSION}"

    node.on("GET", f"/accounts/sessions/{SESSION}/valid", (200, {"valid": True}))
    valid = run("ValidateSession")
    assert valid.code == 0 and valid.json == {"valid": True}
    assert "Authorization" not in node.calls[-1].headers

    node.on("DELETE", f"/accounts/sessions/{SESSION}", (200, {"schema": {}}))
    out = run("LogOut")
    assert out.code == 0 and out.json == {}
    assert (node.calls[-1].method, node.calls[-1].path) == (
        "DELETE", f"/zstack/v1/accounts/sessions/{SESSION}")
    assert "Authorization" not in node.calls[-1].headers
    assert not session_file.exists()

    again = run("LogOut")
    assert again.code == 2 and "no session" in again.err


def test_other_passwords_are_hashed_too(node: FakeNode, run: Callable[..., Run],
                                        tmp_path: Path) -> None:
    login(tmp_path)
    node.on("PUT", f"/accounts/{ACCOUNT}", (200, {"inventory": {"uuid": ACCOUNT}}))
    result = run("UpdateAccount", f"uuid={ACCOUNT}", "password=new", "oldPassword=password")
    assert result.code == 0, result.err
    assert node.calls[-1].body == {"updateAccount": {
        "password": hashlib.sha512(b"new").hexdigest(), "oldPassword": PASSWORD_DIGEST}}


def test_a_hosts_ssh_password_is_sent_as_given(node: FakeNode, run: Callable[..., Run],
                                               tmp_path: Path) -> None:
    login(tmp_path)
    node.on("POST", "/hosts/kvm", (200, {"inventory": {"uuid": ACCOUNT}}))
    result = run("AddKVMHost", "managementIp=10.0.0.1", "password=ssh-secret")
    assert result.code == 0, result.err
    assert node.calls[-1].body == {"params": {"managementIp": "10.0.0.1",
                                              "password": "ssh-secret"}}


def test_async_call_polls_the_location_until_done(node: FakeNode, run: Callable[..., Run],
                                                  tmp_path: Path) -> None:
    login(tmp_path)
    zone = {"uuid": ZONE, "name": "z1", "description": "a b", "state": "Enabled"}
    node.on("POST", "/zones", (202, node.job("j1")))
    node.on("GET", "/api-jobs/j1", (202, {}), (202, {}),
            (200, {"inventory": zone,
                   "schema": {"inventory": "org.zstack.header.zone.ZoneInventory"}}))
    result = run("CreateZone", "name=z1", "description=a b", "isDefault=true",
                 "systemTags=a::1,b::2", 'userTags=["u"]')
    assert result.code == 0, result.err
    assert result.json == {"inventory": zone}
    assert result.out.startswith('{\n  "inventory": {\n    "uuid"')  # indent 2

    create, *polls = node.calls
    assert (create.method, create.path) == ("POST", "/zstack/v1/zones")
    assert create.headers["Authorization"] == f"OAuth {SESSION}"
    assert create.headers["Content-Type"] == "application/json"
    assert create.body == {"params": {"name": "z1", "description": "a b", "isDefault": True},
                           "systemTags": ["a::1", "b::2"], "userTags": ["u"]}
    assert [(p.method, p.path) for p in polls] == [("GET", "/zstack/v1/api-jobs/j1")] * 3
    assert all("Authorization" not in p.headers for p in polls)


def test_async_failure_prints_the_error_and_exits_1(node: FakeNode, run: Callable[..., Run],
                                                    tmp_path: Path) -> None:
    login(tmp_path)
    error = {"code": "SYS.1006", "description": "zone busy", "details": "try later"}
    node.on("DELETE", f"/zones/{ZONE}", (202, node.job("j2")))
    node.on("GET", "/api-jobs/j2", (202, {}), (503, {"error": error}))
    result = run("DeleteZone", f"uuid={ZONE}", "deleteMode=Enforcing")
    assert result.code == 1 and result.out == ""
    assert json.loads(result.err) == {"error": error}
    assert node.calls[0].raw_query == "deleteMode=Enforcing"


def test_sync_errors_and_unexpected_answers_exit_1(node: FakeNode, run: Callable[..., Run],
                                                   tmp_path: Path) -> None:
    node.on("GET", "/zones", (503, {"error": {"code": "ID.1001", "description": "no session"}}))
    no_session = run("QueryZone")
    assert no_session.code == 1 and '"code": "ID.1001"' in no_session.err
    assert "log in first with LogInByAccount" in no_session.err

    login(tmp_path)
    node.on("GET", "/zones", (400, {"error": {"code": "SYS.1007", "description": "bad op",
                                              "details": "no operator in 'name'"}}))
    bad = run("QueryZone", "name")
    assert bad.code == 1 and '"code": "SYS.1007"' in bad.err and "log in" not in bad.err
    assert node.calls[-1].raw_query == "q=name"

    node.on("GET", "/clusters", (500, "<html>oops</html>"))
    broken = run("QueryCluster")
    assert broken.code == 1 and "HTTP 500" in broken.err and "oops" in broken.err

    node.on("POST", "/zones", (202, {"apiTimeout": 1}))
    nowhere = run("CreateZone", "name=z")
    assert nowhere.code == 1 and "without a location" in nowhere.err

    node.on("POST", "/zones", (202, node.job("gone")))
    node.on("GET", "/api-jobs/gone", (404, {}))
    gone = run("CreateZone", "name=z")
    assert gone.code == 1 and "unknown or expired" in gone.err


def test_usage_errors_send_nothing(node: FakeNode, run: Callable[..., Run],
                                  tmp_path: Path) -> None:
    login(tmp_path)
    typo = run("CreateZone", "nmae=z1")
    assert typo.code == 2
    assert "unknown parameter 'nmae'; did you mean 'name'?" in typo.err
    missing = run("CreateZone", "description=x")
    assert missing.code == 2 and "missing required parameter name" in missing.err
    invalid = run("DeleteZone", f"uuid={ZONE}", "deleteMode=Sometimes")
    assert invalid.code == 2 and "deleteMode must be one of Permissive, Enforcing" in invalid.err
    unknown = run("QueryZones")
    assert unknown.code == 2 and "did you mean 'QueryZone'" in unknown.err
    assert node.calls == []


def test_unreachable_node_names_the_url(tmp_path: Path) -> None:
    port = free_port()
    err = io.StringIO()
    code = main(["-s", "127.0.0.1", "-p", str(port), "QueryZone"], home=tmp_path,
                stdout=io.StringIO(), stderr=err)
    assert code == 1
    assert f"cannot reach the management node at http://127.0.0.1:{port}/zstack/v1/" in \
        err.getvalue()


def test_options_environment_and_argv(node: FakeNode, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    node.on("PUT", "/management-nodes/actions", (200, {"version": "1.0"}))
    node.doc["x-zstack-apis"]["GetVersion"] = {
        "method": "PUT", "path": "/management-nodes/actions", "envelope": "getVersion",
        "async": False, "query": False, "needSession": False, "params": TAGS}
    monkeypatch.setenv("ZSTACK_CLI_PORT", str(node.port))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["zstack-cli", "GetVersion"])
    assert main() == 0
    assert json.loads(capsys.readouterr().out) == {"version": "1.0"}
    assert node.calls[-1].body == {"getVersion": {}}

    assert main(["--host=127.0.0.1", f"--port={node.port}", "GetVersion"]) == 0
    assert main(["--port", "http"]) == 2
    assert "port must be a number" in capsys.readouterr().err
    assert main(["--bogus"]) == 2
    assert main(["--help"]) == 0
    assert "usage: zstack-cli" in capsys.readouterr().out


def test_the_description_is_fetched_once_and_refetched_for_a_new_api(
        node: FakeNode, run: Callable[..., Run], tmp_path: Path) -> None:
    login(tmp_path)
    assert run("QueryZone").code == 0
    assert run("QueryCluster").code == 0
    assert [r.path for r in node.requests].count("/zstack/v1/openapi.json") == 1

    # the node gained an API since: an unknown name makes the CLI look again, once
    node.doc["x-zstack-apis"]["QueryHost"] = {
        "method": "GET", "path": "/hosts", "query": True, "resource": "HostVO", "params": []}
    assert run("QueryHost", "name=h1").code == 0
    assert [r.path for r in node.requests].count("/zstack/v1/openapi.json") == 2
    assert run("QueryNothing").code == 2
    assert [r.path for r in node.requests].count("/zstack/v1/openapi.json") == 3


# ---------------------------------------------------------------------------------------------
# Interactive mode (piped) and help
# ---------------------------------------------------------------------------------------------


def test_piped_commands_run_in_order_and_failures_are_reported(
        node: FakeNode, run: Callable[..., Run], tmp_path: Path) -> None:
    node.on("PUT", "/accounts/login", (200, {"inventory": {"uuid": SESSION,
                                                          "accountUuid": ACCOUNT}}))
    node.on("POST", "/zones", (202, node.job("j3")))
    node.on("GET", "/api-jobs/j3", (200, {"inventory": {"uuid": ZONE, "name": "z 1"}}))
    node.on("GET", "/zones", (200, {"inventories": [{"uuid": ZONE}], "total": 1}))
    node.on("DELETE", f"/zones/{ZONE}",
            (202, node.job("j4")))
    node.on("GET", "/api-jobs/j4", (503, {"error": {"code": "SYS.1004", "description": "no"}}))
    script = f"""
# a comment
LogInByAccount accountName=admin password=password
CreateZone name="z 1" description='it''s'
QueryZone name="z 1" state not null replyWithCount=true
CreateZone nmae=typo
DeleteZone uuid={ZONE}
CreateZone name="unterminated
help CreateZone
"""
    result = run(stdin=script)
    assert result.code == 1
    assert [(c.method, c.path) for c in node.calls] == [
        ("PUT", "/zstack/v1/accounts/login"), ("POST", "/zstack/v1/zones"),
        ("GET", "/zstack/v1/api-jobs/j3"), ("GET", "/zstack/v1/zones"),
        ("DELETE", f"/zstack/v1/zones/{ZONE}"), ("GET", "/zstack/v1/api-jobs/j4")]
    assert node.calls[1].body == {"params": {"name": "z 1", "description": "its"}}
    assert node.calls[1].headers["Authorization"] == f"OAuth {SESSION}"
    assert node.calls[3].query == [("q", "name=z 1"), ("q", "state not null"),
                                   ("replyWithCount", "true")]
    assert [r.path for r in node.requests].count("/zstack/v1/openapi.json") == 1
    assert "unknown parameter 'nmae'" in result.err
    assert '"code": "SYS.1004"' in result.err
    assert "cannot parse" in result.err
    assert '"name": "z 1"' in result.out and '"total": 1' in result.out
    assert "CreateZone: POST /zstack/v1/zones (async, needs a session)" in result.out
    assert "  name          String   required, maxLength 255\n" in result.out


def test_piped_commands_all_succeeding_exit_0_and_exit_stops(
        node: FakeNode, run: Callable[..., Run], tmp_path: Path) -> None:
    login(tmp_path)
    result = run(stdin="help\nQueryZone\nexit\nCreateZone nmae=never-run\n")
    assert result.code == 0, result.err
    assert result.out.startswith(f"{len(APIS)} APIs; 'help <API>' shows its parameters")
    assert "\nUpdateZone\n" in result.out
    assert [c.path for c in node.calls] == ["/zstack/v1/zones"]


def test_help_for_queries_and_partial_names(node: FakeNode, run: Callable[..., Run]) -> None:
    query = run("help", "QueryCluster")
    assert query.code == 0
    assert "QueryCluster: GET /zstack/v1/clusters (sync, needs a session)" in query.out
    assert "resource ClusterVO: createDate, hypervisorType" in query.out
    assert "zone.<field>: ZoneVO" in query.out
    related = run("help", "zone")
    assert related.out.split() == sorted(n for n in APIS if "zone" in n.lower())
    nothing = run("help", "Qurey")
    assert nothing.code == 2
    typed = run("help", "CreateThing")
    assert "cpuNum" in typed.out and "Integer  range 1..1024" in typed.out
    assert "l3NetworkUuids  List     nonempty\n" in typed.out
    assert "force           Boolean  default false\n" in typed.out
    assert "mode            String\n" in typed.out  # an SDK class name: taken as text


# ---------------------------------------------------------------------------------------------
# Completion
# ---------------------------------------------------------------------------------------------


def test_completer_api_names_and_commands(catalog: Catalog) -> None:
    complete = Completer(lambda: catalog).candidates
    assert complete("Query") == ["QueryCluster ", "QueryThingRef ", "QueryZone "]
    assert complete("queryz") == ["QueryZone "]  # case-insensitive when nothing else matches
    assert complete("he") == ["help "]
    assert "CreateZone " in complete("") and "exit " in complete("")
    assert complete("help Log") == ["LogInByAccount ", "LogOut "]
    assert complete("NoSuchApi na") == []
    assert Completer(lambda: None).candidates("Cre") == []


def test_completer_params_and_valid_values(catalog: Catalog) -> None:
    complete = Completer(lambda: catalog).candidates
    assert complete("CreateZone ") == ["description=", "isDefault=", "name=", "resourceUuid=",
                                       "systemTags=", "userTags="]
    assert complete("CreateZone name=z1 description='a b' ") == [
        "isDefault=", "resourceUuid=", "systemTags=", "userTags="]
    assert complete("CreateZone name=z1 isD") == ["isDefault="]
    assert complete("CreateZone isDefault=") == ["isDefault=false ", "isDefault=true "]
    assert complete("DeleteZone uuid=x deleteMode=") == ["deleteMode=Enforcing ",
                                                         "deleteMode=Permissive "]
    assert complete("DeleteZone deleteMode=E") == ["deleteMode=Enforcing "]
    assert complete("CreateZone name=") == []
    assert complete("UpdateGlobalConfig ca") == ["category="]


def test_completer_query_fields_expansions_and_special_args(catalog: Catalog) -> None:
    complete = Completer(lambda: catalog).candidates
    assert complete("QueryZone na") == ["name"]
    assert complete("QueryZone c") == ["cluster.", "count=", "createDate"]
    assert complete("QueryZone cluster.") == [
        "cluster.createDate", "cluster.host.", "cluster.hypervisorType", "cluster.name",
        "cluster.state", "cluster.uuid", "cluster.zone.", "cluster.zoneUuid"]
    assert complete("QueryZone cluster.host.ma") == ["cluster.host.managementIp"]
    assert complete("QueryZone cluster.host.cluster.zone.na") == [
        "cluster.host.cluster.zone.name"]
    assert complete("QueryZone cluster.nothing.") == []
    assert complete("QueryZone sortBy=name sor") == ["sort=", "sortDirection="]
    assert complete("QueryZone sortDirection=") == ["sortDirection=asc ", "sortDirection=desc "]
    assert complete("QueryZone sortBy=la") == ["sortBy=lastOpDate "]
    assert complete("QueryZone fields=uuid,na") == ["fields=uuid,name"]
    assert complete("QueryZone name!=x") == []
    assert complete("QueryZone __") == ["__systemTag__", "__userTag__"]
    assert complete("QueryThingRef thi") == ["thingUuid="]


def test_completer_as_readline_calls_it(catalog: Catalog) -> None:
    line = "QueryZone cluster.zo"
    completer = Completer(lambda: catalog, line_buffer=lambda: line)
    assert completer.complete("cluster.zo", 0) == "cluster.zone."
    assert completer.complete("cluster.zo", 1) == "cluster.zoneUuid"
    assert completer.complete("cluster.zo", 2) is None
