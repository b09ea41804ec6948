"""L2 networks: created in a zone on a physical interface, attached to clusters.

``CreateL2NoVlanNetwork`` and ``CreateL2VlanNetwork`` run the chain ``l2-network-create``
(step ``persist-l2-network``, context ``api`` and ``l2_spec``, provides ``l2_network``). A
zone holds at most one L2 network per physical interface and VLAN: one without VLAN and one
per VLAN id (1-4094) on each interface; a unique index makes this hold under concurrency too.

``AttachL2NetworkToCluster`` runs ``l2-network-attach``: ``attach-l2-network`` writes the
attachment, then ``realize-l2-network`` creates the network's bridge on every connected host
of the cluster through the host's hypervisor driver (ZStack's KVM agent commands
``/network/l2novlan/createbridge`` and ``/network/l2vlan/createbridge``, bridges named
``br_<interface>`` and ``br_<interface>_<vlan>``). When a host fails, the attachment is
rolled back (bridges already made on other hosts stay, unused, as in ZStack) and the error
names every host that failed. A host that connects later (added, reconnected) gets the
bridges of its cluster's L2 networks from the step ``prepare-l2-networks``, inserted into
the compute plugin's ``host-connect`` chain after ``connect-host``: when it fails, the host
does not connect.

``DetachL2NetworkFromCluster`` runs ``l2-network-detach`` (step ``detach-l2-network``).
The VM issue inserts a step before it that refuses the detach while VMs in the cluster have
NICs on the network's L3 networks; there are no VMs yet. The bridges stay on the hosts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore import ApiMessage, CascadeEdge, FlowInsertion, FlowStep, QueryExpansion, ResourceType
from zcore.api import ApiContext, APIMessage, Inventory, Param, QueryMessage
from zcore.db import add_resource
from zcore.errors import OPERATION_ERROR, RESOURCE_NOT_FOUND, ZError
from zcore.flow import FlowContext, Step
from zplugins.network.common import (
    DELETE_MODES,
    PersistStep,
    delete_rows,
    get_row,
    invalid,
    refuse_tag_uuids,
)
from zplugins.network.models import (
    CLUSTER_TABLE,
    L2_NO_VLAN,
    L2_VLAN,
    ZONE_TABLE,
    ClusterL2NetworkVO,
    L2NetworkClusterRefVO,
    L2NetworkClusterVO,
    L2NetworkVO,
    L2VlanNetworkVO,
)
from zplugins.network.public import bridge_name

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.compute.public import HostInfo

__all__ = [
    "AttachL2NetworkToCluster",
    "CreateL2NoVlanNetwork",
    "CreateL2VlanNetwork",
    "DeleteL2Network",
    "DetachL2NetworkFromCluster",
    "L2Spec",
    "QueryL2Network",
    "QueryL2VlanNetwork",
    "UpdateL2Network",
    "bridge_command",
    "l2_fields",
    "realize_on_hosts",
]

L2 = "L2NetworkVO"
L2_VLAN_RESOURCE = "L2VlanNetworkVO"
L2_INVENTORY = "org.zstack.header.network.l2.L2NetworkInventory"
L2_VLAN_INVENTORY = "org.zstack.header.network.l2.L2VlanNetworkInventory"
RESULT = {"inventory": "L2NetworkInventory"}

#: The vSwitch types ZStack knows; only LinuxBridge is realized on hosts so far.
VSWITCH_TYPES = ("LinuxBridge", "OvsDpdk", "MacVlan")
SUPPORTED_VSWITCH = "LinuxBridge"

#: ZStack's KVM agent commands that create a bridge on a host.
CREATE_NO_VLAN_BRIDGE = "/network/l2novlan/createbridge"
CREATE_VLAN_BRIDGE = "/network/l2vlan/createbridge"


# --------------------------------------------------------------------------- inventories


def l2_fields(row: L2NetworkVO) -> dict[str, Any]:
    """ZStack's L2NetworkInventory (and L2VlanNetworkInventory's ``vlan``)."""
    fields: dict[str, Any] = {
        "uuid": row.uuid, "name": row.name, "description": row.description,
        "zoneUuid": row.zoneUuid, "physicalInterface": row.physicalInterface,
        "type": row.type, "vSwitchType": row.vSwitchType,
        "virtualNetworkId": row.virtualNetworkId, "isolated": row.isolated,
        "pvlan": row.pvlan, "attachedClusterUuids": row.attachedClusterUuids,
        "createDate": row.createDate, "lastOpDate": row.lastOpDate,
    }
    if row.type == L2_VLAN:
        fields["vlan"] = row.virtualNetworkId
    return fields


def l2_inventory(row: L2NetworkVO) -> Inventory:
    """The inventory of an L2 network, with the server class of its kind."""
    return Inventory(L2_VLAN_INVENTORY if row.type == L2_VLAN else L2_INVENTORY, l2_fields(row))


def _classed(inventories: list[Inventory]) -> list[Inventory]:
    # The query engine names every row of a type with one server class; VLAN networks
    # have their own.
    return [Inventory(L2_VLAN_INVENTORY, inv) if inv.get("type") == L2_VLAN else inv
            for inv in inventories]


# --------------------------------------------------------------------------- creation


@dataclass(frozen=True, slots=True)
class L2Spec:
    """What CreateL2NoVlanNetwork or CreateL2VlanNetwork asked for."""

    zone_uuid: str
    name: str
    physical_interface: str
    vlan: int | None = None
    description: str | None = None
    v_switch_type: str = SUPPORTED_VSWITCH
    uuid: str | None = None

    @property
    def virtual_network_id(self) -> int:
        return self.vlan or 0


def _taken(session: Session, zone_uuid: str, interface: str, vni: int) -> str | None:
    return session.scalar(select(L2NetworkVO.uuid).where(
        L2NetworkVO.zoneUuid == zone_uuid, L2NetworkVO.physicalInterface == interface,
        L2NetworkVO.virtualNetworkId == vni))


def _duplicate(api: str, spec: L2Spec, other: str | None) -> ZError:
    which = f"VLAN {spec.vlan}" if spec.vlan else "no VLAN"
    return invalid(api, f"physical interface '{spec.physical_interface}' of zone "
                        f"{spec.zone_uuid} already carries an L2 network with {which}"
                        + (f" (L2NetworkVO {other})" if other else "")
                        + "; use that network, or another "
                        + ("VLAN id" if spec.vlan else "interface"))


def _insert_l2(session: Session, spec: L2Spec, api: ApiContext) -> L2NetworkVO:
    if session.scalar(select(ZONE_TABLE.c.uuid).where(ZONE_TABLE.c.uuid == spec.zone_uuid)) \
            is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"ZoneVO {spec.zone_uuid} does not exist (any more)")
    other = _taken(session, spec.zone_uuid, spec.physical_interface, spec.virtual_network_id)
    if other is not None:
        raise _duplicate(api.api, spec, other)
    row: L2NetworkVO
    if spec.vlan is None:
        row = L2NetworkVO(type=L2_NO_VLAN, virtualNetworkId=0)
    else:
        row = L2VlanNetworkVO(type=L2_VLAN, virtualNetworkId=spec.vlan, vlan=spec.vlan)
    row.zoneUuid = spec.zone_uuid
    row.name = spec.name
    row.description = spec.description
    row.physicalInterface = spec.physical_interface
    row.vSwitchType = spec.v_switch_type
    row.isolated = False
    if spec.uuid is not None:
        row.uuid = spec.uuid
    add_resource(session, row, L2, owner_account_uuid=api.owner)
    try:
        session.flush()
    except IntegrityError as exc:  # created meanwhile by another call
        raise _duplicate(api.api, spec, None) from exc
    api.add_tags(session, row.uuid, L2)
    return row


class PersistL2Network(PersistStep):
    """Write the L2 network, its resource row and the call's tags in one transaction."""

    requires = ("api", "l2_spec")
    provides = ("l2_network",)
    model = L2NetworkVO
    insert = staticmethod(_insert_l2)


class _CreateL2(APIMessage):
    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    zoneUuid = Param(str, required=True, resource_type="ZoneVO")
    physicalInterface = Param(str, required=True, max_length=1024, non_empty=True,
                              description="The host interface the network is on (eth0, bond0)")
    type = Param(str, description="L2NoVlanNetwork or L2VlanNetwork, as the API creates")
    vSwitchType = Param(str, default=SUPPORTED_VSWITCH, max_length=1024,
                        valid_values=VSWITCH_TYPES,
                        description="Only LinuxBridge is supported so far")
    isolated = Param(bool, default=False, description="Private VLANs: not supported yet")
    pvlan = Param(str, description="Private VLANs: not supported yet")
    resourceUuid = Param(str, description="The uuid the new network gets (32 lower-case hex "
                                          "digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    l2_type = L2_NO_VLAN

    def spec(self) -> L2Spec:
        raise NotImplementedError

    async def validate(self, ctx: ApiContext) -> None:
        refuse_tag_uuids(self.api_name, self.tagUuids)
        if self.type is not None and self.type != self.l2_type:
            raise invalid(self.api_name, f"parameter 'type': {self.api_name} creates an "
                                         f"{self.l2_type}, not {self.type!r}; omit it")
        if self.vSwitchType != SUPPORTED_VSWITCH:
            raise invalid(self.api_name, f"parameter 'vSwitchType': {self.vSwitchType} is not "
                                         f"supported yet; use {SUPPORTED_VSWITCH}")
        if self.isolated or self.pvlan:
            raise invalid(self.api_name, "isolated networks (private VLANs, 'isolated' and "
                                         "'pvlan') are not supported yet")
        if self.physicalInterface != self.physicalInterface.strip() \
                or any(c.isspace() or c == "/" for c in self.physicalInterface):
            raise invalid(self.api_name, f"parameter 'physicalInterface': "
                                         f"{self.physicalInterface!r} is not an interface name "
                                         "(no spaces or '/')")
        spec = self.spec()
        other = await ctx.run(_taken, spec.zone_uuid, spec.physical_interface,
                              spec.virtual_network_id)
        if other is not None:
            raise _duplicate(self.api_name, spec, other)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        flow = await ctx.node.run_flow("l2-network-create", {"api": ctx, "l2_spec": self.spec()})
        return {"inventory": await ctx.run(_inventory_of, flow["l2_network"].uuid)}


def _inventory_of(session: Session, uuid: str) -> Inventory:
    return l2_inventory(get_row(session, L2NetworkVO, L2, uuid))


class CreateL2NoVlanNetwork(_CreateL2, method="POST", path="/l2-networks/no-vlan",
                            resource_type=L2, result=RESULT):
    """Create an L2 network without VLAN on a physical interface of a zone's hosts."""

    def spec(self) -> L2Spec:
        return L2Spec(self.zoneUuid, self.name, self.physicalInterface, None,
                      self.description, self.vSwitchType, self.resourceUuid)


class CreateL2VlanNetwork(_CreateL2, method="POST", path="/l2-networks/vlan",
                          resource_type=L2, result=RESULT):
    """Create an L2 network on a VLAN (1-4094) of a physical interface of a zone's hosts."""

    vlan = Param(int, required=True, number_range=(1, 4094))

    l2_type = L2_VLAN

    def spec(self) -> L2Spec:
        return L2Spec(self.zoneUuid, self.name, self.physicalInterface, self.vlan,
                      self.description, self.vSwitchType, self.resourceUuid)


# --------------------------------------------------------------------------- bridges


def bridge_command(row: L2NetworkVO) -> tuple[str, dict[str, Any]]:
    """The agent path and body that create the bridge of an L2 network on a host."""
    interface = row.physicalInterface
    if row.type == L2_VLAN:
        vlan = row.virtualNetworkId
        return CREATE_VLAN_BRIDGE, {"physicalInterfaceName": interface,
                                    "bridgeName": bridge_name(interface, vlan),
                                    "l2NetworkUuid": row.uuid, "vlan": vlan}
    return CREATE_NO_VLAN_BRIDGE, {"physicalInterfaceName": interface,
                                   "bridgeName": bridge_name(interface),
                                   "l2NetworkUuid": row.uuid}


async def realize_on_hosts(node: Node, networks: list[L2NetworkVO], hosts: list[HostInfo]
                           ) -> None:
    """Create the bridges of ``networks`` on ``hosts``, all at once; raise naming failures."""
    from zplugins.compute.public import host_call

    jobs = [(row, host) for host in hosts for row in networks]
    if not jobs:
        return
    results = await asyncio.gather(
        *(host_call(node, host, *bridge_command(row)) for row, host in jobs),
        return_exceptions=True)
    failures: list[tuple[L2NetworkVO, HostInfo, BaseException]] = []
    for (row, host), result in zip(jobs, results, strict=True):
        if isinstance(result, asyncio.CancelledError):
            raise result
        if isinstance(result, BaseException):
            failures.append((row, host, result))
    if failures:
        # host_call's errors name the host and the command.
        shown = "; ".join(f"L2 network {row.name} ({row.uuid}): {ZError.wrap(exc)}"
                          for row, _, exc in failures)
        raise ZError(OPERATION_ERROR, "cannot create L2 network bridges on hosts",
                     f"{len(failures)} of {len(jobs)} bridge(s) failed: {shown}",
                     cause=ZError.wrap(failures[0][2]))


# --------------------------------------------------------------------------- attaching


@dataclass(frozen=True, slots=True)
class L2Attachment:
    """What AttachL2NetworkToCluster asked for."""

    l2_network_uuid: str
    cluster_uuid: str


def _already(api: str, l2_uuid: str, cluster_uuid: str) -> ZError:
    return ZError(OPERATION_ERROR, "L2 network already attached",
                  f"{api}: L2 network {l2_uuid} is already attached to cluster {cluster_uuid}; "
                  "it cannot be attached again")


def _check_attach(session: Session, api: str, l2_uuid: str, cluster_uuid: str) -> None:
    l2 = get_row(session, L2NetworkVO, L2, l2_uuid)
    zone = session.scalar(select(CLUSTER_TABLE.c.zoneUuid)
                          .where(CLUSTER_TABLE.c.uuid == cluster_uuid))
    if zone is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"ClusterVO {cluster_uuid} does not exist (any more)")
    if zone != l2.zoneUuid:
        raise invalid(api, f"cluster {cluster_uuid} is in zone {zone}, but L2 network "
                           f"{l2_uuid} is in zone {l2.zoneUuid}; attach it to a cluster of "
                           "its own zone")
    if session.scalar(select(L2NetworkClusterRefVO.id).where(
            L2NetworkClusterRefVO.l2NetworkUuid == l2_uuid,
            L2NetworkClusterRefVO.clusterUuid == cluster_uuid)) is not None:
        raise _already(api, l2_uuid, cluster_uuid)


def _insert_ref(session: Session, attachment: L2Attachment, api: ApiContext
                ) -> L2NetworkClusterRefVO:
    _check_attach(session, api.api, attachment.l2_network_uuid, attachment.cluster_uuid)
    ref = L2NetworkClusterRefVO(l2NetworkUuid=attachment.l2_network_uuid,
                                clusterUuid=attachment.cluster_uuid)
    session.add(ref)
    try:
        session.flush()
    except IntegrityError as exc:  # attached meanwhile by another call
        raise _already(api.api, attachment.l2_network_uuid, attachment.cluster_uuid) from exc
    return ref


def _delete_ref(session: Session, ref_id: int) -> None:
    session.execute(delete(L2NetworkClusterRefVO).where(L2NetworkClusterRefVO.id == ref_id))


class AttachL2Network(Step):
    """Record that the L2 network is attached to the cluster (undone by deleting it)."""

    requires = ("api", "l2_attachment")
    provides = ("l2_cluster_ref",)

    async def run(self, ctx: FlowContext) -> None:
        api: ApiContext = ctx["api"]
        ctx["l2_cluster_ref"] = await api.run(_insert_ref, ctx["l2_attachment"], api)

    async def rollback(self, ctx: FlowContext) -> None:
        ref = ctx.get("l2_cluster_ref")
        if ref is not None:
            await ctx["api"].run(_delete_ref, ref.id)


class RealizeL2Network(Step):
    """Create the network's bridge on every connected host of the cluster."""

    requires = ("l2_attachment", "l2_cluster_ref")

    async def run(self, ctx: FlowContext) -> None:
        from zplugins.compute.public import cluster_hosts

        node: Node = ctx.services
        attachment: L2Attachment = ctx["l2_attachment"]
        row = await node.db.run(get_row, L2NetworkVO, L2, attachment.l2_network_uuid)
        hosts = await cluster_hosts(node, attachment.cluster_uuid, connected_only=True)
        await realize_on_hosts(node, [row], hosts)


class AttachL2NetworkToCluster(APIMessage, method="POST",
                               path="/l2-networks/{l2NetworkUuid}/clusters/{clusterUuid}",
                               envelope="null", resource_type=L2, result=RESULT):
    """Attach an L2 network to a cluster of its zone, creating its bridge on the hosts."""

    l2NetworkUuid = Param(str, required=True, resource_type=L2)
    clusterUuid = Param(str, required=True, resource_type="ClusterVO")
    l2ProviderType = Param(str, valid_values=(SUPPORTED_VSWITCH,))

    async def validate(self, ctx: ApiContext) -> None:
        await ctx.run(_check_attach, self.api_name, self.l2NetworkUuid, self.clusterUuid)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        attachment = L2Attachment(self.l2NetworkUuid, self.clusterUuid)
        await ctx.node.run_flow("l2-network-attach", {"api": ctx, "l2_attachment": attachment})
        return {"inventory": await ctx.run(_inventory_of, self.l2NetworkUuid)}


class DetachL2Network(Step):
    """Remove the attachment of the L2 network to the cluster."""

    requires = ("api", "l2_attachment")

    async def run(self, ctx: FlowContext) -> None:
        api: ApiContext = ctx["api"]
        attachment: L2Attachment = ctx["l2_attachment"]

        def detach(session: Session) -> None:
            gone = session.execute(delete(L2NetworkClusterRefVO).where(
                L2NetworkClusterRefVO.l2NetworkUuid == attachment.l2_network_uuid,
                L2NetworkClusterRefVO.clusterUuid == attachment.cluster_uuid))
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise _not_attached(api.api, attachment)

        await api.run(detach)


def _not_attached(api: str, attachment: L2Attachment) -> ZError:
    return ZError(OPERATION_ERROR, "L2 network not attached",
                  f"{api}: L2 network {attachment.l2_network_uuid} is not attached to cluster "
                  f"{attachment.cluster_uuid}")


class DetachL2NetworkFromCluster(APIMessage, method="DELETE",
                                 path="/l2-networks/{l2NetworkUuid}/clusters/{clusterUuid}",
                                 resource_type=L2, result=RESULT):
    """Detach an L2 network from a cluster (the VM issue refuses it while VMs use it)."""

    l2NetworkUuid = Param(str, required=True, resource_type=L2)
    clusterUuid = Param(str, required=True, resource_type="ClusterVO")

    async def validate(self, ctx: ApiContext) -> None:
        def attached(session: Session) -> bool:
            return session.scalar(select(L2NetworkClusterRefVO.id).where(
                L2NetworkClusterRefVO.l2NetworkUuid == self.l2NetworkUuid,
                L2NetworkClusterRefVO.clusterUuid == self.clusterUuid)) is not None

        if not await ctx.run(attached):
            raise _not_attached(self.api_name, L2Attachment(self.l2NetworkUuid,
                                                             self.clusterUuid))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        attachment = L2Attachment(self.l2NetworkUuid, self.clusterUuid)
        await ctx.node.run_flow("l2-network-detach", {"api": ctx, "l2_attachment": attachment})
        return {"inventory": await ctx.run(_inventory_of, self.l2NetworkUuid)}


# --------------------------------------------------------------------------- hosts connecting


def _attached_to(session: Session, cluster_uuid: str) -> list[L2NetworkVO]:
    return list(session.scalars(
        select(L2NetworkVO).join(L2NetworkClusterRefVO,
                                 L2NetworkClusterRefVO.l2NetworkUuid == L2NetworkVO.uuid)
        .where(L2NetworkClusterRefVO.clusterUuid == cluster_uuid)
        .order_by(L2NetworkClusterRefVO.id)))


class PrepareL2Networks(Step):
    """In ``host-connect``: create the bridges of the L2 networks of the host's cluster."""

    requires = ("host",)

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        host: HostInfo = ctx["host"]
        networks = await node.db.run(_attached_to, host.clusterUuid)
        await realize_on_hosts(node, networks, [host])


# --------------------------------------------------------------------------- other APIs


class UpdateL2Network(APIMessage, method="PUT", path="/l2-networks/{uuid}/actions",
                      resource_type=L2, result=RESULT):
    """Change an L2 network's name or description; only the parameters given."""

    uuid = Param(str, required=True, resource_type=L2)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> Inventory:
            row = get_row(session, L2NetworkVO, L2, self.uuid)
            if self.name is not None:
                row.name = self.name
            if self.description is not None:
                row.description = self.description
            session.flush()
            return l2_inventory(row)

        return {"inventory": await ctx.run(change)}


class DeleteL2Network(APIMessage, method="DELETE", path="/l2-networks/{uuid}",
                      resource_type=L2, result={}):
    """Delete an L2 network; its L3 networks go first through the cascade plugin."""

    uuid = Param(str, required=True, resource_type=L2)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ctx.delete(L2, self.uuid, self.deleteMode, delete_rows(L2NetworkVO, L2))
        return {}


class QueryL2Network(QueryMessage, path="/l2-networks", resource=L2):
    """Query L2 networks; ``zone.``, ``cluster.`` and ``l3Network.`` reach related fields."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        body = await ctx.node.api.query(ctx, self)
        if "inventories" in body:
            body["inventories"] = _classed(body["inventories"])
        return body


class QueryL2VlanNetwork(QueryMessage, path="/l2-networks/vlan", resource=L2_VLAN_RESOURCE):
    """Query VLAN L2 networks, by ``vlan`` among the rest."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        return await ctx.node.api.query(ctx, self)


APIS: tuple[type[APIMessage], ...] = (
    CreateL2NoVlanNetwork, CreateL2VlanNetwork, AttachL2NetworkToCluster,
    DetachL2NetworkFromCluster, UpdateL2Network, DeleteL2Network, QueryL2Network,
    QueryL2VlanNetwork)


# --------------------------------------------------------------------------- registration


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(L2, model=L2NetworkVO, inventory=L2_INVENTORY, to_inventory=l2_fields,
                       description="An L2 network on a physical interface, in a zone")
    yield ResourceType(L2_VLAN_RESOURCE, model=L2VlanNetworkVO, inventory=L2_VLAN_INVENTORY,
                       to_inventory=l2_fields,
                       description="The VLAN L2 networks (their resource rows say L2NetworkVO)")
    yield ResourceType("L2NetworkClusterRefVO", model=L2NetworkClusterRefVO,
                       owned_through="l2NetworkUuid",
                       description="An L2 network attached to a cluster")
    yield ResourceType("L2NetworkClusterVO", model=L2NetworkClusterVO, owned_through=None,
                       description="For queries only: a cluster seen from an L2 network "
                                   "attached to it (QueryL2Network cluster.name=...)")
    yield ResourceType("ClusterL2NetworkVO", model=ClusterL2NetworkVO, owned_through=None,
                       description="For queries only: an L2 network seen from a cluster it "
                                   "is attached to (QueryCluster l2Network.name=...)")


def cascade_edges() -> Iterator[CascadeEdge]:
    yield CascadeEdge(L2, "ZoneVO", field="zoneUuid")


def query_expansions() -> Iterator[QueryExpansion]:
    for resource in (L2, L2_VLAN_RESOURCE):
        yield QueryExpansion(resource, "zone", "ZoneVO", local_key="zoneUuid")
        yield QueryExpansion(resource, "cluster", "L2NetworkClusterVO",
                             foreign_key="l2NetworkUuid")
    yield QueryExpansion("L2NetworkClusterVO", "zone", "ZoneVO", local_key="zoneUuid")
    yield QueryExpansion("ClusterVO", "l2Network", "ClusterL2NetworkVO",
                         foreign_key="clusterUuid")
    yield QueryExpansion("ClusterL2NetworkVO", "zone", "ZoneVO", local_key="zoneUuid")
    yield QueryExpansion("ZoneVO", "l2Network", L2, foreign_key="zoneUuid")
    yield QueryExpansion("L2NetworkClusterRefVO", "l2Network", L2, local_key="l2NetworkUuid")
    yield QueryExpansion("L2NetworkClusterRefVO", "cluster", "ClusterVO",
                         local_key="clusterUuid")


def flow_steps() -> Iterator[FlowStep]:
    yield FlowStep("persist-l2-network", PersistL2Network())
    yield FlowStep("attach-l2-network", AttachL2Network())
    yield FlowStep("realize-l2-network", RealizeL2Network())
    yield FlowStep("detach-l2-network", DetachL2Network())
    yield FlowStep("prepare-l2-networks", PrepareL2Networks())


def flow_insertions() -> Iterator[FlowInsertion]:
    yield FlowInsertion("host-connect", "prepare-l2-networks", after="connect-host")


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)
