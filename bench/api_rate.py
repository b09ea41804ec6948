"""Benchmark the rate of cheap API calls with many concurrent connections.

    .venv/bin/python bench/api_rate.py [--count 20000] [--clients 1000] [--client auto|wrk|python]
                                       [--seconds 10] [--db ...] [--json]

Starts a management node as a separate process on a fresh database, creates one zone and
checks that ``QueryZone`` finds it, then has ``--clients`` concurrent connections call
``QueryZone`` (``GET /zstack/v1/zones?q=name=zone1``) and then ``ValidateSession``
(``GET /zstack/v1/accounts/sessions/{uuid}/valid``), after a warm-up round that opens every
connection. Prints requests per second, the 50th and 99th percentile latency and the
errors, which must be none (exit 1 otherwise).

The load comes from ``wrk`` (Debian's package) when it is installed (``--client auto``, the
default), for ``--seconds`` per API; an error is a non-2xx answer or a socket error. A
client in C costs a small fraction of what the node spends on a call, while the Python
client (``--client python``: ``--count`` calls, each answer checked) costs about as much
as the node, and on a machine of few cores the two compete for the same CPU. Not part of
the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (
    CallFailed,
    api_client,
    dialect_of,
    fresh_database,
    node_subprocess,
    print_json,
    print_table,
    run_calls,
)

TARGET_PER_SECOND = 3000
_WRK_TIME = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise CallFailed(f"wrk printed a latency of {text!r}")
    return round(float(found[1]) * _WRK_TIME[found[2]], 2)


async def run_wrk(label: str, url: str, session: str, clients: int,
                  seconds: float) -> dict[str, Any]:
    """``wrk`` on ``url`` with ``clients`` connections for ``seconds``; its figures."""
    process = await asyncio.create_subprocess_exec(
        # A slow answer is not an error (the Python client waits minutes too): only
        # failures count, not wrk's default 2 s timeout.
        "wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency",
        "--timeout", "60s",
        "-H", f"Authorization: OAuth {session}", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await process.communicate())[0].decode(errors="replace")
    requests = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if process.returncode != 0 or requests is None or len(latency) != 2:
        raise SystemExit(f"wrk failed ({process.returncode}):\n{out}")
    count, elapsed = int(requests[1]), _wrk_ms(requests[2] + requests[3]) / 1000
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                        r"timeout (\d+)", out)
    errors = (int(non_2xx[1]) if non_2xx else 0) + \
        (sum(int(n) for n in sockets.groups()) if sockets else 0)
    return {"what": label, "count": count, "clients": clients, "seconds": round(elapsed, 3),
            "per_second": round(count / elapsed, 1), "p50_ms": _wrk_ms(latency["50"]),
            "p99_ms": _wrk_ms(latency["99"]), "errors": errors,
            "first_errors": [line.strip() for line in out.splitlines()
                             if "Non-2xx" in line or "Socket errors" in line][:3]}


async def bench(data_dir: Path, db_url: str, count: int, clients: int, client: str,
                seconds: float) -> list[dict[str, Any]]:
    async with (node_subprocess(data_dir, db_url) as url,
                api_client(url, connections=clients) as api):
        await api.call("CreateZone", name="zone1")
        session = api.session
        assert session is not None

        async def query_zone(i: int) -> None:
            found = (await api.call("QueryZone", q=["name=zone1"]))["inventories"]
            if len(found) != 1:
                raise CallFailed(f"QueryZone name=zone1 found {len(found)} zones")

        async def validate(i: int) -> None:
            if not (await api.call("ValidateSession", sessionUuid=session))["valid"]:
                raise CallFailed("ValidateSession: the session is not valid")

        rows = []
        if client == "wrk":
            await query_zone(0)  # what wrk asks for is there, and answered right
            await validate(0)
            for label, path in (("QueryZone", "/zstack/v1/zones?q=name=zone1"),
                                ("ValidateSession",
                                 f"/zstack/v1/accounts/sessions/{session}/valid")):
                await run_wrk("warm-up", url + path, session, clients, 1)
                rows.append(await run_wrk(label, url + path, session, clients, seconds))
        else:
            for label, call in (("QueryZone", query_zone), ("ValidateSession", validate)):
                await run_calls("warm-up", clients, clients, call)
                rows.append(await run_calls(label, count, clients, call))
    for row in rows:
        row["target_per_second"] = TARGET_PER_SECOND if row["what"] == "QueryZone" else None
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="calls of each API (20000)")
    parser.add_argument("--clients", type=int, default=1000,
                        help="concurrent clients and connections (1000)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="the load generator: wrk if installed (auto), wrk, or python")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="seconds of load per API with wrk (10)")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mariadb"), default="sqlite",
                        help="the node's database (sqlite)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    if args.count < 1 or args.clients < 1:
        parser.error("--count and --clients must be at least 1")
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    elif client == "wrk" and not shutil.which("wrk"):
        parser.error("--client wrk: wrk is not installed (apt-get install wrk)")

    with tempfile.TemporaryDirectory(prefix="zstack-bench-") as tmp:
        data_dir = Path(tmp) / "zstack"
        data_dir.mkdir()
        with fresh_database(args.db, Path(tmp)) as db_url:
            rows = asyncio.run(bench(data_dir, db_url, args.count, args.clients, client,
                                     args.seconds))

    dialect = dialect_of(db_url)
    print(f"API rate: node in a separate process, {dialect}, {args.clients} connections, "
          f"load from {client}")
    print_table(rows, [("what", "API", "<"), ("count", "calls", "d"),
                       ("seconds", "seconds", ".3f"), ("per_second", "calls/s", ".1f"),
                       ("p50_ms", "p50 ms", ".2f"), ("p99_ms", "p99 ms", ".2f"),
                       ("target_per_second", "target/s", "d"), ("errors", "errors", "d")])
    for row in rows:
        for error in row["first_errors"]:
            print(f"  {row['what']} error: {error}", file=sys.stderr)
    if args.json:
        print_json({"database": dialect, "clients": args.clients, "client": client,
                    "results": rows})
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
