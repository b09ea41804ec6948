"""VM creation on PostgreSQL and MariaDB against SQLite, in interleaved rounds.

    .venv/bin/python bench/db_ratio.py [--count 1000] [--rounds 3] [--dbs postgresql,mariadb]
                                       [--clients 100] [--hosts 100] [--json]

Each round runs ``bench/vm_create.py --counts COUNT --db sqlite``, then the same on each
database of ``--dbs``, one after the other, each in processes of its own on a fresh
database (see :mod:`vm_create`), so that the machine's slower and faster minutes fall on
every backend alike. Prints each round's seconds and each database's ratio to SQLite's in
that round, then the medians: the figure of the target "PostgreSQL and MariaDB within 2x of
SQLite". Exits 1 if a run failed or any creation failed. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import print_json, print_table

BENCH = Path(__file__).resolve().parent
SERVERS = ("postgresql", "mariadb")
#: The target: each server's time within this many times SQLite's.
TARGET_RATIO = 2.0


def run_once(db: str, count: int, clients: int, hosts: int) -> dict[str, Any]:
    """One ``vm_create.py`` run: its row for ``count`` VMs (with the number of creations
    that failed: the run then exits 1, but still prints its results)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "vm_create.py"), "--counts", str(count), "--db", db,
         "--clients", str(clients), "--hosts", str(hosts), "--json"],
        capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    try:
        row: dict[str, Any] = json.loads(lines[-1])["results"][-1]
    except (IndexError, KeyError, ValueError):
        raise SystemExit(f"bench/vm_create.py --db {db} failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}") from None
    return row


def _dbs(text: str) -> list[str]:
    dbs = [d.strip() for d in text.split(",") if d.strip()]
    if not dbs or any(d not in SERVERS for d in dbs) or len(set(dbs)) != len(dbs):
        raise argparse.ArgumentTypeError(
            f"--dbs takes {' and/or '.join(SERVERS)} (comma-separated), not {text!r}")
    return dbs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="VMs per run (1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--dbs", type=_dbs, default=["postgresql", "mariadb"],
                        help="databases compared with SQLite (postgresql,mariadb)")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (100)")
    parser.add_argument("--hosts", type=int, default=100, help="simulator hosts (100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    if min(args.count, args.rounds, args.clients, args.hosts) < 1:
        parser.error("--count, --rounds, --clients and --hosts must be at least 1")

    rounds: list[dict[str, Any]] = []
    for number in range(1, args.rounds + 1):
        seconds: dict[str, float] = {}
        errors = 0
        for db in ["sqlite", *args.dbs]:
            row = run_once(db, args.count, args.clients, args.hosts)
            seconds[db] = row["seconds"]
            errors += row["errors"]
            print(f"round {number}: {db} {row['seconds']:.3f} s", file=sys.stderr, flush=True)
        rounds.append({"round": number, "seconds": seconds, "errors": errors,
                       "ratios": {db: round(seconds[db] / seconds["sqlite"], 2)
                                  for db in args.dbs}})

    median_seconds = {db: round(statistics.median(r["seconds"][db] for r in rounds), 3)
                      for db in ["sqlite", *args.dbs]}
    median_ratios = {db: round(statistics.median(r["ratios"][db] for r in rounds), 2)
                     for db in args.dbs}
    print(f"{args.count} VMs through REST, {args.clients} clients, {args.hosts} simulator "
          f"hosts: seconds per round, and each database's ratio to SQLite's in that round "
          f"(target: under {TARGET_RATIO:g})")
    columns = [("round", "round", ">s"), ("sqlite", "sqlite s", ".3f")]
    for db in args.dbs:
        columns += [(db, f"{db} s", ".3f"), (f"{db} x", f"{db} x", ".2f")]
    table = [{"round": str(r["round"]), **r["seconds"],
              **{f"{db} x": r["ratios"][db] for db in args.dbs}} for r in rounds]
    table.append({"round": "median", **median_seconds,
                  **{f"{db} x": median_ratios[db] for db in args.dbs}})
    print_table(table, columns)
    if args.json:
        print_json({"count": args.count, "clients": args.clients, "hosts": args.hosts,
                    "rounds": rounds, "median_seconds": median_seconds,
                    "median_ratios": median_ratios, "target_ratio": TARGET_RATIO})
    return 1 if any(r["errors"] for r in rounds) else 0


if __name__ == "__main__":
    sys.exit(main())
