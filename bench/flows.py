"""Benchmark our workflow engine against OpenStack's taskflow on the same chains.

    .venv/bin/python bench/flows.py [--rounds 2000] [--json]

Linear chains of 10 and 100 no-op steps, run to the end, and failing at the last step so
that every earlier step is rolled back: :class:`zcore.flow.FlowEngine` (``engine.run``) and
taskflow (a ``linear_flow`` of ``Task`` s with ``execute`` and ``revert``, run by a fresh
serial engine, ``taskflow.engines.run``, as taskflow runs a flow). Prints chains per second
for both and the ratio. taskflow is only needed here: ``pip install -e '.[bench]'``. Our
engine runs ``--rounds`` chains per case, taskflow a hundredth of that (it is far slower; the
rate is what counts). Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from common import print_json, print_table

from zcore.flow import ChainSpec, FlowContext, FlowEngine, FlowError, Step

TARGET_RATIO = 50.0
LENGTHS = (10, 100)


class Noop(Step):
    async def run(self, ctx: FlowContext) -> None:
        pass

    async def rollback(self, ctx: FlowContext) -> None:
        pass


class Fail(Noop):
    async def run(self, ctx: FlowContext) -> None:
        raise RuntimeError("the last step fails on purpose")


async def ours(length: int, fail: bool, rounds: int) -> float:
    """Chains per second of our engine."""
    names = tuple(f"s{i}" for i in range(length))
    steps: dict[str, Step] = {n: Noop() for n in names}
    if fail:
        steps[names[-1]] = Fail()
    engine = FlowEngine(steps=steps, chains=[("bench", ChainSpec(name="c", steps=names))])
    for _ in range(max(1, rounds // 10)):  # warm-up
        try:
            await engine.run("c")
        except FlowError:
            pass
    start = time.perf_counter()
    for _ in range(rounds):
        try:
            await engine.run("c")
        except FlowError:
            if not fail:
                raise
        else:
            if fail:
                raise SystemExit("our chain did not fail at its last step")
    return rounds / (time.perf_counter() - start)


def taskflow_rate(length: int, fail: bool, rounds: int) -> float:
    """Chains per second of taskflow (each chain built and run by a new engine)."""
    from taskflow import engines, task
    from taskflow.patterns import linear_flow

    class NoopTask(task.Task):  # type: ignore[misc]
        def execute(self) -> None:
            pass

        def revert(self, *args: Any, **kwargs: Any) -> None:
            pass

    class FailTask(NoopTask):
        def execute(self) -> None:
            raise RuntimeError("the last step fails on purpose")

    def build() -> Any:
        flow = linear_flow.Flow("c")
        for i in range(length):
            last = i == length - 1
            flow.add((FailTask if fail and last else NoopTask)(name=f"s{i}"))
        return flow

    start = time.perf_counter()
    for _ in range(rounds):
        try:
            engines.run(build(), engine="serial")
        except RuntimeError:
            if not fail:
                raise
        else:
            if fail:
                raise SystemExit("the taskflow chain did not fail at its last step")
    return rounds / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000,
                        help="chains per case for our engine; taskflow runs a hundredth (2000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    if args.rounds < 10:
        parser.error("--rounds must be at least 10")
    try:
        import taskflow  # noqa: F401
    except ImportError:
        raise SystemExit("taskflow is not installed: pip install -e '.[bench]'") from None

    rows: list[dict[str, Any]] = []
    for length in LENGTHS:
        for fail in (False, True):
            our_rate = asyncio.run(ours(length, fail, args.rounds))
            their_rate = taskflow_rate(length, fail, max(2, args.rounds // 100))
            rows.append({"what": f"{length} steps, " + ("fails at the last (rollback)"
                                                         if fail else "succeeds"),
                         "steps": length, "fails": fail,
                         "ours_per_second": round(our_rate, 1),
                         "taskflow_per_second": round(their_rate, 1),
                         "ratio": round(our_rate / their_rate, 1),
                         "target_ratio": TARGET_RATIO})
    print("linear chains of no-op steps: chains per second")
    print_table(rows, [("what", "chain", "<"), ("ours_per_second", "ours/s", ".1f"),
                       ("taskflow_per_second", "taskflow/s", ".1f"), ("ratio", "ratio", ".1f"),
                       ("target_ratio", "target", ".0f")])
    if args.json:
        print_json({"rounds": args.rounds, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
