"""The network plugin's steps of the VM chains (``flows/vm-*.yaml``).

* ``plan-networks`` (vm-create): checks the requested L3 networks and static IPs, and adds a
  host condition: the host's cluster has the L2 network of every L3 network attached;
  provides ``l3_networks`` (:class:`L3Plan` list, in NIC order).
* ``allocate-nics``: NIC rows with a unique MAC and device ids; provides ``nic_uuids``.
* ``allocate-ips``: an IP per NIC (ip allocator strategy, static IPs); provides ``nics``.
* ``apply-network-services`` / ``release-network-services``: the registered backends of the
  providers serving the NICs' L3 networks (:mod:`zplugins.network.public`).
* ``load-nics``: the VM's NICs as ``nics`` (and, in vm-start, the L2 host condition).
* ``release-nics`` (vm-expunge): the VM's used IPs and NIC rows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore import FlowStep
from zcore.db import (
    Base,
    ResourceVO,
    add_resource_row,
    insert_checked,
    new_uuid,
    sent_together,
    table_of,
    utcnow,
)
from zcore.errors import INVALID_ARGUMENT, ZError
from zcore.flow import FlowContext, Step
from zplugins.compute.public import NicTO, get_host
from zplugins.network.ip_allocators import Range, allocate_ip, check_static_ip, strategy_of
from zplugins.network.models import (
    IpRangeVO,
    L2NetworkClusterRefVO,
    L2NetworkVO,
    L3NetworkVO,
    NetworkServiceL3NetworkRefVO,
    NetworkServiceProviderVO,
    UsedIpVO,
    VmNicVO,
)
from zplugins.network.public import bridge_name, network_service_backends

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = ["L3Plan", "backend_calls", "check_l3_usable", "insert_nic", "l2_host_condition",
           "make_nic", "nic_tos", "release_nic_rows"]

#: Errors about a VM's L3 networks (not found, disabled, no range, wrong zone).
L3_ERROR = "L3.1000"


@dataclass(frozen=True, slots=True)
class L3Plan:
    """An L3 network a new VM gets a NIC on, in NIC order."""

    uuid: str
    l2NetworkUuid: str
    zoneUuid: str
    isDefault: bool
    staticIp: str | None = None
    #: The network's IPv4 ranges when it was planned, read outside the allocating
    #: transaction: allocate-ips picks from them without reading them again, and reads them
    #: in its transaction when a claim finds its range gone.
    ranges: tuple[Range, ...] = ()
    #: The Linux bridge of the network's L2 network on its hosts (L2 networks keep their
    #: interface and VLAN): allocate-ips need not read it.
    bridgeName: str | None = None


def _host_cluster_column() -> Any:
    # The compute plugin's HostVO table, found by name rather than imported.
    return Base.metadata.tables["HostVO"].c.clusterUuid


def l2_host_condition(l2_uuids: Sequence[str]) -> ColumnElement[bool] | None:
    """Hosts whose cluster has every one of these L2 networks attached."""
    conditions = [
        _host_cluster_column().in_(select(L2NetworkClusterRefVO.clusterUuid).where(
            L2NetworkClusterRefVO.l2NetworkUuid == l2))
        for l2 in dict.fromkeys(l2_uuids)]
    return and_(*conditions) if conditions else None


# Statements built once: building one costs more than running it.
_NICS, _RESOURCES = table_of(VmNicVO), table_of(ResourceVO)
_L3S, _L2S = table_of(L3NetworkVO), table_of(L2NetworkVO)
_RANGES = table_of(IpRangeVO)
#: An L3 network with each of its IP ranges (one row each; one row with no range).
_L3_USABLE = select(
    _L3S.c.uuid, _L3S.c.name, _L3S.c.state, _L3S.c.zoneUuid, _L3S.c.l2NetworkUuid,
    _L2S.c.physicalInterface, _L2S.c.virtualNetworkId,
    _RANGES.c.uuid.label("rangeUuid"), _RANGES.c.ipVersion, _RANGES.c.startIp,
    _RANGES.c.endIp, _RANGES.c.netmask, _RANGES.c.gateway,
).select_from(_L3S.join(_L2S, _L2S.c.uuid == _L3S.c.l2NetworkUuid).outerjoin(
    _RANGES, _RANGES.c.l3NetworkUuid == _L3S.c.uuid)).where(_L3S.c.uuid == bindparam("uuid"))
_OWNER = select(_RESOURCES.c.ownerAccountUuid).where(_RESOURCES.c.uuid == bindparam("uuid"))
_NICS_BY_UUID = select(_NICS.c.uuid, _NICS.c.l3NetworkUuid, _NICS.c.mac, _NICS.c.deviceId,
                       _NICS.c.internalName).where(
    _NICS.c.uuid.in_(bindparam("uuids", expanding=True))).order_by(_NICS.c.deviceId)
_SET_NIC_IP = update(_NICS).where(_NICS.c.uuid == bindparam("nic_uuid"))
_BRIDGES = select(_L3S.c.uuid, _L2S.c.physicalInterface, _L2S.c.virtualNetworkId).join(
    _L2S, _L2S.c.uuid == _L3S.c.l2NetworkUuid).where(
    _L3S.c.uuid.in_(bindparam("uuids", expanding=True)))


def _l3_error(details: str) -> ZError:
    return ZError(L3_ERROR, "L3 network cannot be used", details)


def check_l3_usable(session: Session, l3_uuid: str, zone_uuid: str | None) -> Any:
    """The L3 network's row (``uuid``, ``name``, ``state``, ``zoneUuid``,
    ``l2NetworkUuid``), refused unless it exists, is Enabled, has an IP range and (if
    ``zone_uuid``) is in that zone."""
    return _usable_l3(session, l3_uuid, zone_uuid)[0]


def _usable_l3(session: Session, l3_uuid: str,
               zone_uuid: str | None) -> tuple[Any, tuple[Range, ...]]:
    """As :func:`check_l3_usable`, with the network's IPv4 ranges by start address: one
    query."""
    rows = session.connection().execute(_L3_USABLE, {"uuid": l3_uuid}).all()
    l3 = rows[0] if rows else None
    if l3 is None:
        raise ZError(INVALID_ARGUMENT, "no such L3 network",
                     f"L3 network {l3_uuid} does not exist")
    if l3.state != "Enabled":
        raise _l3_error(f"L3 network '{l3.name}' ({l3_uuid}) is {l3.state}; enable it first")
    if zone_uuid is not None and l3.zoneUuid != zone_uuid:
        raise _l3_error(f"L3 network '{l3.name}' ({l3_uuid}) is in zone {l3.zoneUuid}, not in "
                        f"the VM's zone {zone_uuid}")
    if l3.rangeUuid is None:
        raise _l3_error(f"L3 network '{l3.name}' ({l3_uuid}) has no IP range; add one with "
                        "AddIpRange")
    ranges = (Range(r.rangeUuid, l3.uuid, int(IPv4Address(r.startIp)), int(IPv4Address(r.endIp)),
                    r.netmask, r.gateway) for r in rows if r.ipVersion == 4)
    return l3, tuple(sorted(ranges, key=lambda r: r.first))


class PlanNetworks(Step):
    requires = ("vm", "host_conditions")
    provides = ("l3_networks",)

    async def run(self, ctx: FlowContext) -> None:
        vm = ctx["vm"]
        l3_uuids = list(vm.l3NetworkUuids)
        if len(set(l3_uuids)) != len(l3_uuids):
            raise ZError(INVALID_ARGUMENT, "duplicate L3 network",
                         f"l3NetworkUuids {l3_uuids} name an L3 network twice")
        default = vm.defaultL3NetworkUuid or (l3_uuids[0] if l3_uuids else None)
        if default is not None and default not in l3_uuids:
            raise ZError(INVALID_ARGUMENT, "invalid default L3 network",
                         f"defaultL3NetworkUuid {default} is not one of l3NetworkUuids "
                         f"{l3_uuids}")
        for l3_uuid in vm.staticIps:
            if l3_uuid not in l3_uuids:
                raise ZError(INVALID_ARGUMENT, "static IP on another L3 network",
                             f"staticIp:: names L3 network {l3_uuid}, which is not one of the "
                             f"VM's l3NetworkUuids {l3_uuids}")

        def plan(session: Session) -> list[L3Plan]:
            plans: list[L3Plan] = []
            zone = vm.zoneUuid
            for l3_uuid in l3_uuids:
                l3, ranges = _usable_l3(session, l3_uuid, zone)
                zone = zone or l3.zoneUuid  # every L3 network in one zone
                static = vm.staticIps.get(l3_uuid)
                if static is not None:
                    check_static_ip(session, l3_uuid, static)
                plans.append(L3Plan(l3.uuid, l3.l2NetworkUuid, l3.zoneUuid,
                                    l3.uuid == default, static, ranges,
                                    bridge_name(l3.physicalInterface, l3.virtualNetworkId)))
            return plans

        plans = await ctx.services.db.read(plan)
        condition = l2_host_condition([p.l2NetworkUuid for p in plans])
        if condition is not None:
            ctx["host_conditions"].append(condition)
        ctx["l3_networks"] = plans


def random_mac() -> str:
    """A ZStack-style MAC: ``fa:`` then five random bytes."""
    return "fa:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(5))


_VM_OWNER: Any = object()


@dataclass(frozen=True, slots=True)
class _NicRow:
    """What allocate-ips reads of a NIC, as insert_nic wrote it."""

    uuid: str
    l3NetworkUuid: str
    mac: str
    deviceId: int
    internalName: str | None


def insert_nic(session: Session, vm_uuid: str, l3_uuid: str, device_id: int,
               hypervisor_type: str | None = None, *, owner: str | None = _VM_OWNER) -> str:
    """Insert a NIC row (and its ResourceVO, owned by the VM's owner) with a fresh unique
    MAC; its uuid. Core INSERTs, for the VM chains; :func:`make_nic` gives the ORM row.
    ``owner``: the VM's owner account when the caller knows it (else it is looked up)."""
    return _insert_nic(session, vm_uuid, l3_uuid, device_id, hypervisor_type, owner).uuid


def _insert_nic(session: Session, vm_uuid: str, l3_uuid: str, device_id: int,
                hypervisor_type: str | None, owner: str | None) -> _NicRow:
    connection = session.connection()
    if owner is _VM_OWNER:
        owner = connection.execute(_OWNER, {"uuid": vm_uuid}).scalar()
    uuid, now = new_uuid(), utcnow()
    internal_name = f"vnic{vm_uuid[:8]}.{device_id}"
    values = {"uuid": uuid, "vmInstanceUuid": vm_uuid, "l3NetworkUuid": l3_uuid,
              "deviceId": device_id, "internalName": internal_name,
              "hypervisorType": hypervisor_type, "createDate": now, "lastOpDate": now}
    for attempt in range(16):
        mac = random_mac()
        try:
            # The NIC's claim of a MAC is checked once sent: with the ResourceVO row and the
            # function's later writes, in one round trip.
            with sent_together(session):
                if attempt == 0:
                    add_resource_row(session, uuid, "VmNicVO", name=None,
                                     owner_account_uuid=owner, create_date=now)
                insert_checked(session, _NICS, {**values, "mac": mac}, _MacTaken)
        except _MacTaken:
            # A MAC collision (another NIC has it): try another. A duplicate device id
            # would collide every time, which the loop ends with the error below; the
            # transaction then rolls back the NIC's ResourceVO row with the rest.
            continue
        return _NicRow(uuid, l3_uuid, mac, device_id, internal_name)
    raise ZError(INVALID_ARGUMENT, "cannot create the NIC",
                 f"no unique MAC / device id {device_id} for a NIC of VM {vm_uuid} on L3 "
                 f"network {l3_uuid} after 16 attempts")


class _MacTaken(Exception):
    """The MAC (or device id) a NIC was to have is another NIC's."""


def make_nic(session: Session, vm_uuid: str, l3_uuid: str, device_id: int,
             hypervisor_type: str | None = None) -> VmNicVO:
    """As :func:`insert_nic`, giving the NIC's ORM row."""
    uuid = insert_nic(session, vm_uuid, l3_uuid, device_id, hypervisor_type)
    return session.get_one(VmNicVO, uuid)


def release_nic_rows(session: Session, nic_uuids: Sequence[str]) -> None:
    """Delete NICs, their used IPs and their ResourceVO rows."""
    if not nic_uuids:
        return
    session.execute(delete(UsedIpVO).where(UsedIpVO.vmNicUuid.in_(nic_uuids)))
    session.execute(delete(VmNicVO).where(VmNicVO.uuid.in_(nic_uuids)))
    session.execute(delete(ResourceVO).where(ResourceVO.uuid.in_(nic_uuids)))


#: The NICs allocate-nics wrote (``_NicRow`` list, by device id), for allocate-ips.
_NIC_ROWS = "_network_nic_rows"


class AllocateNics(Step):
    requires = ("vm_uuid", "l3_networks")
    provides = ("nic_uuids",)

    async def run(self, ctx: FlowContext) -> None:
        vm_uuid: str = ctx["vm_uuid"]
        plans: list[L3Plan] = ctx["l3_networks"]
        host = ctx.get("host")
        hypervisor = getattr(host, "hypervisorType", None)
        spec = ctx.get("vm")
        # vm-create's spec names the owner persist-vm gave the VM.
        owner = spec.accountUuid if spec is not None else _VM_OWNER
        ctx["nic_uuids"] = []

        def create(session: Session) -> list[_NicRow]:
            return [_insert_nic(session, vm_uuid, plan.uuid, i, hypervisor, owner)
                    for i, plan in enumerate(plans)]

        rows = await ctx.services.db.run(create)
        ctx["nic_uuids"] = [row.uuid for row in rows]
        ctx[_NIC_ROWS] = rows  # allocate-ips need not read them back

    async def rollback(self, ctx: FlowContext) -> None:
        uuids = list(ctx.get("nic_uuids") or ())
        if uuids:
            await ctx.services.db.run(release_nic_rows, uuids)


def _bridges(session: Session, l3_uuids: set[str]) -> dict[str, str]:
    """The bridge of each L3 network's L2 network, by L3 uuid."""
    rows = session.connection().execute(_BRIDGES, {"uuids": list(l3_uuids)})
    return {uuid: bridge_name(interface, vni) for uuid, interface, vni in rows}


def nic_tos(session: Session, nics: Sequence[Any], default_l3: str | None) -> list[NicTO]:
    """The hypervisor's view of NICs (``VmNicVO`` rows, or any rows with its columns), by
    device id."""
    return _nic_tos(nics, default_l3, _bridges(session, {n.l3NetworkUuid for n in nics}))


def _nic_tos(nics: Sequence[Any], default_l3: str | None,
             bridges: dict[str, str]) -> list[NicTO]:
    return [NicTO(uuid=nic.uuid, l3NetworkUuid=nic.l3NetworkUuid, mac=nic.mac,
                  deviceId=nic.deviceId, ip=nic.ip, netmask=nic.netmask, gateway=nic.gateway,
                  bridgeName=bridges.get(nic.l3NetworkUuid), internalName=nic.internalName,
                  isDefault=nic.l3NetworkUuid == default_l3)
            for nic in sorted(nics, key=lambda n: n.deviceId)]


@dataclass(frozen=True, slots=True)
class _AddressedNic:
    uuid: str
    l3NetworkUuid: str
    mac: str
    deviceId: int
    internalName: str | None
    ip: str
    netmask: str | None
    gateway: str | None


class AllocateIps(Step):
    requires = ("nic_uuids",)
    provides = ("nics",)

    async def run(self, ctx: FlowContext) -> None:
        nic_uuids: list[str] = ctx["nic_uuids"]
        vm = ctx.get("vm")
        statics: dict[str, str] = dict(getattr(vm, "staticIps", None) or {})
        plans: list[L3Plan] = ctx.get("l3_networks") or []
        default = next((p.uuid for p in plans if p.isDefault), None)
        planned = {p.uuid: p.ranges for p in plans if p.ranges}
        node = ctx.services

        written: list[_NicRow] | None = ctx.get(_NIC_ROWS)
        if written is not None and [n.uuid for n in written] != nic_uuids:
            written = None  # another step changed the NICs meanwhile: read them

        def allocate(session: Session, ranges: dict[str, tuple[Range, ...]]
                     ) -> list[_AddressedNic]:
            connection = session.connection()
            nics: Sequence[Any] = written if written is not None else \
                connection.execute(_NICS_BY_UUID, {"uuids": nic_uuids}).all()
            strategy = strategy_of(node, None)
            addressed = []
            for nic in nics:
                used = allocate_ip(session, nic.l3NetworkUuid, vm_nic_uuid=nic.uuid,
                                   strategy=strategy, static_ip=statics.get(nic.l3NetworkUuid),
                                   ranges=ranges.get(nic.l3NetworkUuid))
                with sent_together(session):  # with the next NIC's claim, or later
                    connection.execute(_SET_NIC_IP, {
                        "nic_uuid": nic.uuid, "ip": used.ip, "netmask": used.netmask,
                        "gateway": used.gateway, "ipVersion": used.ipVersion})
                addressed.append(_AddressedNic(nic.uuid, nic.l3NetworkUuid, nic.mac,
                                               nic.deviceId, nic.internalName, used.ip,
                                               used.netmask, used.gateway))
            return addressed

        try:
            addressed = await node.db.run(allocate, planned)
        except IntegrityError:
            if not planned:
                raise
            # A planned range was deleted meanwhile (its address's row had no parent):
            # again, with the ranges read in the allocating transaction.
            addressed = await node.db.run(allocate, {})
        bridges = {p.uuid: p.bridgeName for p in plans if p.bridgeName is not None}
        if all(n.l3NetworkUuid in bridges for n in addressed):  # as planned
            ctx["nics"] = _nic_tos(addressed, default, bridges)
        else:  # read beside the single writer, not by it
            ctx["nics"] = await node.db.read(nic_tos, addressed, default)

    async def rollback(self, ctx: FlowContext) -> None:
        uuids = list(ctx.get("nic_uuids") or ())

        def release(session: Session) -> None:
            session.execute(delete(UsedIpVO).where(UsedIpVO.vmNicUuid.in_(uuids)))
            for nic in session.scalars(select(VmNicVO).where(VmNicVO.uuid.in_(uuids))):
                nic.ip = nic.netmask = nic.gateway = None
                nic.ipVersion = None

        if uuids:
            await ctx.services.db.run(release)


# --------------------------------------------------------------------------- services


def _providers_by_l3(session: Session, l3_uuids: set[str]) -> dict[str, set[str]]:
    rows = session.execute(
        select(NetworkServiceL3NetworkRefVO.l3NetworkUuid, NetworkServiceProviderVO.type)
        .join(NetworkServiceProviderVO, NetworkServiceProviderVO.uuid
              == NetworkServiceL3NetworkRefVO.networkServiceProviderUuid)
        .where(NetworkServiceL3NetworkRefVO.l3NetworkUuid.in_(l3_uuids)))
    found: dict[str, set[str]] = {}
    for l3_uuid, provider in rows:
        found.setdefault(provider, set()).add(l3_uuid)
    return found


async def backend_calls(node: Node, nics: Sequence[NicTO]) -> list[tuple[Any, list[NicTO]]]:
    """(backend, its NICs) for every provider with a registered backend serving the NICs."""
    backends = network_service_backends(node)
    if not backends or not nics:
        return []
    by_provider = await node.db.run(_providers_by_l3, {n.l3NetworkUuid for n in nics})
    calls = []
    for provider in sorted(by_provider):
        backend = backends.get(provider)
        if backend is not None:
            calls.append((backend, [n for n in nics
                                    if n.l3NetworkUuid in by_provider[provider]]))
    return calls


async def _host_of(ctx: FlowContext) -> Any:
    host = ctx.get("host")
    if host is not None:
        return host
    vm_uuid = ctx.get("vm_uuid")
    if vm_uuid is None:
        return None
    from zplugins.compute.public import get_vm

    vm = await get_vm(ctx.services, vm_uuid)
    host_uuid = vm.hostUuid or vm.lastHostUuid if vm is not None else None
    return await get_host(ctx.services, host_uuid) if host_uuid else None


class ApplyNetworkServices(Step):
    requires = ("nics", "host")

    async def run(self, ctx: FlowContext) -> None:
        done: list[tuple[Any, list[NicTO]]] = []
        ctx["_network_services_applied"] = done
        for backend, nics in await backend_calls(ctx.services, ctx["nics"]):
            done.append((backend, nics))  # release tolerates a half-applied backend
            await backend.apply(ctx.services, ctx["host"], nics)

    async def rollback(self, ctx: FlowContext) -> None:
        for backend, nics in reversed(ctx.get("_network_services_applied") or []):
            await backend.release(ctx.services, ctx["host"], nics)


class ReleaseNetworkServices(Step):
    requires = ("nics",)

    async def run(self, ctx: FlowContext) -> None:
        calls = await backend_calls(ctx.services, ctx["nics"])
        if not calls:
            return
        host = await _host_of(ctx)
        for backend, nics in calls:
            await backend.release(ctx.services, host, nics)


# --------------------------------------------------------------------------- loading


class LoadNics(Step):
    requires = ("vm_uuid",)
    provides = ("nics",)

    async def run(self, ctx: FlowContext) -> None:
        vm_uuid: str = ctx["vm_uuid"]

        def load(session: Session) -> tuple[list[NicTO], list[str]]:
            default = session.scalar(select(Base.metadata.tables["VmInstanceVO"].c
                                            .defaultL3NetworkUuid).where(
                Base.metadata.tables["VmInstanceVO"].c.uuid == vm_uuid))
            nics = list(session.scalars(select(VmNicVO).where(
                VmNicVO.vmInstanceUuid == vm_uuid)))
            l2s = list(session.scalars(select(L3NetworkVO.l2NetworkUuid).where(
                L3NetworkVO.uuid.in_({n.l3NetworkUuid for n in nics}))))
            return nic_tos(session, nics, default), l2s

        nics, l2s = await ctx.services.db.run(load)
        ctx["nics"] = nics
        conditions = ctx.get("host_conditions")
        if conditions is not None:
            condition = l2_host_condition(l2s)
            if condition is not None:
                conditions.append(condition)


class ReleaseNics(Step):
    requires = ("vm_uuid",)

    async def run(self, ctx: FlowContext) -> None:
        vm_uuid: str = ctx["vm_uuid"]

        def release(session: Session) -> None:
            uuids = list(session.scalars(select(VmNicVO.uuid).where(
                VmNicVO.vmInstanceUuid == vm_uuid)))
            release_nic_rows(session, uuids)

        await ctx.services.db.run(release)


def flow_steps() -> Iterator[FlowStep]:
    yield FlowStep("plan-networks", PlanNetworks())
    yield FlowStep("allocate-nics", AllocateNics())
    yield FlowStep("allocate-ips", AllocateIps())
    yield FlowStep("apply-network-services", ApplyNetworkServices())
    yield FlowStep("load-nics", LoadNics())
    yield FlowStep("release-network-services", ReleaseNetworkServices())
    yield FlowStep("release-nics", ReleaseNics())
