"""The Simulator hypervisor driver."""

from __future__ import annotations

from zplugins.compute.hypervisor import HypervisorDriver

__all__ = ["SimulatorHypervisor"]


class SimulatorHypervisor(HypervisorDriver):
    """Simulated hosts that answer in process (they arrive with the datacenter issue)."""

    hypervisor_type = "Simulator"
