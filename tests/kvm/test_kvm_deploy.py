"""Adding a KVM host deploys a real agent with Ansible (ansible-runner, local connection)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import zkvmagent

from zcore.testing import ApiClient, free_port

from .deploy import FakeHosts
from .test_kvm_hosts import add_kvm_host, kvm_cluster, rows

pytestmark = pytest.mark.db

GiB = 1024**3


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory, agent_install_dir: Path
          ) -> Iterator[FakeHosts]:
    """The fake hosts of this module; their agents are stopped when it ends."""
    made = FakeHosts(tmp_path_factory.mktemp("kvm-hosts"), free_port(), agent_install_dir)
    yield made
    made.stop_agents()


@pytest_asyncio.fixture
async def client(api_client: Any, hosts: FakeHosts) -> ApiClient:
    made: ApiClient = await api_client()
    await hosts.configure(made)
    return made


async def test_adding_a_kvm_host_deploys_and_starts_its_agent(client: ApiClient,
                                                              hosts: FakeHosts) -> None:
    c = await kvm_cluster(client)
    job = uuid.uuid4().hex
    status, body = await add_kvm_host(client, c["uuid"], "127.0.0.2", job_uuid=job)
    assert status == 200, body
    host = body["inventory"]
    assert host["status"] == "Connected"
    # What libvirt's test driver reports for the agent's fake node: 8 CPUs, 16 GiB.
    assert (host["totalCpuCapacity"] // 10, host["totalMemoryCapacity"]) == (8, 16 * GiB)
    pid = hosts.pid("127.0.0.2")
    assert pid is not None, "the agent's pid file names no running process"
    assert hosts.post("127.0.0.2", "/host/version")["version"] == zkvmagent.__version__
    # The agent knows the host it serves.
    assert hosts.post("127.0.0.2", "/host/ping", {"hostUuid": host["uuid"]})["hostUuid"] == \
        host["uuid"]
    config = (hosts.base / "127.0.0.2" / "etc" / "zstack" / "kvmagent.yaml").read_text()
    assert f"test://{hosts.base}/127.0.0.2/node.xml" in config

    steps = (await client.call("GetTaskProgress", apiId=job, all=True))["inventories"]
    seen = [(s["taskName"], s["content"]) for s in steps]
    assert ("deploy KVM agent: Start the agent", "changed") in seen
    assert ("deploy KVM agent: Wait until the agent answers", "ok") in seen
    assert all(s["parentUuid"] == job and s["time"] > 0 for s in steps)
    [latest] = (await client.call("GetTaskProgress", apiId=job))["inventories"]
    assert (latest["taskName"], latest["content"]) == ("deploy KVM agent: deploy", "done")


async def test_an_agent_of_the_same_version_is_not_deployed_again(
        client: ApiClient, hosts: FakeHosts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="zplugins.kvm")
    c = await kvm_cluster(client)
    status, body = await add_kvm_host(client, c["uuid"], "127.0.0.2")
    assert status == 200, body
    pid = hosts.pid("127.0.0.2")
    assert pid is not None
    caplog.clear()

    job = uuid.uuid4().hex
    reconnected = await client.call("ReconnectHost", uuid=body["inventory"]["uuid"],
                                    job_uuid=job)
    assert reconnected["inventory"]["status"] == "Connected"
    assert hosts.pid("127.0.0.2") == pid  # the same process: not restarted
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"the KVM agent {zkvmagent.__version__} runs; not deploying it" in m
               for m in messages), messages
    assert not any("deploying the KVM agent" in m for m in messages), messages


async def test_a_failing_task_is_named_and_the_host_is_not_added(client: ApiClient,
                                                                 hosts: FakeHosts) -> None:
    # Nothing can be created under /proc.
    await hosts.configure(client, **{"agent.installDir": "/proc/zstack-kvmagent"})
    c = await kvm_cluster(client)
    job = uuid.uuid4().hex
    status, body = await add_kvm_host(client, c["uuid"], "127.0.0.3", job_uuid=job)
    assert status == 503, body
    error = body["error"]
    assert error["code"] == "HOST.1000"
    details = error["details"]
    assert "deploying the KVM agent to KVM host 'kvm1'" in details
    assert "task 'Create the install directory' failed" in details
    assert "/proc/zstack-kvmagent" in details
    assert "the host was not added" in details
    assert await rows(client.node) == (0, 0, 0)
    assert hosts.pid("127.0.0.3") is None
    steps = (await client.call("GetTaskProgress", apiId=job, all=True))["inventories"]
    [failed] = [s for s in steps if s["content"].startswith("failed")]
    assert failed["taskName"] == "deploy KVM agent: Create the install directory"


async def test_a_dead_agent_disconnects_its_host_and_reconnecting_starts_it_again(
        client: ApiClient, hosts: FakeHosts) -> None:
    for name, value in (("ping.interval", "1"), ("ping.maxFailure", "1")):
        await client.call("UpdateGlobalConfig", category="host", name=name, value=value)
    c = await kvm_cluster(client)
    status, body = await add_kvm_host(client, c["uuid"], "127.0.0.4")
    assert status == 200, body
    uuid_ = body["inventory"]["uuid"]
    pid = hosts.pid("127.0.0.4")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # its pid file stays behind

    async def status_of() -> str:
        reply = await client.call("QueryHost", q=[f"uuid={uuid_}"])
        found: str = reply["inventories"][0]["status"]
        return found

    for _ in range(100):
        if await status_of() == "Disconnected":
            break
        await asyncio.sleep(0.1)
    assert await status_of() == "Disconnected"

    reconnected = await client.call("ReconnectHost", uuid=uuid_)
    assert reconnected["inventory"]["status"] == "Connected"
    restarted = hosts.pid("127.0.0.4")
    assert restarted is not None and restarted != pid
    assert hosts.post("127.0.0.4", "/host/ping", {"hostUuid": uuid_})["hostUuid"] == uuid_


async def test_progress_of_an_unknown_job_is_empty(client: ApiClient) -> None:
    reply = await client.call("GetTaskProgress", apiId=uuid.uuid4().hex, all=True)
    assert reply["inventories"] == []


def test_agents_run_detached_from_the_tests(hosts: FakeHosts) -> None:
    # Deployed agents are daemons of their own session, stopped through their pid files.
    pid = hosts.pid("127.0.0.2")
    if pid is None:
        pytest.skip("no agent was deployed in this run")
    assert os.getsid(pid) != os.getsid(0)
