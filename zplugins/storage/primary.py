"""Primary storage: where volumes live, attached to clusters.

Resources: ``PrimaryStorageVO`` (``org.zstack.header.storage.primary.PrimaryStorageInventory``)
in a zone (``CascadeEdge("PrimaryStorageVO", "ZoneVO", field="zoneUuid")``: deleting a zone
deletes its primary storage through the cascade plugin, or is refused without it), attached to
clusters through ``PrimaryStorageClusterRefVO`` (the inventory's ``attachedClusterUuids``;
deleting a cluster detaches it, by ``ON DELETE CASCADE``). Queries reach across:
``QueryPrimaryStorage zone.name=z1``, ``cluster.uuid=...``, ``cluster.host.uuid=...``;
``QueryCluster primaryStorage.name=ps1``, ``QueryZone primaryStorage.type=NFS``.

APIs (as ZStack's): AttachPrimaryStorageToCluster, DetachPrimaryStorageFromCluster,
ChangePrimaryStorageState, ReconnectPrimaryStorage, DeletePrimaryStorage,
QueryPrimaryStorage, GetPrimaryStorageCapacity. Each backend's ``Add...PrimaryStorage`` comes
from its feature plugin (``localstorage``, ``nfs``, ``simulator``) through
:class:`zplugins.storage.public.AddPrimaryStorageMessage`; the backends are drivers in
``zcore.primary_storage`` (:mod:`zplugins.storage.primary_driver`).

Chains (``primary_flows/`` beside this file): ``primary-storage-add``,
``primary-storage-attach`` (write the attachment, then prepare every connected host of the
cluster; a failure rolls both back), ``primary-storage-detach`` (release the hosts, then
remove the attachment; the VM issue inserts its "still in use" check first). Each host that
connects runs ``prepare-primary-storage-on-host``, inserted into the compute plugin's
``host-connect`` chain after ``connect-host``, so a host (re)joining a cluster gets the
cluster's storage prepared, or fails to connect.

Global configuration (ZStack's names): ``mevoco.overProvisioning.primaryStorage`` (1.0),
``primaryStorage.reservedCapacity`` (``1G``, kept free on every primary storage) and
``primaryStorage.ping.interval`` (60 s). Capacity is described in
:mod:`zplugins.storage.primary_ops`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from zcore import (
    ApiMessage,
    CascadeEdge,
    DriverNamespace,
    FlowChainFile,
    FlowInsertion,
    FlowStep,
    GlobalConfigOption,
    Migrations,
    QueryExpansion,
    ResourceType,
)
from zcore.api import ApiContext, APIMessage, Param, QueryMessage
from zcore.db import add_resource
from zcore.errors import INVALID_ARGUMENT, RESOURCE_NOT_FOUND, ZError
from zcore.flow import FlowContext, Step
from zcore.query import Condition, Query
from zplugins.storage import primary_ops as ops
from zplugins.storage.primary_driver import (
    PRIMARY_STORAGE,
    PrimaryStorageDriver,
    PrimaryStorageInfo,
)
from zplugins.storage.primary_models import PrimaryStorageClusterRefVO, PrimaryStorageVO

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.storage.public import PrimaryStorageSpec

__all__ = [
    "AttachPrimaryStorageToCluster",
    "ChangePrimaryStorageState",
    "DeletePrimaryStorage",
    "DetachPrimaryStorageFromCluster",
    "GetPrimaryStorageCapacity",
    "QueryPrimaryStorage",
    "ReconnectPrimaryStorage",
    "primary_storage_inventory",
]

_HERE = Path(__file__).resolve().parent
PS = "PrimaryStorageVO"
INVENTORY = {"inventory": "PrimaryStorageInventory"}

#: ``stateEvent`` of ChangePrimaryStorageState and the state each leads to.
STATE_EVENTS = {"enable": "Enabled", "disable": "Disabled", "maintain": "Maintenance"}
DELETE_MODES = ("Permissive", "Enforcing")


def primary_storage_inventory(ps: PrimaryStorageVO) -> dict[str, Any]:
    """The fields of ZStack's PrimaryStorageInventory, in its order."""
    return {"uuid": ps.uuid, "zoneUuid": ps.zoneUuid, "name": ps.name, "url": ps.url,
            "description": ps.description, "totalCapacity": ps.totalCapacity,
            "availableCapacity": ps.availableCapacity,
            "totalPhysicalCapacity": ps.totalPhysicalCapacity,
            "availablePhysicalCapacity": ps.availablePhysicalCapacity,
            "systemUsedCapacity": ps.systemUsedCapacity, "type": ps.type, "state": ps.state,
            "status": ps.status, "mountPath": ps.mountPath, "createDate": ps.createDate,
            "lastOpDate": ps.lastOpDate, "attachedClusterUuids": ps.attachedClusterUuids}


# --------------------------------------------------------------------------- hooks


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(PS, model=PrimaryStorageVO,
                       inventory="org.zstack.header.storage.primary.PrimaryStorageInventory",
                       description="Primary storage: where volumes live, attached to clusters",
                       to_inventory=primary_storage_inventory,
                       delete=ops.delete_primary_storage,
                       hidden=("reservedCapacity", "allocatedCapacity"))


def db_migrations() -> Iterator[Migrations]:
    yield Migrations("storage", _HERE / "primary_migrations")


def cascade_edges() -> Iterator[CascadeEdge]:
    yield CascadeEdge(PS, "ZoneVO", field="zoneUuid")


def query_expansions() -> Iterator[QueryExpansion]:
    yield QueryExpansion(PS, "zone", "ZoneVO", local_key="zoneUuid")
    yield QueryExpansion(PS, "cluster", "ClusterVO",
                         through=(PrimaryStorageClusterRefVO, "primaryStorageUuid",
                                  "clusterUuid"))
    yield QueryExpansion("ClusterVO", "primaryStorage", PS,
                         through=(PrimaryStorageClusterRefVO, "clusterUuid",
                                  "primaryStorageUuid"))
    yield QueryExpansion("ZoneVO", "primaryStorage", PS, foreign_key="zoneUuid")


def driver_namespaces() -> Iterator[DriverNamespace]:
    yield DriverNamespace(PRIMARY_STORAGE, PrimaryStorageDriver,
                          "Primary storage backends, picked by a primary storage's type")


def global_configs() -> Iterator[GlobalConfigOption]:
    yield GlobalConfigOption(
        *ops.RATIO, float, 1.0,
        "Over-provisioning ratio of primary storage: totalCapacity is the physical capacity "
        "times this", validator=ops.check_ratio)
    yield GlobalConfigOption(
        *ops.RESERVED, str, "1G",
        "Capacity kept free on every primary storage (bytes, or with K, M, G, T: 1G); not "
        "counted in availableCapacity", validator=ops.check_size)
    yield GlobalConfigOption(
        *ops.PING_INTERVAL, int, 60,
        "Seconds between pings of every primary storage (a failing one becomes "
        "Disconnected, a disconnected one that answers is reconnected)", min=1)


def flow_steps() -> Iterator[FlowStep]:
    yield FlowStep("persist-primary-storage", PersistPrimaryStorage())
    yield FlowStep("connect-primary-storage", ConnectPrimaryStorage())
    yield FlowStep("attach-primary-storage-to-cluster", ops.AttachToCluster())
    yield FlowStep("prepare-primary-storage-on-cluster-hosts", ops.PrepareClusterHosts())
    yield FlowStep("release-primary-storage-on-cluster-hosts", ops.ReleaseClusterHosts())
    yield FlowStep("detach-primary-storage-from-cluster", ops.DetachFromCluster())
    yield FlowStep("prepare-primary-storage-on-host", ops.PrepareOnConnectingHost())


def flow_chains() -> Iterator[FlowChainFile]:
    for path in sorted((_HERE / "primary_flows").glob("*.yaml")):
        yield FlowChainFile(path)


def flow_insertions() -> Iterator[FlowInsertion]:
    from zplugins.compute.public import HOST_CONNECT_CHAIN

    yield FlowInsertion(HOST_CONNECT_CHAIN, "prepare-primary-storage-on-host",
                        after="connect-host")


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)


async def node_starting(node: Node) -> None:
    from zcore import StartupError

    wrong = []
    for name in node.drivers.names(PRIMARY_STORAGE):
        driver = node.drivers.get(PRIMARY_STORAGE, name)
        declared = getattr(driver, "type", None)
        if declared != name:
            wrong.append(f"driver '{name}' ({driver.__module__}.{driver.__qualname__}) declares "
                         f"type {declared!r}; it must be {name!r}, its entry-point name in "
                         f"{PRIMARY_STORAGE}")
    if wrong:
        raise StartupError("primary storage drivers are inconsistent:\n"
                           + "\n".join(f"  - {w}" for w in wrong))

    async def recompute(_old: Any, _new: Any) -> None:
        ratio, reserved = ops.settings(node)
        await node.db.run(ops.recompute_all, ratio, reserved)

    node.global_config.watch(*ops.RATIO, recompute)
    node.global_config.watch(*ops.RESERVED, recompute)
    node.spawn(ops.ping_loop(node), name="primary-storage-ping")


# --------------------------------------------------------------------------- adding


def _insert(session: Session, node: Node, spec: PrimaryStorageSpec,
            api: ApiContext) -> PrimaryStorageVO:
    driver = ops.driver_for(node, spec.type)
    row = PrimaryStorageVO(zoneUuid=spec.zone_uuid, name=spec.name, url=spec.url,
                           description=spec.description, type=spec.type, state="Enabled",
                           status="Connecting", totalCapacity=0, availableCapacity=0,
                           totalPhysicalCapacity=0, availablePhysicalCapacity=0,
                           systemUsedCapacity=0, reservedCapacity=0, allocatedCapacity=0)
    if spec.uuid is not None:
        row.uuid = spec.uuid
    add_resource(session, row, PS, owner_account_uuid=api.owner)
    row.mountPath = driver.mount_path(row.uuid, spec.url)
    if spec.physical is not None:
        row.totalPhysicalCapacity = spec.physical.total_physical
        row.availablePhysicalCapacity = spec.physical.available_physical
    session.flush()
    api.add_tags(session, row.uuid, PS)
    return row


class PersistPrimaryStorage(Step):
    """Write the primary storage (``Connecting``), its resource row and the call's tags."""

    requires = ("api", "primary_storage_spec")
    provides = ("primary_storage",)

    async def run(self, ctx: FlowContext) -> None:
        api: ApiContext = ctx["api"]
        ctx["primary_storage"] = await api.run(_insert, api.node, ctx["primary_storage_spec"],
                                               api)

    async def rollback(self, ctx: FlowContext) -> None:
        row = ctx.get("primary_storage")
        if row is not None:
            await ctx["api"].run(ops.delete_rows, row.uuid)


class ConnectPrimaryStorage(Step):
    """Reach the storage through its driver; its capacity; ``Connected``."""

    requires = ("api", "primary_storage")

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        ps = PrimaryStorageInfo.of(ctx["primary_storage"])
        capacity = await ops.driver_for(node, ps.type).connect(node, ps)

        def connected(session: Session) -> None:
            ops.sync_capacity(session, node, ps.uuid, capacity)
            ops.set_status(session, ps.uuid, "Connected")

        await node.db.run(connected)


# --------------------------------------------------------------------------- APIs


async def _inventory(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    return {"inventory": ctx.inventory(PS, await ctx.run(ops.load, uuid))}


def _zones(session: Session, node: Node, ps_uuid: str, cluster_uuid: str
           ) -> tuple[str, str, list[str]]:
    ps = ops.get_row(session, ps_uuid)
    # Through the query engine: the compute plugin's models are its own.
    found = node.query.run(session, Query("ClusterVO", (Condition("uuid", "=", cluster_uuid),),
                                          limit=1))
    if not found.rows:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"ClusterVO {cluster_uuid} does not exist (any more)")
    return ps.zoneUuid, found.rows[0].zoneUuid, ps.attachedClusterUuids


class AttachPrimaryStorageToCluster(APIMessage, method="POST",
                                    path="/clusters/{clusterUuid}/primary-storage/"
                                         "{primaryStorageUuid}",
                                    resource_type=PS, result=INVENTORY):
    """Attach a primary storage to a cluster of its zone, preparing it on every connected
    host of the cluster (a failure on any host undoes the attachment: ``PS.1001``)."""

    clusterUuid = Param(str, required=True, resource_type="ClusterVO")
    primaryStorageUuid = Param(str, required=True, resource_type=PS)

    async def validate(self, ctx: ApiContext) -> None:
        ps_zone, cluster_zone, attached = await ctx.run(_zones, ctx.node,
                                                        self.primaryStorageUuid,
                                                        self.clusterUuid)
        if ps_zone != cluster_zone:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"cluster {self.clusterUuid} is in zone {cluster_zone} and primary "
                         f"storage {self.primaryStorageUuid} in zone {ps_zone}; a primary "
                         "storage is attached only to clusters of its own zone")
        if self.clusterUuid in attached:
            raise ops.already_attached(self.primaryStorageUuid, self.clusterUuid)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ops.attach(ctx.node, self.primaryStorageUuid, self.clusterUuid)
        return await _inventory(ctx, self.primaryStorageUuid)


class DetachPrimaryStorageFromCluster(APIMessage, method="DELETE",
                                      path="/clusters/{clusterUuid}/primary-storage/"
                                           "{primaryStorageUuid}",
                                      resource_type=PS, result=INVENTORY):
    """Detach a primary storage from a cluster, releasing it on the cluster's hosts."""

    primaryStorageUuid = Param(str, required=True, resource_type=PS)
    clusterUuid = Param(str, required=True, resource_type="ClusterVO")

    async def validate(self, ctx: ApiContext) -> None:
        attached = await ctx.run(ops.attached_clusters, self.primaryStorageUuid)
        if self.clusterUuid not in attached:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"primary storage {self.primaryStorageUuid} is not attached to "
                         f"cluster {self.clusterUuid}; it is attached to: "
                         f"{', '.join(attached) or 'no cluster'}")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ops.detach(ctx.node, self.primaryStorageUuid, self.clusterUuid)
        return await _inventory(ctx, self.primaryStorageUuid)


class ChangePrimaryStorageState(APIMessage, method="PUT", path="/primary-storage/{uuid}/actions",
                                resource_type=PS, result=INVENTORY):
    """``enable`` makes it ``Enabled``, ``disable`` ``Disabled`` (no new volumes),
    ``maintain`` ``Maintenance``. ``deleting`` is ZStack's internal event: use
    DeletePrimaryStorage."""

    uuid = Param(str, required=True, resource_type=PS)
    stateEvent = Param(str, required=True, valid_values=(*STATE_EVENTS, "deleting"))

    async def validate(self, ctx: ApiContext) -> None:
        if self.stateEvent not in STATE_EVENTS:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'stateEvent' of {self.api_name}: 'deleting' is set by "
                         "DeletePrimaryStorage itself; call DeletePrimaryStorage, or use one "
                         f"of {', '.join(STATE_EVENTS)}")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> None:
            ops.get_row(session, self.uuid)
            session.execute(update(PrimaryStorageVO).where(PrimaryStorageVO.uuid == self.uuid)
                            .values(state=STATE_EVENTS[self.stateEvent]))

        await ops.queue(ctx.node, self.uuid, lambda: ctx.run(change))
        return await _inventory(ctx, self.uuid)


class ReconnectPrimaryStorage(APIMessage, method="PUT", path="/primary-storage/{uuid}/actions",
                              resource_type=PS, result=INVENTORY):
    """Connect again and prepare it again on every connected host of its clusters; the
    capacity is read again. A failure leaves it ``Disconnected`` (``PS.1003``)."""

    uuid = Param(str, required=True, resource_type=PS)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ops.reconnect(ctx.node, self.uuid)
        return await _inventory(ctx, self.uuid)


class DeletePrimaryStorage(APIMessage, method="DELETE", path="/primary-storage/{uuid}",
                           resource_type=PS, result={}):
    """Detach it from every cluster (releasing it on their hosts), then delete it."""

    uuid = Param(str, required=True, resource_type=PS)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        async def work() -> None:
            await ops.detach_all(ctx.node, self.uuid, self.deleteMode)
            await ctx.delete(PS, self.uuid, self.deleteMode, ops.delete_rows)

        await ops.queue(ctx.node, self.uuid, work)
        return {}


class QueryPrimaryStorage(QueryMessage, path="/primary-storage", resource=PS):
    """Query primary storage; ``zone.``, ``cluster.`` (and on, ``cluster.host.``) reach
    across."""


class GetPrimaryStorageCapacity(APIMessage, method="GET", path="/primary-storage/capacities",
                                result={"totalCapacity": "long", "availableCapacity": "long",
                                        "totalPhysicalCapacity": "long",
                                        "availablePhysicalCapacity": "long"}):
    """The summed capacity of the primary storage in the given zones, attached to the given
    clusters, or named; ``all`` for every one the caller may see."""

    zoneUuids = Param(list, resource_type="ZoneVO")
    clusterUuids = Param(list, resource_type="ClusterVO")
    primaryStorageUuids = Param(list, resource_type=PS)
    all = Param(bool, default=False, api_type="boolean")

    async def validate(self, ctx: ApiContext) -> None:
        if not (self.all or self.zoneUuids or self.clusterUuids or self.primaryStorageUuids):
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"{self.api_name} needs zoneUuids, clusterUuids, primaryStorageUuids "
                         "or all=true")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        account = ctx.caller.filter_account

        def total(session: Session) -> dict[str, Any]:
            from zcore.db import ResourceVO

            model = PrimaryStorageVO
            where = []
            if not self.all:
                if self.zoneUuids:
                    where.append(model.zoneUuid.in_(self.zoneUuids))
                if self.clusterUuids:
                    where.append(model.uuid.in_(
                        select(PrimaryStorageClusterRefVO.primaryStorageUuid).where(
                            PrimaryStorageClusterRefVO.clusterUuid.in_(self.clusterUuids))))
                if self.primaryStorageUuids:
                    where.append(model.uuid.in_(self.primaryStorageUuids))
            if account is not None:
                where.append(model.uuid.in_(select(ResourceVO.uuid).where(
                    ResourceVO.ownerAccountUuid == account)))
            sums = session.execute(select(
                func.coalesce(func.sum(model.totalCapacity), 0),
                func.coalesce(func.sum(model.availableCapacity), 0),
                func.coalesce(func.sum(model.totalPhysicalCapacity), 0),
                func.coalesce(func.sum(model.availablePhysicalCapacity), 0)).where(*where)).one()
            return {"totalCapacity": int(sums[0]), "availableCapacity": int(sums[1]),
                    "totalPhysicalCapacity": int(sums[2]),
                    "availablePhysicalCapacity": int(sums[3])}

        return await ctx.run(total)


APIS: tuple[type[APIMessage], ...] = (
    AttachPrimaryStorageToCluster, DetachPrimaryStorageFromCluster, ChangePrimaryStorageState,
    ReconnectPrimaryStorage, DeletePrimaryStorage, QueryPrimaryStorage,
    GetPrimaryStorageCapacity)
