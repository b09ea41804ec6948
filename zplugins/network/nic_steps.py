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
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload

from zcore import FlowStep
from zcore.db import Base, ResourceVO, add_resource
from zcore.errors import INVALID_ARGUMENT, ZError
from zcore.flow import FlowContext, Step
from zplugins.compute.public import NicTO, get_host
from zplugins.network.ip_allocators import allocate_ip, check_static_ip, strategy_of
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

__all__ = ["L3Plan", "backend_calls", "check_l3_usable", "l2_host_condition", "make_nic",
           "nic_tos", "release_nic_rows"]

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


def _l3_error(details: str) -> ZError:
    return ZError(L3_ERROR, "L3 network cannot be used", details)


def check_l3_usable(session: Session, l3_uuid: str, zone_uuid: str | None) -> L3NetworkVO:
    """The L3 network, refused unless it exists, is Enabled, has an IP range and (if
    ``zone_uuid``) is in that zone."""
    l3 = session.get(L3NetworkVO, l3_uuid, options=[lazyload("*")])
    if l3 is None:
        raise ZError(INVALID_ARGUMENT, "no such L3 network",
                     f"L3 network {l3_uuid} does not exist")
    if l3.state != "Enabled":
        raise _l3_error(f"L3 network '{l3.name}' ({l3_uuid}) is {l3.state}; enable it first")
    if zone_uuid is not None and l3.zoneUuid != zone_uuid:
        raise _l3_error(f"L3 network '{l3.name}' ({l3_uuid}) is in zone {l3.zoneUuid}, not in "
                        f"the VM's zone {zone_uuid}")
    has_range = session.scalar(select(IpRangeVO.uuid).where(
        IpRangeVO.l3NetworkUuid == l3_uuid).limit(1))
    if has_range is None:
        raise _l3_error(f"L3 network '{l3.name}' ({l3_uuid}) has no IP range; add one with "
                        "AddIpRange")
    return l3


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
                l3 = check_l3_usable(session, l3_uuid, zone)
                zone = zone or l3.zoneUuid  # every L3 network in one zone
                static = vm.staticIps.get(l3_uuid)
                if static is not None:
                    check_static_ip(session, l3_uuid, static)
                plans.append(L3Plan(l3.uuid, l3.l2NetworkUuid, l3.zoneUuid,
                                    l3.uuid == default, static))
            return plans

        plans = await ctx.services.db.run(plan)
        condition = l2_host_condition([p.l2NetworkUuid for p in plans])
        if condition is not None:
            ctx["host_conditions"].append(condition)
        ctx["l3_networks"] = plans


def random_mac() -> str:
    """A ZStack-style MAC: ``fa:`` then five random bytes."""
    return "fa:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(5))


def make_nic(session: Session, vm_uuid: str, l3_uuid: str, device_id: int,
             hypervisor_type: str | None = None) -> VmNicVO:
    """A NIC row (and its ResourceVO, owned by the VM's owner) with a fresh unique MAC."""
    owner = session.scalar(select(ResourceVO.ownerAccountUuid).where(ResourceVO.uuid == vm_uuid))
    for _ in range(16):
        nic = VmNicVO(vmInstanceUuid=vm_uuid, l3NetworkUuid=l3_uuid, mac=random_mac(),
                      deviceId=device_id, internalName=f"vnic{vm_uuid[:8]}.{device_id}",
                      hypervisorType=hypervisor_type)
        try:
            with session.begin_nested():
                add_resource(session, nic, "VmNicVO", owner_account_uuid=owner)
                session.flush()
            return nic
        except IntegrityError:
            # A MAC collision (another NIC has it): try another. A duplicate device id
            # would collide every time, which the loop ends with the error below.
            continue
    raise ZError(INVALID_ARGUMENT, "cannot create the NIC",
                 f"no unique MAC / device id {device_id} for a NIC of VM {vm_uuid} on L3 "
                 f"network {l3_uuid} after 16 attempts")


def release_nic_rows(session: Session, nic_uuids: Sequence[str]) -> None:
    """Delete NICs, their used IPs and their ResourceVO rows."""
    if not nic_uuids:
        return
    session.execute(delete(UsedIpVO).where(UsedIpVO.vmNicUuid.in_(nic_uuids)))
    session.execute(delete(VmNicVO).where(VmNicVO.uuid.in_(nic_uuids)))
    session.execute(delete(ResourceVO).where(ResourceVO.uuid.in_(nic_uuids)))


class AllocateNics(Step):
    requires = ("vm_uuid", "l3_networks")
    provides = ("nic_uuids",)

    async def run(self, ctx: FlowContext) -> None:
        vm_uuid: str = ctx["vm_uuid"]
        plans: list[L3Plan] = ctx["l3_networks"]
        host = ctx.get("host")
        hypervisor = getattr(host, "hypervisorType", None)
        ctx["nic_uuids"] = []

        def create(session: Session) -> list[str]:
            return [make_nic(session, vm_uuid, plan.uuid, i, hypervisor).uuid
                    for i, plan in enumerate(plans)]

        ctx["nic_uuids"] = await ctx.services.db.run(create)

    async def rollback(self, ctx: FlowContext) -> None:
        uuids = list(ctx.get("nic_uuids") or ())
        if uuids:
            await ctx.services.db.run(release_nic_rows, uuids)


def nic_tos(session: Session, nics: Sequence[VmNicVO], default_l3: str | None) -> list[NicTO]:
    """The hypervisor's view of NICs, by device id."""
    l3s = {l3.uuid: l3 for l3 in session.scalars(select(L3NetworkVO).options(
        lazyload("*")).where(L3NetworkVO.uuid.in_({n.l3NetworkUuid for n in nics})))}
    l2s = {l2.uuid: l2 for l2 in session.scalars(select(L2NetworkVO).options(
        lazyload("*")).where(L2NetworkVO.uuid.in_({l3.l2NetworkUuid for l3 in l3s.values()})))}
    out = []
    for nic in sorted(nics, key=lambda n: n.deviceId):
        l3 = l3s.get(nic.l3NetworkUuid)
        l2 = l2s.get(l3.l2NetworkUuid) if l3 is not None else None
        bridge = bridge_name(l2.physicalInterface, l2.virtualNetworkId) if l2 else None
        out.append(NicTO(uuid=nic.uuid, l3NetworkUuid=nic.l3NetworkUuid, mac=nic.mac,
                         deviceId=nic.deviceId, ip=nic.ip, netmask=nic.netmask,
                         gateway=nic.gateway, bridgeName=bridge,
                         internalName=nic.internalName,
                         isDefault=nic.l3NetworkUuid == default_l3))
    return out


def assign_ip(session: Session, node: Node | None, nic: VmNicVO, static_ip: str | None,
              strategy_name: str | None = None) -> UsedIpVO:
    """Give ``nic`` an address of its L3 network and copy it onto the NIC row."""
    used = allocate_ip(session, nic.l3NetworkUuid, vm_nic_uuid=nic.uuid,
                       strategy=strategy_of(node, strategy_name), static_ip=static_ip)
    nic.ip, nic.netmask, nic.gateway, nic.ipVersion = (used.ip, used.netmask, used.gateway,
                                                       used.ipVersion)
    session.flush()
    return used


class AllocateIps(Step):
    requires = ("nic_uuids",)
    provides = ("nics",)

    async def run(self, ctx: FlowContext) -> None:
        nic_uuids: list[str] = ctx["nic_uuids"]
        vm = ctx.get("vm")
        statics: dict[str, str] = dict(getattr(vm, "staticIps", None) or {})
        plans: list[L3Plan] = ctx.get("l3_networks") or []
        default = next((p.uuid for p in plans if p.isDefault), None)
        node = ctx.services

        def allocate(session: Session) -> list[NicTO]:
            nics = list(session.scalars(select(VmNicVO).where(VmNicVO.uuid.in_(nic_uuids))))
            for nic in sorted(nics, key=lambda n: n.deviceId):
                assign_ip(session, node, nic, statics.get(nic.l3NetworkUuid))
            return nic_tos(session, nics, default)

        ctx["nics"] = await node.db.run(allocate)

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
