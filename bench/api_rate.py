"""Benchmark the rate of cheap API calls with many concurrent connections.

    .venv/bin/python bench/api_rate.py [--count 20000] [--clients 1000] [--db ...] [--json]

Starts a management node as a separate process on a fresh database, creates one zone, then
has ``--clients`` concurrent clients, each with its own connection, make ``--count`` calls
of ``QueryZone`` (``GET /zstack/v1/zones?q=name=zone1``) and then of ``ValidateSession``
(``GET /zstack/v1/accounts/sessions/{uuid}/valid``), after a warm-up round that opens every
connection. Prints requests per second, the 50th and 99th percentile latency and the
errors, which must be none (exit 1 otherwise). The clients run in one process on the same
machine: on few cores they compete with the node for CPU. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def bench(data_dir: Path, db_url: str, count: int, clients: int) -> list[dict[str, Any]]:
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
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mariadb"), default="sqlite",
                        help="the node's database (sqlite)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    if args.count < 1 or args.clients < 1:
        parser.error("--count and --clients must be at least 1")

    with tempfile.TemporaryDirectory(prefix="zstack-bench-") as tmp:
        data_dir = Path(tmp) / "zstack"
        data_dir.mkdir()
        with fresh_database(args.db, Path(tmp)) as db_url:
            rows = asyncio.run(bench(data_dir, db_url, args.count, args.clients))

    dialect = dialect_of(db_url)
    print(f"API rate: node in a separate process, {dialect}, {args.clients} connections")
    print_table(rows, [("what", "API", "<"), ("count", "calls", "d"),
                       ("seconds", "seconds", ".3f"), ("per_second", "calls/s", ".1f"),
                       ("p50_ms", "p50 ms", ".2f"), ("p99_ms", "p99 ms", ".2f"),
                       ("target_per_second", "target/s", "d"), ("errors", "errors", "d")])
    for row in rows:
        for error in row["first_errors"]:
            print(f"  {row['what']} error: {error}", file=sys.stderr)
    if args.json:
        print_json({"database": dialect, "clients": args.clients, "results": rows})
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
