"""The hosts of a node at run time: drivers, connecting, pinging, capacity.

Each node holds one :class:`HostService` (``node.app[HOSTS]``), made when the node starts. It
creates each hypervisor driver once, runs the chain ``host-connect`` for a host (serialized
per host in the sync queue ``host-<uuid>``), pings every connected or disconnected host
periodically, and keeps the capacity columns in line with the global configuration.

Capacity, following ZStack (``HostCpuOverProvisioningManager``): ``totalCpuCapacity`` is the
host's ``cpuNum`` times ``host.cpu.overProvisioning.ratio``; ``totalMemoryCapacity`` is the
memory the host reports. What is available is the total minus what is reserved:
``host.reservedMemory`` (kept for the host's own use; ZStack calls it ``kvm.reservedMemory``)
and, once VMs exist, what they reserve through conditional UPDATEs. Changing either setting
recomputes every host in one UPDATE that keeps what VMs reserved; an available capacity may
then go below zero when more is reserved than there is, and such a host takes no new VM.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from sqlalchemy import BigInteger, CursorResult, and_, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from zcore.api import Inventory
from zcore.db import utcnow
from zcore.errors import NOT_READY, RESOURCE_NOT_FOUND, ZError
from zcore.flow import FlowContext, FlowError, Step
from zplugins.compute.hypervisor import HYPERVISORS, HostFacts, HypervisorDriver
from zplugins.compute.models import ClusterVO, HostVO, VmInstanceVO

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "CATEGORY",
    "CONNECTED",
    "CONNECTING",
    "DISCONNECTED",
    "HOSTS",
    "HOST_CONNECT_CHAIN",
    "HOST_CONNECT_FAILED",
    "HOST_OPERATION_FAILED",
    "ConnectHost",
    "HostInfo",
    "HostService",
    "MarkHostConnected",
    "host_event",
    "parse_size",
    "service",
]

log = logging.getLogger("zplugins.compute.hosts")

HOST = "HostVO"

#: Error codes of the host family.
HOST_CONNECT_FAILED = "HOST.1000"
HOST_OPERATION_FAILED = "HOST.1001"

#: ``status``: what the node observes.
CONNECTING, CONNECTED, DISCONNECTED = "Connecting", "Connected", "Disconnected"

#: The chain that connects a host: when it is added, reconnected, or answers pings again.
HOST_CONNECT_CHAIN = "host-connect"

#: Global configuration (ZStack's names, category ``host``).
CATEGORY = "host"
PING_INTERVAL = "ping.interval"
PING_MAX_FAILURE = "ping.maxFailure"
PING_PARALLELISM = "ping.parallelismDegree"
CPU_RATIO = "cpu.overProvisioning.ratio"
RESERVED_MEMORY = "reservedMemory"

#: Seconds after which a host still ``Connecting`` is taken for one whose node stopped.
STALE_CONNECTING = 600

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_size(text: str) -> int:
    """Bytes from a size as ZStack writes them: ``1073741824``, ``512M``, ``1G``, ``2TB``."""
    found = _SIZE.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a size: write bytes, or a number followed by K, M, "
                         "G or T (1G, 512M)")
    return int(found.group(1)) * _UNITS[found.group(2).upper()]


@dataclass(frozen=True, slots=True)
class HostInfo:
    """A host as other plugins see it (see :mod:`zplugins.compute.public`)."""

    uuid: str
    name: str
    managementIp: str
    clusterUuid: str
    zoneUuid: str
    hypervisorType: str
    state: str
    status: str

    @classmethod
    def of(cls, row: HostVO) -> HostInfo:
        return cls(row.uuid, row.name, row.managementIp, row.clusterUuid, row.zoneUuid,
                   row.hypervisorType, row.state, row.status)

    def __str__(self) -> str:
        return f"{self.hypervisorType} host '{self.name}' ({self.uuid}) at {self.managementIp}"


HOSTS: web.AppKey[HostService] = web.AppKey("zplugins.compute.hosts")


def service(node: Node) -> HostService:
    """The node's host service; ``SYS.1010`` before the compute plugin has started."""
    try:
        return node.app[HOSTS]
    except KeyError:
        raise ZError(NOT_READY, "hosts are not ready",
                     "the compute plugin's host service has not started on this node") from None


# --------------------------------------------------------------------------- database work


def _host(session: Session, uuid: str) -> HostVO:
    row = session.get(HostVO, uuid)
    if row is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"HostVO {uuid} does not exist (any more)")
    return row


def _begin_connect(session: Session, uuid: str) -> tuple[HostInfo, HostFacts | None, str | None]:
    row = _host(session, uuid)
    row.status = CONNECTING
    session.flush()
    known = None
    if row.cpuNum is not None:
        known = HostFacts(cpuNum=row.cpuNum, cpuSockets=row.cpuSockets or 1,
                          totalMemory=row.totalMemoryCapacity, architecture=row.architecture)
    cluster = session.get(ClusterVO, row.clusterUuid)
    return HostInfo.of(row), known, cluster.architecture if cluster is not None else None


def _record_facts(session: Session, uuid: str, facts: HostFacts, ratio: int,
                  reserved: int) -> HostInfo:
    # One UPDATE that keeps what is reserved on the host (total - available). Each
    # "available" comes before its "total": MySQL assigns left to right, with new values.
    total_cpu = facts.cpuNum * ratio
    kept_memory = facts.totalMemory - reserved
    session.execute(
        update(HostVO).where(HostVO.uuid == uuid).ordered_values(
            (HostVO.availableCpuCapacity,
             HostVO.availableCpuCapacity + (total_cpu - HostVO.totalCpuCapacity)),
            (HostVO.totalCpuCapacity, total_cpu),
            (HostVO.availableMemoryCapacity,
             HostVO.availableMemoryCapacity
             + (kept_memory - (HostVO.totalMemoryCapacity - HostVO.reservedMemoryCapacity))),
            (HostVO.totalMemoryCapacity, facts.totalMemory),
            (HostVO.reservedMemoryCapacity, reserved),
            (HostVO.cpuNum, facts.cpuNum),
            (HostVO.cpuSockets, facts.cpuSockets),
            (HostVO.architecture, facts.architecture),
        ).execution_options(synchronize_session=False))
    return HostInfo.of(_host(session, uuid))


def host_event(host_uuid: str) -> str:
    """The garbage collector's event for host ``host_uuid``: fired when it connects again and
    when it is deleted (jobs waiting for it then finish or drop their work)."""
    return f"host-connected:{host_uuid}"


#: VM states that become ``Unknown`` when their host is ``Disconnected``: nobody can tell.
_KNOWN_ONLY_BY_HOST = ("Running", "Paused")


def _set_status(session: Session, uuid: str, status: str, only_if: str | None = None
                ) -> HostInfo | None:
    statement = update(HostVO).where(HostVO.uuid == uuid).values(status=status)
    if only_if is not None:
        statement = statement.where(HostVO.status == only_if)
    result = session.execute(statement.execution_options(synchronize_session=False))
    if cast(CursorResult[Any], result).rowcount == 0:
        return None
    if status == DISCONNECTED:
        # Until the host answers again (sync-vm-states then says what they are).
        session.execute(update(VmInstanceVO).where(
            VmInstanceVO.hostUuid == uuid, VmInstanceVO.state.in_(_KNOWN_ONLY_BY_HOST)
        ).values(state="Unknown").execution_options(synchronize_session=False))
    row = session.get(HostVO, uuid, populate_existing=True)
    return HostInfo.of(row) if row is not None else None


def _pingable(session: Session) -> list[HostInfo]:
    # A host Connecting for long was being connected by a node that stopped: ping it too.
    stale = utcnow() - timedelta(seconds=STALE_CONNECTING)
    rows = session.scalars(select(HostVO).where(or_(
        HostVO.status.in_((CONNECTED, DISCONNECTED)),
        and_(HostVO.status == CONNECTING, HostVO.lastOpDate < stale))))
    return [HostInfo.of(row) for row in rows]


def _apply_cpu_ratio(session: Session, ratio: int) -> int:
    total = sql_cast(HostVO.cpuNum, BigInteger) * ratio
    result = session.execute(
        update(HostVO).where(HostVO.cpuNum.is_not(None), HostVO.totalCpuCapacity != total)
        .ordered_values(
            (HostVO.availableCpuCapacity,
             HostVO.availableCpuCapacity + (total - HostVO.totalCpuCapacity)),
            (HostVO.totalCpuCapacity, total),
        ).execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount


def _apply_reserved_memory(session: Session, reserved: int) -> int:
    result = session.execute(
        update(HostVO).where(HostVO.cpuNum.is_not(None),
                             HostVO.reservedMemoryCapacity != reserved)
        .ordered_values(
            (HostVO.availableMemoryCapacity,
             HostVO.availableMemoryCapacity + (HostVO.reservedMemoryCapacity - reserved)),
            (HostVO.reservedMemoryCapacity, reserved),
        ).execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount


# --------------------------------------------------------------------------- the chain steps


class ConnectHost(Step):
    """``connect-host``: mark the host ``Connecting``, connect through its driver, record
    what it reports (capacity) and provide ``host`` (a :class:`HostInfo`).

    Rolled back (this step failing, or any later one) by marking the host ``Disconnected``.
    """

    requires = ("host_uuid",)
    provides = ("host",)

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        hosts = service(node)
        uuid = ctx["host_uuid"]
        info, known, cluster_architecture = await node.db.run(_begin_connect, uuid)
        ctx["host_connecting"] = info
        driver = hosts.driver(info.hypervisorType)
        try:
            facts = await driver.connect(node, info, known)
        except ZError:
            raise
        except Exception as exc:
            why = str(exc) or type(exc).__name__
            raise ZError(HOST_CONNECT_FAILED, "cannot connect host", why) from exc
        problem = _bad_facts(facts)
        if problem is None and cluster_architecture and facts.architecture and \
                facts.architecture != cluster_architecture:
            problem = (f"the host's CPU architecture is {facts.architecture} but cluster "
                       f"{info.clusterUuid} is for {cluster_architecture} hosts")
        if problem is not None:
            raise ZError(HOST_CONNECT_FAILED, "host reported wrong facts", problem)
        ratio, reserved = hosts.capacity_settings()
        ctx["host"] = await node.db.run(_record_facts, uuid, facts, ratio, reserved)

    async def rollback(self, ctx: FlowContext) -> None:
        if "host_connecting" in ctx:
            await ctx.services.db.run(_set_status, ctx["host_uuid"], DISCONNECTED)


def _bad_facts(facts: Any) -> str | None:
    if not isinstance(facts, HostFacts):
        return f"the hypervisor driver returned {type(facts).__name__}, not HostFacts"
    if facts.cpuNum < 1 or facts.cpuSockets < 1:
        return f"the host reports {facts.cpuNum} CPUs in {facts.cpuSockets} sockets"
    if facts.totalMemory < 1:
        return f"the host reports {facts.totalMemory} bytes of memory"
    return None


class MarkHostConnected(Step):
    """``mark-host-connected``: the last step of ``host-connect``; the host is ``Connected``."""

    requires = ("host",)

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        info = await node.db.run(_set_status, ctx["host_uuid"], CONNECTED)
        ctx["host"] = info if info is not None else replace(ctx["host"], status=CONNECTED)


# --------------------------------------------------------------------------- the service


class HostService:
    """One node's view of its hosts: drivers, connections, pings and capacity settings."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._drivers: dict[str, HypervisorDriver] = {}
        #: Pings failed in a row, by host uuid (this node's count).
        self.failures: dict[str, int] = {}
        self._reconnecting: dict[str, asyncio.Task[Any]] = {}
        self._changed = asyncio.Event()
        self._pinger: asyncio.Task[Any] | None = None
        self._unwatch: list[Any] = []

    # ----------------------------------------------------------------- life cycle

    async def start(self) -> None:
        config = self.node.global_config
        self._unwatch = [
            config.watch(CATEGORY, PING_INTERVAL, lambda old, new: self._changed.set()),
            config.watch(CATEGORY, CPU_RATIO, self._ratio_changed),
            config.watch(CATEGORY, RESERVED_MEMORY, self._reserved_changed),
        ]
        self._pinger = self.node.spawn(self._ping_loop(), name=f"host-ping-{self.node.uuid}")

    async def close(self) -> None:
        """Stop pinging (before the drivers go, so no host is marked down by the shutdown)."""
        for unwatch in self._unwatch:
            unwatch()
        tasks = [t for t in (self._pinger, *self._reconnecting.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for name, driver in list(self._drivers.items()):
            try:
                await driver.close()
            except Exception:
                log.exception("closing hypervisor driver %s failed", name)
        self._drivers.clear()

    # ----------------------------------------------------------------- drivers

    def driver(self, hypervisor_type: str) -> HypervisorDriver:
        """The node's instance of the driver of ``hypervisor_type``."""
        driver = self._drivers.get(hypervisor_type)
        if driver is None:
            cls = self.node.drivers.get(HYPERVISORS, hypervisor_type)
            missing = sorted(getattr(cls, "__abstractmethods__", ()))
            if missing:
                raise ZError(HOST_OPERATION_FAILED, "hypervisor driver is incomplete",
                             f"hypervisor driver '{hypervisor_type}' ({cls.__module__}."
                             f"{cls.__qualname__}) does not implement {', '.join(missing)}; "
                             "its hosts cannot be connected until its plugin does")
            driver = self._drivers[hypervisor_type] = cls()
        return driver

    def capacity_settings(self) -> tuple[int, int]:
        """The CPU over-provisioning ratio and the reserved memory in bytes, as set now."""
        config = self.node.global_config
        return (int(config.get(CATEGORY, CPU_RATIO)),
                parse_size(config.get(CATEGORY, RESERVED_MEMORY)))

    async def inventories(self, inventories: Sequence[Inventory]) -> list[Inventory]:
        """Host inventories with their hypervisor's fields and server class, in order."""
        out = list(inventories)
        by_type: dict[str, list[int]] = {}
        for i, inventory in enumerate(out):
            by_type.setdefault(inventory["hypervisorType"], []).append(i)
        for hypervisor_type, positions in by_type.items():
            try:
                driver = self.driver(hypervisor_type)
            except ZError:
                continue  # its plugin is disabled: the common fields only
            extra = await driver.host_inventory_fields(self.node, [out[i] for i in positions])
            for i in positions:
                fields = {**out[i], **extra.get(out[i]["uuid"], {})}
                fields.pop("password", None)  # whatever a driver does, never on the wire
                out[i] = Inventory(driver.host_inventory_class, fields)
        return out

    # ----------------------------------------------------------------- connecting

    async def connect(self, uuid: str) -> HostInfo:
        """Run ``host-connect`` for host ``uuid``, after any other operation on it.

        Returns the connected host; raises ``HOST.1000`` naming the host and the cause (the
        host is then ``Disconnected``).
        """
        return await self.node.queues.run(f"host-{uuid}", 1, lambda: self.connect_now(uuid))

    async def connect_now(self, uuid: str) -> HostInfo:
        """As :meth:`connect`, for a caller already in the host's queue."""
        data: dict[str, Any] = {"host_uuid": uuid}
        try:
            flow = await self.node.run_flow(HOST_CONNECT_CHAIN, data)
        except FlowError as exc:
            host = data.get("host") or data.get("host_connecting")
            cause = exc.cause or exc
            if cause.code == RESOURCE_NOT_FOUND and host is None:
                raise cause from exc
            who = str(host) if host is not None else f"host {uuid}"
            raise ZError(HOST_CONNECT_FAILED, "cannot connect host",
                         f"connecting {who} failed at step '{exc.step}': "
                         f"{cause.details or cause.description}", cause=cause) from exc
        self.failures.pop(uuid, None)
        info: HostInfo = flow["host"]
        # Work left for the host while it was away (a VM destroyed meanwhile), in the
        # background: it may need this host's queue, which the caller may hold.
        self.node.spawn(self.node.gc.trigger(host_event(uuid)), name=f"gc-host-{uuid}")
        return info

    async def forget(self, host: HostInfo) -> None:
        """``host`` is gone: tell its driver and drop this node's bookkeeping."""
        self.failures.pop(host.uuid, None)
        try:
            await self.driver(host.hypervisorType).disconnect(self.node, host)
        except Exception:
            log.exception("hypervisor driver of %s failed to forget it", host)

    # ----------------------------------------------------------------- pinging

    async def _ping_loop(self) -> None:
        config = self.node.global_config
        while True:
            interval = config.get(CATEGORY, PING_INTERVAL)
            try:
                # A new interval takes effect now, not after the old one ran out.
                await asyncio.wait_for(self._changed.wait(), timeout=interval)
                self._changed.clear()
                continue
            except TimeoutError:
                pass
            try:
                await self.ping_all()
            except Exception:
                log.exception("pinging hosts failed")

    async def ping_all(self) -> None:
        """Ping every connected or disconnected host once, a bounded number at a time.

        A host that answers but is not ``Connected`` is connected again in the background.
        """
        config = self.node.global_config
        hosts = await self.node.db.run(_pingable)
        alive = {h.uuid for h in hosts}
        for uuid in [u for u in self.failures if u not in alive]:
            del self.failures[uuid]
        limit = asyncio.Semaphore(int(config.get(CATEGORY, PING_PARALLELISM)))
        timeout = float(config.get(CATEGORY, PING_INTERVAL))
        max_failure = int(config.get(CATEGORY, PING_MAX_FAILURE))
        await asyncio.gather(*(self._ping(h, limit, timeout, max_failure) for h in hosts))

    async def _ping(self, host: HostInfo, limit: asyncio.Semaphore, timeout: float,
                    max_failure: int) -> None:
        async with limit:
            try:
                driver = self.driver(host.hypervisorType)
                await asyncio.wait_for(driver.ping(self.node, host, timeout), timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure is a missed ping
                await self._missed(host, exc, max_failure)
                return
        self.failures.pop(host.uuid, None)
        if host.status != CONNECTED and host.uuid not in self._reconnecting:
            self._reconnecting[host.uuid] = self.node.spawn(
                self._reconnect(host), name=f"host-reconnect-{host.uuid}")

    async def _missed(self, host: HostInfo, exc: BaseException, max_failure: int) -> None:
        count = self.failures[host.uuid] = self.failures.get(host.uuid, 0) + 1
        why = str(exc) or type(exc).__name__
        if host.status == DISCONNECTED or count < max_failure:
            log.debug("%s missed a ping (%d in a row): %s", host, count, why)
            return
        if await self.node.db.run(_set_status, host.uuid, DISCONNECTED, host.status):
            log.warning("%s missed %d pings in a row and is now Disconnected: %s", host,
                        count, why)

    async def _reconnect(self, host: HostInfo) -> None:
        try:
            info = await self.connect(host.uuid)
            log.info("%s answers pings again and is Connected", info)
        except ZError as exc:
            log.warning("%s answers pings again but reconnecting it failed: %s", host, exc)
        finally:
            self._reconnecting.pop(host.uuid, None)

    # ----------------------------------------------------------------- capacity settings

    async def _ratio_changed(self, old: int, new: int) -> None:
        changed = await self.node.db.run(_apply_cpu_ratio, int(new))
        log.info("host.%s is now %s: CPU capacity of %d host(s) recomputed", CPU_RATIO, new,
                 changed)

    async def _reserved_changed(self, old: str, new: str) -> None:
        changed = await self.node.db.run(_apply_reserved_memory, parse_size(new))
        log.info("host.%s is now %s: memory capacity of %d host(s) recomputed",
                 RESERVED_MEMORY, new, changed)
