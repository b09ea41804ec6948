"""Simulator: the ``Simulator`` hypervisor, which answers in process, for tests and benchmarks.

For now the plugin provides only its driver
(``zplugins.simulator.hypervisor.SimulatorHypervisor`` in the ``zcore.hypervisors``
namespace), so clusters of hypervisor type ``Simulator`` can be created. Simulated hosts,
with their capacity and VMs, arrive with the datacenter issue.
"""

from __future__ import annotations

ZCORE_REQUIRES = ("compute",)
