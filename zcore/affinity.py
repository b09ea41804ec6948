"""The CPU the node's busiest threads run on: one, so the interpreter lock stays put.

One thread of a Python process runs Python code at a time. The event loop and the database
threads hand that lock to each other thousands of times a second (at every socket write and
every SQLite step); when they sit on different CPUs, each hand-over wakes another core and
refills its caches. On two cores, with 1,000 clients calling ``QueryZone``, that cost the
node about a third of each call: pinned to one CPU, the same node answers 40–50% more calls
a second and creates VMs 15–30% faster on SQLite (``bench/api_rate.py``,
``bench/vm_create.py``).

:func:`pin` pins the calling thread, before the node starts any: every thread it starts
afterwards (the database's, the bus's) inherits the CPU. The threads of the default
executor, where blocking work goes (libvirt, Ansible, files), are given back every CPU the
node was allowed, and so is every process they start. ``node.cpu`` chooses: ``auto`` (the
CPU the node starts on), a CPU number, or ``none``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from zcore.errors import StartupError

__all__ = ["CpuSetting", "choose", "pin"]

log = logging.getLogger("zcore.node")

CpuSetting = int | Literal["auto", "none"]


def choose(setting: CpuSetting, allowed: set[int], current: int | None) -> int | None:
    """The CPU for ``setting`` among the ``allowed`` ones; ``None``: leave the threads be.

    ``auto`` is ``current`` (where the scheduler started the node), or the lowest allowed
    CPU; with only one CPU allowed there is nothing to choose. Raises
    :class:`~zcore.errors.StartupError` for a CPU that is not allowed.
    """
    if setting == "none":
        return None
    if setting == "auto":
        if len(allowed) < 2:
            return None
        return current if current in allowed else min(allowed)
    if setting not in allowed:
        shown = ", ".join(str(c) for c in sorted(allowed))
        raise StartupError(f"node.cpu: {setting} is not a CPU this process may run on "
                           f"({shown}); use one of them, auto or none")
    return setting


def _current_cpu() -> int | None:
    """The CPU the calling thread last ran on (field 39 of ``/proc/thread-self/stat``)."""
    try:
        with open("/proc/thread-self/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return int(fields[36])
    except (OSError, IndexError, ValueError):
        return None


def pin(setting: CpuSetting) -> int | None:
    """Pin the calling thread (and the threads it starts) to the CPU ``setting`` names, and
    give the running loop a default executor whose threads run on every CPU; the CPU, or
    ``None`` when nothing was pinned (``none``, one CPU, or no affinity on this system)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    cpu = choose(setting, allowed, _current_cpu())
    if cpu is None:
        return None
    os.sched_setaffinity(0, {cpu})
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(
        thread_name_prefix="zcore-worker", initializer=os.sched_setaffinity,
        initargs=(0, allowed)))
    log.info("the event loop and database threads run on CPU %d of %s (node.cpu: %s)",
             cpu, ",".join(str(c) for c in sorted(allowed)), setting)
    return cpu
