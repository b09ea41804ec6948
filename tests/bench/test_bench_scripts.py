"""Each benchmark script starts, runs on a tiny size and prints its JSON results last.

The benchmarks themselves are not tests; this only keeps the scripts working. The scripts
run at the same time, as separate processes, to keep the whole under a minute.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
TIMEOUT = 180

#: Script and the arguments of a tiny run.
RUNS: dict[str, list[str]] = {
    "vm_create": ["--counts", "1,3", "--hosts", "1", "--clients", "2"],
    "query": ["--vms", "30", "--repeat", "1"],
    "api_rate": ["--count", "20", "--clients", "5", "--seconds", "1"],
    "scale": ["--hosts", "2", "--vms", "2", "--clients", "1"],
    "flows": ["--rounds", "10"],
}
#: The database servers the tests were given (``bootstrap.sh test`` exports their URLs):
#: bench/db_ratio.py compares them with SQLite.
SERVERS = [db for db, variable in (("postgresql", "ZSTACK_TEST_POSTGRESQL_URL"),
                                   ("mariadb", "ZSTACK_TEST_MARIADB_URL"))
           if os.environ.get(variable)]
if SERVERS:
    RUNS["db_ratio"] = ["--count", "2", "--rounds", "1", "--dbs", ",".join(SERVERS),
                        "--hosts", "1", "--clients", "2"]


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, subprocess.Popen[str]]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = {}
    for name, args in RUNS.items():
        if name == "flows" and importlib.util.find_spec("taskflow") is None:
            continue
        started[name] = subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), *args, "--json"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def result_of(runs: dict[str, subprocess.Popen[str]], name: str) -> dict[str, Any]:
    if name not in runs:
        pytest.skip("taskflow is not installed (pip install -e '.[bench]')")
    out, err = runs[name].communicate(timeout=TIMEOUT)
    assert runs[name].returncode == 0, f"bench/{name}.py failed:\n{out[-2000:]}\n{err[-3000:]}"
    last = out.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(last)
    return result


def test_vm_create_creates_every_vm(runs: dict[str, subprocess.Popen[str]]) -> None:
    result = result_of(runs, "vm_create")
    assert [r["count"] for r in result["results"]] == [1, 3]
    for row in result["results"]:
        assert row["errors"] == 0
        assert row["vms_per_second"] > 0 and row["floor_seconds"] > 0
        assert row["overhead"] > 0
    assert result["results"][0]["zstack_seconds"] == 0.51


def test_query_answers_each_query(runs: dict[str, subprocess.Popen[str]]) -> None:
    result = result_of(runs, "query")
    assert result["vms"] == 31
    assert len(result["results"]) == 5
    assert all(r["errors"] == 0 and r["p50_ms"] > 0 for r in result["results"])


def test_api_rate_has_no_errors(runs: dict[str, subprocess.Popen[str]]) -> None:
    result = result_of(runs, "api_rate")
    assert [r["what"] for r in result["results"]] == ["QueryZone", "ValidateSession"]
    assert all(r["errors"] == 0 and r["per_second"] > 0 for r in result["results"])


def test_scale_creates_vms_on_inserted_hosts(runs: dict[str, subprocess.Popen[str]]) -> None:
    result = result_of(runs, "scale")
    (row,) = result["results"]
    assert row["hosts"] == 2 and row["errors"] == 0
    assert row["alloc_p50_ms"] > 0 and row["growth"] == 1.0


def test_flows_compares_both_engines(runs: dict[str, subprocess.Popen[str]]) -> None:
    result = result_of(runs, "flows")
    assert [(r["steps"], r["fails"]) for r in result["results"]] == [
        (10, False), (10, True), (100, False), (100, True)]
    assert all(r["ours_per_second"] > 0 and r["taskflow_per_second"] > 0
               for r in result["results"])


def test_db_ratio_compares_each_server_with_sqlite(
        runs: dict[str, subprocess.Popen[str]]) -> None:
    if "db_ratio" not in runs:
        pytest.skip("no database server given (ZSTACK_TEST_POSTGRESQL_URL, "
                    "ZSTACK_TEST_MARIADB_URL)")
    result = result_of(runs, "db_ratio")
    (row,) = result["rounds"]
    assert row["round"] == 1 and row["errors"] == 0
    assert set(row["seconds"]) == {"sqlite", *SERVERS}
    assert all(seconds > 0 for seconds in row["seconds"].values())
    assert row["ratios"] == {db: round(row["seconds"][db] / row["seconds"]["sqlite"], 2)
                             for db in SERVERS}
    assert result["median_ratios"] == row["ratios"]
