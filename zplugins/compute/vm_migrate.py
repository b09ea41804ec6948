"""The APIs that place VMs on hosts: MigrateVm, the candidate queries, ChangeInstanceOffering.

``MigrateVm`` runs in the VM's queue: the destination's capacity is reserved (the migrate
strategy, or the ``hostUuid`` given), the VM is ``Migrating`` while its hypervisor moves it,
then the source's capacity is given back and the VM is ``Running`` on the destination. If
the hypervisor fails, the destination's capacity is given back and the VM stays ``Running``
where it was. A VM migrates within its cluster only: the cluster's primary storage and L2
networks are what its volumes and NICs need (crossing clusters needs the storage and
network plugins' host conditions for a running VM, which do not exist yet).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import column, select, table
from sqlalchemy.orm import Session

from zcore.api import ApiContext, APIMessage, Param
from zcore.db import Base
from zcore.errors import INVALID_ARGUMENT, ZError
from zplugins.compute.allocators import (
    DefaultHostAllocatorStrategy,
    HostRequest,
    MigrateVmAllocatorStrategy,
    give_back,
)
from zplugins.compute.common import get_row
from zplugins.compute.host_service import HostInfo, service
from zplugins.compute.models import ClusterVO, HostVO, VmInstanceVO, ZoneVO
from zplugins.compute.offerings import InstanceOfferingVO
from zplugins.compute.vm_service import hypervisor_of, on_host, vm_queue
from zplugins.compute.vm_states import check

__all__ = ["APIS", "ChangeInstanceOffering", "GetCandidateZonesClustersHostsForCreatingVm",
           "GetVmMigrationCandidateHosts", "MigrateVm"]

VM = "VmInstanceVO"
VM_INVENTORY = {"inventory": "VmInstanceInventory"}

#: The hypervisor could not migrate the VM.
VM_MIGRATE_FAILED = "VM.1003"

RUNNING, MIGRATING = "Running", "Migrating"


def _vm(session: Session, uuid: str) -> VmInstanceVO:
    return get_row(session, VmInstanceVO, VM, uuid)


async def _vm_reply(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    def read(session: Session) -> Any:
        return ctx.node.api.inventories(session, VM, [_vm(session, uuid)])[0]

    return {"inventory": await ctx.run(read)}


async def _host_inventories(ctx: ApiContext, rows: list[HostVO]) -> list[Any]:
    if not rows:
        return []
    return await service(ctx.node).inventories([ctx.inventory("HostVO", r) for r in rows])


def _migration_request(vm: VmInstanceVO, host_uuid: str | None) -> HostRequest:
    return HostRequest(cpuNum=vm.cpuNum, memorySize=vm.memorySize, vmUuid=vm.uuid,
                       clusterUuid=vm.clusterUuid, hostUuid=host_uuid,
                       hypervisorType=vm.hypervisorType, currentHostUuid=vm.hostUuid)


def _running_vm(session: Session, api: str, uuid: str) -> VmInstanceVO:
    vm = _vm(session, uuid)
    check(api, vm.state, uuid)
    if vm.hostUuid is None:
        raise ZError(INVALID_ARGUMENT, "invalid argument",
                     f"VM {uuid} is {vm.state} but holds no host; stop and start it first")
    return vm


class MigrateVm(APIMessage, method="PUT", path="/vm-instances/{vmInstanceUuid}/actions",
                resource_type=VM, result=VM_INVENTORY):
    """Move a running VM live to another host of its cluster (``hostUuid``, or the best one)."""

    vmInstanceUuid = Param(str, required=True, resource_type=VM)
    hostUuid = Param(str, resource_type="HostVO",
                     description="The destination; by default the migrate strategy picks one")
    migrateFromDestination = Param(bool, description="Accepted; the source host migrates")
    allowUnknown = Param(bool, default=False, description="Accepted; an Unknown VM is refused")
    strategy = Param(str, valid_values=("auto-converge",))
    downTime = Param(int)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        node = ctx.node
        uuid = self.vmInstanceUuid

        def begin(session: Session) -> tuple[HostInfo, HostInfo, int, int]:
            vm = _running_vm(session, self.api_name, uuid)
            if self.hostUuid is not None and self.hostUuid == vm.hostUuid:
                raise ZError(INVALID_ARGUMENT, "invalid argument",
                             f"parameter 'hostUuid' of {self.api_name}: VM {uuid} already "
                             f"runs on host {self.hostUuid}; name another host or none")
            source = get_row(session, HostVO, "HostVO", vm.hostUuid or "")
            dest = MigrateVmAllocatorStrategy().allocate(
                session, _migration_request(vm, self.hostUuid))
            vm.state = MIGRATING
            return HostInfo.of(source), HostInfo.of(dest), vm.cpuNum, vm.memorySize

        async def migrate() -> None:
            source, dest, cpu, memory = await ctx.run(begin)

            def abort(session: Session) -> None:
                give_back(session, dest.uuid, cpu, memory)
                _vm(session, uuid).state = RUNNING

            def finish(session: Session) -> None:
                give_back(session, source.uuid, cpu, memory)
                vm = _vm(session, uuid)
                vm.hostUuid, vm.lastHostUuid = dest.uuid, source.uuid
                vm.clusterUuid, vm.zoneUuid = dest.clusterUuid, dest.zoneUuid
                vm.state = RUNNING

            try:
                driver = hypervisor_of(node, source.hypervisorType)
                await on_host(node, source.uuid,
                              lambda: driver.migrate_vm(node, source, uuid, dest))
            except BaseException as exc:
                await asyncio.shield(ctx.run(abort))
                if not isinstance(exc, Exception):
                    raise
                why = (exc.details or exc.description) if isinstance(exc, ZError) else \
                    (str(exc) or type(exc).__name__)
                raise ZError(VM_MIGRATE_FAILED, "cannot migrate the VM",
                             f"VM {uuid} could not move from {source} to {dest}: {why}; it "
                             "still runs on its host",
                             cause=exc if isinstance(exc, ZError) else None) from exc
            await asyncio.shield(ctx.run(finish))

        await vm_queue(node, uuid, migrate)
        return await _vm_reply(ctx, uuid)


class GetVmMigrationCandidateHosts(APIMessage, method="GET",
                                   path="/vm-instances/{vmInstanceUuid}/migration-target-hosts",
                                   resource_type=VM, result={"inventories": "List"}):
    """The hosts a running VM could migrate to now (nothing is reserved)."""

    vmInstanceUuid = Param(str, required=True, resource_type=VM)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def find(session: Session) -> list[HostVO]:
            vm = _running_vm(session, self.api_name, self.vmInstanceUuid)
            return MigrateVmAllocatorStrategy().candidates(session,
                                                           _migration_request(vm, None))

        return {"inventories": await _host_inventories(ctx, await ctx.run(find))}


def _attached(ref_table: str, key: str, value: Any) -> Any:
    """``clusterUuid IN (SELECT clusterUuid FROM <ref_table> WHERE <key> = value)``."""
    ref = table(ref_table, column("clusterUuid"), column(key))
    return HostVO.clusterUuid.in_(select(ref.c.clusterUuid).where(ref.c[key] == value))


class GetCandidateZonesClustersHostsForCreatingVm(
        APIMessage, method="GET", path="/vm-instances/candidate-destinations",
        resource_type=VM, result={"zones": "List", "clusters": "List", "hosts": "List"}):
    """Where a VM with these sizes and L3 networks could be created now (nothing reserved).

    The same filters as allocation: state, status, CPU and memory, zone and cluster, every
    L3 network's L2 network attached to the host's cluster, and a primary storage attached
    to it.
    """

    instanceOfferingUuid = Param(str, resource_type="InstanceOfferingVO")
    imageUuid = Param(str, required=True)
    l3NetworkUuids = Param(list, required=True, non_empty=True)
    rootDiskOfferingUuid = Param(str)
    rootDiskSize = Param(int)
    dataDiskOfferingUuids = Param(list)
    cpuNum = Param(int)
    memorySize = Param(int)
    zoneUuid = Param(str, resource_type="ZoneVO")
    clusterUuid = Param(str, resource_type="ClusterVO")
    defaultL3NetworkUuid = Param(str)

    def _sizes(self, session: Session) -> tuple[int, int]:
        if self.instanceOfferingUuid:
            offering = get_row(session, InstanceOfferingVO, "InstanceOfferingVO",
                               self.instanceOfferingUuid)
            return offering.cpuNum, offering.memorySize
        if self.cpuNum is None or self.memorySize is None:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"{self.api_name} needs instanceOfferingUuid, or cpuNum and "
                         "memorySize")
        return self.cpuNum, self.memorySize

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        tables = Base.metadata.tables

        def find(session: Session) -> tuple[list[HostVO], list[ClusterVO], list[ZoneVO]]:
            cpu, memory = self._sizes(session)
            conditions: list[Any] = []
            if "L3NetworkVO" in tables and "L2NetworkClusterRefVO" in tables:
                l3 = table("L3NetworkVO", column("uuid"), column("l2NetworkUuid"))
                for l3_uuid in self.l3NetworkUuids:
                    l2 = select(l3.c.l2NetworkUuid).where(l3.c.uuid == l3_uuid) \
                        .scalar_subquery()
                    conditions.append(_attached("L2NetworkClusterRefVO", "l2NetworkUuid", l2))
            if "PrimaryStorageClusterRefVO" in tables:
                ref = table("PrimaryStorageClusterRefVO", column("clusterUuid"))
                conditions.append(HostVO.clusterUuid.in_(select(ref.c.clusterUuid)))
            request = HostRequest(cpuNum=cpu, memorySize=memory, zoneUuid=self.zoneUuid,
                                  clusterUuid=self.clusterUuid, conditions=tuple(conditions))
            hosts = DefaultHostAllocatorStrategy().candidates(session, request)
            cluster_uuids = sorted({h.clusterUuid for h in hosts})
            zone_uuids = sorted({h.zoneUuid for h in hosts})
            clusters = list(session.scalars(select(ClusterVO).where(
                ClusterVO.uuid.in_(cluster_uuids)))) if cluster_uuids else []
            zones = list(session.scalars(select(ZoneVO).where(
                ZoneVO.uuid.in_(zone_uuids)))) if zone_uuids else []
            return hosts, clusters, zones

        hosts, clusters, zones = await ctx.run(find)
        return {"zones": [ctx.inventory("ZoneVO", z) for z in zones],
                "clusters": [ctx.inventory("ClusterVO", c) for c in clusters],
                "hosts": await _host_inventories(ctx, hosts)}


class ChangeInstanceOffering(APIMessage, method="PUT",
                             path="/vm-instances/{vmInstanceUuid}/actions",
                             resource_type=VM, result=VM_INVENTORY):
    """Give a stopped VM the CPUs and memory of another instance offering."""

    vmInstanceUuid = Param(str, required=True, resource_type=VM)
    instanceOfferingUuid = Param(str, required=True, resource_type="InstanceOfferingVO")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> None:
            vm = _vm(session, self.vmInstanceUuid)
            check(self.api_name, vm.state, vm.uuid)
            offering = get_row(session, InstanceOfferingVO, "InstanceOfferingVO",
                               self.instanceOfferingUuid)
            if offering.state != "Enabled":
                raise ZError(INVALID_ARGUMENT, "invalid argument",
                             f"parameter 'instanceOfferingUuid' of {self.api_name}: instance "
                             f"offering '{offering.name}' ({offering.uuid}) is "
                             f"{offering.state}; enable it or choose an Enabled one")
            vm.cpuNum, vm.memorySize = offering.cpuNum, offering.memorySize
            vm.cpuSpeed = offering.cpuSpeed
            vm.instanceOfferingUuid = offering.uuid
            vm.allocatorStrategy = offering.allocatorStrategy

        await vm_queue(ctx.node, self.vmInstanceUuid, lambda: ctx.run(change))
        return await _vm_reply(ctx, self.vmInstanceUuid)


APIS = (MigrateVm, GetVmMigrationCandidateHosts, GetCandidateZonesClustersHostsForCreatingVm,
        ChangeInstanceOffering)
