"""VMs on the agent are libvirt domains: defined from the command, changed by commands."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import libvirt
import msgspec
import pytest
from zkvmagent.commands import AgentNic, AgentVolume, body

from .conftest import AgentClient, FakeNode, vm_cmd

VM = "0d1f6f1ea4a94d2a9f2bb0f7a1c3e001"


async def domain(agent: AgentClient, uuid: str = VM, *, definition: bool = False
                 ) -> tuple[int, ET.Element] | None:
    """The domain's libvirt state and XML (live, or its persistent definition), or
    ``None`` if libvirt knows no such domain."""
    def look(conn: libvirt.virConnect) -> tuple[int, str] | None:
        try:
            dom = conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            return None
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if definition else 0
        return dom.state()[0], dom.XMLDesc(flags)

    found = await agent.libvirt(look)
    return None if found is None else (found[0], ET.fromstring(found[1]))


async def state(agent: AgentClient, uuid: str = VM) -> int | None:
    found = await domain(agent, uuid)
    return None if found is None else found[0]


async def test_a_started_vm_is_a_running_domain_with_its_cpu_memory_disks_and_nics(
        agent: AgentClient) -> None:
    cmd = vm_cmd(VM, name="web-1", cpus=2, memory=2 * 1024**3, data_volumes=1, nics=2)
    await agent.ok("/vm/start", body(cmd))

    found = await domain(agent)
    assert found is not None
    libvirt_state, xml = found
    assert libvirt_state == libvirt.VIR_DOMAIN_RUNNING
    assert xml.findtext("uuid", "").replace("-", "") == VM
    assert xml.findtext("name") == VM
    assert xml.findtext("description") == "web-1"
    assert xml.findtext("vcpu") == "2"
    memory = xml.find("memory")
    assert memory is not None and memory.get("unit") == "KiB"
    assert memory.text == str(2 * 1024**2)
    disks = [(d.find("target").get("dev"), d.find("target").get("bus"),  # type: ignore[union-attr]
              d.find("driver").get("type"), d.find("source").get("file"))  # type: ignore[union-attr]
             for d in xml.iterfind("devices/disk")]
    root = agent.agent.system.root
    assert disks == [
        ("vda", "virtio", "qcow2", f"{root}/ps/rootVolumes/vol-{VM}/root.qcow2"),
        ("vdb", "virtio", "qcow2", f"{root}/ps/dataVolumes/vol-{VM}/data0.qcow2")]
    nics = [(i.get("type"), i.find("mac").get("address"),  # type: ignore[union-attr]
             i.find("source").get("bridge"), i.find("model").get("type"))  # type: ignore[union-attr]
            for i in xml.iterfind("devices/interface")]
    assert nics == [("bridge", "fa:16:3e:00:0d:00", "br_eth0", "virtio"),
                    ("bridge", "fa:16:3e:00:0d:01", "br_eth1", "virtio")]
    graphics = xml.find("devices/graphics")
    assert graphics is not None and graphics.get("type") == "vnc"

    # Starting a running VM again changes nothing.
    await agent.ok("/vm/start", body(cmd))
    assert await state(agent) == libvirt.VIR_DOMAIN_RUNNING


async def test_stop_start_reboot_pause_resume_and_destroy_are_reflected_in_libvirt(
        agent: AgentClient) -> None:
    await agent.ok("/vm/start", body(vm_cmd(VM)))
    await agent.ok("/vm/pause", {"uuid": VM})
    assert await state(agent) == libvirt.VIR_DOMAIN_PAUSED
    await agent.ok("/vm/resume", {"uuid": VM})
    assert await state(agent) == libvirt.VIR_DOMAIN_RUNNING
    await agent.ok("/vm/reboot", {"uuid": VM})
    assert await state(agent) == libvirt.VIR_DOMAIN_RUNNING

    # A stopped VM is undefined, as ZStack's agent does; starting defines it again.
    await agent.ok("/vm/stop", {"uuid": VM, "type": "grace", "timeout": 5})
    assert await state(agent) is None
    await agent.ok("/vm/start", body(vm_cmd(VM)))
    assert await state(agent) == libvirt.VIR_DOMAIN_RUNNING
    await agent.ok("/vm/stop", {"uuid": VM, "type": "cold"})
    assert await state(agent) is None

    await agent.ok("/vm/start", body(vm_cmd(VM)))
    await agent.ok("/vm/destroy", {"uuid": VM})
    assert await state(agent) is None
    # Destroying (or stopping) a VM the host does not know is not an error.
    await agent.ok("/vm/destroy", {"uuid": VM})
    await agent.ok("/vm/stop", {"uuid": VM})


async def test_commands_on_a_vm_in_the_wrong_state_fail_naming_it(agent: AgentClient) -> None:
    status, reply = await agent.post("/vm/pause", {"uuid": VM})
    assert status == 200 and reply["success"] is False
    assert VM in reply["error"] and "not on this host" in reply["error"]
    status, reply = await agent.post("/vm/stop", {"uuid": VM, "type": "hard"})
    assert reply["success"] is False and "'hard'" in reply["error"]


async def test_attach_and_detach_volume_change_the_domain_and_keep_its_uuid(
        agent: AgentClient) -> None:
    await agent.ok("/vm/start", body(vm_cmd(VM, data_volumes=0)))
    volume = AgentVolume(volumeUuid="5e1d0c5a8f1b4c0e9a3d2b1c0f9e8d7c", deviceId=1,
                         installPath="/ps/dataVolumes/vol-x/x.qcow2")
    attach = {"vmInstanceUuid": VM, "volume": msgspec.to_builtins(volume)}
    await agent.ok("/vm/attachdatavolume", attach)
    await agent.ok("/vm/attachdatavolume", attach)  # attaching twice attaches once

    found = await domain(agent, definition=True)
    assert found is not None
    _, xml = found
    assert xml.findtext("uuid", "").replace("-", "") == VM
    disks = {d.find("target").get("dev"): d.findtext("serial")  # type: ignore[union-attr]
             for d in xml.iterfind("devices/disk")}
    assert disks == {"vda": f"{VM[:-4]}r000", "vdb": volume.volumeUuid}
    assert await state(agent) == libvirt.VIR_DOMAIN_RUNNING

    await agent.ok("/vm/detachdatavolume", attach)
    found = await domain(agent, definition=True)
    assert found is not None
    assert found[1].findtext("uuid", "").replace("-", "") == VM
    assert [d.find("target").get("dev")  # type: ignore[union-attr]
            for d in found[1].iterfind("devices/disk")] == ["vda"]

    # Through the agent, as a node would look.
    dumped = await agent.ok("/vm/dumpxml", {"vmUuid": VM})
    assert "vdb" not in dumped["definition"] and dumped["state"] == "Running"


async def test_attach_and_detach_nic(agent: AgentClient) -> None:
    await agent.ok("/vm/start", body(vm_cmd(VM, nics=1)))
    nic = AgentNic(uuid="a1b2", mac="FA:16:3E:AA:BB:CC", deviceId=1, bridgeName="br_eth9")
    await agent.ok("/vm/attachnic", {"vmUuid": VM, "nic": msgspec.to_builtins(nic)})
    found = await domain(agent, definition=True)
    assert found is not None
    macs = [i.find("mac").get("address")  # type: ignore[union-attr]
            for i in found[1].iterfind("devices/interface")]
    assert macs == ["fa:16:3e:00:0d:00", "fa:16:3e:aa:bb:cc"]
    await agent.ok("/vm/detachnic", {"vmUuid": VM, "nic": msgspec.to_builtins(nic)})
    found = await domain(agent, definition=True)
    assert found is not None
    assert len(list(found[1].iterfind("devices/interface"))) == 1


async def test_vmsync_and_vnc_ports(agent: AgentClient) -> None:
    other = "7a9e3c1b5d2f4e6a8b0c1d2e3f4a5b6c"
    await agent.ok("/vm/start", body(vm_cmd(VM)))
    await agent.ok("/vm/start", body(vm_cmd(other, name="db-1")))
    await agent.ok("/vm/pause", {"uuid": other})

    reply = await agent.ok("/vm/vmsync")
    assert reply["states"] == {VM: "Running", other: "Paused"}

    first = await agent.ok("/vm/getvncport", {"vmUuid": VM})
    second = await agent.ok("/vm/getvncport", {"vmUuid": other})
    assert first["protocol"] == "vnc" and first["port"] >= 5900
    assert second["port"] >= 5900 and second["port"] != first["port"]
    found = await domain(agent)
    assert found is not None
    graphics = found[1].find("devices/graphics")
    assert graphics is not None and graphics.get("port") == str(first["port"])


async def test_migration_on_the_test_driver_fails_saying_why(agent: AgentClient) -> None:
    await agent.ok("/vm/start", body(vm_cmd(VM)))
    status, reply = await agent.post("/vm/migrate", {"vmUuid": VM, "destHostIp": "10.0.0.2"})
    assert status == 200 and reply["success"] is False
    assert "test driver" in reply["error"] and "10.0.0.2" in reply["error"]
    assert await state(agent) == libvirt.VIR_DOMAIN_RUNNING


async def test_libvirt_events_reach_the_node(agent: AgentClient, node: FakeNode) -> None:
    await agent.ok("/host/connect", {"hostUuid": "host-1", "sendCommandUrl": node.url})
    await agent.ok("/vm/start", body(vm_cmd(VM)))
    await agent.ok("/vm/pause", {"uuid": VM})
    await agent.ok("/vm/resume", {"uuid": VM})
    await agent.ok("/vm/stop", {"uuid": VM, "type": "cold"})

    def shutdown_reported(post: Any) -> bool:
        return post.body.get("vmState") == "Shutdown"

    post = await node.wait_for(shutdown_reported)
    assert post.headers["commandpath"] == "/kvm/reportvmstate"
    assert post.body == {"hostUuid": "host-1", "vmUuid": VM, "vmState": "Shutdown"}
    assert node.events(VM) == ["Running", "Paused", "Running", "Shutdown"]


@pytest.mark.parametrize("broken, field", [
    ({"vmInstanceUuid": VM, "vmName": "x", "cpuNum": 1, "memory": 1024**3}, "rootVolume"),
    ({"vmInstanceUuid": VM, "vmName": "x", "cpuNum": "two", "memory": 1024**3,
      "rootVolume": {"volumeUuid": "v", "installPath": "/a", "deviceId": 0}}, "cpuNum"),
    ({"vmInstanceUuid": VM, "vmName": "x", "cpuNum": 1, "memory": 1024**3,
      "rootVolume": {"volumeUuid": "v", "installPath": "/a"}}, "deviceId"),
])
async def test_a_malformed_vm_command_is_refused_naming_the_field(
        agent: AgentClient, broken: dict[str, Any], field: str) -> None:
    status, reply = await agent.post("/vm/start", broken)
    assert status == 400
    assert reply["success"] is False
    assert reply["error"].startswith("/vm/start: ") and field in reply["error"]
    assert await state(agent) is None
    await agent.ok("/vm/start", body(vm_cmd(VM)))
    assert await state(agent) == libvirt.VIR_DOMAIN_RUNNING
