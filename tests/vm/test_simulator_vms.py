"""The Simulator hypervisor's VM operations, driven directly against simulated hosts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import pytest

from zcore.errors import ZError
from zplugins.compute.public import HOST_OPERATION_FAILED, HostInfo, NicTO, VmTO, VolumeTO
from zplugins.simulator.hosts import SIMULATOR
from zplugins.simulator.hypervisor import SimulatorHypervisor

if TYPE_CHECKING:
    from zcore.node import Node

GiB = 1024**3
#: The Simulator driver never looks at the node.
NODE = cast("Node", None)


@pytest.fixture(autouse=True)
def simulated_world() -> Iterator[None]:
    yield
    SIMULATOR.clear()


@pytest.fixture
def driver() -> SimulatorHypervisor:
    return SimulatorHypervisor()


def sim_host(uuid: str, ip: str = "192.168.0.1") -> HostInfo:
    SIMULATOR.add_host(uuid, 8, 16 * GiB)
    return HostInfo(uuid, f"name-{uuid}", ip, "cluster", "zone", "Simulator", "Enabled",
                    "Connected")


def root(uuid: str = "root1") -> VolumeTO:
    return VolumeTO(uuid, "Root", 0, 10 * GiB, "ps1", installPath=f"/ps1/{uuid}.qcow2")


def data(uuid: str, device_id: int = 1) -> VolumeTO:
    return VolumeTO(uuid, "Data", device_id, GiB, "ps1", installPath=f"/ps1/{uuid}.qcow2")


def nic(uuid: str, device_id: int = 0) -> NicTO:
    return NicTO(uuid, "l3a", f"fa:16:3e:00:00:0{device_id}", device_id, ip="10.0.0.10",
                 netmask="255.255.255.0", gateway="10.0.0.1", bridgeName="br_eth0")


def vm(uuid: str = "vm1") -> VmTO:
    return VmTO(uuid, f"name-{uuid}", 2, 2 * GiB, root(f"root-{uuid}"),
                dataVolumes=(data(f"data-{uuid}"),), nics=(nic(f"nic-{uuid}"),))


async def test_a_started_vm_runs_on_its_host_with_zstacks_command(
        driver: SimulatorHypervisor) -> None:
    host = sim_host("h1")
    await driver.start_vm(NODE, host, vm("vm1"))
    machine = SIMULATOR.host("h1")
    running = machine.vms()["vm1"]
    assert (running["state"], running["cpuNum"], running["memory"]) == ("Running", 2, 2 * GiB)
    assert set(running["volumes"]) == {"root-vm1", "data-vm1"}
    assert set(running["nics"]) == {"nic-vm1"}
    path, body = machine.calls[-1]
    assert path == "/vm/start"
    assert (body["vmInstanceUuid"], body["vmName"], body["cpuNum"], body["memory"]) == \
        ("vm1", "name-vm1", 2, 2 * GiB)
    assert body["rootVolume"] == {
        "volumeUuid": "root-vm1", "installPath": "/ps1/root-vm1.qcow2", "deviceId": 0,
        "format": "qcow2", "deviceType": "file", "useVirtio": True, "shareable": False,
        "cacheMode": "none"}
    assert [v["volumeUuid"] for v in body["dataVolumes"]] == ["data-vm1"]
    assert body["nics"][0]["mac"] == "fa:16:3e:00:00:00"
    assert body["nics"][0]["bridgeName"] == "br_eth0"
    # What a test reads is a copy: changing it changes nothing on the host.
    running["state"] = "Stopped"
    assert machine.vms()["vm1"]["state"] == "Running"


async def test_the_lifecycle_moves_through_zstacks_states(driver: SimulatorHypervisor) -> None:
    host = sim_host("h1")
    machine = SIMULATOR.host("h1")

    def state() -> str:
        return str(machine.vms()["vm1"]["state"])

    await driver.start_vm(NODE, host, vm("vm1"))
    await driver.pause_vm(NODE, host, "vm1")
    assert state() == "Paused"
    assert await driver.vm_states(NODE, host) == {"vm1": "Paused"}
    await driver.resume_vm(NODE, host, "vm1")
    assert state() == "Running"
    await driver.reboot_vm(NODE, host, "vm1")
    assert state() == "Running"
    await driver.stop_vm(NODE, host, "vm1", type="cold")
    assert machine.calls[-1] == ("/vm/stop", {"uuid": "vm1", "type": "cold", "timeout": 60})
    # As a KVM host undefines a stopped domain, the host forgets the VM.
    assert machine.vms() == {}
    assert await driver.vm_states(NODE, host) == {}
    with pytest.raises(ZError, match="vm1"):
        await driver.pause_vm(NODE, host, "vm1")
    await driver.start_vm(NODE, host, vm("vm1"))
    assert state() == "Running"
    await driver.destroy_vm(NODE, host, "vm1")
    assert machine.vms() == {}
    assert await driver.vm_states(NODE, host) == {}


async def test_an_unknown_vm_cannot_be_paused_but_destroying_it_is_fine(
        driver: SimulatorHypervisor) -> None:
    host = sim_host("h1")
    for op in (driver.pause_vm, driver.resume_vm, driver.reboot_vm):
        with pytest.raises(ZError) as raised:
            await op(NODE, host, "ghost")
        assert raised.value.code == HOST_OPERATION_FAILED
        assert "ghost" in raised.value.details and "does not exist" in raised.value.details
    await driver.destroy_vm(NODE, host, "ghost")
    await driver.stop_vm(NODE, host, "ghost")
    assert SIMULATOR.host("h1").vms() == {}


async def test_an_injected_failure_raises_a_zerror_naming_host_command_and_vm(
        driver: SimulatorHypervisor) -> None:
    host = sim_host("h1")
    SIMULATOR.fail("/vm/start", "qemu-kvm: cannot allocate memory", host_uuid="h1")
    with pytest.raises(ZError) as raised:
        await driver.start_vm(NODE, host, vm("vm1"))
    error = raised.value
    assert error.code == HOST_OPERATION_FAILED
    for part in ("/vm/start", "vm1", "h1", "qemu-kvm: cannot allocate memory"):
        assert part in error.details, error.details
    assert SIMULATOR.host("h1").vms() == {}
    SIMULATOR.heal()
    await driver.start_vm(NODE, host, vm("vm1"))
    assert SIMULATOR.host("h1").vms()["vm1"]["state"] == "Running"


async def test_an_unreachable_host_fails_vm_commands_with_a_zerror(
        driver: SimulatorHypervisor) -> None:
    host = sim_host("h1")
    await driver.start_vm(NODE, host, vm("vm1"))
    SIMULATOR.host("h1").reachable = False
    with pytest.raises(ZError) as raised:
        await driver.stop_vm(NODE, host, "vm1")
    assert raised.value.code == HOST_OPERATION_FAILED
    assert "/vm/stop" in raised.value.details and "unreachable" in raised.value.details
    with pytest.raises(ZError, match="agent command failed"):
        await driver.vm_states(NODE, host)
    SIMULATOR.host("h1").reachable = True
    assert await driver.vm_states(NODE, host) == {"vm1": "Running"}


async def test_migrating_moves_the_vm_to_the_destination(driver: SimulatorHypervisor) -> None:
    source, dest = sim_host("h1", "192.168.0.1"), sim_host("h2", "192.168.0.2")
    await driver.start_vm(NODE, source, vm("vm1"))
    await driver.migrate_vm(NODE, source, "vm1", dest)
    assert SIMULATOR.host("h1").vms() == {}
    moved = SIMULATOR.host("h2").vms()["vm1"]
    assert moved["state"] == "Running" and set(moved["volumes"]) == {"root-vm1", "data-vm1"}
    path, body = SIMULATOR.host("h1").calls[-1]
    assert path == "/vm/migrate"
    assert (body["vmUuid"], body["destHostIp"], body["migrateFromDestination"]) == \
        ("vm1", "192.168.0.2", False)
    assert await driver.vm_states(NODE, source) == {}
    assert await driver.vm_states(NODE, dest) == {"vm1": "Running"}
    # Migrating it again from the old host fails: it is not there any more.
    with pytest.raises(ZError, match="does not exist"):
        await driver.migrate_vm(NODE, source, "vm1", dest)


async def test_a_migration_to_an_unreachable_host_leaves_the_vm_where_it_was(
        driver: SimulatorHypervisor) -> None:
    source, dest = sim_host("h1"), sim_host("h2", "192.168.0.2")
    await driver.start_vm(NODE, source, vm("vm1"))
    SIMULATOR.host("h2").reachable = False
    with pytest.raises(ZError) as raised:
        await driver.migrate_vm(NODE, source, "vm1", dest)
    assert "h2" in raised.value.details and "vm1" in raised.value.details
    assert set(SIMULATOR.host("h1").vms()) == {"vm1"}
    assert SIMULATOR.host("h2").vms() == {}


async def test_volumes_and_nics_are_plugged_and_unplugged(driver: SimulatorHypervisor) -> None:
    host = sim_host("h1")
    await driver.start_vm(NODE, host, vm("vm1"))
    await driver.attach_volume(NODE, host, "vm1", data("extra", 2))
    await driver.attach_nic(NODE, host, "vm1", nic("nic2", 1))
    machine = SIMULATOR.host("h1")
    assert set(machine.vms()["vm1"]["volumes"]) == {"root-vm1", "data-vm1", "extra"}
    assert machine.vms()["vm1"]["volumes"]["extra"]["deviceId"] == 2
    assert set(machine.vms()["vm1"]["nics"]) == {"nic-vm1", "nic2"}
    assert machine.calls[-2][1]["vmInstanceUuid"] == "vm1"
    assert machine.calls[-1][1]["vmUuid"] == "vm1"
    await driver.detach_volume(NODE, host, "vm1", data("extra", 2))
    await driver.detach_nic(NODE, host, "vm1", nic("nic2", 1))
    # Unplugging what is not plugged in is fine.
    await driver.detach_volume(NODE, host, "vm1", data("extra", 2))
    assert set(machine.vms()["vm1"]["volumes"]) == {"root-vm1", "data-vm1"}
    assert set(machine.vms()["vm1"]["nics"]) == {"nic-vm1"}
    with pytest.raises(ZError, match="ghost"):
        await driver.attach_volume(NODE, host, "ghost", data("extra", 2))
    SIMULATOR.fail("/vm/attachnic", "no such bridge")
    with pytest.raises(ZError, match="no such bridge"):
        await driver.attach_nic(NODE, host, "vm1", nic("nic3", 2))
    assert "nic3" not in machine.vms()["vm1"]["nics"]


async def test_each_running_vm_has_its_own_console_port(driver: SimulatorHypervisor) -> None:
    host = sim_host("h1", "192.168.0.9")
    await driver.start_vm(NODE, host, vm("vm1"))
    await driver.start_vm(NODE, host, vm("vm2"))
    first = await driver.console_address(NODE, host, "vm1")
    second = await driver.console_address(NODE, host, "vm2")
    assert first["hostIp"] == second["hostIp"] == "192.168.0.9"
    assert first["protocol"] == "vnc"
    assert first["port"] != second["port"]
    await driver.stop_vm(NODE, host, "vm1")
    with pytest.raises(ZError, match="no console"):
        await driver.console_address(NODE, host, "vm1")


async def test_clearing_the_simulator_forgets_its_vms(driver: SimulatorHypervisor) -> None:
    host = sim_host("h1")
    await driver.start_vm(NODE, host, vm("vm1"))
    SIMULATOR.clear()
    sim_host("h1")
    assert await driver.vm_states(NODE, host) == {}
