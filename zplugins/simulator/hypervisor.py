"""The Simulator hypervisor driver: hosts that answer in process.

Every command goes to the host's machine in :data:`zplugins.simulator.hosts.SIMULATOR`, which
answers it from its own state and the handlers other simulator modules registered. VM
operations send the KVM agent's ``/vm/*`` commands, answered by :mod:`zplugins.simulator.vms`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zcore.errors import ZError
from zplugins.compute.hypervisor import HostFacts, HypervisorDriver
from zplugins.compute.public import HOST_CONNECT_FAILED, HOST_OPERATION_FAILED
from zplugins.simulator import vms
from zplugins.simulator.hosts import CONNECT_PATH, PING_PATH, SIMULATOR, SimulatedHostDown

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.compute.public import HostInfo, NicTO, VmTO, VolumeTO

__all__ = ["SimulatorHypervisor"]


class SimulatorHypervisor(HypervisorDriver):
    """Simulated hosts: capacity as added, commands answered by the simulator's handlers."""

    hypervisor_type = "Simulator"
    host_inventory_class = "org.zstack.header.simulator.SimulatorHostInventory"

    def __init__(self) -> None:
        vms.register()

    async def connect(self, node: Node, host: HostInfo, known: HostFacts | None) -> HostFacts:
        if SIMULATOR.get(host.uuid) is None and known is not None:
            # Simulated machines live in memory: after a restart, rebuild the host as it was.
            SIMULATOR.add_host(host.uuid, known.cpuNum, known.totalMemory,
                                         cpu_sockets=known.cpuSockets,
                                         architecture=known.architecture or "x86_64")
        reply = await SIMULATOR.answer(host.uuid, CONNECT_PATH, {"hostUuid": host.uuid})
        if not reply.get("success"):
            raise ZError(HOST_CONNECT_FAILED, "cannot connect host",
                         f"the host refused to connect: {reply.get('error')}")
        machine = SIMULATOR.host(host.uuid)
        return HostFacts(cpuNum=machine.cpuNum, cpuSockets=machine.cpuSockets,
                         totalMemory=machine.totalMemory, cpuSpeed=machine.cpuSpeed,
                         architecture=machine.architecture)

    async def ping(self, node: Node, host: HostInfo, timeout: float) -> None:
        reply = await SIMULATOR.answer(host.uuid, PING_PATH, {"hostUuid": host.uuid})
        if not reply.get("success"):
            raise ConnectionError(f"the host answered the ping with an error: "
                                  f"{reply.get('error')}")

    async def call(self, node: Node, host: HostInfo, path: str, body: Mapping[str, Any],
                   timeout: float | None) -> dict[str, Any]:
        return await SIMULATOR.answer(host.uuid, path, dict(body))

    async def disconnect(self, node: Node, host: HostInfo) -> None:
        SIMULATOR.remove_host(host.uuid)

    async def host_inventory_fields(self, node: Node, hosts: Sequence[Mapping[str, Any]]
                                    ) -> dict[str, dict[str, Any]]:
        # ZStack's SimulatorHostInventory: what the host was added with.
        return {h["uuid"]: {"cpuCapacity": h["cpuNum"],
                            "memoryCapacity": h["totalMemoryCapacity"]} for h in hosts}

    # ----------------------------------------------------------------- VMs

    async def _vm(self, host: HostInfo, path: str, body: dict[str, Any],
                  vm_uuid: str | None) -> dict[str, Any]:
        """Send a VM command; a ZError naming the host, the command and the VM if it fails."""
        what = f"command {path}" + (f" for VM {vm_uuid}" if vm_uuid else "")
        try:
            reply = await SIMULATOR.answer(host.uuid, path, body)
        except SimulatedHostDown as exc:
            raise ZError(HOST_OPERATION_FAILED, "agent command failed",
                         f"{what} on {host} failed: {exc}") from exc
        if not reply.get("success"):
            raise ZError(HOST_OPERATION_FAILED, "agent command failed",
                         f"{what} on {host} failed: "
                         f"{reply.get('error') or 'the agent gave no reason'}")
        return reply

    async def start_vm(self, node: Node, host: HostInfo, vm: VmTO) -> None:
        await self._vm(host, vms.START_PATH, vms.start_body(vm), vm.uuid)

    async def stop_vm(self, node: Node, host: HostInfo, vm_uuid: str, *, type: str = "grace",
                      timeout: float = 60) -> None:
        await self._vm(host, vms.STOP_PATH,
                       {"uuid": vm_uuid, "type": type, "timeout": int(timeout)}, vm_uuid)

    async def reboot_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        await self._vm(host, vms.REBOOT_PATH, {"uuid": vm_uuid, "timeout": 300}, vm_uuid)

    async def pause_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        await self._vm(host, vms.PAUSE_PATH, {"uuid": vm_uuid, "timeout": 300}, vm_uuid)

    async def resume_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        await self._vm(host, vms.RESUME_PATH, {"uuid": vm_uuid, "timeout": 300}, vm_uuid)

    async def destroy_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        await self._vm(host, vms.DESTROY_PATH, {"uuid": vm_uuid}, vm_uuid)

    async def migrate_vm(self, node: Node, host: HostInfo, vm_uuid: str,
                         destination: HostInfo) -> None:
        await self._vm(host, vms.MIGRATE_PATH, vms.migrate_body(vm_uuid, host, destination),
                       vm_uuid)

    async def attach_volume(self, node: Node, host: HostInfo, vm_uuid: str,
                            volume: VolumeTO) -> None:
        await self._vm(host, vms.ATTACH_VOLUME_PATH,
                       {"vmInstanceUuid": vm_uuid, "volume": vms.volume_body(volume)}, vm_uuid)

    async def detach_volume(self, node: Node, host: HostInfo, vm_uuid: str,
                            volume: VolumeTO) -> None:
        await self._vm(host, vms.DETACH_VOLUME_PATH,
                       {"vmInstanceUuid": vm_uuid, "volume": vms.volume_body(volume)}, vm_uuid)

    async def attach_nic(self, node: Node, host: HostInfo, vm_uuid: str, nic: NicTO) -> None:
        await self._vm(host, vms.ATTACH_NIC_PATH,
                       {"vmUuid": vm_uuid, "nic": vms.nic_body(nic)}, vm_uuid)

    async def detach_nic(self, node: Node, host: HostInfo, vm_uuid: str, nic: NicTO) -> None:
        await self._vm(host, vms.DETACH_NIC_PATH,
                       {"vmUuid": vm_uuid, "nic": vms.nic_body(nic)}, vm_uuid)

    async def vm_states(self, node: Node, host: HostInfo) -> dict[str, str]:
        reply = await self._vm(host, vms.SYNC_PATH, {}, None)
        return dict(reply.get("states") or {})

    async def console_address(self, node: Node, host: HostInfo, vm_uuid: str
                              ) -> dict[str, Any]:
        reply = await self._vm(host, vms.VNC_PORT_PATH, {"vmUuid": vm_uuid}, vm_uuid)
        return {"hostIp": host.managementIp, "port": int(reply["port"]),
                "protocol": reply.get("protocol") or "vnc"}
