"""Host allocation: the allocator strategies and the steps that reserve and release hosts.

Strategies are drivers in the stevedore namespace ``zcore.host_allocators`` (base class
:class:`HostAllocatorStrategy`), picked by name: the VM's ``allocatorStrategy`` (from
``CreateVmInstance`` or its instance offering), else the global configuration
``vm.hostAllocatorStrategy``. Shipped, under ZStack's names:

* ``DefaultHostAllocatorStrategy``: the fitting host with the most available memory (not
  ZStack's random pick: deterministic, and it spreads VMs over hosts: the host just chosen
  has less memory left than its peers, so the next VM goes to another);
* ``MinimumMemoryUsageHostAllocatorStrategy``: the same; ``MinimumCPUUsageHostAllocatorStrategy``:
  the most available CPU; ``MaxInstancePerHostHostAllocatorStrategy``: as the default (there is
  no per-host VM limit tag yet);
* ``LeastVmPreferredHostAllocatorStrategy``: the host with the fewest VMs;
* ``LastHostPreferredAllocatorStrategy``: the VM's ``lastHostUuid`` if it fits, else its
  fallback strategy (``vm-start`` uses it, with the VM's own strategy as the fallback);
* ``MigrateVmAllocatorStrategy``: any fitting host except the one the VM is on.

Allocation is one indexed query on ``HostVO`` with every filter in SQL (state ``Enabled``,
status ``Connected``, cluster ``Enabled``, hypervisor type, CPU and memory, pinning, the
avoid list and the conditions other plugins put into ``ctx["host_conditions"]``), ``LIMIT``
a few candidates, then a conditional ``UPDATE`` that reserves the capacity only if it is
still there; a candidate taken meanwhile is skipped. So concurrent creations never
over-commit a host and no capacity column goes negative.

The query does not grow with the number of hosts: the index ``ix_HostVO_allocation_memory``
(``state``, ``status``, ``availableMemoryCapacity``, ``availableCpuCapacity``, ``uuid``;
``ix_HostVO_allocation_cpu`` for the CPU-first order) serves both its filter and its order,
so the database walks it backwards from the most available memory and stops after the first
few hosts that meet the other conditions, checked host by host (cluster, hypervisor,
reachability: each subquery is read once, see :func:`_checked_per_host`). Its cost is the
number of hosts walked, not the number of hosts: only hosts with more room than the chosen
one that fail a condition (a disabled cluster, a cluster that does not reach the VM's
storage or networks) make it longer. An order a strategy adds must be served by an index
the same way (every column descending, ``uuid`` last), or it sorts every fitting host.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from sqlalchemy import (
    CursorResult,
    Exists,
    ScalarSelect,
    SelectBase,
    and_,
    bindparam,
    func,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BooleanClauseList

from zcore import DriverNamespace, FlowStep, GlobalConfigOption
from zcore.db import lock_for_update, sent_together, table_of, write_checked, write_held
from zcore.errors import RESOURCE_NOT_FOUND, ZError
from zcore.flow import FlowContext, Step
from zplugins.compute.host_service import CONNECTED, HostInfo
from zplugins.compute.models import ClusterVO, HostVO, VmInstanceVO
from zplugins.compute.vm_service import persisted_vm

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "HOST_ALLOCATION_FAILED",
    "HOST_ALLOCATORS",
    "DefaultHostAllocatorStrategy",
    "HostAllocatorStrategy",
    "HostRequest",
    "LastHostPreferredAllocatorStrategy",
    "LeastVmPreferredHostAllocatorStrategy",
    "MigrateVmAllocatorStrategy",
    "give_back",
    "release_host",
    "reserve",
    "strategy_for_vm",
]

log = logging.getLogger(__name__)

#: The stevedore namespace of host allocator strategies.
HOST_ALLOCATORS = "zcore.host_allocators"

#: No host fits the VM.
HOST_ALLOCATION_FAILED = "HOST_ALLOCATION.1001"

#: Global configuration: the strategy of a VM that names none (nor does its offering).
STRATEGY_CATEGORY, STRATEGY_NAME = "vm", "hostAllocatorStrategy"
DEFAULT_STRATEGY = "DefaultHostAllocatorStrategy"
LAST_HOST_PREFERRED = "LastHostPreferredAllocatorStrategy"

ENABLED = "Enabled"


def _size(value: int) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value} bytes"


@dataclass(frozen=True, slots=True)
class HostRequest:
    """What a VM needs of a host.

    ``zoneUuid``/``clusterUuid``/``hostUuid`` pin it; ``avoidHostUuids`` and
    ``currentHostUuid`` (the host a migrating VM leaves) are never chosen; ``conditions`` are
    SQLAlchemy conditions on ``HostVO`` columns that every candidate must meet;
    ``lastHostUuid`` is where the VM last ran (``LastHostPreferredAllocatorStrategy``).
    """

    cpuNum: int
    memorySize: int
    vmUuid: str | None = None
    zoneUuid: str | None = None
    clusterUuid: str | None = None
    hostUuid: str | None = None
    hypervisorType: str | None = None
    avoidHostUuids: tuple[str, ...] = ()
    conditions: tuple[Any, ...] = ()
    lastHostUuid: str | None = None
    currentHostUuid: str | None = None

    def describe(self) -> str:
        """``8 CPUs and 16 GiB free in cluster X`` (for error messages)."""
        where = []
        if self.hostUuid:
            where.append(f"host {self.hostUuid}")
        if self.clusterUuid:
            where.append(f"cluster {self.clusterUuid}")
        if self.zoneUuid:
            where.append(f"zone {self.zoneUuid}")
        text = f"{self.cpuNum} CPUs and {_size(self.memorySize)} free"
        return text + (f" in {', '.join(where)}" if where else "")


# --------------------------------------------------------------------------- reservations


def reserve(session: Session, host_uuid: str, cpu: int, memory: int) -> bool:
    """Take ``cpu`` and ``memory`` from the host if it still has them and takes new VMs.

    One conditional ``UPDATE``: ``False`` (nothing changed) when another reservation got
    there first, so capacity never goes below zero.
    """
    lock_for_update(session, HostVO, host_uuid)
    result = cast(CursorResult[Any], session.execute(
        _reservation(host_uuid, cpu, memory).execution_options(synchronize_session=False)))
    return result.rowcount == 1


def _reservation(host: Any, cpu: int, memory: int) -> Any:
    """The ``UPDATE`` that takes ``cpu`` and ``memory`` from ``host`` (a uuid, or a scalar
    subquery giving one) if it still has them and takes new VMs."""
    # The host by its primary key, then the checks. As plain conditions they match the
    # allocation indexes too, and PostgreSQL, while HostVO has no statistics yet (just
    # filled), may take one and read it from one end (20-160 ms at 100,000 hosts).
    still_fits = and_(HostVO.availableCpuCapacity >= cpu,
                      HostVO.availableMemoryCapacity >= memory, HostVO.state == ENABLED,
                      HostVO.status == CONNECTED).is_(true())
    return (update(HostVO).where(HostVO.uuid == host, still_fits)
            .values(availableCpuCapacity=HostVO.availableCpuCapacity - cpu,
                    availableMemoryCapacity=HostVO.availableMemoryCapacity - memory))


def give_back(session: Session, host_uuid: str, cpu: int, memory: int) -> None:
    """Return ``cpu`` and ``memory`` to the host (a host deleted meanwhile is fine)."""
    session.execute(
        update(HostVO).where(HostVO.uuid == host_uuid)
        .values(availableCpuCapacity=HostVO.availableCpuCapacity + cpu,
                availableMemoryCapacity=HostVO.availableMemoryCapacity + memory)
        .execution_options(synchronize_session=False))


def release_host(session: Session, vm_uuid: str) -> None:
    """Give the VM's CPU and memory back to its host; ``lastHostUuid`` becomes its host.

    ``hostUuid`` is cleared; ``state`` is the caller's business. A VM holding no host (or
    gone) is left as it is.
    """
    vm = session.get(VmInstanceVO, vm_uuid)
    if vm is None or vm.hostUuid is None:
        return
    give_back(session, vm.hostUuid, vm.cpuNum, vm.memorySize)
    vm.lastHostUuid = vm.hostUuid
    vm.hostUuid = None
    session.flush()


# --------------------------------------------------------------------------- strategies


class HostAllocatorStrategy(ABC):
    """A host allocator strategy: which of the fitting hosts a VM gets.

    A strategy decides the order of the candidates (:meth:`order_by`); the filters
    (:meth:`filters`) and the reservation (:meth:`allocate`) are common. Override
    :meth:`filters` to narrow the hosts further (call ``super()``) and :meth:`candidates`
    to prefer particular hosts. Keep everything in SQL: a strategy never loads every host.
    Register a subclass as an entry point in ``zcore.host_allocators`` under the name
    users give in ``allocatorStrategy``.
    """

    #: Candidates read per query; the next ones are read when all of them were taken.
    candidate_limit: ClassVar[int] = 5

    def filters(self, request: HostRequest) -> list[Any]:
        """Every condition a host must meet to take the VM."""
        conditions: list[Any] = [
            HostVO.state == ENABLED,
            HostVO.status == CONNECTED,
            HostVO.clusterUuid.in_(select(ClusterVO.uuid).where(ClusterVO.state == ENABLED)),
            HostVO.availableCpuCapacity >= request.cpuNum,
            HostVO.availableMemoryCapacity >= request.memorySize,
            *self.scope(request),
        ]
        if request.hypervisorType:
            conditions.append(HostVO.hypervisorType == request.hypervisorType)
        return conditions

    def scope(self, request: HostRequest) -> list[Any]:
        """The pinning, avoid-list and caller conditions (no state or capacity)."""
        conditions: list[Any] = list(request.conditions)
        if request.zoneUuid:
            conditions.append(HostVO.zoneUuid == request.zoneUuid)
        if request.clusterUuid:
            conditions.append(HostVO.clusterUuid == request.clusterUuid)
        if request.hostUuid:
            conditions.append(HostVO.uuid == request.hostUuid)
        avoid = set(request.avoidHostUuids)
        if request.currentHostUuid:
            avoid.add(request.currentHostUuid)
        if avoid:
            conditions.append(HostVO.uuid.not_in(sorted(avoid)))
        return conditions

    @abstractmethod
    def order_by(self, request: HostRequest) -> Sequence[Any]:
        """The ORDER BY of the candidates, best first (end with ``HostVO.uuid`` for ties).

        With a ``LIMIT``, an order that an index on ``HostVO`` serves after ``state`` and
        ``status`` (see the module's documentation) reads a few hosts; any other sorts
        every fitting host.
        """

    def candidates(self, session: Session, request: HostRequest, *,
                   exclude: Sequence[str] = (), limit: int | None = None) -> list[HostVO]:
        """The fitting hosts, best first, without those in ``exclude``; at most ``limit``."""
        conditions = self.filters(request)
        if limit is not None:
            conditions = _checked_per_host(conditions)
        query = select(HostVO).where(*conditions)
        if exclude:
            query = query.where(HostVO.uuid.not_in(list(exclude)))
        query = query.order_by(*self.order_by(request))
        if limit is not None:
            query = query.limit(limit)
        return list(session.scalars(query))

    def allocate(self, session: Session, request: HostRequest) -> HostVO:
        """Reserve the request's CPU and memory on the best fitting host; that host.

        Raises ``HOST_ALLOCATION.1001`` when no host fits (or every fitting host was
        taken meanwhile), saying which filter left no host.
        """
        if type(self).candidates is HostAllocatorStrategy.candidates:
            best = self._reserve_best(session, request)
            if best is not None:
                return best
        tried: list[str] = []
        while True:
            found = self.candidates(session, request, exclude=tried,
                                    limit=self.candidate_limit)
            if not found:
                raise no_host_error(session, request)
            for host in found:
                if reserve(session, host.uuid, request.cpuNum, request.memorySize):
                    return host
                tried.append(host.uuid)


    def _reserve_best(self, session: Session, request: HostRequest) -> HostVO | None:
        """The best candidate reserved in one round trip; that host. ``None`` when none
        fits or it was taken meanwhile: then the candidates are read and reserved one by
        one.

        Where the database says which row an ``UPDATE`` changed (PostgreSQL, SQLite), one
        statement: ``UPDATE HostVO ... WHERE uuid = (the first candidate) AND it still fits
        RETURNING``. On MariaDB and MySQL the first candidate is read with a locking read
        (``... LIMIT 1 FOR UPDATE``: the row, as read, is this transaction's until it ends;
        the writes held before go with it), and its ``UPDATE`` is held back to go with the
        writer's next statement, its row count checked then (:func:`write_held`).
        """
        filters = _checked_per_host(self.filters(request))
        if not session.get_bind().dialect.update_returning:
            return _lock_and_reserve(session, select(HostVO).where(*filters).order_by(
                *self.order_by(request)).limit(1).with_for_update(), request)
        best = (select(HostVO.uuid).where(*filters)
                .order_by(*self.order_by(request)).limit(1)
                .correlate(None).scalar_subquery())
        return session.scalars(
            _reservation(best, request.cpuNum, request.memorySize).returning(HostVO),
            execution_options={"synchronize_session": False}).first()


def _lock_and_reserve(session: Session, locking_read: Any, request: HostRequest
                      ) -> HostVO | None:
    """The host that ``locking_read`` (best first, ``FOR UPDATE``) finds, reserved by a
    held ``UPDATE``; ``None`` when it finds none, or the ``UPDATE`` changed no row (never
    expected: the row is locked as read, and fitted)."""
    host = session.scalars(locking_read).first()
    if host is None or not write_held(
            session, _reservation(host.uuid, request.cpuNum, request.memorySize), {}):
        return None
    return host


def _checked_per_host(conditions: Sequence[Any]) -> list[Any]:
    """``conditions`` with each one that has a subquery made a check of every host read.

    ``clusterUuid IN (SELECT ...)`` (cluster Enabled, attached to the VM's storage and
    networks) is a semi-join to PostgreSQL and MariaDB, which may then start from the small
    tables: clusters, attachments, then every host of those clusters, sorted (100,000 hosts:
    0.1 to 0.5 s). MariaDB does so whatever its statistics; PostgreSQL when those small
    tables have none, which is the rule: autovacuum analyzes a table once 50 of its rows
    changed. ``(...) IS TRUE``, the same test, is no semi-join: each subquery runs once into
    a hashed set probed per host, and ``HostVO`` alone is read, in index order up to the
    ``LIMIT``. Conditions without a subquery (a pinned zone, cluster or host) stay as they
    are, for an index to find those hosts.
    """
    out: list[Any] = []
    for condition in conditions:
        if isinstance(condition, BooleanClauseList) and condition.operator is operators.and_:
            out.extend(_checked_per_host(list(condition.clauses)))
        elif any(isinstance(e, (SelectBase, ScalarSelect, Exists))
                 for e in visitors.iterate(condition)):
            out.append(condition.is_(true()))
        else:
            out.append(condition)
    return out


class DefaultHostAllocatorStrategy(HostAllocatorStrategy):
    """The fitting host with the most available memory (ties: most CPU, then highest uuid).

    Served by the index ``ix_HostVO_allocation_memory``, walked backwards.
    """

    def order_by(self, request: HostRequest) -> Sequence[Any]:
        return (HostVO.availableMemoryCapacity.desc(), HostVO.availableCpuCapacity.desc(),
                HostVO.uuid.desc())


class MinimumMemoryUsageHostAllocatorStrategy(DefaultHostAllocatorStrategy):
    """ZStack's name for the same choice as the default: the most available memory."""


class MaxInstancePerHostHostAllocatorStrategy(DefaultHostAllocatorStrategy):
    """As the default; a per-host VM limit (a system tag in ZStack) is not supported yet."""


class MinimumCPUUsageHostAllocatorStrategy(HostAllocatorStrategy):
    """The fitting host with the most available CPU (index ``ix_HostVO_allocation_cpu``)."""

    def order_by(self, request: HostRequest) -> Sequence[Any]:
        return (HostVO.availableCpuCapacity.desc(), HostVO.availableMemoryCapacity.desc(),
                HostVO.uuid.desc())


class LeastVmPreferredHostAllocatorStrategy(HostAllocatorStrategy):
    """The fitting host that holds the fewest VMs (an indexed count per candidate).

    No index orders hosts by their number of VMs, so this one counts and sorts every
    fitting host: its cost grows with the number of hosts.
    """

    def order_by(self, request: HostRequest) -> Sequence[Any]:
        vms = (select(func.count()).select_from(VmInstanceVO)
               .where(VmInstanceVO.hostUuid == HostVO.uuid).correlate(HostVO)
               .scalar_subquery())
        return (vms, HostVO.availableMemoryCapacity.desc(), HostVO.uuid)


class LastHostPreferredAllocatorStrategy(HostAllocatorStrategy):
    """The VM's ``lastHostUuid`` if it fits; else what ``fallback`` picks."""

    def __init__(self, fallback: HostAllocatorStrategy | None = None) -> None:
        self.fallback = fallback or DefaultHostAllocatorStrategy()

    def filters(self, request: HostRequest) -> list[Any]:
        return self.fallback.filters(request)

    def order_by(self, request: HostRequest) -> Sequence[Any]:
        return self.fallback.order_by(request)

    def candidates(self, session: Session, request: HostRequest, *,
                   exclude: Sequence[str] = (), limit: int | None = None) -> list[HostVO]:
        last = request.lastHostUuid
        first: list[HostVO] = []
        if last and last not in exclude:
            first = list(session.scalars(select(HostVO).where(
                HostVO.uuid == last, *self.filters(request))))
        rest = self.fallback.candidates(session, request, exclude=[*exclude, *(
            [last] if first and last else [])], limit=limit)
        found = first + rest
        return found[:limit] if limit is not None else found


class MigrateVmAllocatorStrategy(DefaultHostAllocatorStrategy):
    """Any fitting host except the VM's current one (``currentHostUuid``), most memory first."""

    def scope(self, request: HostRequest) -> list[Any]:
        if not request.currentHostUuid:
            raise ValueError("MigrateVmAllocatorStrategy needs the VM's currentHostUuid")
        return super().scope(request)


# --------------------------------------------------------------------------- errors


def _any(session: Session, *conditions: Any) -> bool:
    # The first matching host is enough (a count would read every one of them).
    return session.scalar(select(HostVO.uuid).where(*conditions).limit(1)) is not None


_UNREACHABLE = ("no such host reaches the VM's primary storage and networks (their clusters "
                "are not attached to them)")


def no_host_error(session: Session, request: HostRequest) -> ZError:
    """``HOST_ALLOCATION.1001`` naming the filter that left no host (a few queries, each
    looking for one host that passes the filters so far)."""
    wanted = request.describe()
    if request.hostUuid and session.get(HostVO, request.hostUuid) is None:
        why = f"host {request.hostUuid} does not exist"
    else:
        pins: list[Any] = []
        if request.zoneUuid:
            pins.append(HostVO.zoneUuid == request.zoneUuid)
        if request.clusterUuid:
            pins.append(HostVO.clusterUuid == request.clusterUuid)
        if request.hostUuid:
            pins.append(HostVO.uuid == request.hostUuid)
        avoid = set(request.avoidHostUuids) | (
            {request.currentHostUuid} if request.currentHostUuid else set())
        steps: list[tuple[str, list[Any]]] = [
            ("there is no host there", pins),
            (f"every such host is excluded (avoided or current: {', '.join(sorted(avoid))})",
             [HostVO.uuid.not_in(sorted(avoid))] if avoid else []),
            ("no such host is Enabled and Connected in an Enabled cluster",
             [HostVO.state == ENABLED, HostVO.status == CONNECTED,
              HostVO.clusterUuid.in_(select(ClusterVO.uuid).where(ClusterVO.state == ENABLED))]),
            (f"no such host is of hypervisor type {request.hypervisorType}",
             [HostVO.hypervisorType == request.hypervisorType]
             if request.hypervisorType else []),
            (_UNREACHABLE, list(request.conditions)),
            (f"no such host has {request.cpuNum} CPUs free",
             [HostVO.availableCpuCapacity >= request.cpuNum]),
            (f"no such host has {_size(request.memorySize)} of memory free",
             [HostVO.availableMemoryCapacity >= request.memorySize]),
        ]
        applied: list[Any] = []
        why = "every fitting host was taken by other VMs meanwhile"
        for reason, conditions in steps:
            if not conditions:
                continue
            applied.extend(conditions)
            if not _any(session, *applied):
                why = reason
                break
    vm = f"VM {request.vmUuid}" if request.vmUuid else "the VM"
    return ZError(HOST_ALLOCATION_FAILED, "no host can take the VM",
                  f"no Connected Enabled host with {wanted} for {vm}: {why}; add or enable "
                  "hosts, free capacity, or pin the VM elsewhere")


# --------------------------------------------------------------------------- picking one


def strategy_for_vm(node: Node, session: Session, vm: Any,
                    asked: str | None = None) -> HostAllocatorStrategy:
    """The VM's strategy: ``asked``, else its own, else its offering's, else the default.
    ``vm``: its ``VmInstanceVO``, or a row with its columns."""
    from zplugins.compute.offerings import InstanceOfferingVO

    name = asked or vm.allocatorStrategy
    if not name and vm.instanceOfferingUuid:
        offering = session.get(InstanceOfferingVO, vm.instanceOfferingUuid)
        name = offering.allocatorStrategy if offering is not None else None
    if not name:
        name = str(node.global_config.get(STRATEGY_CATEGORY, STRATEGY_NAME))
    return cast(HostAllocatorStrategy, node.drivers.create(HOST_ALLOCATORS, name))


# --------------------------------------------------------------------------- steps


_VMS = table_of(VmInstanceVO)
# Statements built once (Core, no unit of work: allocation runs for every VM started).
_VM_FOR_ALLOCATION = select(
    _VMS.c.uuid, _VMS.c.cpuNum, _VMS.c.memorySize, _VMS.c.hostUuid, _VMS.c.lastHostUuid,
    _VMS.c.clusterUuid, _VMS.c.zoneUuid, _VMS.c.hypervisorType, _VMS.c.allocatorStrategy,
    _VMS.c.instanceOfferingUuid).where(_VMS.c.uuid == bindparam("vm_uuid"))
_PLACE_VM = update(_VMS).where(_VMS.c.uuid == bindparam("vm_uuid"))


def _vm_gone(vm_uuid: str) -> ZError:
    return ZError(RESOURCE_NOT_FOUND, "resource not found",
                  f"VmInstanceVO {vm_uuid} does not exist (any more)")


def _vm(session: Session, vm_uuid: str) -> Any:
    vm = session.connection().execute(_VM_FOR_ALLOCATION, {"vm_uuid": vm_uuid}).first()
    if vm is None:
        raise _vm_gone(vm_uuid)
    return vm


_ALLOCATED = "allocate_host.reserved"


class AllocateHost(Step):
    """Reserve CPU and memory on a host and write it into the VM row (one transaction).

    ``vm-create`` reads pinning and the avoid list from ``ctx["vm"]``; ``vm-start`` (no
    ``vm``) prefers the VM's last host when it has one, falling back to its strategy.
    """

    requires = ("vm_uuid", "host_conditions")
    provides = ("host",)

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        spec = ctx.get("vm")
        vm_uuid: str = ctx["vm_uuid"]
        conditions = tuple(ctx["host_conditions"])
        persisted = persisted_vm(ctx)  # vm-create: the row as written, not read back

        def allocate(session: Session) -> tuple[HostInfo, dict[str, Any] | None]:
            vm = persisted if persisted is not None else _vm(session, vm_uuid)
            if vm.hostUuid is not None:  # still holds its host: nothing to reserve
                held = session.get(HostVO, vm.hostUuid)
                if held is not None:
                    return HostInfo.of(held), None
            strategy = strategy_for_vm(node, session, vm,
                                       getattr(spec, "allocatorStrategy", None))
            if spec is None and vm.lastHostUuid:
                strategy = LastHostPreferredAllocatorStrategy(strategy)
            request = HostRequest(
                cpuNum=vm.cpuNum, memorySize=vm.memorySize, vmUuid=vm.uuid,
                zoneUuid=getattr(spec, "zoneUuid", None),
                clusterUuid=getattr(spec, "clusterUuid", None),
                hostUuid=getattr(spec, "hostUuid", None),
                hypervisorType=vm.hypervisorType,
                avoidHostUuids=tuple(getattr(spec, "avoidHostUuids", ()) or ()),
                conditions=conditions, lastHostUuid=vm.lastHostUuid)
            host = strategy.allocate(session, request)
            reserved = {"host": host.uuid, "cpu": vm.cpuNum, "memory": vm.memorySize,
                        "previous": (vm.clusterUuid, vm.zoneUuid, vm.hypervisorType)}
            # Gone meanwhile: the reservation rolls back with it. Checked once sent, with
            # the writer's next statement.
            with sent_together(session):
                write_checked(session, _PLACE_VM, {
                    "vm_uuid": vm_uuid, "hostUuid": host.uuid, "clusterUuid": host.clusterUuid,
                    "zoneUuid": host.zoneUuid, "hypervisorType": host.hypervisorType},
                    lambda: _vm_gone(vm_uuid))
            return HostInfo.of(host), reserved

        host, reserved = await node.db.run(allocate)
        if reserved is not None:
            ctx[_ALLOCATED] = reserved
        ctx["host"] = host

    async def rollback(self, ctx: FlowContext) -> None:
        reserved = ctx.get(_ALLOCATED)
        if reserved is None:
            return
        node: Node = ctx.services

        def undo(session: Session) -> None:
            give_back(session, reserved["host"], reserved["cpu"], reserved["memory"])
            vm = session.get(VmInstanceVO, ctx["vm_uuid"])
            if vm is not None and vm.hostUuid == reserved["host"]:
                vm.hostUuid = None
                vm.clusterUuid, vm.zoneUuid, vm.hypervisorType = reserved["previous"]

        await node.db.run(undo)
        del ctx.data[_ALLOCATED]


class ReleaseHost(Step):
    """Give the VM's CPU and memory back to its host (:func:`release_host`).

    No rollback: the VM has left the hypervisor by then (stopped or destroyed).
    """

    requires = ("vm_uuid",)

    async def run(self, ctx: FlowContext) -> None:
        node: Node = ctx.services
        await node.db.run(release_host, ctx["vm_uuid"])


# --------------------------------------------------------------------------- hooks


def driver_namespaces() -> Iterator[DriverNamespace]:
    yield DriverNamespace(HOST_ALLOCATORS, HostAllocatorStrategy,
                          "Host allocator strategies, picked by a VM's allocatorStrategy")


def flow_steps() -> Iterator[FlowStep]:
    yield FlowStep("allocate-host", AllocateHost())
    yield FlowStep("release-host", ReleaseHost())


def global_configs() -> Iterator[GlobalConfigOption]:
    yield GlobalConfigOption(STRATEGY_CATEGORY, STRATEGY_NAME, str, DEFAULT_STRATEGY,
                             description="The host allocator strategy of a VM whose instance "
                                         "offering names none",
                             driver_namespace=HOST_ALLOCATORS)


def api_messages() -> Iterator[Any]:
    from zcore import ApiMessage
    from zplugins.compute import vm_migrate
    from zplugins.compute.vm_service import VM_PLUGINS

    for message in vm_migrate.APIS:
        yield ApiMessage(message, plugins=VM_PLUGINS)

