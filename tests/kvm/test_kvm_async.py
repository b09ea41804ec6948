"""ZStack's asynchronous agent protocol: task uuids, callbacks, timeouts, and VM state events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from zcore.errors import ZError
from zcore.testing import ApiClient
from zcore.testing.env import Environment
from zplugins.compute.host_service import service
from zplugins.compute.public import HOST_OPERATION_FAILED, HostInfo, HypervisorDriver, get_host

from .agent import FakeAgent
from .test_kvm_hosts import add_kvm_host, kvm_cluster
from .test_kvm_vm_commands import VM

pytestmark = pytest.mark.db

CALLBACK = "/zstack/asyncrest/callback"
EVENTS = "/zstack/asyncrest/sendcommand"


@pytest_asyncio.fixture
async def agent() -> AsyncIterator[FakeAgent]:
    fake = FakeAgent()
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture
async def kvm(api_client: Any, agent: FakeAgent
              ) -> tuple[ApiClient, HypervisorDriver, HostInfo]:
    client: ApiClient = await api_client()
    await client.call("UpdateGlobalConfig", category="kvm", name="agent.port",
                      value=str(agent.port))
    cluster = await kvm_cluster(client)
    status, body = await add_kvm_host(client, cluster["uuid"])
    assert status == 200, body
    host = await get_host(client.node, body["inventory"]["uuid"])
    assert host is not None
    agent.calls.clear()
    return client, service(client.node).driver("KVM"), host


async def post(client: ApiClient, path: str, body: Any, headers: dict[str, str]
               ) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, \
            http.post(f"{client.node.url}{path}", json=body, headers=headers) as reply:
        return reply.status, await reply.json()


async def test_long_commands_wait_for_the_agents_callback(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo], agent: FakeAgent) -> None:
    client, driver, host = kvm
    agent.callback_delay = 0.3
    started = time.monotonic()
    await driver.start_vm(client.node, host, VM)
    # The agent answered at once; the command ended with the reply it posted later.
    assert time.monotonic() - started >= 0.3
    [(path, task, url)] = agent.async_calls
    assert (path, url) == ("/vm/start", f"{client.node.url}{CALLBACK}")
    for _ in range(50):
        if agent.callbacks:
            break
        await asyncio.sleep(0.02)
    assert agent.callbacks == [(task, 200, {"success": True, "error": None})]


async def test_a_failure_in_the_callback_fails_the_command(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo], agent: FakeAgent) -> None:
    client, driver, host = kvm
    agent.replies["/vm/reboot"] = {"success": False, "error": "domain vm1 is locked"}
    with pytest.raises(ZError) as caught:
        await driver.reboot_vm(client.node, host, "vm1")
    assert caught.value.code == HOST_OPERATION_FAILED
    assert "command /vm/reboot for VM vm1" in caught.value.details
    assert "domain vm1 is locked" in caught.value.details
    assert [p for p, _, _ in agent.async_calls] == ["/vm/reboot"]


async def test_quick_questions_stay_synchronous(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo], agent: FakeAgent) -> None:
    client, driver, host = kvm
    agent.vm_states = {"vm1": "Running"}
    assert await driver.vm_states(client.node, host) == {"vm1": "Running"}
    await driver.ping(client.node, host, 5)
    assert agent.async_calls == []
    assert agent.paths() == ["/vm/vmsync", "/host/ping"]


async def test_a_callback_that_never_comes_times_out_and_a_late_one_is_dropped(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo], agent: FakeAgent,
        caplog: pytest.LogCaptureFixture) -> None:
    client, driver, host = kvm
    agent.silent.add("/localstorage/check")
    with pytest.raises(TimeoutError) as caught:
        await driver.call(client.node, host, "/localstorage/check", {}, 0.5)
    [(_, task, url)] = agent.async_calls
    assert f"did not complete task {task} within 0.5 s" in str(caught.value)
    # The agent's reply arrives after all: answered, logged and dropped.
    await agent.post_callback(url, task, {"success": True})
    assert agent.callbacks == [(task, 200, {"success": True, "error": None})]
    assert any(f"task {task}, which no command on this node waits for" in r.getMessage()
               for r in caplog.records)


async def test_a_callback_without_task_uuid_is_refused(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo]) -> None:
    client, _, _ = kvm
    status, body = await post(client, CALLBACK, {"success": True}, {})
    assert status == 400
    assert body == {"success": False,
                    "error": f"{CALLBACK}: the header 'taskuuid' is missing"}


# --------------------------------------------------------------------------- events


@pytest.fixture
def image_url(tmp_path: Path) -> str:
    path = tmp_path / "image1.qcow2"
    path.write_bytes(b"QFI\xfb" + bytes(1024 * 1024 - 4))
    return path.as_uri()


@pytest_asyncio.fixture
async def kvm_vm(make_env: Callable[..., Awaitable[Environment]], api_client: Any,
                 agent: FakeAgent, image_url: str) -> tuple[ApiClient, dict[str, Any]]:
    """A running VM on a KVM host whose agent is the fake one."""
    client: ApiClient = await api_client()
    await client.call("UpdateGlobalConfig", category="kvm", name="agent.port",
                      value=str(agent.port))
    env = await make_env({"zones": [{
        "name": "z1",
        "backupStorage": [{"name": "bs1", "type": "Simulator", "url": "/sim/bs1",
                           "totalCapacity": "1T", "availableCapacity": "1T"}],
        "primaryStorage": [{"name": "ps1", "type": "Simulator", "url": "/sim/ps1",
                            "totalCapacity": "2T", "availableCapacity": "2T"}],
        "l2Networks": [{"name": "l2", "type": "L2NoVlanNetwork", "physicalInterface": "eth0",
                        "l3Networks": [{"name": "l3", "ipRanges": [
                            {"startIp": "10.0.0.10", "endIp": "10.0.0.250",
                             "netmask": "255.255.255.0", "gateway": "10.0.0.1"}]}]}],
        "clusters": [{"name": "c1", "hypervisorType": "KVM", "primaryStorage": ["ps1"],
                      "l2Networks": ["l2"],
                      "hosts": [{"name": "kvm1", "managementIp": "127.0.0.1",
                                 "username": "root", "password": "password"}]}]}],
        "images": [{"name": "image1", "url": image_url, "format": "qcow2",
                    "mediaType": "RootVolumeTemplate", "platform": "Linux",
                    "backupStorage": ["bs1"]}],
        "instanceOfferings": [{"name": "small", "cpuNum": 1, "memorySize": "1G"}]},
        client=client)
    vm = (await client.call("CreateVmInstance", name="vm1",
                            instanceOfferingUuid=env.uuid("small"),
                            imageUuid=env.uuid("image1"),
                            l3NetworkUuids=[env.uuid("l3")]))["inventory"]
    assert vm["state"] == "Running"
    return client, vm


async def vm_state(client: ApiClient, uuid: str) -> str:
    reply = await client.call("QueryVmInstance", q=[f"uuid={uuid}"])
    state: str = reply["inventories"][0]["state"]
    return state


async def wait_state(client: ApiClient, uuid: str, state: str) -> None:
    for _ in range(100):
        if await vm_state(client, uuid) == state:
            return
        await asyncio.sleep(0.05)
    assert await vm_state(client, uuid) == state


async def test_the_agent_reports_vm_states_as_the_nodes(
        kvm_vm: tuple[ApiClient, dict[str, Any]]) -> None:
    client, vm = kvm_vm
    headers = {"commandpath": "/kvm/reportvmstate"}

    async def available_memory() -> int:
        reply = await client.call("QueryHost", q=[f"uuid={vm['hostUuid']}"])
        memory: int = reply["inventories"][0]["availableMemoryCapacity"]
        return memory

    running = await available_memory()

    async def report(state: str, host_uuid: str = vm["hostUuid"]) -> None:
        status, body = await post(client, EVENTS, {"hostUuid": host_uuid,
                                                   "vmUuid": vm["uuid"], "vmState": state},
                                  headers)
        assert (status, body) == (200, {"success": True, "error": None})

    await report("Paused")
    await wait_state(client, vm["uuid"], "Paused")
    await report("Running")
    await wait_state(client, vm["uuid"], "Running")
    # Another host's word about the VM changes nothing.
    await report("Paused", host_uuid=uuid.uuid4().hex)
    await asyncio.sleep(0.3)
    assert await vm_state(client, vm["uuid"]) == "Running"
    # Shut down inside the guest: Stopped, and its CPU and memory are the host's again.
    await report("Shutdown")
    await wait_state(client, vm["uuid"], "Stopped")
    reply = await client.call("QueryVmInstance", q=[f"uuid={vm['uuid']}"])
    assert reply["inventories"][0]["hostUuid"] is None
    assert await available_memory() == running + vm["memorySize"]


async def test_malformed_events_are_refused(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo]) -> None:
    client, _, host = kvm
    status, body = await post(client, EVENTS, {"hostUuid": host.uuid, "vmUuid": "vm1",
                                               "vmState": "Dancing"},
                              {"commandpath": "/kvm/reportvmstate"})
    assert status == 400 and "vmState (one of Running, Paused, Shutdown, Crashed)" in \
        body["error"]
    status, body = await post(client, EVENTS, {}, {"commandpath": "/kvm/unknown"})
    assert status == 404 and "unknown commandpath '/kvm/unknown'" in body["error"]
