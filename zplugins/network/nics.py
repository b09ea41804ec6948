"""VM NICs and used IPs: their resource types, queries and the VM NIC APIs.

``VmNicVO`` is a resource (inventory ``VmNicInventory`` with its ``usedIps``), queryable
with ``QueryVmNic``; used IPs are queryable with ``QueryIpAddress``. The network plugin adds
``vmNics`` to every ``VmInstanceInventory``.

``AttachL3NetworkToVm`` gives a Running or Stopped VM a new NIC (and IP) on an L3 network
whose L2 network the VM's cluster has (a running VM gets it plugged in by its hypervisor);
``DetachL3NetworkFromVm`` removes one; ``SetVmStaticIp`` changes a NIC's address to a free
one of its L3 network's ranges. All run in the VM's queue.

Deleting an L3 network on which NICs remain is refused, and so is detaching an L2 network
from a cluster while VMs on its hosts have NICs on that network's L3 networks.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from zcore import ApiMessage, CascadeEdge, FlowInsertion, FlowStep, QueryExpansion, ResourceType
from zcore.api import ApiContext, APIMessage, Inventory, Param, QueryMessage
from zcore.db import Base, SystemTagVO, table_of
from zcore.errors import INVALID_ARGUMENT, OPERATION_ERROR, ZError
from zcore.flow import FlowContext, Step
from zcore.records import DriverNamespace, InventoryExtension, SystemTagPattern
from zplugins.compute.public import (
    check_vm_state,
    get_host,
    get_vm,
    hypervisor_of,
    on_host,
    vm_queue,
)
from zplugins.network.ip_allocators import (
    IP_ALLOCATORS,
    IpAllocatorStrategy,
    allocate_ip,
    check_static_ip,
    strategy_of,
)
from zplugins.network.models import (
    L2NetworkClusterRefVO,
    L3NetworkVO,
    UsedIpVO,
    VmNicVO,
)
from zplugins.network.nic_steps import (
    backend_calls,
    check_l3_usable,
    make_nic,
    nic_tos,
    release_nic_rows,
)
from zplugins.network.public import network_service_backends

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "STATIC_IP_PATTERN",
    "AttachL3NetworkToVm",
    "DetachL3NetworkFromVm",
    "QueryIpAddress",
    "QueryVmNic",
    "SetVmStaticIp",
]

NIC = "VmNicVO"
USED_IP = "UsedIpVO"
VM = "VmInstanceVO"
NIC_INVENTORY = "org.zstack.header.vm.VmNicInventory"
USED_IP_INVENTORY = "org.zstack.header.network.l3.UsedIpInventory"
VM_RESULT = {"inventory": "VmInstanceInventory"}
STATIC_IP_PATTERN = "staticIp::{l3NetworkUuid}::{staticIp}"


# --------------------------------------------------------------------------- inventories


def used_ip_fields(row: Any) -> dict[str, Any]:
    """ZStack's UsedIpInventory."""
    return {"uuid": row.uuid, "ipRangeUuid": row.ipRangeUuid,
            "l3NetworkUuid": row.l3NetworkUuid, "ip": row.ip, "ipInLong": row.ipInLong,
            "ipVersion": row.ipVersion, "gateway": row.gateway, "netmask": row.netmask,
            "usedFor": row.usedFor, "vmNicUuid": row.vmNicUuid, "createDate": row.createDate,
            "lastOpDate": row.lastOpDate}


def nic_fields(row: Any, used_ips: list[Any] | None = None) -> dict[str, Any]:
    """ZStack's VmNicInventory, with the NIC's used IPs (``used_ips``, by address, or the
    ORM row's ``usedIps``)."""
    used = row.usedIps if used_ips is None else used_ips
    return {"uuid": row.uuid, "vmInstanceUuid": row.vmInstanceUuid,
            "l3NetworkUuid": row.l3NetworkUuid, "ip": row.ip, "mac": row.mac,
            "hypervisorType": row.hypervisorType, "netmask": row.netmask,
            "gateway": row.gateway, "metaData": row.metaData, "ipVersion": row.ipVersion,
            "driverType": row.driverType, "internalName": row.internalName,
            "deviceId": row.deviceId, "type": row.type, "state": row.state,
            "usedIps": [Inventory(USED_IP_INVENTORY, used_ip_fields(u)) for u in used],
            "createDate": row.createDate, "lastOpDate": row.lastOpDate}


_NICS, _USED_IPS = table_of(VmNicVO), table_of(UsedIpVO)
#: A used IP of :data:`_NICS_OF_VMS`: its columns come last in each row.
_UsedIp = namedtuple("_UsedIp", [c.name for c in _USED_IPS.columns])  # type: ignore[misc]
_NIC_WIDTH = len(_NICS.columns)
#: The NICs of VMs with their used IPs (none for a NIC without an address), by device id
#: and address: one query.
_NICS_OF_VMS = (
    select(_NICS, *(c.label(f"usedIp_{c.name}") for c in _USED_IPS.columns))
    .select_from(_NICS.outerjoin(_USED_IPS, _USED_IPS.c.vmNicUuid == _NICS.c.uuid))
    .where(_NICS.c.vmInstanceUuid.in_(bindparam("uuids", expanding=True)))
    .order_by(_NICS.c.deviceId, _NICS.c.uuid, _USED_IPS.c.ipInLong))


def vm_nics(session: Session, inventories: list[Any]) -> dict[str, dict[str, Any]]:
    """The ``vmNics`` of VM inventories, by device id: one query for the batch.

    Plain rows rather than ORM objects: this runs for every VM inventory (each creation's
    reply, every page of ``QueryVmInstance``), where loading entities costs more than the
    queries themselves.
    """
    uuids = [i["uuid"] for i in inventories]
    found: dict[str, dict[str, Any]] = {u: {"vmNics": []} for u in uuids}
    nics: dict[str, tuple[Any, list[Any]]] = {}
    for row in session.connection().execute(_NICS_OF_VMS, {"uuids": uuids}):
        nic = nics.get(row.uuid)
        if nic is None:
            nic = nics[row.uuid] = (row, [])
        if row.usedIp_uuid is not None:
            nic[1].append(_UsedIp._make(row[_NIC_WIDTH:]))
    for row, used in nics.values():
        found[row.vmInstanceUuid or ""]["vmNics"].append(
            Inventory(NIC_INVENTORY, nic_fields(row, used)))
    return found


def _set_default_l3(session: Session, vm_uuid: str, l3_uuid: str | None) -> None:
    vms = Base.metadata.tables[VM]  # the compute plugin's table, by name
    session.execute(update(vms).where(vms.c.uuid == vm_uuid)
                    .values(defaultL3NetworkUuid=l3_uuid))


def _vm_inventory(node: Node, session: Session, vm_uuid: str) -> Inventory:
    model = node.registry.resource_types[VM].record.model
    row = session.get(model, vm_uuid)
    return node.api.inventories(session, VM, [row])[0]


# --------------------------------------------------------------------------- APIs


class QueryVmNic(QueryMessage, path="/vm-instances/nics", resource=NIC):
    """Query VM NICs; ``l3Network.`` and ``usedIps.`` reach related fields."""


class QueryIpAddress(QueryMessage, path="/l3-networks/ip-address", resource=USED_IP):
    """Query used IP addresses (UsedIpInventory)."""


async def _plug(node: Node, vm_uuid: str, host_uuid: str, nic: Any, attach: bool) -> None:
    host = await get_host(node, host_uuid)
    if host is None:
        raise ZError(OPERATION_ERROR, "VM host missing",
                     f"VM {vm_uuid} runs on host {host_uuid}, which no longer exists")
    driver = hypervisor_of(node, host.hypervisorType)

    async def call() -> None:
        if attach:
            await driver.attach_nic(node, host, vm_uuid, nic)
        else:
            await driver.detach_nic(node, host, vm_uuid, nic)

    await on_host(node, host.uuid, call)
    for backend, nics in await backend_calls(node, [nic]):
        if attach:
            await backend.apply(node, host, nics)
        else:
            await backend.release(node, host, nics)


class AttachL3NetworkToVm(APIMessage, method="POST",
                          path="/vm-instances/{vmInstanceUuid}/l3-networks/{l3NetworkUuid}",
                          resource_type=VM, result=VM_RESULT):
    """Give a Running or Stopped VM a NIC on an L3 network, with an IP (``staticIp`` or
    one picked by the allocator); a running VM gets it plugged in."""

    vmInstanceUuid = Param(str, required=True, resource_type=VM)
    l3NetworkUuid = Param(str, required=True, resource_type="L3NetworkVO")
    staticIp = Param(str)
    driverType = Param(str)
    customMac = Param(str)
    vmNicParams = Param(str)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        node = ctx.node
        vm_uuid, l3_uuid = self.vmInstanceUuid, self.l3NetworkUuid

        async def work() -> Inventory:
            vm = await get_vm(node, vm_uuid)
            if vm is None:
                raise ZError(INVALID_ARGUMENT, "no such VM", f"VM {vm_uuid} does not exist")
            check_vm_state(self.api_name, vm.state, vm_uuid)

            def create(session: Session) -> Any:
                l3 = check_l3_usable(session, l3_uuid, vm.zoneUuid)
                if session.scalar(select(VmNicVO.uuid).where(
                        VmNicVO.vmInstanceUuid == vm_uuid,
                        VmNicVO.l3NetworkUuid == l3_uuid)) is not None:
                    raise ZError(OPERATION_ERROR, "VM already on the L3 network",
                                 f"VM {vm_uuid} already has a NIC on L3 network {l3_uuid}")
                cluster = vm.clusterUuid
                if cluster is not None and session.scalar(
                        select(L2NetworkClusterRefVO.id).where(
                            L2NetworkClusterRefVO.l2NetworkUuid == l3.l2NetworkUuid,
                            L2NetworkClusterRefVO.clusterUuid == cluster)) is None:
                    raise ZError(OPERATION_ERROR, "L2 network not in the VM's cluster",
                                 f"L3 network {l3_uuid} is on L2 network {l3.l2NetworkUuid}, "
                                 f"which is not attached to cluster {cluster} of VM "
                                 f"{vm_uuid}; attach it with AttachL2NetworkToCluster")
                last = session.scalar(select(func.max(VmNicVO.deviceId)).where(
                    VmNicVO.vmInstanceUuid == vm_uuid))
                nic = make_nic(session, vm_uuid, l3_uuid, 0 if last is None else last + 1,
                               vm.hypervisorType)
                used = allocate_ip(session, l3_uuid, vm_nic_uuid=nic.uuid,
                                   strategy=strategy_of(node, None), static_ip=self.staticIp)
                nic.ip, nic.netmask, nic.gateway, nic.ipVersion = (
                    used.ip, used.netmask, used.gateway, used.ipVersion)
                if self.driverType:
                    nic.driverType = self.driverType
                if vm.defaultL3NetworkUuid is None:
                    _set_default_l3(session, vm_uuid, l3_uuid)
                session.flush()
                return nic_tos(session, [nic], vm.defaultL3NetworkUuid)[0]

            nic = await ctx.run(create)
            if vm.state == "Running" and vm.hostUuid:
                try:
                    await _plug(node, vm_uuid, vm.hostUuid, nic, attach=True)
                except BaseException:
                    await ctx.run(release_nic_rows, [nic.uuid])
                    raise
            return await ctx.run(lambda s: _vm_inventory(node, s, vm_uuid))

        return {"inventory": await vm_queue(node, vm_uuid, work)}


class DetachL3NetworkFromVm(APIMessage, method="DELETE", path="/vm-instances/nics/{vmNicUuid}",
                            resource_type=VM, result=VM_RESULT):
    """Remove a NIC from a Running or Stopped VM (unplugged first if it runs); its IP is
    released."""

    vmNicUuid = Param(str, required=True, resource_type=NIC)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        node = ctx.node
        nic_uuid = self.vmNicUuid

        def owner(session: Session) -> str | None:
            return session.scalar(select(VmNicVO.vmInstanceUuid).where(VmNicVO.uuid == nic_uuid))

        vm_uuid = await ctx.run(owner)
        if vm_uuid is None:
            raise ZError(INVALID_ARGUMENT, "NIC not on a VM", f"VM NIC {nic_uuid} has no VM")

        async def work() -> Inventory:
            vm = await get_vm(node, vm_uuid)
            if vm is None:
                raise ZError(INVALID_ARGUMENT, "no such VM", f"VM {vm_uuid} does not exist")
            check_vm_state(self.api_name, vm.state, vm_uuid)

            def read(session: Session) -> Any:
                nic = session.get(VmNicVO, nic_uuid)
                if nic is None:
                    raise ZError(INVALID_ARGUMENT, "no such VM NIC",
                                 f"VM NIC {nic_uuid} does not exist")
                return nic_tos(session, [nic], vm.defaultL3NetworkUuid)[0]

            nic = await ctx.run(read)
            if vm.state == "Running" and vm.hostUuid:
                await _plug(node, vm_uuid, vm.hostUuid, nic, attach=False)

            def remove(session: Session) -> Inventory:
                release_nic_rows(session, [nic_uuid])
                if vm.defaultL3NetworkUuid == nic.l3NetworkUuid:
                    # As ZStack: the next NIC's network becomes the default, if any.
                    nxt = session.scalar(select(VmNicVO.l3NetworkUuid).where(
                        VmNicVO.vmInstanceUuid == vm_uuid).order_by(VmNicVO.deviceId).limit(1))
                    _set_default_l3(session, vm_uuid, nxt)
                return _vm_inventory(node, session, vm_uuid)

            return await ctx.run(remove)

        return {"inventory": await vm_queue(node, vm_uuid, work)}


class SetVmStaticIp(APIMessage, method="PUT", path="/vm-instances/{vmInstanceUuid}/actions",
                    resource_type=VM, result={}):
    """Change the address of the VM's NIC on ``l3NetworkUuid`` to ``ip``, which must be free
    and inside one of that network's ranges."""

    vmInstanceUuid = Param(str, required=True, resource_type=VM)
    l3NetworkUuid = Param(str, required=True, resource_type="L3NetworkVO")
    ip = Param(str)
    ip6 = Param(str)
    netmask = Param(str)
    gateway = Param(str)
    ipv6Gateway = Param(str)
    ipv6Prefix = Param(str)

    async def validate(self, ctx: ApiContext) -> None:
        if not self.ip:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"{self.api_name}: give 'ip' (IPv6 static IPs are not supported yet)")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        node = ctx.node
        vm_uuid, l3_uuid, ip = self.vmInstanceUuid, self.l3NetworkUuid, str(self.ip).strip()

        async def work() -> None:
            vm = await get_vm(node, vm_uuid)
            if vm is None:
                raise ZError(INVALID_ARGUMENT, "no such VM", f"VM {vm_uuid} does not exist")
            check_vm_state(self.api_name, vm.state, vm_uuid)

            def change(session: Session) -> None:
                nic = session.scalar(select(VmNicVO).where(
                    VmNicVO.vmInstanceUuid == vm_uuid, VmNicVO.l3NetworkUuid == l3_uuid))
                if nic is None:
                    raise ZError(OPERATION_ERROR, "VM not on the L3 network",
                                 f"VM {vm_uuid} has no NIC on L3 network {l3_uuid}; attach "
                                 "it with AttachL3NetworkToVm")
                _drop_static_ip_tags(session, vm_uuid, l3_uuid)
                node.tags.add_system_tag(session, vm_uuid, VM,
                                         STATIC_IP_PATTERN.format(l3NetworkUuid=l3_uuid,
                                                                  staticIp=ip))
                if nic.ip == ip:
                    return
                check_static_ip(session, l3_uuid, ip)
                session.execute(delete(UsedIpVO).where(UsedIpVO.vmNicUuid == nic.uuid))
                used = allocate_ip(session, l3_uuid, vm_nic_uuid=nic.uuid,
                                   strategy=strategy_of(node, None), static_ip=ip)
                nic.ip, nic.netmask, nic.gateway, nic.ipVersion = (
                    used.ip, used.netmask, used.gateway, used.ipVersion)
                session.flush()

            await ctx.run(change)

        await vm_queue(node, vm_uuid, work)
        return {}


def _drop_static_ip_tags(session: Session, vm_uuid: str, l3_uuid: str) -> int:
    """Delete the VM's ``staticIp::`` tags for ``l3_uuid``; how many there were."""
    prefix = STATIC_IP_PATTERN.format(l3NetworkUuid=l3_uuid, staticIp="")
    result = session.execute(delete(SystemTagVO).where(
        SystemTagVO.resourceUuid == vm_uuid, SystemTagVO.tag.startswith(prefix, autoescape=True)))
    return int(cast(CursorResult[Any], result).rowcount)


class DeleteVmStaticIp(APIMessage, method="DELETE",
                       path="/vm-instances/{vmInstanceUuid}/static-ips", resource_type=VM,
                       result={}):
    """Make the VM's address on ``l3NetworkUuid`` no longer static (its ``staticIp::`` tag
    goes). The NIC keeps the address it has; it is not reserved for it any more when the NIC
    is created again."""

    vmInstanceUuid = Param(str, required=True, resource_type=VM)
    l3NetworkUuid = Param(str, required=True, resource_type="L3NetworkVO")
    staticIp = Param(str)
    deleteMode = Param(str, default="Permissive", valid_values=("Permissive", "Enforcing"))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        vm_uuid, l3_uuid = self.vmInstanceUuid, self.l3NetworkUuid

        async def work() -> None:
            await ctx.run(_drop_static_ip_tags, vm_uuid, l3_uuid)

        await vm_queue(ctx.node, vm_uuid, work)
        return {}


APIS: tuple[type[APIMessage], ...] = (
    QueryVmNic, QueryIpAddress, AttachL3NetworkToVm, DetachL3NetworkFromVm, SetVmStaticIp,
    DeleteVmStaticIp)


# --------------------------------------------------------------------------- refusals


class RefuseL2DetachWithVms(Step):
    """Refuse detaching an L2 network from a cluster whose hosts run VMs with NICs on it."""

    requires = ("api", "l2_attachment")

    async def run(self, ctx: FlowContext) -> None:
        attachment = ctx["l2_attachment"]
        vms = ctx.services.registry.resource_types[VM].record.model

        def users(session: Session) -> list[str]:
            l3s = select(L3NetworkVO.uuid).where(
                L3NetworkVO.l2NetworkUuid == attachment.l2_network_uuid)
            return list(session.scalars(
                select(VmNicVO.vmInstanceUuid).distinct()
                .join(vms, vms.uuid == VmNicVO.vmInstanceUuid)
                .where(VmNicVO.l3NetworkUuid.in_(l3s),
                       vms.clusterUuid == attachment.cluster_uuid).limit(20)))

        found = await ctx.services.db.run(users)
        if found:
            raise ZError(OPERATION_ERROR, "L2 network in use by VMs",
                         f"L2 network {attachment.l2_network_uuid} cannot be detached from "
                         f"cluster {attachment.cluster_uuid}: VMs {', '.join(found)} have NICs "
                         "on its L3 networks; detach those NICs or destroy the VMs first")


async def _refuse_nic_delete(node: Node, caller: Any, uuid: str,
                             deleting: frozenset[str]) -> None:
    def read(session: Session) -> tuple[str | None, str] | None:
        row = session.get(VmNicVO, uuid)
        return (row.vmInstanceUuid, row.l3NetworkUuid) if row is not None else None

    found = await node.db.run(read)
    if found is not None and found[0] not in deleting:  # its VM does not go with it
        raise ZError(OPERATION_ERROR, "L3 network in use by a VM",
                     f"VM {found[0]} has NIC {uuid} on L3 network {found[1]}; detach it with "
                     "DetachL3NetworkFromVm (or destroy and expunge the VM) first")


async def _delete_nic(node: Node, caller: Any, uuid: str, mode: str) -> None:
    await node.db.run(release_nic_rows, [uuid])


# --------------------------------------------------------------------------- registration


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(NIC, model=VmNicVO, inventory=NIC_INVENTORY, to_inventory=nic_fields,
                       check_delete=_refuse_nic_delete, delete=_delete_nic,
                       description="A VM's network interface on an L3 network")
    yield ResourceType(USED_IP, model=UsedIpVO, inventory=USED_IP_INVENTORY,
                       to_inventory=used_ip_fields, owned_through="l3NetworkUuid",
                       description="An address of an IP range in use")


def cascade_edges() -> Iterator[CascadeEdge]:
    yield CascadeEdge(NIC, "L3NetworkVO", field="l3NetworkUuid")


def query_expansions() -> Iterator[QueryExpansion]:
    yield QueryExpansion(NIC, "l3Network", "L3NetworkVO", local_key="l3NetworkUuid")
    yield QueryExpansion(NIC, "usedIps", USED_IP, foreign_key="vmNicUuid")
    yield QueryExpansion(NIC, "vmInstance", VM, local_key="vmInstanceUuid")
    yield QueryExpansion(VM, "vmNics", NIC, foreign_key="vmInstanceUuid")
    yield QueryExpansion(USED_IP, "l3Network", "L3NetworkVO", local_key="l3NetworkUuid")
    yield QueryExpansion(USED_IP, "vmNic", NIC, local_key="vmNicUuid")


def inventory_extensions() -> Iterator[InventoryExtension]:
    yield InventoryExtension(VM, "vmNics", vm_nics, defaults=(("vmNics", ()),))


def system_tag_patterns() -> Iterator[SystemTagPattern]:
    yield SystemTagPattern(STATIC_IP_PATTERN, VM,
                           "A static IP for the VM's NIC on an L3 network (CreateVmInstance)")


def driver_namespaces() -> Iterator[DriverNamespace]:
    yield DriverNamespace(IP_ALLOCATORS, IpAllocatorStrategy,
                          "IP allocator strategies: which free address a NIC gets")


def flow_steps() -> Iterator[FlowStep]:
    yield FlowStep("refuse-l2-detach-with-vms", RefuseL2DetachWithVms())


def flow_insertions() -> Iterator[FlowInsertion]:
    yield FlowInsertion("l2-network-detach", "refuse-l2-detach-with-vms",
                        before="detach-l2-network")


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)


async def node_starting(node: Node) -> None:
    # Made before the web application starts (and freezes), for backends to register into.
    network_service_backends(node)
