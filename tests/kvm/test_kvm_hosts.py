"""KVM hosts against a fake KVM agent: connecting, capacity, pings, commands, the password."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zcore.db import Base, ResourceVO
from zcore.errors import ZError
from zcore.node import Node
from zcore.testing import ApiClient
from zplugins.compute.host_service import service
from zplugins.compute.models import HostVO
from zplugins.compute.public import get_host, host_call
from zplugins.kvm.models import KVMHostVO

from .agent import FakeAgent

pytestmark = pytest.mark.db

GiB = 1024**3
PASSWORD = "s3cret-Pa55word"
KVM_FIELDS = {"username", "sshPort", "osDistribution", "osRelease", "osVersion"}


@pytest_asyncio.fixture
async def agent() -> AsyncIterator[FakeAgent]:
    fake = FakeAgent()
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture
async def client(api_client: Any, agent: FakeAgent) -> ApiClient:
    made: ApiClient = await api_client()
    await made.call("UpdateGlobalConfig", category="kvm", name="agent.port",
                    value=str(agent.port))
    return made


async def kvm_cluster(client: ApiClient, hypervisor: str = "KVM") -> dict[str, Any]:
    z = (await client.call("CreateZone", name="z1"))["inventory"]
    cluster: dict[str, Any] = (await client.call(
        "CreateCluster", zoneUuid=z["uuid"], name="c1", hypervisorType=hypervisor))["inventory"]
    return cluster


async def add_kvm_host(client: ApiClient, cluster_uuid: str, ip: str = "127.0.0.1",
                       **params: Any) -> tuple[int, Any]:
    params = {"username": "root", "password": PASSWORD, **params}
    return await client.call_raw("AddKVMHost", clusterUuid=cluster_uuid, name="kvm1",
                                 managementIp=ip, **params)


async def rows(node: Node) -> tuple[int, int, int]:
    def count(session: Session) -> tuple[int, int, int]:
        return (session.scalar(select(func.count()).select_from(HostVO)) or 0,
                session.scalar(select(func.count()).select_from(KVMHostVO)) or 0,
                session.scalar(select(func.count()).select_from(ResourceVO)
                               .where(ResourceVO.resourceType == "HostVO")) or 0)

    return await node.db.run(count)


async def test_a_kvm_host_is_connected_through_its_agent(client: ApiClient,
                                                         agent: FakeAgent) -> None:
    c = await kvm_cluster(client)
    status, body = await add_kvm_host(client, c["uuid"], sshPort=2222)
    assert status == 200, body
    host = body["inventory"]
    assert body["schema"] == {"inventory": "org.zstack.kvm.KVMHostInventory"}
    assert KVM_FIELDS <= set(host)
    assert (host["status"], host["hypervisorType"], host["username"], host["sshPort"]) == \
        ("Connected", "KVM", "root", 2222)
    assert (host["osDistribution"], host["osVersion"], host["osRelease"]) == \
        ("CentOS", "7.9.2009", "Core")
    assert (host["cpuNum"], host["cpuSockets"], host["totalCpuCapacity"],
            host["totalMemoryCapacity"], host["availableMemoryCapacity"],
            host["architecture"]) == (4, 2, 40, 16 * GiB, 15 * GiB, "x86_64")
    # Its agent runs the node's version: nothing is deployed.
    assert agent.paths() == ["/host/version", "/host/echo", "/host/connect", "/host/fact",
                             "/host/capacity", "/vm/vmsync"]
    connect = agent.calls[2][1]
    assert connect["hostUuid"] == host["uuid"]
    assert connect["sendCommandUrl"].startswith(client.node.url)
    # Queries answer with the KVM inventory too.
    status, body = await client.request("GET", "/hosts", params={"q": "name=kvm1"})
    assert body["schema"] == {"inventories[0]": "org.zstack.kvm.KVMHostInventory"}
    assert body["inventories"][0]["username"] == "root"


async def test_the_password_never_appears_in_a_reply(client: ApiClient) -> None:
    c = await kvm_cluster(client)
    status, added = await add_kvm_host(client, c["uuid"])
    assert status == 200
    uuid = added["inventory"]["uuid"]
    replies = [added]
    for api, params in (("QueryHost", {}), ("QueryHost", {"q": [f"uuid={uuid}"]}),
                        ("UpdateHost", {"uuid": uuid, "name": "renamed"}),
                        ("ChangeHostState", {"uuid": uuid, "stateEvent": "disable"}),
                        ("ReconnectHost", {"uuid": uuid})):
        replies.append((await client.call_raw(api, **params))[1])
    replies.append((await client.request("GET", f"/hosts/{uuid}"))[1])
    for reply in replies:
        text = json.dumps(reply)
        assert PASSWORD not in text and '"password"' not in text, reply
    # Nor can a query name it.
    error = await client.call_raw("QueryHost", q=[f"password={PASSWORD}"])
    assert error[0] == 503 and PASSWORD not in json.dumps(error[1]["error"]["details"])
    # It is kept for SSH, though.
    stored = await client.node.db.run(lambda s: s.get(KVMHostVO, uuid))
    assert stored is not None and stored.password == PASSWORD


async def test_an_agent_that_is_down_adds_nothing(client: ApiClient, agent: FakeAgent) -> None:
    await client.call("UpdateGlobalConfig", category="kvm", name="agent.deploy", value="false")
    c = await kvm_cluster(client)
    await agent.stop()
    status, body = await add_kvm_host(client, c["uuid"])
    assert status == 503
    error = body["error"]
    assert error["code"] == "HOST.1000"
    assert f"cannot reach the agent at http://127.0.0.1:{agent.port}/host/echo" in \
        error["details"]
    assert "was not added" in error["details"]
    assert await rows(client.node) == (0, 0, 0)


async def test_an_agent_that_refuses_to_connect_adds_nothing(client: ApiClient,
                                                             agent: FakeAgent) -> None:
    c = await kvm_cluster(client)
    agent.replies["/host/connect"] = {"success": False, "error": "libvirtd is not running"}
    status, body = await add_kvm_host(client, c["uuid"])
    assert (status, body["error"]["code"]) == (503, "HOST.1000")
    assert "failed /host/connect: libvirtd is not running" in body["error"]["details"]
    assert await rows(client.node) == (0, 0, 0)
    agent.replies["/host/connect"] = {}
    agent.replies["/host/capacity"] = {"cpuNum": "many"}
    status, body = await add_kvm_host(client, c["uuid"])
    assert (status, body["error"]["code"]) == (503, "HOST.1000")
    assert "without a valid cpuNum and totalMemory" in body["error"]["details"]
    assert await rows(client.node) == (0, 0, 0)


async def test_kvm_hosts_go_to_kvm_clusters_only(client: ApiClient, agent: FakeAgent) -> None:
    c = await kvm_cluster(client, "Simulator")
    status, body = await add_kvm_host(client, c["uuid"])
    assert (status, body["error"]["code"]) == (503, "SYS.1007")
    assert "AddKVMHost adds KVM hosts" in body["error"]["details"]
    for bad in ({"sshPort": 0}, {"sshPort": 65536}, {"username": ""}):
        status, body = await add_kvm_host(client, c["uuid"], **bad)
        assert (status, body["error"]["code"]) == (503, "SYS.1007"), bad
    assert agent.calls == []
    assert await rows(client.node) == (0, 0, 0)


async def test_a_silent_agent_disconnects_its_host_until_it_answers(
        client: ApiClient, agent: FakeAgent) -> None:
    node = client.node
    await node.global_config.update("host", "ping.maxFailure", 2)
    c = await kvm_cluster(client)
    uuid = (await add_kvm_host(client, c["uuid"]))[1]["inventory"]["uuid"]
    hosts = service(node)

    async def status() -> str:
        info = await get_host(node, uuid)
        assert info is not None
        return info.status

    await hosts.ping_all()
    assert agent.paths()[-1] == "/host/ping" and agent.calls[-1][1] == {"hostUuid": uuid}
    await agent.stop()
    await hosts.ping_all()
    assert await status() == "Connected"  # one missed ping is not enough
    await hosts.ping_all()
    assert await status() == "Disconnected"
    await agent.start(agent.port)
    await hosts.ping_all()
    for _ in range(200):  # the reconnection runs in the background
        if await status() == "Connected":
            break
        await asyncio.sleep(0.01)
    assert await status() == "Connected"
    # An agent that answers for another host is not this host's agent.
    agent.replies["/host/ping"] = {"hostUuid": "0" * 32}
    await hosts.ping_all()
    await hosts.ping_all()
    assert await status() == "Disconnected"


async def test_commands_go_to_the_agent(client: ApiClient, agent: FakeAgent) -> None:
    c = await kvm_cluster(client)
    uuid = (await add_kvm_host(client, c["uuid"]))[1]["inventory"]["uuid"]
    host = await get_host(client.node, uuid)
    assert host is not None
    agent.replies["/network/l2novlan/createbridge"] = lambda body: {"bridge": body["name"]}
    reply = await host_call(client.node, host, "/network/l2novlan/createbridge",
                            {"name": "br_eth0"})
    assert reply == {"success": True, "error": None, "bridge": "br_eth0"}
    assert agent.calls[-1] == ("/network/l2novlan/createbridge", {"name": "br_eth0"})
    agent.replies["/network/l2novlan/createbridge"] = {"success": False,
                                                       "error": "eth0 does not exist"}
    with pytest.raises(ZError) as caught:
        await host_call(client.node, host, "/network/l2novlan/createbridge", {"name": "b"})
    assert caught.value.code == "HOST.1001"
    assert caught.value.details == (
        f"command /network/l2novlan/createbridge on KVM host 'kvm1' ({uuid}) at 127.0.0.1 "
        "failed: eth0 does not exist")
    await agent.stop()
    with pytest.raises(ZError) as caught:
        await host_call(client.node, host, "/host/echo", {}, timeout=2)
    assert caught.value.code == "HOST.1001" and "cannot reach the agent" in \
        caught.value.details


async def test_deleting_a_kvm_host_deletes_its_kvm_row(client: ApiClient) -> None:
    c = await kvm_cluster(client)
    uuid = (await add_kvm_host(client, c["uuid"]))[1]["inventory"]["uuid"]
    assert await rows(client.node) == (1, 1, 1)
    await client.call("DeleteCluster", uuid=c["uuid"])
    assert await rows(client.node) == (0, 0, 0)
    assert await get_host(client.node, uuid) is None


async def test_the_migrations_match_the_kvm_model(node: Node) -> None:
    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table == "KVMHostVO"

    def diff(session: Session) -> list[Any]:
        context = MigrationContext.configure(
            session.connection(), opts={"compare_type": True, "include_object": include})
        return list(compare_metadata(context, Base.metadata))

    assert await node.db.run(diff) == []
