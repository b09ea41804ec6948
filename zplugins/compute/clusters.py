"""Cluster APIs and the step that writes a cluster.

``CreateCluster`` runs the chain ``cluster-create``
(``zplugins/compute/flows/cluster-create.yaml``) with the context keys ``api`` (the
:class:`~zcore.api.ApiContext`) and ``cluster_spec`` (a :class:`ClusterSpec`); its step
``persist-cluster`` provides ``cluster``, the new row. Other plugins insert their steps
before or after ``persist-cluster``.

A cluster's ``hypervisorType`` must name a hypervisor driver that is available on this node
(``node.drivers.names("zcore.hypervisors")``): ZStack's fixed list would refuse a third-party
hypervisor and accept one whose plugin is disabled. A cluster may be created in a
``Disabled`` zone, as in ZStack; it is always created ``Enabled``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from zcore.api import ApiContext, APIMessage, Param, QueryMessage
from zcore.db import add_resource
from zcore.errors import INVALID_ARGUMENT, ZError
from zplugins.compute.common import (
    DELETE_MODES,
    STATE_EVENTS,
    PersistResource,
    delete_rows,
    get_row,
    refuse_tag_uuids,
)
from zplugins.compute.hypervisor import HYPERVISORS
from zplugins.compute.models import ClusterVO, ZoneVO

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "ChangeClusterState",
    "ClusterSpec",
    "CreateCluster",
    "DeleteCluster",
    "PersistCluster",
    "QueryCluster",
    "UpdateCluster",
    "check_hypervisor_type",
    "cluster_inventory",
]

CLUSTER = "ClusterVO"
INVENTORY = {"inventory": "ClusterInventory"}

#: ZStack's own list, for the API description only; the drivers on the node decide.
ZSTACK_HYPERVISOR_TYPES = ("KVM", "Simulator", "baremetal", "baremetal2", "xdragon")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """What CreateCluster asked for."""

    zone_uuid: str
    name: str
    hypervisor_type: str
    description: str | None = None
    type: str = "zstack"
    architecture: str | None = None
    uuid: str | None = None


def cluster_inventory(cluster: ClusterVO) -> dict[str, Any]:
    """The fields of ZStack's ClusterInventory, in its order."""
    return {"uuid": cluster.uuid, "name": cluster.name, "description": cluster.description,
            "state": cluster.state, "hypervisorType": cluster.hypervisorType,
            "zoneUuid": cluster.zoneUuid, "type": cluster.type,
            "architecture": cluster.architecture, "createDate": cluster.createDate,
            "lastOpDate": cluster.lastOpDate}


def check_hypervisor_type(node: Node, api: str, value: str) -> None:
    """Refuse (``SYS.1007``, listing the available ones) a hypervisor with no driver here."""
    available = node.drivers.names(HYPERVISORS)
    if value in available:
        return
    close = [n for n in available if n.lower() == value.lower()] or \
        difflib.get_close_matches(value, available, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    shown = ", ".join(available) or "none (enable a hypervisor plugin such as kvm or simulator)"
    raise ZError(INVALID_ARGUMENT, "invalid argument",
                 f"parameter 'hypervisorType' of {api}: no hypervisor {value!r} is available"
                 f"{hint}; available: {shown}")


def _insert_cluster(session: Session, spec: ClusterSpec, api: ApiContext) -> ClusterVO:
    get_row(session, ZoneVO, "ZoneVO", spec.zone_uuid)  # it may have gone since the check
    cluster = ClusterVO(zoneUuid=spec.zone_uuid, name=spec.name, description=spec.description,
                        state="Enabled", hypervisorType=spec.hypervisor_type, type=spec.type,
                        architecture=spec.architecture)
    if spec.uuid is not None:
        cluster.uuid = spec.uuid
    add_resource(session, cluster, CLUSTER, owner_account_uuid=api.owner)
    session.flush()
    api.add_tags(session, cluster.uuid, CLUSTER)
    return cluster


class PersistCluster(PersistResource):
    """Write the cluster, its resource row and the call's tags in one transaction."""

    requires = ("api", "cluster_spec")
    provides = ("cluster",)
    model = ClusterVO
    insert = staticmethod(_insert_cluster)


def _get(session: Session, uuid: str) -> ClusterVO:
    return get_row(session, ClusterVO, CLUSTER, uuid)


# --------------------------------------------------------------------------- APIs


class CreateCluster(APIMessage, method="POST", path="/clusters", resource_type=CLUSTER,
                    result=INVENTORY):
    """Create a cluster in a zone, ``Enabled``; owned by the caller's account."""

    zoneUuid = Param(str, required=True, resource_type="ZoneVO")
    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    hypervisorType = Param(
        str, required=True,
        description="The name of a hypervisor driver available on the node (zcore.hypervisors;"
                    " ZStack's are " + ", ".join(ZSTACK_HYPERVISOR_TYPES) + ")")
    type = Param(str, valid_values=("zstack", "baremetal", "baremetal2"))
    architecture = Param(str, valid_values=("x86_64", "aarch64", "mips64el", "loongarch64"))
    resourceUuid = Param(str, description="The uuid the new cluster gets (32 lower-case hex "
                                          "digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    async def validate(self, ctx: ApiContext) -> None:
        refuse_tag_uuids(self.api_name, self.tagUuids)
        check_hypervisor_type(ctx.node, self.api_name, self.hypervisorType)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        spec = ClusterSpec(self.zoneUuid, self.name, self.hypervisorType, self.description,
                           self.type or "zstack", self.architecture, self.resourceUuid)
        flow = await ctx.node.run_flow("cluster-create", {"api": ctx, "cluster_spec": spec})
        cluster = await ctx.run(_get, flow["cluster"].uuid)
        return {"inventory": ctx.inventory(CLUSTER, cluster)}


class UpdateCluster(APIMessage, method="PUT", path="/clusters/{uuid}/actions",
                    resource_type=CLUSTER, result=INVENTORY):
    """Change a cluster's name or description; only the parameters given."""

    uuid = Param(str, required=True, resource_type=CLUSTER)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> ClusterVO:
            cluster = _get(session, self.uuid)
            if self.name is not None:
                cluster.name = self.name
            if self.description is not None:
                cluster.description = self.description
            session.flush()
            return cluster

        return {"inventory": ctx.inventory(CLUSTER, await ctx.run(change))}


class ChangeClusterState(APIMessage, method="PUT", path="/clusters/{uuid}/actions",
                         resource_type=CLUSTER, result=INVENTORY):
    """``enable`` makes a cluster ``Enabled``, ``disable`` makes it ``Disabled``."""

    uuid = Param(str, required=True, resource_type=CLUSTER)
    stateEvent = Param(str, required=True, valid_values=tuple(STATE_EVENTS))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> ClusterVO:
            cluster = _get(session, self.uuid)
            cluster.state = STATE_EVENTS[self.stateEvent]
            session.flush()
            return cluster

        return {"inventory": ctx.inventory(CLUSTER, await ctx.run(change))}


class DeleteCluster(APIMessage, method="DELETE", path="/clusters/{uuid}",
                    resource_type=CLUSTER, result={}):
    """Delete a cluster (and, through the cascade plugin, what belongs to it)."""

    uuid = Param(str, required=True, resource_type=CLUSTER)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ctx.delete(CLUSTER, self.uuid, self.deleteMode, delete_rows(ClusterVO, CLUSTER))
        return {}


class QueryCluster(QueryMessage, path="/clusters", resource=CLUSTER):
    """Query clusters; ``zone.<field>`` reaches the fields of their zone."""


APIS: tuple[type[APIMessage], ...] = (CreateCluster, UpdateCluster, ChangeClusterState,
                                      DeleteCluster, QueryCluster)
