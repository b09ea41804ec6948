"""A KVM host added through REST gets a real agent; its VMs are libvirt domains.

The node deploys the agent with Ansible (local connection) to a fake host on 127.0.0.5 whose
libvirt connection is the test driver; local primary storage lives under the agent's root,
the SFTP backup storage is a directory of this machine holding a real qcow2 image. What
libvirt holds is read from the agent (``/vm/vmsync``, ``/vm/dumpxml``), since the test driver
keeps its domains per connection.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from zcore.testing import ApiClient, free_port
from zcore.testing.env import Environment

from .deploy import FakeHosts

pytestmark = pytest.mark.db

GiB = 1024**3
MiB = 1024**2
IP = "127.0.0.5"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory, agent_install_dir: Path
          ) -> Iterator[FakeHosts]:
    made = FakeHosts(tmp_path_factory.mktemp("kvm-e2e"), free_port(), agent_install_dir)
    yield made
    made.stop_agents()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (empty) qcow2 image of 64 MiB."""
    path: Path = tmp_path_factory.mktemp("images") / "image1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


@pytest_asyncio.fixture
async def env(api_client: Any, make_env: Callable[..., Awaitable[Environment]],
              hosts: FakeHosts, image: Path, tmp_path: Path) -> Environment:
    client: ApiClient = await api_client()
    await hosts.configure(client)
    return await make_env({
        "zones": [{
            "name": "z1",
            "backupStorage": [{"name": "bs1", "type": "SftpBackupStorage",
                               "url": str(tmp_path / "bs1"), "hostname": "127.0.0.1",
                               "username": "root", "password": "password"}],
            "primaryStorage": [{"name": "local", "type": "LocalStorage",
                                "url": "/zstack_ps"}],
            "l2Networks": [{"name": "l2", "type": "L2NoVlanNetwork",
                            "physicalInterface": "eth0",
                            "l3Networks": [{"name": "l3", "ipRanges": [
                                {"startIp": "10.0.0.10", "endIp": "10.0.0.250",
                                 "netmask": "255.255.255.0", "gateway": "10.0.0.1"}]}]}],
            "clusters": [{"name": "c1", "hypervisorType": "KVM", "primaryStorage": ["local"],
                          "l2Networks": ["l2"],
                          "hosts": [{"name": "kvm1", "managementIp": IP, "username": "root",
                                     "password": "password"}]}]}],
        "images": [{"name": "image1", "url": image.as_uri(), "format": "qcow2",
                    "mediaType": "RootVolumeTemplate", "platform": "Linux",
                    "backupStorage": ["bs1"]}],
        "instanceOfferings": [{"name": "small", "cpuNum": 2, "memorySize": "512M"}],
        "diskOfferings": [{"name": "disk1G", "diskSize": "1G"}],
    }, client=client)


def states(hosts: FakeHosts) -> dict[str, str]:
    found: dict[str, str] = hosts.post(IP, "/vm/vmsync")["states"]
    return found


def domain(hosts: FakeHosts, vm_uuid: str) -> ET.Element:
    reply = hosts.post(IP, "/vm/dumpxml", {"vmUuid": vm_uuid})
    assert reply["success"], reply
    return ET.fromstring(reply["definition"] or reply["xml"])


async def test_a_vm_created_through_the_api_is_a_libvirt_domain(env: Environment,
                                                                 hosts: FakeHosts) -> None:
    client = env.client
    vm = (await client.call("CreateVmInstance", name="vm1",
                            instanceOfferingUuid=env.uuid("small"),
                            imageUuid=env.uuid("image1"), l3NetworkUuids=[env.uuid("l3")],
                            dataDiskOfferingUuids=[env.uuid("disk1G")]))["inventory"]
    assert vm["state"] == "Running"
    assert states(hosts)[vm["uuid"]] == "Running"

    xml = domain(hosts, vm["uuid"])
    assert xml.findtext("vcpu") == "2"
    memory = xml.find("memory")
    assert memory is not None
    assert int(memory.text or 0) * {"KiB": 1024, "MiB": MiB, "b": 1}[
        memory.get("unit", "KiB")] == 512 * MiB
    volumes = {v["type"]: v for v in vm["allVolumes"]}
    disks = [d.find("source") for d in xml.iter("disk") if d.get("device") == "disk"]
    sources = [d.get("file") for d in disks if d is not None]
    assert len(sources) == 2
    assert any(str(s).endswith(volumes["Root"]["installPath"]) for s in sources), sources
    assert any(str(s).endswith(volumes["Data"]["installPath"]) for s in sources), sources
    # The disks are qcow2 files under the host's root, the root volume on the image.
    for source in sources:
        assert Path(str(source)).read_bytes()[:4] == b"QFI\xfb"
    [nic] = vm["vmNics"]
    [interface] = xml.iter("interface")
    mac = interface.find("mac")
    assert mac is not None and mac.get("address") == nic["mac"]
    bridge = interface.find("source")
    assert bridge is not None and bridge.get("bridge") == "br_eth0"
    assert [g.get("type") for g in xml.iter("graphics")] == ["vnc"]


async def test_vm_operations_are_reflected_in_libvirt(env: Environment,
                                                      hosts: FakeHosts) -> None:
    client = env.client
    vm = (await client.call("CreateVmInstance", name="vm2",
                            instanceOfferingUuid=env.uuid("small"),
                            imageUuid=env.uuid("image1"),
                            l3NetworkUuids=[env.uuid("l3")]))["inventory"]
    uuid = vm["uuid"]
    assert states(hosts)[uuid] == "Running"

    await client.call("StopVmInstance", uuid=uuid)
    assert states(hosts).get(uuid) in (None, "Shutdown")
    await client.call("StartVmInstance", uuid=uuid)
    assert states(hosts)[uuid] == "Running"
    await client.call("RebootVmInstance", uuid=uuid)
    assert states(hosts)[uuid] == "Running"
    await client.call("PauseVmInstance", uuid=uuid)
    assert states(hosts)[uuid] == "Paused"
    await client.call("ResumeVmInstance", uuid=uuid)
    assert states(hosts)[uuid] == "Running"

    volume = (await client.call("CreateDataVolume", name="data1",
                                diskOfferingUuid=env.uuid("disk1G")))["inventory"]
    attached = (await client.call("AttachDataVolumeToVm", vmInstanceUuid=uuid,
                                  volumeUuid=volume["uuid"]))["inventory"]
    installed = attached["installPath"]
    sources = [d.find("source") for d in domain(hosts, uuid).iter("disk")
               if d.get("device") == "disk"]
    assert any(str(s.get("file")).endswith(installed) for s in sources if s is not None)

    await client.call("DestroyVmInstance", uuid=uuid)
    assert uuid not in states(hosts)


async def test_a_vm_destroyed_while_its_host_is_away_is_destroyed_when_it_is_back(
        env: Environment, hosts: FakeHosts) -> None:
    client = env.client
    vm = (await client.call("CreateVmInstance", name="vm3",
                            instanceOfferingUuid=env.uuid("small"),
                            imageUuid=env.uuid("image1"),
                            l3NetworkUuids=[env.uuid("l3")]))["inventory"]
    uuid = vm["uuid"]
    for name, value in (("ping.interval", "1"), ("ping.maxFailure", "1")):
        await client.call("UpdateGlobalConfig", category="host", name=name, value=value)
    pid = hosts.pid(IP)
    assert pid is not None
    # A frozen agent answers nothing, yet keeps its libvirt connection and domains.
    os.kill(pid, signal.SIGSTOP)
    try:
        await wait_for(lambda: host_status(client, vm["hostUuid"]), "Disconnected")
        await client.call("DestroyVmInstance", uuid=uuid)
        [job] = (await client.call("QueryGCJob", q=[f"name=destroy-vm-{uuid}"]))["inventories"]
        assert job["status"] == "Idle"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert uuid in states(hosts)  # still defined in libvirt while the host was away
    # Answering pings again, the host is reconnected and the GC destroys the domain.
    await wait_for(lambda: host_status(client, vm["hostUuid"]), "Connected")
    await wait_for(lambda: gc_status(client, job["uuid"]), "Done")
    assert uuid not in states(hosts)


async def host_status(client: ApiClient, uuid: str) -> str:
    status: str = (await client.call("QueryHost", q=[f"uuid={uuid}"]))["inventories"][0]["status"]
    return status


async def gc_status(client: ApiClient, uuid: str) -> str:
    status: str = (await client.call("QueryGCJob", q=[f"uuid={uuid}"]))["inventories"][0]["status"]
    return status


async def wait_for(read: Callable[[], Awaitable[str]], wanted: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while (found := await read()) != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert found == wanted
