"""Benchmark the core's primitives: flow steps, bus sends, sync queues, database transactions.

    .venv/bin/python bench/core.py [--db URL] [--json]

Prints the cost of each primitive as the design constraints state them: microseconds per
workflow step, per in-process bus send and per sync-queue task, and short transactions per
second through Database.run. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zcore.bus import InProcessBroker, Message, Reply
from zcore.db import GlobalConfigVO, create_database
from zcore.flow import ChainSpec, FlowContext, FlowEngine, Step
from zcore.queues import SyncQueues


class Noop(Step):
    async def run(self, ctx: FlowContext) -> None:
        pass


class Ping(Message, frozen=True, kw_only=True):
    n: int


class Pong(Reply, frozen=True, kw_only=True):
    n: int


async def timed(label: str, count: int, body: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    await body()
    elapsed = time.perf_counter() - start
    return {"what": label, "count": count, "seconds": round(elapsed, 4),
            "us_each": round(elapsed / count * 1e6, 2), "per_second": round(count / elapsed)}


async def bench_flows(rounds: int) -> list[dict[str, Any]]:
    results = []
    for length in (10, 100):
        names = tuple(f"s{i}" for i in range(length))
        engine = FlowEngine(steps={n: Noop() for n in names},
                            chains=[("bench", ChainSpec(name="c", steps=names))])

        async def run(engine: FlowEngine = engine) -> None:
            for _ in range(rounds):
                await engine.run("c")

        row = await timed(f"flow step ({length}-step chain)", rounds * length, run)
        results.append(row)
    return results


async def bench_bus(count: int) -> list[dict[str, Any]]:
    results = []
    for strict in (False, True):
        bus = InProcessBroker(strict=strict).connect("bench")

        async def handler(msg: Message) -> Pong:
            assert isinstance(msg, Ping)
            return Pong(n=msg.n)

        bus.register("echo", handler)

        async def send(bus: Any = bus) -> None:
            for i in range(count):
                await bus.send("echo", Ping(n=i), timeout=30)

        label = "bus send, strict JSON mode" if strict else "bus send, direct"
        results.append(await timed(label, count, send))
        await bus.close()
    return results


async def bench_queues(count: int) -> list[dict[str, Any]]:
    queues = SyncQueues()

    async def task() -> None:
        await asyncio.sleep(0)

    async def contended() -> None:
        await asyncio.gather(*(queues.run(f"vm-{i % 100}", 1, task) for i in range(count)))

    return [await timed("sync queue task (100 signatures, level 1)", count, contended)]


async def bench_db(url: str, count: int) -> list[dict[str, Any]]:
    db = create_database(url)
    await db.migrate()

    def write(session: Session, i: int) -> None:
        session.add(GlobalConfigVO(category="bench", name=f"k{i}", value=str(i),
                                   defaultValue="0", description=""))

    def read(session: Session, i: int) -> str | None:
        return session.scalars(select(GlobalConfigVO.value).where(
            GlobalConfigVO.category == "bench", GlobalConfigVO.name == f"k{i}")).one()

    async def writes() -> None:
        await asyncio.gather(*(db.run(write, i) for i in range(count)))

    async def reads() -> None:
        await asyncio.gather(*(db.run(read, i) for i in range(count)))

    rows = [await timed(f"db insert transaction ({db.dialect})", count, writes),
            await timed(f"db read transaction ({db.dialect})", count, reads)]
    await db.close()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        rows = [*await bench_flows(2000), *await bench_bus(20000), *await bench_queues(20000),
                *await bench_db(url, 3000)]
    print(f"{'what':<44} {'count':>8} {'seconds':>9} {'us each':>9} {'per second':>11}")
    for row in rows:
        print(f"{row['what']:<44} {row['count']:>8} {row['seconds']:>9.3f} "
              f"{row['us_each']:>9.2f} {row['per_second']:>11}")
    if args.json:
        print(json.dumps({"results": rows}))


if __name__ == "__main__":
    asyncio.run(main())
