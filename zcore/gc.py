"""The garbage collector: persisted jobs that finish work which could not be done at the time.

When a plugin cannot finish something now (destroy a VM whose host is disconnected, delete a
volume whose storage is unreachable), it records a job in the same transaction as the change
that gave up on the work, and the job is run later: when an event it waits for happens
(``EventBased``: the host reconnected) or on a timer (``TimeBased``: every 5 minutes)::

    def destroy(session: Session, vm_uuid: str, host_uuid: str) -> None:
        ...  # mark the VM Destroyed
        node.gc.submit(session, "kvm.destroy-vm", f"destroy-vm-{vm_uuid}",
                       {"vmUuid": vm_uuid, "hostUuid": host_uuid},
                       trigger=f"host-connected:{host_uuid}")

    await node.db.run(destroy, vm_uuid, host_uuid)
    ...
    await node.gc.trigger(f"host-connected:{host_uuid}")   # when the host is back

What a job does is a :class:`~zcore.records.GcJobKind` registered through the
``zcore_gc_job_kinds`` hook: ``async run(node, context)`` returns when the work is done and
raises for "not yet". Jobs are rows of :class:`GarbageCollectorVO`, as ZStack's
``GarbageCollectorInventory`` (the kind's name is its ``runnerClass``):

* ``Idle``: waiting for its event or timer. A failed run puts the job back here, with the
  error in ``lastError``; it is tried again on its next event or timer. Event-based jobs are
  also retried by the periodic task, one ``gc.orphanJobScanInterval`` after their last try,
  in case their event came while no node was listening.
* ``Processing``: claimed by the management node in ``managementNodeUuid`` and running. A
  node claims a job with a conditional ``UPDATE`` (``Idle`` -> ``Processing``), so nodes
  sharing a database never run one job twice; the claim is a lease that the running node
  renews, and a node that stops cleanly gives its claims back. A claim not renewed for
  :attr:`GarbageCollector.lease` seconds belongs to a dead node: the next periodic task of
  any node adopts the job and runs it again (runs must therefore be idempotent).
* ``Done``: finished. Done jobs are kept, as ZStack keeps them, so ``QueryGCJob`` shows what
  was collected; the periodic task deletes them ``gc.retentionTime`` seconds later.

A job whose kind no active plugin registers (the plugin was disabled) stays ``Idle``: the
periodic task logs it and says so in its ``lastError``, and ``TriggerGCJob`` refuses it,
until the plugin is back or the job is deleted with ``DeleteGCJob``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Double, Integer, String, Text, delete, event, func, select
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from zcore.db import Base, TimestampMixin, UTCDateTime, new_uuid, utcnow
from zcore.errors import INVALID_ARGUMENT, NOT_READY, OPERATION_ERROR, RESOURCE_NOT_FOUND, ZError
from zcore.records import GcJobKind, GlobalConfigOption

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "CATEGORY",
    "DONE",
    "EVENT_BASED",
    "IDLE",
    "INVENTORY",
    "PROCESSING",
    "RETENTION_TIME",
    "SCAN_INTERVAL",
    "TIME_BASED",
    "GarbageCollector",
    "GarbageCollectorVO",
    "GcOutcome",
    "gc_inventory",
    "global_configs",
]

log = logging.getLogger("zcore.gc")

#: The global configuration category of the garbage collector, and its options.
CATEGORY = "gc"
SCAN_INTERVAL = "orphanJobScanInterval"
RETENTION_TIME = "retentionTime"

#: A job's ``status``.
IDLE, PROCESSING, DONE = "Idle", "Processing", "Done"
#: A job's ``type``.
EVENT_BASED, TIME_BASED = "EventBased", "TimeBased"

INVENTORY = "org.zstack.core.gc.GarbageCollectorInventory"

_NAME_LENGTH = 255
_KEY_LENGTH = 255
_ERROR_LENGTH = 4000
_BATCH = 200  # jobs claimed per transaction
_MIN_WAIT = 0.05  # seconds; the periodic task never spins faster
_MAX_INTERVAL = 10 * 365 * 86400  # seconds between two tries of a time-based job


class GarbageCollectorVO(TimestampMixin, Base):
    """A garbage-collector job, as ZStack's ``GarbageCollectorInventory`` plus what runs it.

    ZStack's columns: ``uuid``, ``name``, ``runnerClass`` (the
    :class:`~zcore.records.GcJobKind` name), ``context`` (JSON text), ``status`` (``Idle``,
    ``Processing``, ``Done``), ``managementNodeUuid`` (the node running it, or that finished
    it), ``type`` (``EventBased``, ``TimeBased``), ``createDate`` and ``lastOpDate`` (while
    ``Processing``, renewed by the running node: the lease). Ours: ``triggerKey`` (the event
    an event-based job waits for), ``runInterval`` (seconds between two tries of a time-based
    job), ``nextRunDate`` (when a time-based job is due), ``lastError`` (why the last try
    failed) and ``attempts`` (how many tries ended).
    """

    __tablename__ = "GarbageCollectorVO"

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    runnerClass: Mapped[str] = mapped_column(String(255))
    context: Mapped[str] = mapped_column(Text())
    status: Mapped[str] = mapped_column(String(32), index=True)
    managementNodeUuid: Mapped[str | None] = mapped_column(String(32), default=None)
    type: Mapped[str] = mapped_column(String(32))
    triggerKey: Mapped[str | None] = mapped_column(String(_KEY_LENGTH), index=True,
                                                   default=None)
    runInterval: Mapped[float | None] = mapped_column(Double(), default=None)
    nextRunDate: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True,
                                                         default=None)
    lastError: Mapped[str | None] = mapped_column(Text(), default=None)
    attempts: Mapped[int] = mapped_column(Integer(), default=0)


def gc_inventory(row: GarbageCollectorVO) -> dict[str, Any]:
    """The fields of ZStack's GarbageCollectorInventory, in its order."""
    return {"uuid": row.uuid, "name": row.name, "runnerClass": row.runnerClass,
            "context": row.context, "status": row.status,
            "managementNodeUuid": row.managementNodeUuid, "type": row.type,
            "createDate": row.createDate, "lastOpDate": row.lastOpDate}


def global_configs() -> list[GlobalConfigOption]:
    """The garbage collector's settings, declared by the core plugin."""
    return [
        GlobalConfigOption(
            CATEGORY, SCAN_INTERVAL, int, 60,
            "Seconds between two scans of the garbage collector: each scan adopts the jobs of "
            "management nodes that died, retries event-based jobs not tried for this long and "
            "deletes Done jobs older than gc.retentionTime", min=1, max=86400),
        GlobalConfigOption(
            CATEGORY, RETENTION_TIME, int, 7 * 86400,
            "Seconds a Done garbage-collector job is kept before it is deleted", min=0),
    ]


@dataclass(frozen=True, slots=True)
class GcOutcome:
    """How one run of a job ended: ``done``, or not yet with the ``error`` it raised."""

    uuid: str
    name: str
    kind: str
    done: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    uuid: str
    name: str
    kind: str
    context: str
    type: str
    interval: float | None


_Run = tuple[_Job, "asyncio.Task[GcOutcome]"]


def _job(row: GarbageCollectorVO) -> _Job:
    return _Job(row.uuid, row.name, row.runnerClass, row.context, row.type, row.runInterval)


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ZError):
        text = f"{exc.code} {exc.description}" + (f": {exc.details}" if exc.details else "")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_LENGTH else text[:_ERROR_LENGTH - 3] + "..."


class GarbageCollector:
    """The node's garbage collector, ``node.gc``: submits, triggers and runs GC jobs.

    ``concurrency`` bounds how many jobs this node runs at once; ``lease`` is how many
    seconds a claim lives without renewal before other nodes take the job over.
    """

    def __init__(self, node: Node, *, concurrency: int = 8, lease: float = 90.0) -> None:
        self.node = node
        self.kinds: dict[str, GcJobKind] = {
            name: p.record for name, p in node.registry.gc_job_kinds.items()}
        self.concurrency = concurrency
        self.lease = lease
        self._slots = asyncio.Semaphore(concurrency)
        self._claimed: dict[str, asyncio.Task[GcOutcome]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._unwatch: Any = None
        self._next_scan = 0.0
        self._reported: set[str] = set()
        self._stopping = False

    # ----------------------------------------------------------------- submitting

    def submit(self, session: Session, kind: str | GcJobKind, name: str,
               context: Mapping[str, Any], *, trigger: str | None = None,
               interval: float | None = None) -> str:
        """Add a job in the caller's transaction; it exists only if that transaction commits.

        ``kind`` is a registered :class:`~zcore.records.GcJobKind` (or its name); ``name``
        says what the job is for (``destroy-vm-<uuid>``); ``context`` is a JSON-able dict
        handed to the kind's ``run``. Give exactly one of ``trigger``, the event key an
        ``EventBased`` job waits for (``host-connected:<uuid>``, run by :meth:`trigger`), and
        ``interval``, the seconds between two tries of a ``TimeBased`` job (the first one
        ``interval`` seconds from now). Returns the job's uuid. Raises
        :class:`~zcore.errors.ZError` ``SYS.1007`` for an unknown kind or a bad argument.
        """
        kind_name = kind.name if isinstance(kind, GcJobKind) else kind
        what = f"GC job {name!r}"
        if kind_name not in self.kinds:
            raise ZError(INVALID_ARGUMENT, "unknown GC job kind",
                         f"{what}: no active plugin registers the GC job kind {kind_name!r} "
                         f"(registered: {', '.join(sorted(self.kinds)) or 'none'}); declare it "
                         "with the zcore_gc_job_kinds hook")
        if not isinstance(name, str) or not name.strip() or len(name) > _NAME_LENGTH:
            raise ZError(INVALID_ARGUMENT, "invalid GC job name",
                         f"{what}: the name must be 1 to {_NAME_LENGTH} characters")
        if (trigger is None) == (interval is None):
            raise ZError(INVALID_ARGUMENT, "invalid GC job trigger",
                         f"{what}: give exactly one of trigger= (the event key an event-based "
                         "job waits for, e.g. 'host-connected:<uuid>') and interval= (the "
                         "seconds between two tries of a time-based job)")
        if trigger is not None and (not isinstance(trigger, str) or not trigger.strip()
                                    or len(trigger) > _KEY_LENGTH):
            raise ZError(INVALID_ARGUMENT, "invalid GC job trigger",
                         f"{what}: trigger {trigger!r} must be a string of 1 to {_KEY_LENGTH} "
                         "characters")
        if interval is not None and (isinstance(interval, bool)
                                     or not isinstance(interval, (int, float))
                                     or not 0 < interval <= _MAX_INTERVAL):
            raise ZError(INVALID_ARGUMENT, "invalid GC job interval",
                         f"{what}: interval {interval!r} must be a positive number of seconds, "
                         f"at most {_MAX_INTERVAL}")
        try:
            text = json.dumps(dict(context), sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ZError(INVALID_ARGUMENT, "invalid GC job context",
                         f"{what}: the context must be a JSON object: {exc}") from None
        now = utcnow()
        job = GarbageCollectorVO(
            uuid=new_uuid(), name=name, runnerClass=kind_name, context=text, status=IDLE,
            managementNodeUuid=None, type=EVENT_BASED if trigger is not None else TIME_BASED,
            triggerKey=trigger, runInterval=None if interval is None else float(interval),
            nextRunDate=None if interval is None else now + timedelta(seconds=interval),
            lastError=None, attempts=0, createDate=now, lastOpDate=now)
        session.add(job)
        if interval is not None:
            self._wake_after_commit(session)
        return job.uuid

    def _wake_after_commit(self, session: Session) -> None:
        # A new timer may be due before the periodic task's next wake-up.
        loop = self._loop
        if loop is None:
            return

        def committed(_session: Session) -> None:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop is closed: the node stopped
                pass

        event.listen(session, "after_commit", committed, once=True)

    # ----------------------------------------------------------------- running

    async def trigger(self, key: str) -> list[GcOutcome]:
        """Run every ``Idle`` job waiting for the event ``key``; how each run ended.

        Jobs are claimed atomically, so a job that another node is running, or that another
        node's ``trigger`` claims first, is left to it. Runs are bounded by the node's
        concurrency; this returns when they have all ended (``node.spawn(gc.trigger(key))``
        does not wait).
        """
        if self._stopping:
            return []
        tasks: list[_Run] = []
        after = ""
        while True:
            jobs, last = await self.node.db.run(self._claim, GarbageCollectorVO.triggerKey == key,
                                                _BATCH, after)
            tasks += [self._start(job) for job in jobs]
            if last is None:
                break
            after = last
        return await self._outcomes(tasks)

    async def run_job(self, uuid: str) -> GcOutcome:
        """Run one job now, whatever it waits for (``TriggerGCJob``); how the run ended.

        Raises :class:`~zcore.errors.ZError`: ``SYS.1003`` when there is no such job,
        ``SYS.1006`` when it is ``Done``, running, or of a kind no active plugin registers.
        """
        if self._stopping:
            raise ZError(NOT_READY, "management node stopping",
                         f"management node {self.node.uuid} is stopping; trigger GC job "
                         f"{uuid} on another node")
        job = await self.node.db.run(self._claim_one, uuid)
        return (await self._outcomes([self._start(job)]))[0]

    async def delete_job(self, uuid: str) -> None:
        """Delete a job (``DeleteGCJob``); a run in progress ends, and its result is dropped.

        Raises :class:`~zcore.errors.ZError` ``SYS.1003`` when there is no such job.
        """
        def remove(session: Session) -> int:
            return _rowcount(session.execute(
                delete(GarbageCollectorVO).where(GarbageCollectorVO.uuid == uuid)))

        if await self.node.db.run(remove) == 0:
            raise ZError(RESOURCE_NOT_FOUND, "resource not found", f"no GC job has uuid {uuid}")
        self._reported.discard(uuid)

    async def scan(self) -> list[GcOutcome]:
        """Do once, and wait for, what the periodic task does every ``gc.orphanJobScanInterval``.

        Adopt the jobs of dead nodes, delete old ``Done`` jobs, report jobs of unknown kinds,
        and run what is due: time-based jobs whose time has come and event-based jobs not
        tried for an interval. Returns how each run ended.
        """
        if self._stopping:
            return []
        tasks = await self._housekeeping()
        tasks += await self._run_due()
        return await self._outcomes(tasks)

    def _start(self, job: _Job) -> _Run:
        task = self.node.spawn(self._run(job), name=f"gc-job-{job.uuid}")
        self._claimed[job.uuid] = task
        return job, task

    async def _outcomes(self, runs: list[_Run]) -> list[GcOutcome]:
        if not runs:
            return []
        # Shielded: a caller that gives up (an API timeout) does not cancel the runs.
        results = await asyncio.shield(
            asyncio.gather(*(task for _, task in runs), return_exceptions=True))
        outcomes = []
        for (job, _task), result in zip(runs, results, strict=True):
            if isinstance(result, GcOutcome):
                outcomes.append(result)
            else:
                error = (f"management node {self.node.uuid} stopped during the run"
                         if isinstance(result, asyncio.CancelledError) else _describe(result))
                outcomes.append(GcOutcome(job.uuid, job.name, job.kind, False, error))
        return outcomes

    async def _run(self, job: _Job) -> GcOutcome:
        kind = self.kinds[job.kind]
        error: str | None = None
        try:
            async with self._slots:
                limit = asyncio.timeout(kind.timeout)
                try:
                    async with limit:
                        await kind.run(self.node, json.loads(job.context))
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is None or task.cancelling():
                        raise
                    # Something inside the run was cancelled, not this run: a failure.
                    error = "CancelledError: the run was cancelled from within"
                except TimeoutError as exc:
                    error = (f"the run did not finish within {kind.timeout:g} s (the timeout of "
                             f"GC job kind {kind.name})" if limit.expired() else _describe(exc))
                except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                    error = _describe(exc)
        except asyncio.CancelledError:
            # The node is stopping: give the job back, so that another node or the next start
            # runs it without waiting for the lease to run out.
            try:
                await asyncio.shield(self.node.db.run(self._release, job.uuid))
            except Exception:
                log.warning("GC job %s (%s) could not be given back; another node adopts it "
                            "when its claim expires", job.uuid, job.name, exc_info=True)
            raise
        finally:
            self._claimed.pop(job.uuid, None)
        if error is None:
            log.info("GC job %s (%s, %s) done", job.uuid, job.name, job.kind)
        else:
            log.info("GC job %s (%s, %s) not done yet, will retry: %s", job.uuid, job.name,
                     job.kind, error)
        try:
            if await self.node.db.run(self._finish, job, error) == 0:
                log.warning("GC job %s (%s) was deleted or taken over while it ran; its result "
                            "is dropped", job.uuid, job.name)
        except Exception:
            log.exception("GC job %s (%s): cannot record the end of its run; another node "
                          "runs it again when its claim expires", job.uuid, job.name)
        # Now that the end is recorded: a slot is free and the job may have a new time.
        self._wake.set()
        return GcOutcome(job.uuid, job.name, job.kind, error is None, error)

    # ----------------------------------------------------------------- transactions

    def _known(self) -> ColumnElement[bool]:
        return GarbageCollectorVO.runnerClass.in_(sorted(self.kinds))

    def _claim(self, session: Session, where: ColumnElement[bool], limit: int,
               after: str = "") -> tuple[list[_Job], str | None]:
        """Claim up to ``limit`` Idle jobs of known kinds matching ``where``, by uuid order.

        Returns the jobs claimed and, when there may be more candidates, the last uuid seen.
        """
        candidates = list(session.scalars(
            select(GarbageCollectorVO.uuid)
            .where(GarbageCollectorVO.status == IDLE, self._known(), where,
                   GarbageCollectorVO.uuid > after)
            .order_by(GarbageCollectorVO.uuid).limit(limit)))
        claimed = [uuid for uuid in candidates if self._take(session, uuid, IDLE)]
        jobs = [_job(row) for row in session.scalars(
            select(GarbageCollectorVO).where(GarbageCollectorVO.uuid.in_(claimed)))] \
            if claimed else []
        return jobs, (candidates[-1] if len(candidates) == limit else None)

    def _take(self, session: Session, uuid: str, status: str,
              *extra: ColumnElement[bool]) -> bool:
        # The conditional UPDATE is the claim: of two nodes, only one sees a row change.
        result = session.execute(
            sa_update(GarbageCollectorVO)
            .where(GarbageCollectorVO.uuid == uuid, GarbageCollectorVO.status == status, *extra)
            .values(status=PROCESSING, managementNodeUuid=self.node.uuid, lastOpDate=utcnow()))
        return _rowcount(result) == 1

    def _claim_one(self, session: Session, uuid: str) -> _Job:
        row = session.get(GarbageCollectorVO, uuid)
        if row is None:
            raise ZError(RESOURCE_NOT_FOUND, "resource not found", f"no GC job has uuid {uuid}")
        what = f"GC job {uuid} ({row.name})"
        if row.status == DONE:
            raise ZError(OPERATION_ERROR, "cannot trigger a finished GC job",
                         f"{what} is Done; delete it with DeleteGCJob")
        if row.runnerClass not in self.kinds:
            raise ZError(OPERATION_ERROR, "unknown GC job kind",
                         f"{what} is of kind {row.runnerClass!r}, which no active plugin on "
                         f"management node {self.node.uuid} registers (registered: "
                         f"{', '.join(sorted(self.kinds)) or 'none'}); enable the plugin that "
                         "provides it, or delete the job with DeleteGCJob")
        if row.status != IDLE or not self._take(session, uuid, IDLE):
            raise ZError(OPERATION_ERROR, "GC job is running",
                         f"{what} is running on management node {row.managementNodeUuid}; "
                         "query it with QueryGCJob and trigger it again once it is Idle")
        session.refresh(row)
        return _job(row)

    def _finish(self, session: Session, job: _Job, error: str | None) -> int:
        now = utcnow()
        values: dict[str, Any] = {"lastOpDate": now,
                                  "attempts": GarbageCollectorVO.attempts + 1}
        if error is None:
            values.update(status=DONE, lastError=None, nextRunDate=None)
        else:
            values.update(status=IDLE, managementNodeUuid=None, lastError=error)
            if job.type == TIME_BASED and job.interval:
                values["nextRunDate"] = now + timedelta(seconds=job.interval)
        return _rowcount(session.execute(
            sa_update(GarbageCollectorVO).where(*self._mine(job.uuid)).values(**values)))

    def _release(self, session: Session, uuid: str) -> None:
        session.execute(sa_update(GarbageCollectorVO).where(*self._mine(uuid))
                        .values(status=IDLE, managementNodeUuid=None))

    def _mine(self, *uuids: str) -> tuple[ColumnElement[bool], ...]:
        return (GarbageCollectorVO.uuid.in_(uuids), GarbageCollectorVO.status == PROCESSING,
                GarbageCollectorVO.managementNodeUuid == self.node.uuid)

    def _renew(self, session: Session, uuids: list[str]) -> None:
        session.execute(sa_update(GarbageCollectorVO).where(*self._mine(*uuids))
                        .values(lastOpDate=utcnow()))

    def _due(self, now: datetime) -> ColumnElement[bool]:
        retry = now - timedelta(seconds=self._interval())
        return (((GarbageCollectorVO.type == TIME_BASED)
                 & (GarbageCollectorVO.nextRunDate <= now))
                | ((GarbageCollectorVO.type == EVENT_BASED)
                   & (GarbageCollectorVO.lastOpDate <= retry)))

    def _next_due(self, session: Session) -> datetime | None:
        """When the next Idle job of a known kind becomes due, or None when none waits."""
        idle = (GarbageCollectorVO.status == IDLE, self._known())
        timer = session.scalar(select(func.min(GarbageCollectorVO.nextRunDate))
                               .where(*idle, GarbageCollectorVO.type == TIME_BASED))
        retry = session.scalar(select(func.min(GarbageCollectorVO.lastOpDate))
                               .where(*idle, GarbageCollectorVO.type == EVENT_BASED))
        dates = [d for d in (timer, None if retry is None else
                             retry + timedelta(seconds=self._interval())) if d is not None]
        return min(dates) if dates else None

    def _adopt(self, session: Session, limit: int) -> list[_Job]:
        """Take over the jobs whose claim was not renewed for a lease: their node is dead."""
        stale = utcnow() - timedelta(seconds=self.lease)
        rows = session.execute(
            select(GarbageCollectorVO.uuid, GarbageCollectorVO.managementNodeUuid,
                   GarbageCollectorVO.runnerClass)
            .where(GarbageCollectorVO.status == PROCESSING,
                   GarbageCollectorVO.lastOpDate < stale,
                   GarbageCollectorVO.uuid.not_in(list(self._claimed)))
            .order_by(GarbageCollectorVO.uuid).limit(_BATCH)).all()
        adopted: list[str] = []
        for uuid, owner, kind in rows:
            still = (GarbageCollectorVO.lastOpDate < stale,
                     GarbageCollectorVO.managementNodeUuid == owner if owner is not None
                     else GarbageCollectorVO.managementNodeUuid.is_(None))
            if kind in self.kinds and len(adopted) < limit:
                if self._take(session, uuid, PROCESSING, *still):
                    log.warning("GC job %s: management node %s stopped renewing its claim; "
                                "management node %s adopts it", uuid, owner, self.node.uuid)
                    adopted.append(uuid)
            else:
                session.execute(
                    sa_update(GarbageCollectorVO)
                    .where(GarbageCollectorVO.uuid == uuid,
                           GarbageCollectorVO.status == PROCESSING, *still)
                    .values(status=IDLE, managementNodeUuid=None))
        return [_job(row) for row in session.scalars(
            select(GarbageCollectorVO).where(GarbageCollectorVO.uuid.in_(adopted)))] \
            if adopted else []

    def _purge(self, session: Session, retention: int) -> int:
        before = utcnow() - timedelta(seconds=retention)
        return _rowcount(session.execute(
            delete(GarbageCollectorVO).where(GarbageCollectorVO.status == DONE,
                                             GarbageCollectorVO.lastOpDate < before)))

    def _orphans(self, session: Session) -> list[tuple[str, str, str]]:
        """Idle jobs of kinds no active plugin registers; records why in their lastError."""
        rows = session.execute(
            select(GarbageCollectorVO.uuid, GarbageCollectorVO.name,
                   GarbageCollectorVO.runnerClass)
            .where(GarbageCollectorVO.status == IDLE, ~self._known())
            .order_by(GarbageCollectorVO.uuid).limit(_BATCH)).all()
        for uuid, _name, kind in rows:
            error = self._unknown_kind(kind)
            session.execute(
                sa_update(GarbageCollectorVO)
                .where(GarbageCollectorVO.uuid == uuid, GarbageCollectorVO.status == IDLE,
                       (GarbageCollectorVO.lastError != error)
                       | GarbageCollectorVO.lastError.is_(None))
                .values(lastError=error, lastOpDate=GarbageCollectorVO.lastOpDate))
        return [(r[0], r[1], r[2]) for r in rows]

    def _unknown_kind(self, kind: str) -> str:
        return (f"no active plugin on management node {self.node.uuid} registers the GC job "
                f"kind {kind!r}; enable the plugin that provides it, or delete the job with "
                "DeleteGCJob")

    # ----------------------------------------------------------------- the periodic task

    def _interval(self) -> int:
        return int(self.node.global_config.get(CATEGORY, SCAN_INTERVAL))

    def _free(self) -> int:
        return max(self.concurrency - len(self._claimed), 0)

    async def _housekeeping(self) -> list[_Run]:
        db = self.node.db
        adopted = await db.run(self._adopt, self._free())
        tasks = [self._start(job) for job in adopted]
        purged = await db.run(self._purge,
                              int(self.node.global_config.get(CATEGORY, RETENTION_TIME)))
        if purged:
            log.info("deleted %d Done GC jobs past gc.%s", purged, RETENTION_TIME)
        for uuid, name, kind in await db.run(self._orphans):
            if uuid not in self._reported:
                self._reported.add(uuid)
                log.warning("GC job %s (%s) waits: %s", uuid, name, self._unknown_kind(kind))
        return tasks

    async def _run_due(self) -> list[_Run]:
        free = self._free()
        if not free:
            return []
        jobs, _more = await self.node.db.run(self._claim, self._due(utcnow()), free)
        return [self._start(job) for job in jobs]

    def start(self) -> None:
        """Start the periodic task and the renewal of this node's claims (node start-up)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._unwatch = self.node.global_config.watch(CATEGORY, SCAN_INTERVAL,
                                                      self._interval_changed)
        self._tasks = [self.node.spawn(self._periodic(), name=f"gc-scan-{self.node.uuid}"),
                       self.node.spawn(self._renew_claims(), name=f"gc-lease-{self.node.uuid}")]

    async def stop(self) -> None:
        """Stop the periodic task and the runs; the jobs being run are given back (``Idle``)."""
        self._stopping = True
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        tasks = [*self._tasks, *self._claimed.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []

    def _interval_changed(self, old: Any, new: Any) -> None:
        # A new interval starts counting now, as ZStack restarts its scan task.
        if self._loop is not None:
            self._next_scan = self._loop.time() + float(new)
        self._wake.set()

    async def _periodic(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_scan = loop.time()
        while True:
            self._wake.clear()
            due: datetime | None = None
            try:
                if loop.time() >= self._next_scan:
                    self._next_scan = loop.time() + self._interval()
                    await self._housekeeping()
                await self._run_due()
                due = await self.node.db.run(self._next_due)
            except Exception:
                log.exception("the garbage collector's periodic task failed; it tries again "
                              "in gc.%s seconds", SCAN_INTERVAL)
            wait = self._next_scan - loop.time()
            if due is not None and self._free():
                wait = min(wait, (due - utcnow()).total_seconds())
            try:
                async with asyncio.timeout(max(wait, _MIN_WAIT)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _renew_claims(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            mine = list(self._claimed)
            if not mine:
                continue
            try:
                for start in range(0, len(mine), _BATCH):
                    await self.node.db.run(self._renew, mine[start:start + _BATCH])
            except Exception:
                log.exception("cannot renew the claims of management node %s on its GC jobs",
                              self.node.uuid)

