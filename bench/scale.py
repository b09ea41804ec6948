"""Benchmark VM creation as the number of hosts grows: allocation must not grow with it.

    .venv/bin/python bench/scale.py [--hosts 100,10000,100000] [--vms 200] [--clients 20]
                                    [--db sqlite|postgresql|mariadb] [--json]

For each number of hosts, on a fresh database: the node (a separate process) builds the
cloud of :func:`common.cloud_spec` with one simulator host through the API and stops; the
other hosts are inserted directly with SQLAlchemy Core (copies of the first host's HostVO
and ResourceVO rows, and of any row naming it in PrimaryStorageHostRefVO or SystemTagVO),
because adding 100,000 hosts through the API would take far longer than the benchmark.
The node is then started by ``python bench/common.py serve``, which gives each of those
hosts its simulated machine. Timed through REST: one VM created at a time (``--vms`` / 10 of
them; the p50 is the latency of one creation) and ``--vms`` VMs by ``--clients`` clients.
Then, the node stopped, one host allocation as the node makes it
(:class:`zplugins.compute.allocators.DefaultHostAllocatorStrategy` on the node's database,
the request of a 1-CPU 64 MiB VM with the conditions the storage and network steps add:
its zone, clusters attached to its primary storage and to its L2 network; rolled back), 50
times: its p50 and p99. Not part of the test run.
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
    api_client,
    cloud_spec,
    deploy_cloud,
    dialect_of,
    fresh_database,
    host_ip,
    image_file,
    latency_summary,
    new_uuid,
    node_subprocess,
    print_json,
    print_table,
)
from sqlalchemy import MetaData, Table, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from vm_create import Creator

ALLOCATIONS = 50
TARGET_ALLOCATION_MS = 10.0
TARGET_GROWTH = 1.5

#: The tables :func:`insert_hosts` writes, parents first (HostVO.uuid references
#: ResourceVO.uuid, which PostgreSQL and MariaDB enforce).
HOST_TABLES = ("ResourceVO", "HostVO", "PrimaryStorageHostRefVO", "SystemTagVO")


def insert_hosts(engine: Engine, template: str, count: int, *, batch: int = 5000) -> None:
    """``count`` more hosts like host ``template``, in the same cluster."""
    meta = MetaData()
    tables = {n: Table(n, meta, autoload_with=engine) for n in HOST_TABLES}
    copies: list[tuple[Table, str, dict[str, Any]]] = []
    with engine.connect() as conn:
        for table in tables.values():
            column = next(c for c in ("uuid", "hostUuid", "resourceUuid") if c in table.c
                          and (table.name in ("HostVO", "ResourceVO") or c != "uuid"))
            for found in conn.execute(select(table).where(table.c[column] == template)):
                copies.append((table, column, dict(found._mapping)))
    with engine.begin() as conn:
        for start in range(1, count + 1, batch):
            chunk: dict[str, list[dict[str, Any]]] = {n: [] for n in tables}
            for i in range(start, min(start + batch, count + 1)):
                uuid = new_uuid()
                for table, column, row in copies:
                    new = {**row, column: uuid}
                    if table.name == "HostVO":
                        new.update(name=f"host{i}", managementIp=host_ip(i))
                    elif table.name == "ResourceVO" and "resourceName" in new:
                        new["resourceName"] = f"host{i}"
                    elif column != "uuid" and "uuid" in table.c and "id" not in table.c:
                        new["uuid"] = new_uuid()
                    if "id" in table.c and table.c["id"].autoincrement:
                        new.pop("id", None)
                    chunk[table.name].append(new)
            for name, rows in chunk.items():
                if rows:
                    conn.execute(tables[name].insert(), rows)


def host_conditions(engine: Engine, uuids: dict[str, dict[str, str]]) -> tuple[Any, ...]:
    """The conditions on hosts that creating the benchmark's VM adds (``host_conditions``):
    in its zone, in a cluster attached to a usable primary storage with room for the root
    volume, in a cluster attached to its L2 network. SQL of the shape the storage and network
    plugins' steps add, written here from the tables to stay out of their internals."""
    from zplugins.compute.models import HostVO

    meta = MetaData()
    ps, ps_ref, l2_ref = (Table(n, meta, autoload_with=engine) for n in (
        "PrimaryStorageVO", "PrimaryStorageClusterRefVO", "L2NetworkClusterRefVO"))
    reachable = (select(ps_ref.c.clusterUuid)
                 .join(ps, ps.c.uuid == ps_ref.c.primaryStorageUuid)
                 .where(ps.c.state == "Enabled", ps.c.status == "Connected",
                        ps.c.availableCapacity >= 1 << 20))
    attached = select(l2_ref.c.clusterUuid).where(
        l2_ref.c.l2NetworkUuid == uuids["l2Networks"]["l2"])
    return (HostVO.zoneUuid.in_([uuids["zones"]["zone1"]]), HostVO.clusterUuid.in_(reachable),
            HostVO.clusterUuid.in_(attached))


def time_allocation(engine: Engine, uuids: dict[str, dict[str, str]]) -> dict[str, float]:
    """One host allocation as the node makes it, rolled back; p50 and p99 of 50."""
    from zplugins.compute.allocators import DefaultHostAllocatorStrategy, HostRequest

    strategy = DefaultHostAllocatorStrategy()
    request = HostRequest(cpuNum=1, memorySize=64 << 20, hypervisorType="Simulator",
                          conditions=host_conditions(engine, uuids))
    latencies = []
    for _ in range(ALLOCATIONS):
        with Session(engine) as session:
            start = time.perf_counter()
            strategy.allocate(session, request)
            session.flush()
            latencies.append(time.perf_counter() - start)
            session.rollback()
    return latency_summary(latencies)


async def one_size(tmp: Path, db_url: str, hosts: int, vms: int,
                   clients: int) -> dict[str, Any]:
    data_dir = tmp / "zstack"
    data_dir.mkdir()
    async with node_subprocess(data_dir, db_url) as url, api_client(url) as api:
        uuids = await deploy_cloud(api, cloud_spec(1, image_file(data_dir)))
    engine = create_engine(db_url)
    start = time.perf_counter()
    try:
        insert_hosts(engine, uuids["hosts"]["host0"], hosts - 1)
    finally:
        engine.dispose()
    inserted = time.perf_counter() - start
    async with (node_subprocess(data_dir, db_url, simulated_hosts=True) as url,
                api_client(url, connections=clients * 2) as api):
        creator = Creator(api, uuids)
        await creator.batch(5, 5)  # warm-up
        one = await creator.batch(max(1, vms // 10), 1)
        many = await creator.batch(vms, clients)
    engine = create_engine(db_url)
    try:
        allocation = time_allocation(engine, uuids)
    finally:
        engine.dispose()
    return {"hosts": hosts, "insert_seconds": round(inserted, 2),
            "one_p50_ms": one["p50_ms"], "one_p99_ms": one["p99_ms"],
            "vms": vms, "clients": many["clients"], "seconds": many["seconds"],
            "vms_per_second": many["vms_per_second"], "p50_ms": many["p50_ms"],
            "alloc_p50_ms": round(allocation["p50_ms"], 2),
            "alloc_p99_ms": round(allocation["p99_ms"], 2),
            "errors": one["errors"] + many["errors"],
            "first_errors": one["first_errors"] + many["first_errors"]}


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hosts takes numbers such as 100,10000, not {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("--hosts needs numbers of at least 1")
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=_sizes, default=[100, 10000, 100000],
                        help="numbers of simulator hosts, one run each (100,10000,100000)")
    parser.add_argument("--vms", type=int, default=200, help="VMs created per run (200)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (20)")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mariadb"), default="sqlite",
                        help="the node's database (sqlite)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    if args.vms < 1 or args.clients < 1:
        parser.error("--vms and --clients must be at least 1")

    rows = []
    for hosts in args.hosts:
        with (tempfile.TemporaryDirectory(prefix="zstack-bench-") as tmp,
              fresh_database(args.db, Path(tmp)) as db_url):
            rows.append(asyncio.run(one_size(Path(tmp), db_url, hosts, args.vms,
                                             args.clients)))
    base = rows[0]
    for row in rows:
        row["growth"] = round(row["seconds"] / base["seconds"], 2)
        row["one_growth"] = round(row["one_p50_ms"] / base["one_p50_ms"], 2)

    print(f"VM creation by number of hosts ({dialect_of(db_url)}; node in a separate "
          f"process); growth relative to {base['hosts']} hosts, target under {TARGET_GROWTH}x;"
          f" allocation target under {TARGET_ALLOCATION_MS:.0f} ms")
    print_table(rows, [("hosts", "hosts", ">d"), ("one_p50_ms", "1 VM p50 ms", ".1f"),
                       ("one_growth", "growth", ".2f"), ("seconds", f"{args.vms} VMs s", ".2f"),
                       ("vms_per_second", "VMs/s", ".1f"), ("growth", "growth", ".2f"),
                       ("alloc_p50_ms", "alloc p50 ms", ".2f"),
                       ("alloc_p99_ms", "alloc p99 ms", ".2f"), ("errors", "errors", "d")])
    for row in rows:
        for error in row["first_errors"]:
            print(f"  {row['hosts']} hosts error: {error}", file=sys.stderr)
    if args.json:
        print_json({"database": dialect_of(db_url), "vms": args.vms, "clients": args.clients,
                    "results": rows})
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
