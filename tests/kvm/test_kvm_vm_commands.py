"""The KVM driver's VM operations send ZStack's KVM agent commands: paths and bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from zcore.errors import ZError
from zcore.testing import ApiClient
from zplugins.compute.host_service import service
from zplugins.compute.public import (
    HOST_OPERATION_FAILED,
    HostInfo,
    HypervisorDriver,
    NicTO,
    VmTO,
    VolumeTO,
    get_host,
)
from zplugins.kvm import commands

from .agent import FakeAgent
from .test_kvm_hosts import add_kvm_host, kvm_cluster

pytestmark = pytest.mark.db

GiB = 1024**3

ROOT = VolumeTO("root1", "Root", 0, 10 * GiB, "ps1", installPath="/ps1/root1.qcow2")
DATA = VolumeTO("data1", "Data", 1, GiB, "ps1", installPath="/ps1/data1.qcow2", format="raw")
NIC = NicTO("nic1", "l3a", "fa:16:3e:00:00:01", 0, ip="10.0.0.10", netmask="255.255.255.0",
            gateway="10.0.0.1", bridgeName="br_eth0", internalName="vnic1.0", isDefault=True)
VM = VmTO("vm1", "web", 2, 2 * GiB, ROOT, dataVolumes=(DATA,), nics=(NIC,), cpuSpeed=2600)


@pytest_asyncio.fixture
async def agent() -> AsyncIterator[FakeAgent]:
    fake = FakeAgent()
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture
async def kvm(api_client: Any, agent: FakeAgent
              ) -> tuple[ApiClient, HypervisorDriver, HostInfo]:
    """A node with one KVM host connected to the fake agent, its driver and the host."""
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


async def test_starting_a_vm_sends_zstacks_start_vm_cmd(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo], agent: FakeAgent) -> None:
    client, driver, host = kvm
    await driver.start_vm(client.node, host, VM)
    [(path, body)] = agent.vm_calls()
    assert path == "/vm/start"
    assert (body["vmInstanceUuid"], body["vmName"], body["cpuNum"], body["cpuSpeed"],
            body["memory"], body["bootDev"], body["consolePassword"]) == \
        ("vm1", "web", 2, 2600, 2 * GiB, ["hd"], None)
    assert body["timeout"] > 0
    assert body["rootVolume"] == {
        "volumeUuid": "root1", "installPath": "/ps1/root1.qcow2", "deviceId": 0,
        "format": "qcow2", "deviceType": "file", "useVirtio": True, "shareable": False,
        "cacheMode": "none"}
    assert [(v["volumeUuid"], v["deviceId"], v["format"]) for v in body["dataVolumes"]] == \
        [("data1", 1, "raw")]
    [sent] = body["nics"]
    assert {k: sent[k] for k in ("uuid", "mac", "bridgeName", "deviceId", "ip", "netmask",
                                 "gateway", "nicInternalName")} == {
        "uuid": "nic1", "mac": "fa:16:3e:00:00:01", "bridgeName": "br_eth0", "deviceId": 0,
        "ip": "10.0.0.10", "netmask": "255.255.255.0", "gateway": "10.0.0.1",
        "nicInternalName": "vnic1.0"}
    # An agent reads it back with the shared schema.
    decoded = msgspec.convert(body, commands.StartVmCmd)
    assert decoded.rootVolume.installPath == "/ps1/root1.qcow2"
    assert decoded.nics[0].mac == NIC.mac


async def test_every_vm_operation_sends_its_command(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo], agent: FakeAgent) -> None:
    client, driver, host = kvm
    node = client.node
    dest = HostInfo("h2", "kvm2", "10.9.9.9", host.clusterUuid, host.zoneUuid, "KVM",
                    "Enabled", "Connected")
    await driver.stop_vm(node, host, "vm1", type="cold", timeout=30)
    await driver.reboot_vm(node, host, "vm1")
    await driver.pause_vm(node, host, "vm1")
    await driver.resume_vm(node, host, "vm1")
    await driver.destroy_vm(node, host, "vm1")
    await driver.migrate_vm(node, host, "vm1", dest)
    await driver.attach_volume(node, host, "vm1", DATA)
    await driver.detach_volume(node, host, "vm1", DATA)
    await driver.attach_nic(node, host, "vm1", NIC)
    await driver.detach_nic(node, host, "vm1", NIC)
    sent = agent.vm_calls()
    assert [path for path, _ in sent] == [
        "/vm/stop", "/vm/reboot", "/vm/pause", "/vm/resume", "/vm/destroy", "/vm/migrate",
        "/vm/attachdatavolume", "/vm/detachdatavolume", "/vm/attachnic", "/vm/detachnic"]
    bodies = [body for _, body in sent]
    assert bodies[0] == {"uuid": "vm1", "type": "cold", "timeout": 30}
    assert all(b["uuid"] == "vm1" for b in bodies[1:5])
    assert bodies[4] == {"uuid": "vm1"}
    migrate = bodies[5]
    assert (migrate["vmUuid"], migrate["destHostIp"], migrate["srcHostIp"],
            migrate["migrateFromDestination"]) == ("vm1", "10.9.9.9", host.managementIp, False)
    for body in bodies[6:8]:
        assert body["vmInstanceUuid"] == "vm1"
        assert (body["volume"]["volumeUuid"], body["volume"]["installPath"],
                body["volume"]["deviceId"]) == ("data1", "/ps1/data1.qcow2", 1)
    for body in bodies[8:10]:
        assert body["vmUuid"] == "vm1"
        assert (body["nic"]["uuid"], body["nic"]["mac"]) == ("nic1", NIC.mac)


async def test_vm_sync_maps_libvirt_states_to_the_nodes(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo], agent: FakeAgent) -> None:
    client, driver, host = kvm
    agent.vm_states = {"a": "Running", "b": "Paused", "c": "Shutdown", "d": "Crashed",
                       "e": "NoState"}
    assert await driver.vm_states(client.node, host) == \
        {"a": "Running", "b": "Paused", "c": "Stopped", "d": "Stopped"}
    assert agent.vm_calls() == [("/vm/vmsync", {})]


async def test_the_console_address_is_the_hosts_ip_and_the_vnc_port(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo], agent: FakeAgent) -> None:
    client, driver, host = kvm
    agent.replies["/vm/getvncport"] = {"port": 5907}
    assert await driver.console_address(client.node, host, "vm1") == \
        {"hostIp": host.managementIp, "port": 5907, "protocol": "vnc"}
    assert agent.vm_calls() == [("/vm/getvncport", {"vmUuid": "vm1"})]


async def test_a_refused_command_raises_a_zerror_naming_host_command_and_vm(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo], agent: FakeAgent) -> None:
    client, driver, host = kvm
    agent.replies["/vm/start"] = {"success": False, "error": "unable to allocate memory"}
    with pytest.raises(ZError) as raised:
        await driver.start_vm(client.node, host, VM)
    error = raised.value
    assert error.code == HOST_OPERATION_FAILED
    for part in ("/vm/start", "vm1", host.uuid, "unable to allocate memory"):
        assert part in error.details, error.details


async def test_an_agent_that_is_down_fails_vm_commands_with_a_zerror(
        kvm: tuple[ApiClient, HypervisorDriver, HostInfo], agent: FakeAgent) -> None:
    client, driver, host = kvm
    await agent.stop()
    with pytest.raises(ZError) as raised:
        await driver.destroy_vm(client.node, host, "vm1")
    assert raised.value.code == HOST_OPERATION_FAILED
    assert "/vm/destroy" in raised.value.details and "vm1" in raised.value.details
    assert "cannot reach the agent" in raised.value.details
