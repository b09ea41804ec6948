"""Benchmark QueryVmInstance over a database of many VMs.

    .venv/bin/python bench/query.py [--vms 100000] [--repeat 50] [--db sqlite|postgresql|mariadb]
                                    [--json]

Builds a small cloud through the API on a fresh database (node in a separate process),
creates one VM through the API, stops the node and inserts ``--vms`` VMs directly with
SQLAlchemy Core, copies of that VM's rows (VM, root volume, NIC, IP; one VM in ten has a
user tag ``team<N>``, 100 VMs per tag), restarts the node, then times, one call at a time,
``--repeat`` calls of each query through REST:

* one condition: ``name=<a VM's name>``
* a three-level expanded condition: ``vmNics.l3Network.l2Network.name=l2``, ``limit=100``
* a user tag: ``__userTag__=team<N>``, ``limit=100``
* ``count=true`` with ``state=Running``
* a page of 100 sorted by createDate: ``sortBy=createDate sortDirection=desc start=1000
  limit=100``

Prints the 50th and 99th percentile latency of each. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    Api,
    CallFailed,
    VmRows,
    api_client,
    cloud_spec,
    deploy_cloud,
    dialect_of,
    fresh_database,
    image_file,
    latency_summary,
    node_subprocess,
    print_json,
    print_table,
)
from sqlalchemy import create_engine

TAGS = 100
TARGET_P50_MS = 50.0


def user_tag(i: int) -> str | None:
    return f"team{i // 10 % TAGS}" if i % 10 == 0 else None


def queries(vms: int) -> list[tuple[str, dict[str, Any], int | None]]:
    """(label, parameters, how many VMs it must find or count; None: any) per query."""
    pick = random.Random(7)
    name = f"bench-vm-{pick.randrange(vms)}"
    team = f"team{pick.randrange(TAGS)}"
    tagged = len([i for i in range(0, vms, 10) if user_tag(i) == team])
    return [
        ("name=<one VM>", {"q": [f"name={name}"]}, 1),
        ("vmNics.l3Network.l2Network.name=", {"q": ["vmNics.l3Network.l2Network.name=l2"],
                                               "limit": 100}, min(100, vms + 1)),
        ("__userTag__=", {"q": [f"__userTag__={team}"], "limit": 100}, min(100, tagged)),
        ("count=true", {"q": ["state=Running"], "count": True}, vms + 1),
        ("page of 100 by createDate", {"sortBy": "createDate", "sortDirection": "desc",
                                       "start": 1000, "limit": 100},
         max(0, min(100, vms + 1 - 1000))),
    ]


async def time_query(api: Api, label: str, params: dict[str, Any], expect: int | None,
                     repeat: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            reply = await api.call("QueryVmInstance", **params)
            found = reply["total"] if params.get("count") else len(reply["inventories"])
            if expect is not None and found != expect:
                raise CallFailed(f"{label} found {found} VMs, expected {expect}")
        except (CallFailed, KeyError, OSError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        latencies.append(time.perf_counter() - start)
    return {"what": label, "calls": repeat, **latency_summary(latencies),
            "errors": len(errors), "first_errors": errors[:3]}


async def bench(data_dir: Path, db_url: str, vms: int, repeat: int) -> tuple[list[Any], float]:
    async with node_subprocess(data_dir, db_url) as url, api_client(url) as api:
        uuids = await deploy_cloud(api, cloud_spec(4, image_file(data_dir)))
        reply = await api.call("CreateVmInstance", name="template-vm",
                               instanceOfferingUuid=uuids["instanceOfferings"]["tiny"],
                               imageUuid=uuids["images"]["image1"],
                               l3NetworkUuids=[uuids["l3Networks"]["l3"]])
        template = reply["inventory"]["uuid"]
    engine = create_engine(db_url)
    start = time.perf_counter()
    try:
        VmRows(engine, template).bulk(range(vms), hosts=list(uuids["hosts"].values()),
                                      user_tag=user_tag)
    finally:
        engine.dispose()
    filled = time.perf_counter() - start
    async with node_subprocess(data_dir, db_url) as url, api_client(url) as api:
        rows = []
        for label, params, expect in queries(vms):
            await time_query(api, label, params, expect, 2)  # warm-up
            rows.append(await time_query(api, label, params, expect, repeat))
    for row in rows:
        row["target_p50_ms"] = TARGET_P50_MS
    return rows, filled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=100_000, help="VMs inserted (100000)")
    parser.add_argument("--repeat", type=int, default=50, help="calls of each query (50)")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mariadb"), default="sqlite",
                        help="the node's database (sqlite)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    if args.vms < 1 or args.repeat < 1:
        parser.error("--vms and --repeat must be at least 1")

    with tempfile.TemporaryDirectory(prefix="zstack-bench-") as tmp:
        data_dir = Path(tmp) / "zstack"
        data_dir.mkdir()
        with fresh_database(args.db, Path(tmp)) as db_url:
            rows, filled = asyncio.run(bench(data_dir, db_url, args.vms, args.repeat))

    dialect = dialect_of(db_url)
    print(f"QueryVmInstance over {args.vms + 1} VMs ({dialect}, inserted in {filled:.1f} s), "
          f"{args.repeat} calls each, one at a time")
    print_table(rows, [("what", "query", "<"), ("p50_ms", "p50 ms", ".2f"),
                       ("p99_ms", "p99 ms", ".2f"), ("target_p50_ms", "target p50", ".0f"),
                       ("errors", "errors", "d")])
    for row in rows:
        for error in row["first_errors"]:
            print(f"  {row['what']} error: {error}", file=sys.stderr)
    if args.json:
        print_json({"database": dialect, "vms": args.vms + 1, "repeat": args.repeat,
                    "insert_seconds": round(filled, 3), "results": rows})
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
