"""The REST wire protocol, as ZStack's SDKs and scripts use it, over real HTTP."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any

import pytest

from zcore import ApiMessage, hookimpl
from zcore.api import ApiContext, APIMessage, Param
from zcore.db import new_uuid
from zcore.errors import ZError
from zcore.testing import ApiClient

pytestmark = pytest.mark.db

GATE: dict[str, asyncio.Event] = {}


class WaitForGate(APIMessage, method="PUT", path="/test-gates/{name}/actions",
                  result={"name": "String"}):
    """Finishes when the test opens the named gate."""

    name = Param(str, required=True)
    fail = Param(bool, default=False)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await GATE.setdefault(self.name, asyncio.Event()).wait()
        if self.fail:
            raise ZError("TEST.1000", "the gate failed on purpose", f"gate {self.name}")
        return {"name": self.name}


class gates:  # a plugin object, registered next to the installed ones
    @staticmethod
    @hookimpl
    def zcore_api_messages() -> Any:
        yield ApiMessage(WaitForGate)


@pytest.fixture(autouse=True)
def fresh_gates() -> Any:
    # An asyncio.Event belongs to the loop of the test that made it.
    GATE.clear()
    yield
    GATE.clear()


async def create_zone(client: ApiClient, name: str, **params: Any) -> dict[str, Any]:
    return (await client.call("CreateZone", name=name, **params))["inventory"]


async def zone_count(client: ApiClient) -> int:
    return (await client.call("QueryZone", count=True))["total"]


# --------------------------------------------------------------------------- routing


async def test_a_create_answers_202_and_the_job_answers_the_inventory_with_its_schema(
        api_client: Any) -> None:
    client = await api_client()
    status, body = await client.request("POST", "/zones", json={"params": {"name": "z1"}})
    assert status == 202
    assert body["location"] == f"http://{client.node.settings.node.host}:" \
        f"{client.node.settings.node.port}/zstack/v1/api-jobs/{body['location'][-32:]}"
    assert body["apiTimeout"] == 1800 * 1000
    status, result = await client.poll(body["location"])
    assert status == 200
    zone = result["inventory"]
    assert zone["name"] == "z1" and re.fullmatch(r"[0-9a-f]{32}", zone["uuid"])
    assert zone["state"] == "Enabled" and zone["isDefault"] is False
    assert result["schema"] == {"inventory": "org.zstack.header.zone.ZoneInventory"}
    created = datetime.fromisoformat(zone["createDate"])
    assert created.utcoffset() is not None


async def test_everything_is_mounted_under_v1_as_well(api_client: Any) -> None:
    client = await api_client()
    await create_zone(client, "z1")
    async with client.http.get(f"{client.node.url}/v1/zones",
                               headers=client.headers()) as reply:
        body = await reply.json()
    assert reply.status == 200 and [z["name"] for z in body["inventories"]] == ["z1"]


async def test_unknown_paths_and_methods(api_client: Any) -> None:
    client = await api_client()
    status, body = await client.request("GET", "/no-such-things")
    assert status == 404 and body["error"]["code"]
    status, _ = await client.request("POST", f"/api-jobs/{new_uuid()}", json={})
    assert status == 405
    status, _ = await client.request("GET", f"/api-jobs/{new_uuid()}")
    assert status == 404


async def test_actions_dispatch_on_their_key(api_client: Any) -> None:
    client = await api_client()
    zone = await create_zone(client, "z1")
    status, body = await client.request("PUT", f"/zones/{zone['uuid']}/actions",
                                        json={"changeZoneState": {"stateEvent": "disable"}})
    assert status == 202
    status, body = await client.poll(body["location"])
    assert status == 200 and body["inventory"]["state"] == "Disabled"
    status, body = await client.request("PUT", f"/zones/{zone['uuid']}/actions",
                                        json={"updateZone": {"name": "z2"}})
    status, body = await client.poll(body["location"])
    assert body["inventory"]["name"] == "z2"


@pytest.mark.parametrize("body", [
    {"startVmInstance": {}},
    {"updateZone": {}, "changeZoneState": {"stateEvent": "enable"}},
    {},
    {"updateZone": "not an object"},
])
async def test_a_bad_action_body_is_400_and_changes_nothing(api_client: Any,
                                                             body: Any) -> None:
    client = await api_client()
    zone = await create_zone(client, "z1")
    status, answer = await client.request("PUT", f"/zones/{zone['uuid']}/actions", json=body)
    assert status == 400 and answer["error"]["code"] == "SYS.1007"
    assert (await client.call("QueryZone"))["inventories"][0]["name"] == "z1"


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b'"zone"', b"\xff\xfe"])
async def test_malformed_json_is_400_and_creates_nothing(api_client: Any, raw: bytes) -> None:
    client = await api_client()
    status, body = await client.request("POST", "/zones", data=raw,
                                        headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"]["code"] == "SYS.1007"
    assert await zone_count(client) == 0


async def test_tags_may_be_inside_the_envelope_or_beside_it(api_client: Any) -> None:
    client = await api_client()
    status, body = await client.request("POST", "/zones", json={
        "params": {"name": "z1", "userTags": ["inside"]}, "userTags": ["beside"]})
    status, body = await client.poll(body["location"])
    assert status == 200
    tags = await client.call("QueryUserTag", q=[f"resourceUuid={body['inventory']['uuid']}"])
    assert sorted(t["tag"] for t in tags["inventories"]) == ["beside", "inside"]


# --------------------------------------------------------------------------- jobs


async def test_a_job_is_202_while_running_then_200(api_client: Any) -> None:
    client = await api_client(("gates", gates))
    status, body = await client.request("PUT", "/test-gates/g1/actions", json={
        "waitForGate": {}})
    assert status == 202
    async with client.http.get(body["location"]) as reply:
        assert reply.status == 202 and await reply.json() == {}
    GATE.setdefault("g1", asyncio.Event()).set()
    status, result = await client.poll(body["location"])
    assert status == 200 and result == {"name": "g1", "schema": {}}


async def test_a_poll_of_a_running_job_answers_as_soon_as_it_ends(api_client: Any) -> None:
    client = await api_client(("gates", gates))
    await client.call("UpdateGlobalConfig", category="rest", name="jobPollWait", value="30")
    status, body = await client.request("PUT", "/test-gates/g5/actions", json={
        "waitForGate": {}})
    assert status == 202
    poll = asyncio.ensure_future(client.http.get(body["location"]))
    await asyncio.sleep(0.2)
    assert not poll.done()  # it waits for the job rather than answering 202
    GATE.setdefault("g5", asyncio.Event()).set()
    async with await asyncio.wait_for(poll, 10) as reply:
        assert reply.status == 200
        assert await reply.json() == {"name": "g5", "schema": {}}


async def test_with_no_poll_wait_a_poll_answers_202_at_once(api_client: Any) -> None:
    client = await api_client(("gates", gates))
    await client.call("UpdateGlobalConfig", category="rest", name="jobPollWait", value="30")
    await client.call("UpdateGlobalConfig", category="rest", name="jobPollWait", value="0")
    _status, body = await client.request("PUT", "/test-gates/g6/actions", json={
        "waitForGate": {}})
    # With the 30 s still in force the poll would not answer within the 10 s.
    async with await asyncio.wait_for(client.http.get(body["location"]), 10) as reply:
        assert reply.status == 202 and await reply.json() == {}
    GATE.setdefault("g6", asyncio.Event()).set()
    status, _result = await client.poll(body["location"])
    assert status == 200


async def test_a_failed_job_answers_503_with_the_error(api_client: Any) -> None:
    client = await api_client(("gates", gates))
    GATE.setdefault("g2", asyncio.Event()).set()
    status, body = await client.call_raw("WaitForGate", name="g2", fail=True)
    assert status == 503
    assert body["error"]["code"] == "TEST.1000" and "g2" in body["error"]["details"]


async def test_polling_needs_no_session(api_client: Any) -> None:
    client = await api_client()
    _status, body = await client.request("POST", "/zones", json={"params": {"name": "z1"}})
    for _ in range(500):
        async with client.http.get(body["location"],
                                   headers={"Authorization": "OAuth null"}) as reply:
            if reply.status != 202:
                break
        await asyncio.sleep(0.01)
    assert reply.status == 200


async def test_a_repeated_job_uuid_creates_once(api_client: Any) -> None:
    client = await api_client()
    job = new_uuid()
    first = await client.call("CreateZone", name="z1", job_uuid=job)
    again = await client.call("CreateZone", name="z1", job_uuid=job)
    assert first["inventory"]["uuid"] == again["inventory"]["uuid"]
    assert await zone_count(client) == 1
    status, _body = await client.request("POST", "/zones", json={"params": {"name": "z"}},
                                        headers={"X-Job-UUID": "not-a-uuid"})
    assert status == 400


async def test_an_api_that_outlives_its_timeout_fails_with_sys_1001(api_client: Any) -> None:
    client = await api_client(("gates", gates))
    await client.call("UpdateGlobalConfig", category="apiTimeout", name="WaitForGate",
                      value="1")
    status, body = await client.call_raw("WaitForGate", name="never-opened")
    assert status == 503 and body["error"]["code"] == "SYS.1001"
    assert "apiTimeout.WaitForGate" in body["error"]["details"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("params", "needle"), [
    ({}, "'name'"),
    ({"name": "x" * 256}, "at most 255"),
    ({"name": " leading space"}, "does not match"),
    ({"name": "z1", "description": "d" * 2049}, "'description'"),
    ({"name": "z1", "isDefault": "maybe"}, "true or false"),
    ({"name": "z1", "colour": "red"}, "no parameter 'colour'"),
    ({"name": "z1", "resourceUuid": "ABC"}, "32 lower-case hex"),
    ({"name": "z1", "systemTags": ["no::such::pattern"]}, "no::such::pattern"),
])
async def test_bad_create_parameters_are_sys_1007_and_create_nothing(
        api_client: Any, params: dict[str, Any], needle: str) -> None:
    client = await api_client()
    status, body = await client.call_raw("CreateZone", **params)
    assert status == 503
    assert body["error"]["code"] == "SYS.1007", body
    assert needle in body["error"]["details"]
    assert await zone_count(client) == 0


async def test_an_invalid_value_is_sys_1007(api_client: Any) -> None:
    client = await api_client()
    zone = await create_zone(client, "z1")
    status, body = await client.call_raw("ChangeZoneState", uuid=zone["uuid"],
                                         stateEvent="explode")
    assert status == 503 and body["error"]["code"] == "SYS.1007"
    assert "'explode'" in body["error"]["details"] and "'enable'" in body["error"]["details"]


async def test_a_uuid_that_does_not_exist_is_sys_1003(api_client: Any) -> None:
    client = await api_client()
    missing = new_uuid()
    for api, params in [("UpdateZone", {"uuid": missing, "name": "x"}),
                        ("DeleteZone", {"uuid": missing}),
                        ("CreateCluster", {"zoneUuid": missing, "name": "c",
                                           "hypervisorType": "KVM"})]:
        status, body = await client.call_raw(api, **params)
        assert status == 503 and body["error"]["code"] == "SYS.1003", (api, body)
        assert missing in body["error"]["details"]


async def test_validation_only_checks_and_creates_nothing(api_client: Any) -> None:
    client = await api_client()
    assert await client.call("CreateZone", name="z1", systemTags=["validationOnly"]) == {}
    assert await zone_count(client) == 0
    status, body = await client.call_raw("CreateZone", name=" bad",
                                         systemTags=["validationOnly"])
    assert status == 503 and body["error"]["code"] == "SYS.1007"


# --------------------------------------------------------------------------- sessions


async def test_no_session_is_id_1001_sync_and_async(api_client: Any) -> None:
    client = await api_client(login=False)
    status, body = await client.call_raw("QueryZone")
    assert status == 503 and body["error"]["code"] == "ID.1001"
    status, body = await client.request("POST", "/zones", json={"params": {"name": "z1"}})
    assert status == 202
    status, body = await client.poll(body["location"])
    assert status == 503 and body["error"]["code"] == "ID.1001"
    for header in ("OAuth " + new_uuid(), "OAuth", "Bearer x", "OAuth null"):
        status, body = await client.request("GET", "/zones",
                                            headers={"Authorization": header})
        assert status == 503 and body["error"]["code"] == "ID.1001", header
    admin = await api_client(node=client.node)
    assert await zone_count(admin) == 0


async def test_an_expired_session_is_id_1001(api_client: Any) -> None:
    client = await api_client()
    await client.call("UpdateGlobalConfig", category="identity", name="session.timeout",
                      value="60")
    expiring = await api_client(node=client.node)
    from sqlalchemy import update

    from zcore.db import utcnow

    def expire(session: Any) -> None:
        from zplugins.identity.models import SessionVO

        session.execute(update(SessionVO).where(SessionVO.uuid == expiring.session_uuid)
                        .values(expiredDate=utcnow()))

    await client.node.db.run(expire)
    await asyncio.sleep(0.01)
    status, body = await expiring.call_raw("QueryZone")
    assert status == 503 and body["error"]["code"] == "ID.1001"
    assert "expired" in body["error"]["details"]


async def test_wrong_credentials_are_id_1000(api_client: Any) -> None:
    client = await api_client(login=False)
    with pytest.raises(ZError) as caught:
        await client.login("admin", "wrong")
    assert caught.value.code == "ID.1000"


async def test_a_normal_account_sees_and_touches_only_its_own(api_client: Any) -> None:
    admin = await api_client()
    await admin.call("CreateAccount", name="tenant", password=_digest("secret"),
                     type="Normal")
    theirs = await create_zone(admin, "admins-zone")
    tenant = await api_client(login=False, node=admin.node)
    await tenant.login("tenant", "secret")
    mine = await create_zone(tenant, "tenant-zone")
    assert [z["name"] for z in (await tenant.call("QueryZone"))["inventories"]] == \
        ["tenant-zone"]
    assert sorted(z["name"] for z in (await admin.call("QueryZone"))["inventories"]) == \
        ["admins-zone", "tenant-zone"]
    status, body = await tenant.call_raw("UpdateZone", uuid=theirs["uuid"], name="mine-now")
    assert status == 503 and body["error"]["code"] == "ID.1002"
    status, body = await tenant.call_raw("DeleteZone", uuid=theirs["uuid"])
    assert body["error"]["code"] == "ID.1002"
    status, body = await tenant.request("GET", f"/zones/{theirs['uuid']}")
    assert status == 200 and body["inventories"] == []
    status, body = await tenant.call_raw("UpdateGlobalConfig", category="apiTimeout",
                                         name="QueryZone", value="5")
    assert body["error"]["code"] == "ID.1002"
    assert (await tenant.call("UpdateZone", uuid=mine["uuid"], name="t2"))["inventory"][
        "name"] == "t2"
    assert (await admin.call("QueryZone", q=["name=admins-zone"]))["inventories"]


def _digest(password: str) -> str:
    from zcore.testing import sha512

    return sha512(password)


# --------------------------------------------------------------------------- results


async def test_get_one_answers_in_the_query_shape(api_client: Any) -> None:
    client = await api_client()
    zone = await create_zone(client, "z1")
    status, body = await client.request("GET", f"/zones/{zone['uuid']}")
    assert status == 200 and body["inventories"] == [zone]
    assert body["schema"] == {"inventories[0]": "org.zstack.header.zone.ZoneInventory"}
    status, body = await client.request("GET", f"/zones/{new_uuid()}")
    assert status == 200 and body["inventories"] == []


async def test_delete_answers_an_empty_result(api_client: Any) -> None:
    client = await api_client()
    zone = await create_zone(client, "z1")
    status, body = await client.request("DELETE", f"/zones/{zone['uuid']}",
                                        params={"deleteMode": "Enforcing"})
    assert status == 202
    assert await client.poll(body["location"]) == (200, {"schema": {}})
    assert await zone_count(client) == 0


async def test_sync_apis_answer_200(api_client: Any) -> None:
    client = await api_client(login=False)
    status, body = await client.request("PUT", "/management-nodes/actions",
                                        json={"getVersion": {}})
    assert status == 200 and body["version"] and body["schema"] == {}


async def test_the_openapi_document_describes_every_api(api_client: Any) -> None:
    client = await api_client(login=False)
    status, doc = await client.request("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    apis = doc["x-zstack-apis"]
    assert set(apis) == set(client.node.api.messages)
    operations = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    shapes = {re.sub(r"\{\w+\}", "{}", path) for path in doc["paths"]}
    for name, api in apis.items():
        assert any(name in op.split("_or_") for op in operations), name
        # APIs whose paths differ only in variable names share one route and one path.
        assert re.sub(r"\{\w+\}", "{}", f"/zstack/v1{api['path']}") in shapes
    assert "zone" in doc["x-zstack-resources"]["ClusterVO"]["expansions"]

