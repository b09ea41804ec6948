"""What primary storage does: capacity, attaching, detaching, connecting, pinging, deleting.

Capacity (bytes; the global configuration below is ZStack's):

* ``totalPhysicalCapacity``/``availablePhysicalCapacity``: what the storage reported last,
  through its driver (``connect``, or ``combine`` of what its hosts reported when it was
  prepared on them: local storage sums its hosts, NFS takes any host's view of the export);
* ``systemUsedCapacity``: physical space used by others than us (total minus available
  physical; volumes arrive with the VM issue, which subtracts what they occupy);
* ``totalCapacity`` = ``totalPhysicalCapacity`` × ``mevoco.overProvisioning.primaryStorage``
  (default 1.0): the virtual capacity volumes are reserved against;
* ``availableCapacity`` = ``totalCapacity`` − ``systemUsedCapacity`` − the kept-free
  ``primaryStorage.reservedCapacity`` (default ``1G``) − what volumes reserved, never below 0.

The reservations are kept in a hidden column (``allocatedCapacity``). Every write of these
columns is an UPDATE whose new ``availableCapacity`` the database computes from the
reservations it holds at that moment (the first UPDATE of a transaction locks the row), so a
reservation (:func:`zplugins.storage.public.reserve_capacity`, a conditional UPDATE) is never
lost or double-counted, and the database's CHECK constraint refuses a negative value in any
case. Changing either global configuration recomputes every primary storage.

The hosts' reports count while the host is connected as far as the storage knows: a host
whose connection fails stops counting; a host deleted stops counting at the next ping of the
storage (``primaryStorage.ping.interval``), which recomputes the capacity from the reports
left.

Operations on one primary storage (attach, detach, reconnect, state, delete, ping) run one at
a time in the sync queue ``PrimaryStorageVO-<uuid>``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import bindparam, case, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore.db import delete_resource, lock_for_update, table_of, write_held
from zcore.errors import DELETE_FAILED, INVALID_ARGUMENT, RESOURCE_NOT_FOUND, ZError
from zcore.flow import FlowContext, Step
from zplugins.storage.primary_driver import (
    PRIMARY_STORAGE,
    PS_CONNECT_FAILED,
    Capacity,
    PrimaryStorageDriver,
    PrimaryStorageInfo,
)
from zplugins.storage.primary_models import (
    PrimaryStorageClusterRefVO,
    PrimaryStorageHostRefVO,
    PrimaryStorageVO,
)

if TYPE_CHECKING:
    from zcore.api import Caller
    from zcore.node import Node
    from zplugins.compute.public import HostInfo

log = logging.getLogger("zplugins.storage.primary")

T = TypeVar("T")

PS = "PrimaryStorageVO"

#: ZStack's global configuration of primary storage capacity.
RATIO = ("mevoco", "overProvisioning.primaryStorage")
RESERVED = ("primaryStorage", "reservedCapacity")
PING_INTERVAL = ("primaryStorage", "ping.interval")

#: Seconds between looks at the clock of the ping loop.
PING_TICK = 0.5
#: How many primary storages the periodic ping checks at once.
PING_CONCURRENCY = 16

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)B?\s*$", re.IGNORECASE)
_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_size(text: str) -> int:
    """Bytes of a size such as ``1G``, ``500M``, ``2TB`` or ``4096`` (powers of 1024)."""
    match = _SIZE.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a size: give bytes or a number with K, M, G, T or "
                         "P (powers of 1024), e.g. 1G")
    return int(match.group(1)) * 1024 ** _UNITS[match.group(2).upper()]


#: The largest ratio accepted: capacities must stay far inside a 64-bit integer.
MAX_RATIO = 1000.0
#: The largest capacity written (bytes, 4 EiB): sums of many storages stay within 64 bits.
MAX_BYTES = 2 ** 62


def check_ratio(value: float) -> None:
    if not 0 < value <= MAX_RATIO:
        raise ValueError(f"the over-provisioning ratio must be greater than 0 and at most "
                         f"{MAX_RATIO:g}")


def check_size(value: str) -> None:
    if parse_size(value) > MAX_BYTES:
        raise ValueError(f"{value!r} is more than 4 EiB")


def queue(node: Node, ps_uuid: str, work: Callable[[], Awaitable[T]]) -> Awaitable[T]:
    """Run ``work`` in the primary storage's sync queue: one operation at a time."""
    return node.queues.run(f"{PS}-{ps_uuid}", 1, work)


def driver_for(node: Node, type_name: str) -> PrimaryStorageDriver:
    driver: PrimaryStorageDriver = node.drivers.create(PRIMARY_STORAGE, type_name)
    return driver


def settings(node: Node) -> tuple[float, int]:
    """The over-provisioning ratio and the bytes kept free, from the global configuration."""
    return (float(node.global_config.get(*RATIO)),
            parse_size(node.global_config.get(*RESERVED)))


def get_row(session: Session, uuid: str) -> PrimaryStorageVO:
    row = session.get(PrimaryStorageVO, uuid, populate_existing=True)
    if row is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"{PS} {uuid} does not exist (any more)")
    return row


def load(session: Session, uuid: str) -> PrimaryStorageVO:
    """The row with its attached clusters loaded, for an inventory."""
    return get_row(session, uuid)


def info(session: Session, uuid: str) -> PrimaryStorageInfo:
    return PrimaryStorageInfo.of(get_row(session, uuid))


# --------------------------------------------------------------------------- capacity


def _available(total: Any, system_used: Any, reserved: Any) -> Any:
    # Only allocatedCapacity is read from the row, and no statement that uses this
    # expression assigns it: MySQL evaluates SET clauses left to right with new values.
    free = total - system_used - reserved - PrimaryStorageVO.allocatedCapacity
    return case((free < 0, 0), else_=free)


def write_capacity(session: Session, uuid: str, physical: Capacity | None, ratio: float,
                   reserved: int) -> None:
    """Set the physical capacity (or keep it, for ``None``) and recompute the rest."""
    row = get_row(session, uuid)
    if physical is None:
        physical = Capacity(row.totalPhysicalCapacity, row.availablePhysicalCapacity)
    total_physical = min(physical.total_physical, MAX_BYTES)
    available_physical = min(physical.available_physical, total_physical)
    system_used = total_physical - available_physical
    total = min(int(total_physical * ratio), MAX_BYTES)
    if (row.totalPhysicalCapacity, row.availablePhysicalCapacity, row.systemUsedCapacity,
            row.totalCapacity, row.reservedCapacity) == \
            (total_physical, available_physical, system_used, total, reserved):
        return  # availableCapacity already follows from these and the reservations
    session.execute(
        update(PrimaryStorageVO).where(PrimaryStorageVO.uuid == uuid).values(
            totalPhysicalCapacity=total_physical,
            availablePhysicalCapacity=available_physical,
            systemUsedCapacity=system_used,
            totalCapacity=total,
            reservedCapacity=reserved,
            availableCapacity=_available(total, system_used, reserved),
        ).execution_options(synchronize_session=False))


def recompute_all(session: Session, ratio: float, reserved: int) -> int:
    """Recompute every primary storage's capacity for new global configuration values."""
    uuids = list(session.scalars(select(PrimaryStorageVO.uuid)))
    for uuid in uuids:
        write_capacity(session, uuid, None, ratio, reserved)
    return len(uuids)


_PS_TABLE = table_of(PrimaryStorageVO)
# Built once (this runs for every volume created): a conditional UPDATE of the capacity.
_RESERVE = (update(_PS_TABLE)
            .where(_PS_TABLE.c.uuid == bindparam("ps_uuid"),
                   _PS_TABLE.c.availableCapacity >= bindparam("size"))
            .values(availableCapacity=_PS_TABLE.c.availableCapacity - bindparam("size"),
                    allocatedCapacity=_PS_TABLE.c.allocatedCapacity + bindparam("size")))


def reserve(session: Session, uuid: str, size: int) -> bool:
    """Reserve ``size`` bytes if that many are available; whether it was reserved."""
    if size < 0:
        raise ValueError(f"cannot reserve a negative size ({size})")
    lock_for_update(session, PrimaryStorageVO, uuid)
    done = session.connection().execute(_RESERVE, {"ps_uuid": uuid, "size": size})
    return done.rowcount == 1


def reserve_first(session: Session, candidates: Any, size: int) -> str | None:
    """Reserve ``size`` bytes on the first primary storage of ``candidates`` (a query of
    uuids, best first) in one round trip; that uuid. ``None`` when it did not fit (none
    fits, or another reservation came first): then read the candidates and :func:`reserve`
    one after the other.

    Where the database says which row an ``UPDATE`` changed (PostgreSQL, SQLite), one
    statement: ``UPDATE ... WHERE uuid = (the first) AND availableCapacity >= size
    RETURNING uuid``. On MariaDB and MySQL the first is read with a locking read (``...
    LIMIT 1 FOR UPDATE``: the row, as read, is this transaction's until it ends; the writes
    held before go with it), and its ``UPDATE`` is held back to go with the writer's next
    statement, its row count checked then (:func:`~zcore.db.write_held`).
    """
    if size < 0:
        raise ValueError(f"cannot reserve a negative size ({size})")
    connection = session.connection()
    if not connection.dialect.update_returning:
        first = session.scalars(candidates.limit(1).with_for_update()).first()
        if first is None or not write_held(session, _RESERVE, {"ps_uuid": first,
                                                               "size": size}):
            return None
        return first
    c = _PS_TABLE.c
    first = candidates.limit(1).correlate(None).scalar_subquery()
    return connection.execute(
        update(_PS_TABLE).where(c.uuid == first, c.availableCapacity >= size)
        .values(availableCapacity=c.availableCapacity - size,
                allocatedCapacity=c.allocatedCapacity + size)
        .returning(c.uuid)).scalar()


def release(session: Session, uuid: str, size: int) -> None:
    """Give back ``size`` reserved bytes (never more than are reserved)."""
    if size < 0:
        raise ValueError(f"cannot release a negative size ({size})")
    allocated = PrimaryStorageVO.allocatedCapacity
    session.execute(
        update(PrimaryStorageVO).where(PrimaryStorageVO.uuid == uuid)
        .values(allocatedCapacity=case((allocated < size, 0), else_=allocated - size))
        .execution_options(synchronize_session=False))
    # A second statement, so that the new allocatedCapacity is what it reads.
    session.execute(
        update(PrimaryStorageVO).where(PrimaryStorageVO.uuid == uuid)
        .values(availableCapacity=_available(PrimaryStorageVO.totalCapacity,
                                             PrimaryStorageVO.systemUsedCapacity,
                                             PrimaryStorageVO.reservedCapacity))
        .execution_options(synchronize_session=False))


def sync_capacity(session: Session, node: Node, uuid: str,
                  connected: Capacity | None = None) -> None:
    """The storage's physical capacity from its hosts' reports (through its driver's
    ``combine``), else ``connected`` (what ``connect`` said), else as it was."""
    row = get_row(session, uuid)
    reports = [Capacity(r.totalPhysicalCapacity, r.availablePhysicalCapacity)
               for r in session.scalars(select(PrimaryStorageHostRefVO).where(
                   PrimaryStorageHostRefVO.primaryStorageUuid == uuid,
                   PrimaryStorageHostRefVO.status == "Connected"))]
    physical = driver_for(node, row.type).combine(PrimaryStorageInfo.of(row), reports)
    ratio, reserved = settings(node)
    write_capacity(session, uuid, physical if physical is not None else connected, ratio,
                   reserved)


def record_reports(session: Session, uuid: str,
                   reports: dict[str, Capacity | None]) -> None:
    """Remember what each host reported (a row per host, replaced)."""
    for host_uuid, capacity in reports.items():
        total = capacity.total_physical if capacity else 0
        available = capacity.available_physical if capacity else 0
        ref = session.get(PrimaryStorageHostRefVO, (uuid, host_uuid), populate_existing=True)
        if ref is None:
            try:
                with session.begin_nested():
                    session.add(PrimaryStorageHostRefVO(
                        primaryStorageUuid=uuid, hostUuid=host_uuid, status="Connected",
                        totalPhysicalCapacity=total, availablePhysicalCapacity=available))
                continue
            except IntegrityError:
                # Prepared at the same time by an attachment and the host's connection, or
                # the host went away meanwhile.
                ref = session.get(PrimaryStorageHostRefVO, (uuid, host_uuid),
                                  populate_existing=True)
                if ref is None:
                    continue
        ref.status = "Connected"
        ref.totalPhysicalCapacity = total
        ref.availablePhysicalCapacity = available
    session.flush()


def forget_hosts(session: Session, uuid: str, host_uuids: Sequence[str]) -> None:
    if host_uuids:
        session.execute(delete(PrimaryStorageHostRefVO).where(
            PrimaryStorageHostRefVO.primaryStorageUuid == uuid,
            PrimaryStorageHostRefVO.hostUuid.in_(list(host_uuids))))


def set_status(session: Session, uuid: str, status: str) -> None:
    session.execute(update(PrimaryStorageVO).where(PrimaryStorageVO.uuid == uuid)
                    .values(status=status).execution_options(synchronize_session=False))


def attached_clusters(session: Session, uuid: str) -> list[str]:
    return list(session.scalars(
        select(PrimaryStorageClusterRefVO.clusterUuid)
        .where(PrimaryStorageClusterRefVO.primaryStorageUuid == uuid)
        .order_by(PrimaryStorageClusterRefVO.id)))


# --------------------------------------------------------------------------- attaching


class AttachToCluster(Step):
    """Write the attachment; a unique constraint makes a second one fail."""

    requires = ("primary_storage_uuid", "cluster_uuid")
    provides = ("cluster_ref_id",)

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        ctx["cluster_ref_id"] = await node.db.run(
            _insert_ref, ctx["primary_storage_uuid"], ctx["cluster_uuid"])

    async def rollback(self, ctx: FlowContext) -> None:
        ref_id = ctx.get("cluster_ref_id")
        if ref_id is not None:
            node: Node = ctx.services
            await node.db.run(_delete_ref, ref_id)


def _insert_ref(session: Session, ps_uuid: str, cluster_uuid: str) -> int:
    row = get_row(session, ps_uuid)
    if cluster_uuid in row.attachedClusterUuids:
        raise already_attached(ps_uuid, cluster_uuid)
    ref = PrimaryStorageClusterRefVO(primaryStorageUuid=ps_uuid, clusterUuid=cluster_uuid)
    try:
        with session.begin_nested():
            session.add(ref)
    except IntegrityError as exc:
        raise already_attached(ps_uuid, cluster_uuid) from exc
    return ref.id


def _delete_ref(session: Session, ref_id: int) -> None:
    session.execute(delete(PrimaryStorageClusterRefVO)
                    .where(PrimaryStorageClusterRefVO.id == ref_id))


def already_attached(ps_uuid: str, cluster_uuid: str) -> ZError:
    return ZError(INVALID_ARGUMENT, "invalid argument",
                  f"primary storage {ps_uuid} is already attached to cluster {cluster_uuid}")


class PrepareClusterHosts(Step):
    """Prepare the storage on every connected host of the cluster, through its driver."""

    requires = ("primary_storage_uuid", "cluster_uuid")
    provides = ("prepared_hosts",)

    async def run(self, ctx: FlowContext) -> None:
        from zplugins.compute.public import cluster_hosts

        node: Node = ctx.services
        uuid = ctx["primary_storage_uuid"]
        ps = await node.db.run(info, uuid)
        hosts = await cluster_hosts(node, ctx["cluster_uuid"])
        ctx["prepared_hosts"] = hosts
        reports = await driver_for(node, ps.type).attach(node, ps, hosts)
        await node.db.run(_record_and_sync, node, uuid, reports)

    async def rollback(self, ctx: FlowContext) -> None:
        hosts: list[HostInfo] | None = ctx.get("prepared_hosts")
        if not hosts:
            return
        node: Node = ctx.services
        uuid = ctx["primary_storage_uuid"]
        ps = await node.db.run(info, uuid)
        await driver_for(node, ps.type).detach(node, ps, hosts)
        await node.db.run(_forget_and_sync, node, uuid, [h.uuid for h in hosts])


def _record_and_sync(session: Session, node: Node, uuid: str,
                     reports: dict[str, Capacity | None]) -> None:
    record_reports(session, uuid, reports)
    sync_capacity(session, node, uuid)


def _forget_and_sync(session: Session, node: Node, uuid: str, hosts: list[str]) -> None:
    forget_hosts(session, uuid, hosts)
    sync_capacity(session, node, uuid)


# --------------------------------------------------------------------------- detaching


class ReleaseClusterHosts(Step):
    """Release the storage on the cluster's connected hosts (unmount); failures are logged."""

    requires = ("primary_storage_uuid", "cluster_uuid")

    async def run(self, ctx: FlowContext) -> None:
        from zplugins.compute.public import cluster_hosts

        node: Node = ctx.services
        ps = await node.db.run(info, ctx["primary_storage_uuid"])
        hosts = await cluster_hosts(node, ctx["cluster_uuid"])
        await driver_for(node, ps.type).detach(node, ps, hosts)


class DetachFromCluster(Step):
    """Remove the attachment and what the cluster's hosts reported; recompute capacity."""

    requires = ("primary_storage_uuid", "cluster_uuid")

    async def run(self, ctx: FlowContext) -> None:
        from zplugins.compute.public import cluster_hosts

        node: Node = ctx.services
        hosts = await cluster_hosts(node, ctx["cluster_uuid"], connected_only=False)
        await node.db.run(_detach_rows, node, ctx["primary_storage_uuid"],
                          ctx["cluster_uuid"], [h.uuid for h in hosts])


def _detach_rows(session: Session, node: Node, uuid: str, cluster_uuid: str,
                 hosts: list[str]) -> None:
    session.execute(delete(PrimaryStorageClusterRefVO).where(
        PrimaryStorageClusterRefVO.primaryStorageUuid == uuid,
        PrimaryStorageClusterRefVO.clusterUuid == cluster_uuid))
    forget_hosts(session, uuid, hosts)
    sync_capacity(session, node, uuid)


ATTACH_CHAIN = "primary-storage-attach"
DETACH_CHAIN = "primary-storage-detach"


async def attach(node: Node, uuid: str, cluster_uuid: str) -> None:
    """Run the attach chain in the storage's queue."""
    await queue(node, uuid, lambda: node.run_flow(
        ATTACH_CHAIN, {"primary_storage_uuid": uuid, "cluster_uuid": cluster_uuid}))


async def detach(node: Node, uuid: str, cluster_uuid: str) -> None:
    """Run the detach chain in the storage's queue."""
    await queue(node, uuid, lambda: _detach(node, uuid, cluster_uuid))


async def _detach(node: Node, uuid: str, cluster_uuid: str) -> None:
    attached = await node.db.run(attached_clusters, uuid)
    if cluster_uuid not in attached:
        raise ZError(INVALID_ARGUMENT, "invalid argument",
                     f"primary storage {uuid} is not attached to cluster {cluster_uuid}; "
                     f"it is attached to: {', '.join(attached) or 'no cluster'}")
    await node.run_flow(DETACH_CHAIN, {"primary_storage_uuid": uuid,
                                       "cluster_uuid": cluster_uuid})


# --------------------------------------------------------------------------- hosts connecting


class PrepareOnConnectingHost(Step):
    """In the host-connect chain: prepare every primary storage attached to the host's
    cluster on the host; a failure fails the host's connection."""

    requires = ("host",)
    provides = ("host_primary_storage",)

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        host: HostInfo = ctx["host"]
        prepared: list[PrimaryStorageInfo] = []
        ctx["host_primary_storage"] = prepared
        for ps in await node.db.run(_attached_to_cluster, host.clusterUuid):
            reports = await driver_for(node, ps.type).attach(node, ps, [host])
            prepared.append(ps)
            await node.db.run(_record_and_sync, node, ps.uuid, reports)

    async def rollback(self, ctx: FlowContext) -> None:
        # The host does not connect after all: it no longer counts for the storage until it
        # does. Nothing is released on it: VMs may still run there from the storage.
        node: Node = ctx.services
        host: HostInfo = ctx["host"]
        for ps in ctx.get("host_primary_storage") or ():
            await node.db.run(_forget_and_sync, node, ps.uuid, [host.uuid])


def _attached_to_cluster(session: Session, cluster_uuid: str) -> list[PrimaryStorageInfo]:
    rows = session.scalars(
        select(PrimaryStorageVO)
        .join(PrimaryStorageClusterRefVO,
              PrimaryStorageClusterRefVO.primaryStorageUuid == PrimaryStorageVO.uuid)
        .where(PrimaryStorageClusterRefVO.clusterUuid == cluster_uuid)
        .order_by(PrimaryStorageClusterRefVO.id))
    return [PrimaryStorageInfo.of(r) for r in rows]


# --------------------------------------------------------------------------- connecting


async def reconnect(node: Node, uuid: str) -> None:
    """Connect to the storage again and prepare it on every connected host of its clusters.

    The storage is ``Connecting`` meanwhile, ``Connected`` after, ``Disconnected`` with a
    ``PS.1003`` error (the cause attached) if any of it fails.
    """
    await queue(node, uuid, lambda: _reconnect(node, uuid))


async def _reconnect(node: Node, uuid: str) -> None:
    from zplugins.compute.public import cluster_hosts

    await node.db.run(set_status, uuid, "Connecting")
    try:
        ps = await node.db.run(info, uuid)
        driver = driver_for(node, ps.type)
        capacity = await driver.connect(node, ps)
        for cluster_uuid in await node.db.run(attached_clusters, uuid):
            hosts = await cluster_hosts(node, cluster_uuid)
            reports = await driver.attach(node, ps, hosts)
            await node.db.run(record_reports, uuid, reports)
        await node.db.run(sync_capacity, node, uuid, capacity)
    except ZError as exc:
        if exc.code == RESOURCE_NOT_FOUND:
            raise
        await node.db.run(set_status, uuid, "Disconnected")
        raise ZError(PS_CONNECT_FAILED, "cannot connect to primary storage",
                     f"primary storage {uuid}: {exc.description}: {exc.details}",
                     cause=exc) from exc
    await node.db.run(set_status, uuid, "Connected")


async def connected_hosts(node: Node, uuid: str) -> list[HostInfo]:
    """The connected hosts of every cluster the storage is attached to."""
    from zplugins.compute.public import cluster_hosts

    hosts: list[HostInfo] = []
    for cluster_uuid in await node.db.run(attached_clusters, uuid):
        hosts.extend(await cluster_hosts(node, cluster_uuid))
    return hosts


async def ping_all(node: Node) -> None:
    """Ping every primary storage; a failing one becomes ``Disconnected``, a disconnected one
    that answers is reconnected, and the capacity of the others is recomputed from what
    their hosts reported (hosts deleted since are gone from it)."""
    rows = await node.db.run(lambda s: s.execute(
        select(PrimaryStorageVO.uuid, PrimaryStorageVO.status)).all())
    limit = asyncio.Semaphore(PING_CONCURRENCY)

    async def one(uuid: str, status: str) -> None:
        async with limit:
            try:
                await queue(node, uuid, lambda: _ping(node, uuid, status))
            except Exception as exc:  # noqa: BLE001 - one storage must not stop the others
                log.warning("pinging primary storage %s failed: %s", uuid, exc)

    await asyncio.gather(*(one(uuid, status) for uuid, status in rows))


async def _ping(node: Node, uuid: str, status: str) -> None:
    try:
        ps = await node.db.run(info, uuid)
    except ZError:
        return  # deleted meanwhile
    if status == "Connecting":
        return
    try:
        await driver_for(node, ps.type).ping(node, ps, await connected_hosts(node, uuid))
    except ZError as exc:
        if status != "Disconnected":
            log.warning("primary storage %s (%s) does not answer, now Disconnected: %s",
                        ps.name, uuid, exc)
            await node.db.run(set_status, uuid, "Disconnected")
        return
    if status == "Disconnected":
        await _reconnect(node, uuid)
    else:
        await node.db.run(sync_capacity, node, uuid)


async def ping_loop(node: Node) -> None:
    """Ping every ``primaryStorage.ping.interval`` seconds; a new interval applies at once."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(PING_TICK)
        if loop.time() - last >= int(node.global_config.get(*PING_INTERVAL)):
            last = loop.time()
            await ping_all(node)


# --------------------------------------------------------------------------- deleting


async def delete_primary_storage(node: Node, caller: Caller, uuid: str, mode: str) -> None:
    """Detach the storage from every cluster, then delete it (``ResourceType.delete``)."""
    await queue(node, uuid, lambda: _delete(node, uuid, mode))


async def detach_all(node: Node, uuid: str, mode: str) -> None:
    """Detach from every cluster. ``Permissive``: a failure stops with ``SYS.1004``;
    ``Enforcing``: it is logged and the attachment removed anyway."""
    for cluster_uuid in await node.db.run(attached_clusters, uuid):
        try:
            await node.run_flow(DETACH_CHAIN, {"primary_storage_uuid": uuid,
                                               "cluster_uuid": cluster_uuid})
        except ZError as exc:
            if mode != "Enforcing":
                raise ZError(DELETE_FAILED, f"cannot delete {PS} {uuid}",
                             f"detaching it from cluster {cluster_uuid} failed: {exc}",
                             cause=exc) from exc
            log.warning("deleting primary storage %s (Enforcing): detaching it from cluster "
                        "%s failed, removing the attachment anyway: %s", uuid, cluster_uuid,
                        exc)
            await node.db.run(_detach_rows, node, uuid, cluster_uuid, [])


async def _delete(node: Node, uuid: str, mode: str) -> None:
    await detach_all(node, uuid, mode)
    await node.db.run(delete_rows, uuid)


def delete_rows(session: Session, uuid: str) -> None:
    row = session.get(PrimaryStorageVO, uuid)
    if row is not None:
        delete_resource(session, row)

