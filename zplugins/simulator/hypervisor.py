"""The Simulator hypervisor driver: hosts that answer in process.

Every command goes to the host's machine in :data:`zplugins.simulator.hosts.SIMULATOR`, which
answers it from its own state and the handlers other simulator modules registered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zcore.errors import ZError
from zplugins.compute.hypervisor import HostFacts, HypervisorDriver
from zplugins.compute.public import HOST_CONNECT_FAILED
from zplugins.simulator.hosts import CONNECT_PATH, PING_PATH, SIMULATOR

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.compute.public import HostInfo

__all__ = ["SimulatorHypervisor"]


class SimulatorHypervisor(HypervisorDriver):
    """Simulated hosts: capacity as added, commands answered by the simulator's handlers."""

    hypervisor_type = "Simulator"
    host_inventory_class = "org.zstack.header.simulator.SimulatorHostInventory"

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
