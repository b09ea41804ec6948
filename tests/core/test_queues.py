"""Tests for ``zcore.queues.SyncQueues``: plain cases first, then hypothesis properties.

No test asserts on wall-clock time: concurrency is observed by counting tasks inside their
bodies and by stepping the event loop with ``asyncio.sleep(0)``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zcore.queues import QueueStats, SyncQueues


class Boom(Exception):
    """The failure a task raises on purpose."""


async def settle(steps: int = 20) -> None:
    """Let the event loop run other tasks for a few iterations."""
    for _ in range(steps):
        await asyncio.sleep(0)


@dataclass
class Tracker:
    """Counts the tasks of each signature inside their bodies."""

    now: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    order: list[str] = field(default_factory=list)

    def body(self, sig: str, name: str, gate: asyncio.Event | None = None) -> Awaitable[str]:
        async def task() -> str:
            self.now[sig] += 1
            self.peak[sig] = max(self.peak[sig], self.now[sig])
            self.order.append(name)
            try:
                if gate is not None:
                    await gate.wait()
                await asyncio.sleep(0)
                return name
            finally:
                self.now[sig] -= 1

        return task()


def assert_idle(queues: SyncQueues, *signatures: str) -> None:
    assert len(queues) == 0
    assert queues._queues == {}  # white-box: no bookkeeping left behind
    for sig in signatures:
        assert queues.pending(sig) == 0
        assert queues.running(sig) == 0


# --- plain tests ---------------------------------------------------------------------------


async def test_level_one_serializes_in_fifo_order() -> None:
    queues, tracker = SyncQueues(), Tracker()
    names = [f"op{i}" for i in range(6)]
    results = await asyncio.gather(
        *(queues.run("vm-1", 1, tracker.body("vm-1", name)) for name in names)
    )
    assert results == names
    assert tracker.order == names
    assert tracker.peak["vm-1"] == 1
    assert_idle(queues, "vm-1")


async def test_level_n_runs_n_in_parallel() -> None:
    queues, tracker, gate = SyncQueues(), Tracker(), asyncio.Event()
    tasks = [
        asyncio.create_task(queues.run("host-1", 3, tracker.body("host-1", f"c{i}", gate)))
        for i in range(5)
    ]
    await settle()
    assert tracker.now["host-1"] == 3
    assert queues.running("host-1") == 3
    assert queues.pending("host-1") == 2
    gate.set()
    assert await asyncio.gather(*tasks) == [f"c{i}" for i in range(5)]
    assert tracker.peak["host-1"] == 3
    assert tracker.order == [f"c{i}" for i in range(5)]
    assert_idle(queues, "host-1")


async def test_different_signatures_do_not_wait_for_each_other() -> None:
    queues, tracker, gate = SyncQueues(), Tracker(), asyncio.Event()
    sigs = ["vm-a", "vm-b", "host-a"]
    tasks = [asyncio.create_task(queues.run(s, 1, tracker.body(s, s, gate))) for s in sigs]
    await settle()
    # Each signature's single slot is taken at the same time, and nothing waits.
    assert {s: tracker.now[s] for s in sigs} == {s: 1 for s in sigs}
    assert all(queues.pending(s) == 0 for s in sigs)
    gate.set()
    assert await asyncio.gather(*tasks) == sigs
    assert_idle(queues, *sigs)


async def test_callable_is_called_only_when_its_turn_comes() -> None:
    queues, gate = SyncQueues(), asyncio.Event()
    calls: list[str] = []

    def factory(name: str) -> Callable[[], Awaitable[str]]:
        async def body() -> str:
            await gate.wait()
            return name

        def make() -> Awaitable[str]:
            calls.append(name)
            return body()

        return make

    first = asyncio.create_task(queues.run("vm-1", 1, factory("first")))
    second = asyncio.create_task(queues.run("vm-1", 1, factory("second")))
    await settle()
    assert calls == ["first"]
    gate.set()
    assert await asyncio.gather(first, second) == ["first", "second"]
    assert calls == ["first", "second"]
    assert_idle(queues, "vm-1")


async def test_coroutine_object_and_callable_both_work() -> None:
    queues = SyncQueues()

    async def value(x: int) -> int:
        await asyncio.sleep(0)
        return x

    assert await queues.run("vm-1", 1, value(1)) == 1
    assert await queues.run("vm-1", 1, lambda: value(2)) == 2
    assert_idle(queues, "vm-1")


async def test_task_runs_in_the_callers_own_task() -> None:
    queues = SyncQueues()
    before = len(asyncio.all_tasks())

    async def body() -> tuple[asyncio.Task[Any] | None, int]:
        return asyncio.current_task(), len(asyncio.all_tasks())

    task, count = await queues.run("vm-1", 1, body())
    assert task is asyncio.current_task()
    assert count == before


async def test_result_and_exception_propagate_unchanged_and_release_the_slot() -> None:
    queues = SyncQueues()
    error = Boom("disk full")
    marker = object()

    async def fail() -> None:
        await asyncio.sleep(0)
        raise error

    async def ok() -> object:
        return marker

    failing = asyncio.create_task(queues.run("vm-1", 1, fail()))
    after = asyncio.create_task(queues.run("vm-1", 1, ok()))
    with pytest.raises(Boom) as caught:
        await failing
    assert caught.value is error
    assert await after is marker
    assert queues.stats == QueueStats(tasks_run=2, tasks_waited=1, tasks_failed=1)
    assert_idle(queues, "vm-1")


async def test_cancelled_waiter_is_closed_and_blocks_nobody() -> None:
    queues, tracker, gate = SyncQueues(), Tracker(), asyncio.Event()
    holder = asyncio.create_task(queues.run("vm-1", 1, tracker.body("vm-1", "holder", gate)))
    doomed_coro = tracker.body("vm-1", "doomed")
    doomed = asyncio.create_task(queues.run("vm-1", 1, doomed_coro))
    last = asyncio.create_task(queues.run("vm-1", 1, tracker.body("vm-1", "last")))
    await settle()
    assert queues.pending("vm-1") == 2
    doomed.cancel()
    await settle()
    assert doomed.cancelled()
    assert inspect.getcoroutinestate(doomed_coro) == inspect.CORO_CLOSED  # type: ignore[arg-type]
    assert queues.pending("vm-1") == 1
    gate.set()
    assert await asyncio.gather(holder, last) == ["holder", "last"]
    assert tracker.order == ["holder", "last"]
    assert queues.stats.tasks_cancelled == 1
    assert_idle(queues, "vm-1")


async def test_cancelled_after_grant_before_start_passes_the_slot_on() -> None:
    queues, tracker = SyncQueues(), Tracker()
    gate = asyncio.Event()
    granted_coro = tracker.body("vm-1", "granted")
    granted: asyncio.Task[str] | None = None

    async def first() -> str:
        await queues.run("vm-1", 1, tracker.body("vm-1", "first", gate))
        # The slot has just been handed to ``granted``, whose task has not run yet.
        assert granted is not None
        assert queues.running("vm-1") == 1
        assert queues.pending("vm-1") == 1
        granted.cancel()
        return "first"

    first_task = asyncio.create_task(first())
    await settle()
    granted = asyncio.create_task(queues.run("vm-1", 1, granted_coro))
    third = asyncio.create_task(queues.run("vm-1", 1, tracker.body("vm-1", "third")))
    await settle()
    gate.set()
    assert await first_task == "first"
    assert await third == "third"
    assert granted.cancelled()
    assert inspect.getcoroutinestate(granted_coro) == inspect.CORO_CLOSED  # type: ignore[arg-type]
    assert tracker.order == ["first", "third"]
    assert queues.stats == QueueStats(tasks_run=2, tasks_waited=2, tasks_cancelled=1)
    assert_idle(queues, "vm-1")


async def test_newcomer_does_not_overtake_a_granted_waiter() -> None:
    # Two slots freed in one loop iteration: the first goes to ``waiter``, whose task has not
    # resumed yet when the second is freed and ``late`` calls run() at once. ``late`` must
    # still start after ``waiter`` (found by the FIFO property).
    queues, tracker, gate = SyncQueues(), Tracker(), asyncio.Event()

    async def x_then_late() -> str:
        await queues.run("host-1", 2, tracker.body("host-1", "x", gate))
        return await queues.run("host-1", 2, tracker.body("host-1", "late"))

    first = asyncio.create_task(queues.run("host-1", 2, tracker.body("host-1", "a", gate)))
    second = asyncio.create_task(x_then_late())
    await settle()
    waiter = asyncio.create_task(queues.run("host-1", 2, tracker.body("host-1", "waiter")))
    await settle()
    assert queues.pending("host-1") == 1
    gate.set()
    assert await asyncio.gather(first, second, waiter) == ["a", "late", "waiter"]
    assert tracker.order == ["a", "x", "waiter", "late"]
    assert_idle(queues, "host-1")


async def test_cancelled_while_running_releases_the_slot() -> None:
    queues, tracker = SyncQueues(), Tracker()
    forever = asyncio.Event()
    running = asyncio.create_task(queues.run("vm-1", 1, tracker.body("vm-1", "stuck", forever)))
    after = asyncio.create_task(queues.run("vm-1", 1, tracker.body("vm-1", "after")))
    await settle()
    assert tracker.now["vm-1"] == 1
    running.cancel()
    assert await after == "after"
    assert running.cancelled()
    assert queues.stats == QueueStats(tasks_run=2, tasks_waited=1, tasks_cancelled=1)
    assert_idle(queues, "vm-1")


async def test_mixed_levels_never_overtake_and_cancelled_head_unblocks() -> None:
    queues, tracker, gate = SyncQueues(), Tracker(), asyncio.Event()
    holder = asyncio.create_task(queues.run("host-1", 1, tracker.body("host-1", "holder", gate)))
    await settle()
    narrow = asyncio.create_task(queues.run("host-1", 1, tracker.body("host-1", "narrow")))
    wide = asyncio.create_task(queues.run("host-1", 2, tracker.body("host-1", "wide", gate)))
    await settle()
    # ``wide`` would fit (1 running < 2) but ``narrow`` is ahead of it.
    assert tracker.order == ["holder"]
    assert queues.pending("host-1") == 2
    narrow.cancel()
    await settle()
    assert tracker.order == ["holder", "wide"]
    assert tracker.now["host-1"] == 2
    gate.set()
    assert await asyncio.gather(holder, wide) == ["holder", "wide"]
    assert narrow.cancelled()
    assert_idle(queues, "host-1")


@pytest.mark.parametrize("level", [0, -1])
async def test_level_below_one_is_refused(level: int) -> None:
    queues = SyncQueues()

    async def body() -> None:
        raise AssertionError("must not run")

    coro = body()
    with pytest.raises(ValueError, match=r"vm-1.*level must be an integer >= 1"):
        await queues.run("vm-1", level, coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert_idle(queues, "vm-1")


async def test_unknown_signature_has_no_work_and_is_not_registered() -> None:
    queues = SyncQueues()
    assert queues.pending("vm-x") == 0
    assert queues.running("vm-x") == 0
    assert_idle(queues)


async def test_no_leak_after_many_signatures() -> None:
    queues = SyncQueues()

    async def noop() -> None:
        return None

    for i in range(100_000):
        await queues.run(f"vm-{i}", 1, noop)
    assert_idle(queues)

    # The waiting path too: contended signatures, some waiters cancelled.
    tasks = [
        asyncio.create_task(queues.run(f"host-{i % 500}", 1 + i % 2, lambda: asyncio.sleep(0)))
        for i in range(2_000)
    ]
    await asyncio.sleep(0)
    for task in tasks[::7]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert_idle(queues)
    assert queues.stats.tasks_waited > 0
    assert queues.stats.tasks_cancelled > 0


# --- properties ----------------------------------------------------------------------------

SIGNATURES = ["vm-a", "vm-b", "host-a"]
OUTCOMES = ["ok", "ok", "raise", "cancel_waiting", "cancel_running"]


@dataclass(frozen=True)
class Job:
    """One ``run()`` call of a generated workload."""

    sig: int
    level: int
    delay: int  # event-loop steps before it calls run()
    steps: int  # event-loop steps it takes once started
    outcome: str
    cancel_after: int  # for "cancel_waiting": steps after submission before the cancel
    as_callable: bool


def jobs(mixed_levels: bool) -> st.SearchStrategy[list[Job]]:
    @st.composite
    def build(draw: st.DrawFn) -> list[Job]:
        per_sig = draw(st.lists(st.integers(1, 4), min_size=3, max_size=3))
        count = draw(st.integers(1, 24))
        out = []
        for _ in range(count):
            sig = draw(st.integers(0, len(SIGNATURES) - 1))
            out.append(
                Job(
                    sig=sig,
                    level=draw(st.integers(1, 4)) if mixed_levels else per_sig[sig],
                    delay=draw(st.integers(0, 3)),
                    steps=draw(st.integers(0, 3)),
                    outcome=draw(st.sampled_from(OUTCOMES)),
                    cancel_after=draw(st.integers(0, 3)),
                    as_callable=draw(st.booleans()),
                )
            )
        return out

    return build()


@dataclass
class Run:
    """What happened to a workload."""

    submitted: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    started: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[int, Boom] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)


async def play(workload: list[Job]) -> tuple[Run, SyncQueues, list[asyncio.Task[int]], dict]:
    queues = SyncQueues()
    record = Run()
    now: dict[str, int] = defaultdict(int)
    submitted = [asyncio.Event() for _ in workload]
    began = [asyncio.Event() for _ in workload]
    coros: dict[int, Any] = {}

    async def body(i: int, job: Job) -> int:
        sig = SIGNATURES[job.sig]
        now[sig] += 1
        record.started[sig].append(i)
        began[i].set()
        if now[sig] > job.level:
            record.violations.append(f"job {i}: {now[sig]} running on {sig}, level {job.level}")
        try:
            for _ in range(job.steps):
                await asyncio.sleep(0)
            if job.outcome == "cancel_running":
                await asyncio.Event().wait()  # until cancelled
            if job.outcome == "raise":
                record.errors[i] = Boom(i)
                raise record.errors[i]
            return i
        finally:
            now[sig] -= 1

    async def caller(i: int, job: Job) -> int:
        for _ in range(job.delay):
            await asyncio.sleep(0)
        sig = SIGNATURES[job.sig]
        if job.as_callable:
            work: Any = lambda: body(i, job)
        else:
            work = coros[i] = body(i, job)
        record.submitted[sig].append(i)
        submitted[i].set()
        return await queues.run(sig, job.level, work)

    async def canceller(i: int, job: Job, task: asyncio.Task[int]) -> None:
        if job.outcome == "cancel_running":
            await began[i].wait()
        else:
            await submitted[i].wait()
            for _ in range(job.cancel_after):
                await asyncio.sleep(0)
        task.cancel()

    tasks = [asyncio.create_task(caller(i, job)) for i, job in enumerate(workload)]
    cancellers = [
        asyncio.create_task(canceller(i, job, tasks[i]))
        for i, job in enumerate(workload)
        if job.outcome.startswith("cancel")
    ]
    async with asyncio.timeout(10):  # a hang is a failure, not a timing assertion
        await asyncio.gather(*tasks, *cancellers, return_exceptions=True)
    return record, queues, tasks, coros


def check(workload: list[Job]) -> None:
    record, queues, tasks, coros = asyncio.run(play(workload))
    started = {i for ids in record.started.values() for i in ids}

    # (a) never more than ``level`` tasks of one signature at a time
    assert record.violations == []

    # (b) FIFO per signature: starts follow submissions, skipping only cancelled waiters
    for sig, order in record.submitted.items():
        assert record.started[sig] == [i for i in order if i in started]

    # (c) every outcome reaches its caller unchanged
    for i, (job, task) in enumerate(zip(workload, tasks)):
        if task.cancelled():
            assert job.outcome.startswith("cancel")
            if i not in started and not job.as_callable:
                assert inspect.getcoroutinestate(coros[i]) == inspect.CORO_CLOSED
        elif job.outcome == "raise":
            assert task.exception() is record.errors[i]
        else:
            assert job.outcome in ("ok", "cancel_waiting")  # a late cancel may miss
            assert task.result() == i
        if i not in started:
            assert task.cancelled()
        if job.outcome == "cancel_running":
            assert task.cancelled()

    # (d) the queues end empty, and the counters agree with what happened
    assert_idle(queues, *SIGNATURES)
    stats = queues.stats
    assert stats.tasks_run == len(started)
    assert stats.tasks_failed == len(record.errors)
    assert stats.tasks_cancelled == sum(t.cancelled() for t in tasks)
    assert stats.tasks_waited <= len(workload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs(mixed_levels=False))
def test_property_one_level_per_signature(workload: list[Job]) -> None:
    check(workload)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs(mixed_levels=True))
def test_property_mixed_levels_per_signature(workload: list[Job]) -> None:
    # Each caller's own level bounds how many run when it starts; FIFO still holds.
    check(workload)
