"""Task progress: what a long API call is doing, step by step (ZStack's ``GetTaskProgress``).

Work that takes long (deploying a KVM agent, copying an image) reports each step with
:func:`report`; the step is recorded for the API job that runs it, found through the context
variable :data:`current_job`, and ``GetTaskProgress apiId=<job uuid>`` shows the latest step
(``all=true``: every step; the API is in :mod:`zcore.progress_apis`). The job uuid is the one a client gives in ``X-Job-UUID`` or finds
in the ``Location`` of an asynchronous call. Work that runs outside an API call (a reconnect
after pings) reports nothing: :data:`current_job` is unset there.

Progress is kept in memory by the node that runs the job, for :data:`RETENTION` seconds
after its last step; ``GetTaskProgress`` on another node finds nothing.
"""

from __future__ import annotations

import time
import weakref
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zcore.db import new_uuid

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = ["INVENTORY", "RETENTION", "ProgressStep", "TaskProgresses", "current_job",
           "progresses", "report"]

#: The API job the current task works for; set by whoever runs the job.
current_job: ContextVar[str | None] = ContextVar("zcore_current_job", default=None)

#: Seconds a job's progress is kept after its last step.
RETENTION = 3600.0

INVENTORY = "org.zstack.header.core.progress.TaskProgressInventory"


@dataclass(frozen=True, slots=True)
class ProgressStep:
    """One step of a job: ``taskName`` says what runs, ``content`` how it went."""

    taskUuid: str
    taskName: str
    content: str
    time: int
    arguments: str | None = None
    opaque: dict[str, Any] | None = None

    def inventory(self, job_uuid: str) -> dict[str, Any]:
        """The step as ZStack's TaskProgressInventory fields."""
        return {
            "taskUuid": self.taskUuid, "taskName": self.taskName, "parentUuid": job_uuid,
            "type": "Task", "content": self.content, "arguments": self.arguments,
            "opaque": self.opaque, "time": self.time, "subTasks": []}


class TaskProgresses:
    """The progress of a node's API jobs, by job uuid."""

    def __init__(self, retention: float = RETENTION) -> None:
        self._jobs: dict[str, tuple[float, list[ProgressStep]]] = {}
        self._retention = retention

    def add(self, job_uuid: str, task_name: str, content: str, *,
            arguments: str | None = None, opaque: dict[str, Any] | None = None) -> ProgressStep:
        """Record a step of job ``job_uuid``."""
        now = time.monotonic()
        self._jobs = {uuid: entry for uuid, entry in self._jobs.items()
                      if now - entry[0] <= self._retention}
        step = ProgressStep(new_uuid(), task_name, content, int(time.time() * 1000),
                            arguments, opaque)
        steps = self._jobs.get(job_uuid, (now, []))[1]
        steps.append(step)
        self._jobs[job_uuid] = (now, steps)
        return step

    def steps(self, job_uuid: str) -> list[ProgressStep]:
        """Every step of job ``job_uuid``, oldest first; none for an unknown job."""
        entry = self._jobs.get(job_uuid)
        if entry is None or time.monotonic() - entry[0] > self._retention:
            return []
        return list(entry[1])


_PROGRESSES: weakref.WeakKeyDictionary[Node, TaskProgresses] = weakref.WeakKeyDictionary()


def progresses(node: Node) -> TaskProgresses:
    """The progress of ``node``'s API jobs."""
    found = _PROGRESSES.get(node)
    if found is None:
        found = _PROGRESSES[node] = TaskProgresses()
    return found


def report(node: Node, task_name: str, content: str, **extra: Any) -> ProgressStep | None:
    """Record a step for the API job of the current task; ``None`` outside an API job.

    ``extra`` takes ``arguments`` (a string) and ``opaque`` (a JSON object).
    """
    job = current_job.get()
    if job is None:
        return None
    return progresses(node).add(job, task_name, content, **extra)
