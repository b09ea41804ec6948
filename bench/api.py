"""Benchmark the REST API: CreateZone and QueryZone calls through HTTP, many clients at once.

    .venv/bin/python bench/api.py [--count N] [--clients C] [--db URL] [--no-separate] [--json]

Starts a management node on a fresh database (a new SQLite file unless ``--db`` gives a
PostgreSQL or MariaDB URL), logs in as admin over HTTP, then has ``--clients`` concurrent
clients make ``--count`` ``CreateZone`` calls (``POST /zstack/v1/zones``, then polling the
job until it answers 200) and ``--count`` ``QueryZone`` calls (``GET /zstack/v1/zones?q=
name=<an existing zone>&limit=10``). Prints, for each, the wall time, calls per second, the
50th and 99th percentile latency and the number of errors; exits 1 if any call failed.

By default the node runs as a separate process (``zstack-ctl start --foreground``, settings
from ``ZSTACK_*`` environment variables, log level WARNING) so that the numbers measure the
server, not the clients sharing its event loop; ``--no-separate`` runs it in this process.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from zcore.config import load_settings
from zcore.node import create_node

START_TIMEOUT = 120.0
POLL_FIRST = 0.002
POLL_MAX = 0.05
LOG_LEVEL = "WARNING"  # a log line per request would be part of what is measured

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- the node


@asynccontextmanager
async def node_in_process(data_dir: Path, port: int, db_url: str) -> AsyncIterator[str]:
    settings = load_settings(overrides={
        "node": {"data_dir": str(data_dir), "port": port, "host": "127.0.0.1"},
        "database": {"url": db_url},
        "log": {"level": LOG_LEVEL},
    })
    node = await create_node(settings)
    await node.start(serve=True)
    try:
        yield node.url
    finally:
        await node.stop()


@asynccontextmanager
async def node_subprocess(data_dir: Path, port: int, db_url: str) -> AsyncIterator[str]:
    ctl = Path(sys.executable).with_name("zstack-ctl")
    command = [str(ctl)] if ctl.exists() else [sys.executable, "-m", "zcore.ctl"]
    command += ["start", "--foreground"]
    env = {**os.environ,
           "ZSTACK_NODE_DATA_DIR": str(data_dir), "ZSTACK_NODE_HOST": "127.0.0.1",
           "ZSTACK_NODE_PORT": str(port), "ZSTACK_DATABASE_URL": db_url,
           "ZSTACK_LOG_LEVEL": LOG_LEVEL}
    log_path = data_dir / "node.log"
    url = f"http://127.0.0.1:{port}"
    process = _spawn(command, env, log_path)
    try:
        await _wait_healthy(url, process, log_path)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_out:
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log_out,
                                stderr=subprocess.STDOUT)


async def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-20:]
                raise SystemExit(f"the node exited with status {process.returncode} "
                                 "before it served:\n" + "\n".join(tail))
            try:
                async with http.get(f"{url}/health") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"the node did not answer on {url} within {START_TIMEOUT:.0f} s; "
                     f"see {log_path}")


# --------------------------------------------------------------------------- the clients


@dataclass
class Client:
    """One aiohttp session shared by every worker, logged in as admin."""

    http: aiohttp.ClientSession
    base: str
    headers: dict[str, str] = field(default_factory=dict)

    async def login(self) -> None:
        body = {"logInByAccount": {"accountName": "admin",
                                   "password": hashlib.sha512(b"password").hexdigest()}}
        async with self.http.put(f"{self.base}/accounts/login", data=_encode(body),
                                 headers={"Content-Type": "application/json"}) as reply:
            data = _decode(await reply.read())
            if reply.status != 200:
                raise SystemExit(f"login failed: HTTP {reply.status}: {data}")
        self.headers = {"Authorization": f"OAuth {data['inventory']['uuid']}",
                        "Content-Type": "application/json"}

    async def create_zone(self, name: str) -> None:
        body = _encode({"params": {"name": name}})
        async with self.http.post(f"{self.base}/zones", data=body,
                                  headers=self.headers) as reply:
            status, data = reply.status, await reply.read()
        if status != 202:
            raise CallFailed(f"CreateZone answered HTTP {status}: {data[:300]!r}")
        location = _decode(data)["location"]
        delay = POLL_FIRST
        while True:
            await asyncio.sleep(delay)
            async with self.http.get(location) as reply:
                status, data = reply.status, await reply.read()
            if status == 200:
                if _decode(data)["inventory"]["name"] != name:
                    raise CallFailed(f"CreateZone {name}: the job answered another zone")
                return
            if status != 202:
                raise CallFailed(f"CreateZone job answered HTTP {status}: {data[:300]!r}")
            delay = min(delay * 2, POLL_MAX)

    async def query_zone(self, name: str) -> None:
        params = [("q", f"name={name}"), ("limit", "10")]
        async with self.http.get(f"{self.base}/zones", params=params,
                                 headers=self.headers) as reply:
            status, data = reply.status, await reply.read()
        if status != 200:
            raise CallFailed(f"QueryZone answered HTTP {status}: {data[:300]!r}")
        found = _decode(data)["inventories"]
        if len(found) != 1 or found[0]["name"] != name:
            raise CallFailed(f"QueryZone name={name} found {len(found)} zones, expected 1")


class CallFailed(Exception):
    pass


async def run_calls(label: str, count: int, clients: int,
                    call: Callable[[int], Awaitable[None]]) -> dict[str, Any]:
    """``count`` calls of ``call(i)`` by ``clients`` workers; wall time and latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:
            start = time.perf_counter()
            try:
                await call(i)
            except (TimeoutError, CallFailed, aiohttp.ClientError, KeyError, msgspec.DecodeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"what": label, "count": count, "clients": clients, "seconds": round(elapsed, 3),
            "per_second": round(count / elapsed, 1),
            "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
            "errors": len(errors), "first_errors": errors[:3]}


def _percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def bench(url: str, count: int, clients: int) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=max(100, clients * 2), limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        client = Client(http, f"{url}/zstack/v1")
        await client.login()
        run = f"bench-{random.getrandbits(32):08x}"
        names = [f"{run}-{i}" for i in range(count)]
        warm = [f"{run}-warm-{i}" for i in range(clients)]
        # Warm-up, not measured: open the connections, fill the server's caches.
        await run_calls("warm-up", len(warm), clients, lambda i: client.create_zone(warm[i]))
        await run_calls("warm-up", len(warm), clients, lambda i: client.query_zone(warm[i]))

        create = await run_calls("CreateZone", count, clients,
                                 lambda i: client.create_zone(names[i]))
        pick = random.Random(7)
        existing = names + warm
        lookups = [pick.choice(existing) for _ in range(count)]
        query = await run_calls("QueryZone", count, clients,
                                lambda i: client.query_zone(lookups[i]))
    return [create, query]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="calls of each API (1000)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    parser.add_argument("--separate", action=argparse.BooleanOptionalAction, default=True,
                        help="run the node as a separate process (default) or in this one")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    if args.count < 1 or args.clients < 1:
        parser.error("--count and --clients must be at least 1")

    with tempfile.TemporaryDirectory(prefix="zstack-bench-") as tmp:
        data_dir = Path(tmp) / "zstack"
        db_url = args.db or f"sqlite:///{data_dir / 'zstack.db'}"
        port = free_port()
        serve = node_subprocess if args.separate else node_in_process
        async with serve(data_dir, port, db_url) as url:
            rows = await bench(url, args.count, args.clients)

    mode = "separate process" if args.separate else "in process"
    dialect = db_url.split(":", 1)[0].split("+", 1)[0]
    print(f"node: {mode}, {dialect}; {args.clients} concurrent clients")
    print(f"{'what':<12} {'count':>7} {'seconds':>9} {'calls/s':>9} {'p50 ms':>9} "
          f"{'p99 ms':>9} {'errors':>7}")
    for row in rows:
        print(f"{row['what']:<12} {row['count']:>7} {row['seconds']:>9.3f} "
              f"{row['per_second']:>9.1f} {row['p50_ms']:>9.2f} {row['p99_ms']:>9.2f} "
              f"{row['errors']:>7}")
        for error in row["first_errors"]:
            print(f"  {row['what']} error: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps({"node": mode, "database": dialect, "clients": args.clients,
                          "results": rows}))
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
