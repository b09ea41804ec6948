"""Hosts at run time: pings, the host-connect chain, agent commands, capacity settings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update
from sqlalchemy.orm import Session

from zcore import FlowInsertion, FlowStep, hookimpl
from zcore.db import Base, utcnow
from zcore.flow import FlowContext, Step
from zcore.node import Node
from zcore.testing import ApiClient
from zplugins.compute.host_service import service
from zplugins.compute.models import HostVO
from zplugins.compute.public import (
    HOST_CONNECT_CHAIN,
    HostInfo,
    cluster_hosts,
    get_host,
    host_call,
)
from zplugins.simulator.hosts import SIMULATOR, SimHost

from .helpers import MakeNode, call, fails
from .test_hosts import GiB, add_host, get, host_rows, sim_cluster

pytestmark = pytest.mark.db


@pytest.fixture(autouse=True)
def simulated_world() -> Iterator[None]:
    yield
    SIMULATOR.clear()
    for path in ("/test/echo", "/host/ping"):
        SIMULATOR.unregister_handler(path)


async def wait_for_status(client: ApiClient, uuid: str, status: str, within: float) -> float:
    """Seconds until host ``uuid`` has ``status``; fails after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        found = await client.call("QueryHost", q=[f"uuid={uuid}"], fields="status")
        if found["inventories"][0]["status"] == status:
            return loop.time() - start
        if loop.time() - start > within:
            raise AssertionError(f"host {uuid} is not {status} after {within} s")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- pings


async def test_an_unreachable_host_is_disconnected_and_reconnected(api_client: Any) -> None:
    client: ApiClient = await api_client()
    for name, value in (("ping.interval", "1"), ("ping.maxFailure", "2")):
        await client.call("UpdateGlobalConfig", category="host", name=name, value=value)
    node = client.node
    h = await add_host(node, (await sim_cluster(node))["uuid"])
    machine = SIMULATOR.host(h["uuid"])
    machine.reachable = False
    took = await wait_for_status(client, h["uuid"], "Disconnected", within=2 * 1 + 1.5)
    assert took > 0.9  # one missed ping is not enough
    machine.reachable = True
    await wait_for_status(client, h["uuid"], "Connected", within=1 + 1.5)
    # It was connected again, not merely marked: the machine was asked to connect.
    assert [p for p, _ in machine.calls].count("/host/connect") == 2


async def test_pings_are_bounded_and_cover_every_host(node: Node) -> None:
    await node.global_config.update("host", "ping.parallelismDegree", 3)
    c = await sim_cluster(node)
    hosts = [await add_host(node, c["uuid"], f"h{i}", f"10.0.0.{i}") for i in range(10)]
    running, most, pinged = 0, 0, []

    async def slow_ping(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        pinged.append(body["hostUuid"])
        return {}

    SIMULATOR.register_handler("/host/ping", slow_ping)
    await service(node).ping_all()
    assert sorted(pinged) == sorted(h["uuid"] for h in hosts)
    assert most == 3


async def test_a_disconnected_host_that_answers_again_but_fails_to_connect_stays_down(
        node: Node) -> None:
    await node.global_config.update("host", "ping.maxFailure", 1)
    h = await add_host(node, (await sim_cluster(node))["uuid"])
    SIMULATOR.host(h["uuid"]).reachable = False
    await service(node).ping_all()
    assert (await get(node, h["uuid"]))["status"] == "Disconnected"
    SIMULATOR.host(h["uuid"]).reachable = True
    SIMULATOR.fail("/host/connect", "disk full", host_uuid=h["uuid"])
    await service(node).ping_all()
    for _ in range(100):  # the reconnection runs in the background
        await asyncio.sleep(0.01)
        if h["uuid"] not in service(node)._reconnecting:
            break
    assert (await get(node, h["uuid"]))["status"] == "Disconnected"


async def test_a_host_left_connecting_by_a_stopped_node_is_connected_again(
        node: Node) -> None:
    h = await add_host(node, (await sim_cluster(node))["uuid"])

    def left_connecting(session: Session, minutes: int) -> None:
        session.execute(update(HostVO).where(HostVO.uuid == h["uuid"]).values(
            status="Connecting", lastOpDate=utcnow() - timedelta(minutes=minutes)))

    await node.db.run(left_connecting, 1)  # being connected right now: left alone
    await service(node).ping_all()
    assert (await get(node, h["uuid"]))["status"] == "Connecting"
    await node.db.run(left_connecting, 30)
    await service(node).ping_all()
    for _ in range(100):  # the reconnection runs in the background
        if (await get(node, h["uuid"]))["status"] == "Connected":
            break
        await asyncio.sleep(0.01)
    assert (await get(node, h["uuid"]))["status"] == "Connected"


# --------------------------------------------------------------------------- the chain


class PrepareOnHost(Step):
    """Sends a command to each host as it connects, like an L2 or storage plugin."""

    requires = ("host",)
    seen: ClassVar[list[HostInfo]] = []
    rolled_back: ClassVar[list[str]] = []

    async def run(self, ctx: FlowContext) -> None:
        self.seen.append(ctx["host"])
        await host_call(ctx.services, ctx["host"], "/test/prepare", {"bridge": "br0"})

    async def rollback(self, ctx: FlowContext) -> None:
        self.rolled_back.append(ctx["host"].uuid)


class prepare_plugin:
    @staticmethod
    @hookimpl
    def zcore_flow_steps() -> Any:
        yield FlowStep("test-prepare-host", PrepareOnHost())

    @staticmethod
    @hookimpl
    def zcore_flow_insertions() -> Any:
        yield FlowInsertion(HOST_CONNECT_CHAIN, "test-prepare-host", after="connect-host")


async def test_steps_inserted_into_host_connect_prepare_each_host(make_node: MakeNode) -> None:
    PrepareOnHost.seen.clear()
    PrepareOnHost.rolled_back.clear()
    node = await make_node(("prepare", prepare_plugin))
    steps = node.flows.chains[HOST_CONNECT_CHAIN].step_names  # other plugins insert too
    assert steps[0] == "connect-host" and steps[-1] == "mark-host-connected"
    assert "test-prepare-host" in steps
    c = await sim_cluster(node)
    h = await add_host(node, c["uuid"])
    assert h["status"] == "Connected"
    info = PrepareOnHost.seen[0]
    assert (info.uuid, info.name, info.managementIp, info.clusterUuid, info.zoneUuid,
            info.hypervisorType, info.state, info.status) == (
        h["uuid"], "h1", "10.0.0.1", c["uuid"], c["zoneUuid"], "Simulator", "Enabled",
        "Connecting")
    assert ("/test/prepare", {"bridge": "br0"}) in SIMULATOR.host(h["uuid"]).calls

    # A step that fails: the host being added is not added...
    SIMULATOR.fail("/test/prepare", "no such interface eth9")
    error = await fails(add_host(node, c["uuid"], "h2", "10.0.0.2"), "HOST.1000")
    assert "test-prepare-host" in error.details and "no such interface eth9" in error.details
    assert "/test/prepare" in error.details
    assert await host_rows(node) == {"hosts": 1, "resources": 1, "tags": 0}
    assert len(PrepareOnHost.rolled_back) == 1
    # ...and a host reconnecting stays Disconnected with the error.
    error = await fails(call(node, "ReconnectHost", uuid=h["uuid"]), "HOST.1000")
    assert "no such interface eth9" in error.details
    assert (await get(node, h["uuid"]))["status"] == "Disconnected"
    SIMULATOR.heal()
    assert (await call(node, "ReconnectHost", uuid=h["uuid"]))["inventory"]["status"] == \
        "Connected"


# --------------------------------------------------------------------------- agent commands


async def test_host_call_answers_through_the_simulator(node: Node) -> None:
    c = await sim_cluster(node)
    h = await add_host(node, c["uuid"])
    info = await get_host(node, h["uuid"])
    assert info is not None and info.status == "Connected"

    def echo(host: SimHost, body: dict[str, Any]) -> dict[str, Any]:
        host.state["echoed"] = host.state.get("echoed", 0) + 1
        return {"echo": body["say"], "host": host.uuid}

    SIMULATOR.register_handler("/test/echo", echo)
    SIMULATOR.register_handler("/test/echo", echo)  # again: harmless
    reply = await host_call(node, info, "/test/echo", {"say": "hi"})
    assert reply == {"success": True, "echo": "hi", "host": h["uuid"]}
    assert SIMULATOR.host(h["uuid"]).state == {"echoed": 1}
    assert await host_call(node, info, "/any/other/path", {}) == {"success": True}
    with pytest.raises(ValueError, match="already handled by"):
        SIMULATOR.register_handler("/test/echo", lambda host, body: {})

    SIMULATOR.fail("/test/echo", "bridge br0 is busy", host_uuid=h["uuid"])
    error = await fails(host_call(node, info, "/test/echo", {"say": "hi"}), "HOST.1001")
    assert error.details == (f"command /test/echo on Simulator host 'h1' ({h['uuid']}) at "
                             "10.0.0.1 failed: bridge br0 is busy")
    SIMULATOR.heal()
    SIMULATOR.host(h["uuid"]).reachable = False
    error = await fails(host_call(node, info, "/test/echo", {"say": "hi"}), "HOST.1001")
    assert "unreachable" in error.details


async def test_cluster_hosts_lists_connected_hosts_by_default(node: Node) -> None:
    c = await sim_cluster(node)
    h1 = await add_host(node, c["uuid"], "h1", "10.0.0.1")
    h2 = await add_host(node, c["uuid"], "h2", "10.0.0.2")
    SIMULATOR.host(h2["uuid"]).reachable = False
    await fails(call(node, "ReconnectHost", uuid=h2["uuid"]), "HOST.1000")
    assert [h.uuid for h in await cluster_hosts(node, c["uuid"])] == [h1["uuid"]]
    assert [h.name for h in await cluster_hosts(node, c["uuid"], connected_only=False)] == \
        ["h1", "h2"]
    assert await cluster_hosts(node, "f" * 32) == []
    assert await get_host(node, "f" * 32) is None


# --------------------------------------------------------------------------- capacity


def reserve(session: Session, uuid: str, cpu: int, memory: int) -> int:
    """What a VM will do: take capacity with one conditional UPDATE."""
    result = session.execute(
        update(HostVO).where(HostVO.uuid == uuid, HostVO.availableCpuCapacity >= cpu,
                             HostVO.availableMemoryCapacity >= memory)
        .values(availableCpuCapacity=HostVO.availableCpuCapacity - cpu,
                availableMemoryCapacity=HostVO.availableMemoryCapacity - memory))
    return result.rowcount  # type: ignore[attr-defined,no-any-return]


async def test_capacity_follows_the_global_configuration(api_client: Any) -> None:
    client: ApiClient = await api_client()
    node = client.node
    h = await add_host(node, (await sim_cluster(node))["uuid"])
    assert await node.db.run(reserve, h["uuid"], 5, 2 * GiB) == 1
    assert await node.db.run(reserve, h["uuid"], 100, 0) == 0  # more than there is

    async def capacity() -> tuple[int, int, int, int]:
        host = await get(node, h["uuid"])
        return (host["totalCpuCapacity"], host["availableCpuCapacity"],
                host["totalMemoryCapacity"], host["availableMemoryCapacity"])

    assert await capacity() == (80, 75, 8 * GiB, 5 * GiB)
    await client.call("UpdateGlobalConfig", category="host",
                      name="cpu.overProvisioning.ratio", value="4")
    assert await capacity() == (32, 27, 8 * GiB, 5 * GiB)
    await client.call("UpdateGlobalConfig", category="host", name="reservedMemory",
                      value="512M")
    assert await capacity() == (32, 27, 8 * GiB, 5 * GiB + 512 * 1024**2)
    # Reconnecting keeps what is reserved; bad values change nothing.
    await client.call("ReconnectHost", uuid=h["uuid"])
    assert await capacity() == (32, 27, 8 * GiB, 5 * GiB + 512 * 1024**2)
    for name, value in (("reservedMemory", "lots"), ("reservedMemory", "-1G"),
                        ("cpu.overProvisioning.ratio", "0")):
        await fails(client.call("UpdateGlobalConfig", category="host", name=name,
                                value=value), "SYS.1007")
    assert await capacity() == (32, 27, 8 * GiB, 5 * GiB + 512 * 1024**2)
    # A host added now gets the settings of now.
    new = await add_host(node, h["clusterUuid"], "h2", "10.0.0.2", cpuCapacity=2,
                         memoryCapacity=2 * GiB)
    assert (new["totalCpuCapacity"], new["availableMemoryCapacity"]) == \
        (8, 2 * GiB - 512 * 1024**2)


# --------------------------------------------------------------------------- restarts


async def test_a_simulator_host_survives_a_restart_of_the_node(make_node: MakeNode) -> None:
    first = await make_node()
    h = await add_host(first, (await sim_cluster(first))["uuid"], cpuCapacity=6,
                       memoryCapacity=3 * GiB)
    await first.stop()
    SIMULATOR.clear()  # a new process: the simulated machines are gone
    second = await make_node()
    reply = (await call(second, "ReconnectHost", uuid=h["uuid"]))["inventory"]
    assert (reply["status"], reply["cpuNum"], reply["totalMemoryCapacity"]) == \
        ("Connected", 6, 3 * GiB)


async def test_the_migrations_match_the_host_model(node: Node) -> None:
    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table == "HostVO"

    def diff(session: Session) -> list[Any]:
        context = MigrationContext.configure(
            session.connection(), opts={"compare_type": True, "include_object": include})
        return list(compare_metadata(context, Base.metadata))

    assert await node.db.run(diff) == []
