"""The node side of ZStack's KVM agent commands: building them from the compute plugin's
descriptions of a VM.

The commands themselves (structs and paths) live in :mod:`zkvmagent.commands`, the schema
the KVM agent shares with the node; they are re-exported here so that the kvm plugin (and its
tests) import everything from one place. :class:`zplugins.kvm.hypervisor.KvmHypervisor`
builds commands from a :class:`~zplugins.compute.public.VmTO` with :func:`start_vm_cmd`,
:func:`volume_to` and :func:`nic_to`; :func:`body` turns a command into the JSON object that
is posted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zkvmagent import commands as _shared
from zkvmagent.commands import *  # the shared schema, re-exported
from zkvmagent.commands import AgentNic, AgentVolume, StartVmCmd

if TYPE_CHECKING:
    from zplugins.compute.public import NicTO, VmTO, VolumeTO

__all__ = ["body", "nic_to", "start_vm_cmd", "volume_to"]
__all__ += _shared.__all__


def volume_to(volume: VolumeTO) -> AgentVolume:
    """The agent's description of a volume of the VM."""
    return AgentVolume(volumeUuid=volume.uuid, installPath=volume.installPath,
                       deviceId=volume.deviceId, format=volume.format,
                       shareable=volume.shareable)


def nic_to(nic: NicTO) -> AgentNic:
    """The agent's description of a NIC of the VM."""
    return AgentNic(uuid=nic.uuid, mac=nic.mac, deviceId=nic.deviceId,
                    bridgeName=nic.bridgeName, nicInternalName=nic.internalName, ip=nic.ip,
                    netmask=nic.netmask, gateway=nic.gateway, l3NetworkUuid=nic.l3NetworkUuid,
                    isDefaultRoute=nic.isDefault)


def start_vm_cmd(vm: VmTO, *, timeout: int = 300) -> StartVmCmd:
    """``StartVmCmd`` for ``vm``."""
    return StartVmCmd(vmInstanceUuid=vm.uuid, vmName=vm.name, cpuNum=vm.cpuNum,
                      cpuSpeed=vm.cpuSpeed, memory=vm.memorySize,
                      rootVolume=volume_to(vm.rootVolume),
                      dataVolumes=[volume_to(v) for v in vm.dataVolumes],
                      nics=[nic_to(n) for n in vm.nics], bootDev=[vm.bootDev],
                      hostname=vm.hostname, timeout=timeout)
