"""Per-resource sync queues: ZStack's "lock-free architecture".

Every operation on a resource runs through a queue named by a *signature* such as
``vm-<uuid>`` or ``host-<uuid>``. ``SyncQueues.run(signature, level, coro)`` runs ``coro`` once
fewer than ``level`` tasks of that signature are running and every earlier caller of the same
signature has started (strict FIFO). ``level=1`` serializes all operations on one VM without a
lock; ``level=20`` on a host lets 20 VM creations proceed on it at once. Different signatures
never wait for each other.

How it works, for those who extend it: a signature that has work has a ``_Queue`` holding the
number of running tasks and a deque of waiters, one future per waiter. Nothing is held while
waiting; when a task finishes, its slot is handed straight to the next waiter(s) by resolving
their futures. The task itself is awaited in the caller's own asyncio task (no extra ``Task``
per run), so context variables, the caller's deadline and cancellation all apply to it. A
signature's bookkeeping is dropped as soon as it is idle, so millions of distinct signatures
cost nothing once their work is done.

Cancellation:

* cancelled while waiting: the waiter leaves the queue, a coroutine object that was passed
  in is closed (it never ran, so there is no "never awaited" warning), and waiters behind it
  are re-examined, since with mixed levels it may have been the one holding them back;
* cancelled after being granted the slot but before the task started: the slot goes to the
  next waiter and the task never runs;
* cancelled while running: the cancellation reaches the task as usual and the slot is
  released when it ends.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["QueueStats", "SyncQueues"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot of a ``SyncQueues``' counters since it was created.

    ``tasks_run``: tasks that started (whatever their outcome). ``tasks_waited``: ``run()``
    calls that had to queue instead of starting at once. ``tasks_failed``: tasks that raised
    an exception other than ``asyncio.CancelledError``. ``tasks_cancelled``: ``run()`` calls
    cancelled, whether while waiting, after being granted the slot, or while running.
    """

    tasks_run: int = 0
    tasks_waited: int = 0
    tasks_failed: int = 0
    tasks_cancelled: int = 0


class _Waiter:
    """One queued ``run()`` call: its own level and the future that grants it the slot."""

    __slots__ = ("future", "level")

    def __init__(self, future: asyncio.Future[None], level: int) -> None:
        self.future = future
        self.level = level


class _Queue:
    """The bookkeeping of one signature; exists only while the signature has work.

    ``running`` counts the slots taken, including ``granted``: waiters whose future has been
    resolved but whose task has not resumed yet. While any are granted, a newcomer queues even
    if a slot is free, so that tasks start in FIFO order and not merely get their slots in it.
    """

    __slots__ = ("granted", "running", "waiters")

    def __init__(self) -> None:
        self.running = 0
        self.granted = 0
        self.waiters: deque[_Waiter] = deque()


def _close(coro: object) -> None:
    """Close a coroutine object that will never run, so Python does not warn about it."""
    if inspect.iscoroutine(coro):
        coro.close()


class SyncQueues:
    """Per-signature FIFO queues with a concurrency level.

    One instance serves a whole management node; build it at start-up and pass it to the
    services that need it (there is no module-level instance). It is bound to no event loop,
    but the tasks of one signature must all run on the same loop.

    Example::

        queues = SyncQueues()
        # all operations on one VM, one at a time, in the order they were asked for
        await queues.run(f"vm-{vm_uuid}", 1, lambda: start_vm(vm_uuid))
        # at most 20 VM creations at a time on one host
        await queues.run(f"host-{host_uuid}", 20, create_on_hypervisor(spec))
    """

    __slots__ = ("_cancelled", "_failed", "_queues", "_run", "_waited")

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._run = 0
        self._waited = 0
        self._failed = 0
        self._cancelled = 0

    async def run(
        self,
        signature: str,
        level: int,
        coro: Awaitable[T] | Callable[[], Awaitable[T]],
    ) -> T:
        """Run ``coro`` in the queue ``signature`` and return its result.

        ``signature`` names the queue, conventionally ``<resource type>-<uuid>``. ``level`` is
        the most tasks of this signature that may run at once, as seen by this caller: the task
        starts when fewer than ``level`` are running and no earlier caller is still waiting
        (so callers passing different levels for one signature never overtake each other).
        ``coro`` is a coroutine object or a zero-argument callable returning an awaitable; a
        callable is called only when the task's turn comes, which is preferable when building
        the coroutine does work or when the caller may be cancelled while waiting.

        The task is awaited in the caller's own asyncio task. Its result or exception reaches
        the caller unchanged, and its slot is released however it ends. If the caller is
        cancelled before the task starts, ``asyncio.CancelledError`` is raised, a coroutine
        object is closed without running, and the queue moves on.

        Raises ``ValueError`` if ``level`` is below 1 (closing ``coro`` if it is a coroutine).
        """
        if level < 1:
            _close(coro)
            raise ValueError(
                f"sync queue {signature!r}: level must be an integer >= 1, got {level!r}"
            )
        queue = self._queues.get(signature)
        if queue is None:
            queue = self._queues[signature] = _Queue()
        if queue.waiters or queue.granted or queue.running >= level:
            await self._wait(signature, queue, level, coro)
        else:
            queue.running += 1
        # From here this call holds one slot of ``queue``, which stays registered while it does.
        self._run += 1
        try:
            return await (coro() if callable(coro) else coro)
        except asyncio.CancelledError:
            self._cancelled += 1
            raise
        except BaseException:
            self._failed += 1
            raise
        finally:
            self._release(signature, queue)

    def pending(self, signature: str) -> int:
        """How many ``run()`` calls for ``signature`` are waiting for a slot (not running)."""
        queue = self._queues.get(signature)
        if queue is None:
            return 0
        # A waiter whose future is cancelled is on its way out; it no longer counts.
        return sum(1 for waiter in queue.waiters if not waiter.future.done())

    def running(self, signature: str) -> int:
        """How many tasks of ``signature`` hold a slot (running, or granted and about to run)."""
        queue = self._queues.get(signature)
        return 0 if queue is None else queue.running

    @property
    def stats(self) -> QueueStats:
        """A frozen snapshot of the counters; see ``QueueStats``."""
        return QueueStats(
            tasks_run=self._run,
            tasks_waited=self._waited,
            tasks_failed=self._failed,
            tasks_cancelled=self._cancelled,
        )

    def __len__(self) -> int:
        """The number of signatures that currently have tasks running or waiting."""
        return len(self._queues)

    def __repr__(self) -> str:
        running = sum(queue.running for queue in self._queues.values())
        waiting = sum(len(queue.waiters) for queue in self._queues.values())
        return f"<SyncQueues signatures={len(self._queues)} running={running} waiting={waiting}>"

    async def _wait(self, signature: str, queue: _Queue, level: int, coro: object) -> None:
        """Queue the caller and return once it has been handed a slot."""
        waiter = _Waiter(asyncio.get_running_loop().create_future(), level)
        queue.waiters.append(waiter)
        self._waited += 1
        try:
            await waiter.future
        except asyncio.CancelledError:
            self._cancelled += 1
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted the slot, then cancelled before the task could start: pass it on.
                queue.granted -= 1
                self._release(signature, queue)
            else:
                try:
                    queue.waiters.remove(waiter)
                except ValueError:
                    pass  # already dropped by _wake(), which skips cancelled waiters
                # With mixed levels this waiter may have been holding back the ones behind it.
                self._wake(queue)
                self._drop_if_idle(signature, queue)
            _close(coro)
            raise
        queue.granted -= 1
        if queue.waiters:
            # Someone may have queued behind this grant while a slot was free.
            self._wake(queue)

    def _release(self, signature: str, queue: _Queue) -> None:
        """Give back one slot of ``queue`` and hand it on."""
        queue.running -= 1
        if queue.waiters:
            self._wake(queue)
        self._drop_if_idle(signature, queue)

    @staticmethod
    def _wake(queue: _Queue) -> None:
        """Grant slots to waiters at the head of the queue, in order, while their level allows."""
        waiters = queue.waiters
        while waiters:
            head = waiters[0]
            if head.future.done():
                # Cancelled while waiting; its task will see the cancellation and clean up.
                waiters.popleft()
                continue
            if queue.running >= head.level:
                break  # strict FIFO: nobody overtakes the head
            waiters.popleft()
            queue.running += 1
            queue.granted += 1
            head.future.set_result(None)

    def _drop_if_idle(self, signature: str, queue: _Queue) -> None:
        """Forget ``signature`` once it has no work, unless it was already replaced."""
        if not queue.running and not queue.waiters and self._queues.get(signature) is queue:
            del self._queues[signature]
