"""Benchmark VM creation through the REST API, next to ZStack's published figures.

    .venv/bin/python bench/vm_create.py [--counts 1,10,100,1000,10000] [--db sqlite|postgresql|mariadb]
                                        [--clients 100] [--hosts 100] [--profile FILE] [--json]

Starts a management node as a separate process on a fresh database (``--db``: a new SQLite
file, or a new schema/database on the server of ``ZSTACK_TEST_POSTGRESQL_URL`` /
``ZSTACK_TEST_MARIADB_URL``), builds the cloud through the API (:func:`common.cloud_spec`:
``--hosts`` simulator hosts of 64 CPUs and 256 GiB, simulator primary and backup storage, a
/16 IP range, a 1 MiB image, a 1-CPU 64 MiB offering: room for more than 10,000 VMs), creates
ten VMs to warm up (not measured), then, for each count, creates that many VMs with
``--clients`` concurrent REST clients: each logs in, then creates VMs one after another
(``POST /zstack/v1/vm-instances``, polling the job until it answers 200). Prints, per count,
the wall time (logins included), VMs per second, the 50th and 99th percentile latency of one
creation, ZStack's figure (one management node, 100 client threads, simulator hosts) and
the ratio.

Then the floor: after the node stopped, the same database rows (VM, root volume, NIC, IP,
their ResourceVO rows, host and primary storage capacity updates) inserted directly with
SQLAlchemy Core, one transaction per VM, one connection; the ``overhead`` column is the
end-to-end wall time over the floor's. Exits 1 if any creation failed. Not part of the
test run.
"""

from __future__ import annotations

import argparse
import asyncio
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

#: ZStack's published seconds to create N VMs (one management node, 100 client threads).
ZSTACK_SECONDS = {1: 0.51, 10: 1.55, 100: 11.33, 1000: 103.0, 10000: 23 * 60.0}
#: Our targets: ten times better (1 VM: 60 ms).
TARGET_SECONDS = {1: 0.06, 1000: 14.0, 10000: 140.0}
WARM_UP = 10


class Creator:
    """Creates VMs in the benchmark's cloud."""

    def __init__(self, api: Api, uuids: dict[str, dict[str, str]]) -> None:
        self.api = api
        self.params = {"instanceOfferingUuid": uuids["instanceOfferings"]["tiny"],
                       "imageUuid": uuids["images"]["image1"],
                       "l3NetworkUuids": [uuids["l3Networks"]["l3"]]}
        self.created = 0
        self.last_uuid = ""

    async def batch(self, count: int, clients: int) -> dict[str, Any]:
        """``count`` VMs by ``clients`` clients, each logging in first."""
        latencies: list[float] = []
        errors: list[str] = []
        names = iter([f"vm-{self.created + i}" for i in range(count)])
        self.created += count

        async def client() -> None:
            api = self.api.with_session(await self.api.login())
            for name in names:
                start = time.perf_counter()
                try:
                    reply = await api.call("CreateVmInstance", name=name, **self.params)
                    vm = reply["inventory"]
                    if vm["state"] != "Running":
                        raise CallFailed(f"VM {name} is {vm['state']}, not Running")
                    self.last_uuid = vm["uuid"]
                except (CallFailed, KeyError, OSError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(min(clients, count))))
        seconds = time.perf_counter() - start
        return {"count": count, "clients": min(clients, count), "seconds": round(seconds, 3),
                "vms_per_second": round(count / seconds, 1), **latency_summary(latencies),
                "errors": len(errors), "first_errors": errors[:3]}


async def bench(data_dir: Path, db_url: str, counts: list[int], clients: int,
                hosts: int, profile: Path | None) -> tuple[list[dict[str, Any]], float]:
    async with (node_subprocess(data_dir, db_url, profile=profile) as url,
                api_client(url, connections=clients * 2) as api):
        start = time.perf_counter()
        uuids = await deploy_cloud(api, cloud_spec(hosts, image_file(data_dir)))
        deployed = time.perf_counter() - start
        creator = Creator(api, uuids)
        warm = await creator.batch(WARM_UP, min(clients, WARM_UP))
        if warm["errors"]:
            raise SystemExit(f"warm-up failed: {warm['first_errors']}")
        rows = [await creator.batch(count, clients) for count in counts]
    # The floor, on the same database, the node stopped.
    engine = create_engine(db_url)
    try:
        vm_rows = VmRows(engine, creator.last_uuid)
        offset = 0
        for row in rows:
            floor = vm_rows.insert(range(offset, offset + row["count"]))
            offset += row["count"]
            row["floor_seconds"] = round(floor, 3)
            row["overhead"] = round(row["seconds"] / floor, 1)
    finally:
        engine.dispose()
    for row in rows:
        zstack = ZSTACK_SECONDS.get(row["count"])
        row["zstack_seconds"] = zstack
        row["vs_zstack"] = round(zstack / row["seconds"], 1) if zstack else None
        row["target_seconds"] = TARGET_SECONDS.get(row["count"])
    return rows, deployed


def _counts(text: str) -> list[int]:
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--counts takes numbers such as 1,10,100, not {text!r}")
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("--counts needs numbers of at least 1")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=_counts, default=[1, 10, 100, 1000, 10000],
                        help="numbers of VMs to create, one batch each (1,10,100,1000,10000)")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mariadb"), default="sqlite",
                        help="the node's database (sqlite)")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (100)")
    parser.add_argument("--hosts", type=int, default=100, help="simulator hosts (100)")
    parser.add_argument("--profile", type=Path,
                        help="run the node under cProfile, statistics written to this file")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    if args.clients < 1 or args.hosts < 1:
        parser.error("--clients and --hosts must be at least 1")
    if WARM_UP + sum(args.counts) > args.hosts * 640 or WARM_UP + sum(args.counts) > 65000:
        parser.error(f"{sum(args.counts)} VMs do not fit: at most 640 per host and 65,000 IPs")

    with tempfile.TemporaryDirectory(prefix="zstack-bench-") as tmp:
        data_dir = Path(tmp) / "zstack"
        data_dir.mkdir()
        with fresh_database(args.db, Path(tmp)) as db_url:
            rows, deployed = asyncio.run(bench(data_dir, db_url, args.counts, args.clients,
                                               args.hosts, args.profile))

    dialect = dialect_of(db_url)
    print(f"VM creation through REST: node in a separate process, {dialect}, {args.hosts} "
          f"simulator hosts (deployed in {deployed:.1f} s), {args.clients} clients")
    print_table(rows, [("count", "VMs", ">d"), ("seconds", "seconds", ".3f"),
                       ("vms_per_second", "VMs/s", ".1f"), ("p50_ms", "p50 ms", ".1f"),
                       ("p99_ms", "p99 ms", ".1f"), ("zstack_seconds", "ZStack s", ".2f"),
                       ("vs_zstack", "x faster", ".1f"), ("target_seconds", "target s", ".2f"),
                       ("floor_seconds", "floor s", ".3f"), ("overhead", "x floor", ".1f"),
                       ("errors", "errors", "d")])
    for row in rows:
        for error in row["first_errors"]:
            print(f"  {row['count']} VMs error: {error}", file=sys.stderr)
    if args.json:
        print_json({"database": dialect, "clients": args.clients, "hosts": args.hosts,
                    "deploy_seconds": round(deployed, 3), "results": rows})
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
