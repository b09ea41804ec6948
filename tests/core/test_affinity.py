"""The node's event loop and database threads on one CPU; blocking work on every CPU."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from zcore.affinity import choose, pin
from zcore.errors import StartupError

ALLOWED = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
needs_two_cpus = pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs to choose from")


def test_auto_keeps_the_cpu_the_node_starts_on() -> None:
    assert choose("auto", {0, 1, 2}, 2) == 2
    assert choose("auto", {0, 1, 2}, None) == 0
    assert choose("auto", {1, 3}, 0) == 1  # not one it may run on: the lowest it may


def test_nothing_is_pinned_with_none_or_a_single_cpu() -> None:
    assert choose("none", {0, 1}, 0) is None
    assert choose("auto", {3}, 3) is None


def test_a_cpu_number_must_be_one_the_process_may_run_on() -> None:
    assert choose(1, {0, 1}, 0) == 1
    with pytest.raises(StartupError) as err:
        choose(7, {0, 1}, 0)
    assert "node.cpu: 7 is not a CPU this process may run on (0, 1)" in str(err.value)


def _in_a_thread_of_its_own(work: Any) -> Any:
    """Run coroutine function ``work`` in a new thread's event loop: pinning it leaves the
    test's own threads alone."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(asyncio.run(work())))
    thread.start()
    thread.join()
    return out[0]


@needs_two_cpus
def test_threads_started_after_pinning_share_the_cpu_blocking_work_does_not() -> None:
    cpu = max(ALLOWED)

    async def work() -> dict[str, Any]:
        assert pin(cpu) == cpu
        started: list[set[int]] = []
        child = threading.Thread(target=lambda: started.append(os.sched_getaffinity(0)))
        child.start()
        child.join()
        loop = asyncio.get_running_loop()
        return {
            "loop": os.sched_getaffinity(0), "started": started[0],
            "executor": await loop.run_in_executor(None, os.sched_getaffinity, 0),
            "process": await loop.run_in_executor(None, lambda: subprocess.run(
                [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                capture_output=True, text=True, check=True).stdout.strip()),
        }

    found = _in_a_thread_of_its_own(work)
    assert found["loop"] == {cpu} and found["started"] == {cpu}
    assert found["executor"] == ALLOWED
    assert found["process"] == str(sorted(ALLOWED))
    assert os.sched_getaffinity(0) == ALLOWED  # the test's own thread is untouched


def test_none_pins_nothing() -> None:
    async def work() -> tuple[int | None, set[int]]:
        return pin("none"), os.sched_getaffinity(0)

    assert _in_a_thread_of_its_own(work) == (None, ALLOWED)


@needs_two_cpus
def test_the_running_node_keeps_its_loop_and_database_threads_on_one_cpu(
        tmp_path: Path) -> None:
    from zcore.testing import free_port

    cpu = max(ALLOWED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSTACK_")}
    env.update(ZSTACK_NODE_DATA_DIR=str(tmp_path / "data"), ZSTACK_NODE_PORT=str(free_port()),
               ZSTACK_NODE_CPU=str(cpu))

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "zcore.ctl", *args], env=env,
                              capture_output=True, text=True, timeout=90, check=False)

    started = ctl("start")
    assert started.returncode == 0, started.stderr
    try:
        pid = int((tmp_path / "data" / "management-server.pid").read_text())
        threads = {int(tid): os.sched_getaffinity(int(tid))
                   for tid in os.listdir(f"/proc/{pid}/task")}
        assert threads[pid] == {cpu}
        # The SQLite writer and reader run there too; executor threads anywhere.
        assert sum(1 for cpus in threads.values() if cpus == {cpu}) >= 3, threads
        assert all(cpus in ({cpu}, ALLOWED) for cpus in threads.values()), threads
        log = (tmp_path / "data" / "logs" / "management-server.log").read_text()
        assert f"database threads run on CPU {cpu} of" in log
    finally:
        ctl("stop")


def test_a_cpu_the_node_may_not_use_stops_start_up(tmp_path: Path) -> None:
    from zcore.testing import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSTACK_")}
    env.update(ZSTACK_NODE_DATA_DIR=str(tmp_path / "data"), ZSTACK_NODE_PORT=str(free_port()),
               ZSTACK_NODE_CPU="4096")
    result = subprocess.run([sys.executable, "-m", "zcore.ctl", "start", "--foreground"],
                            env=env, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 1
    assert "node.cpu: 4096 is not a CPU this process may run on" in result.stderr
