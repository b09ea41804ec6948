"""The garbage collector: jobs submitted with a change, run on events and timers, once."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from zcore import GcJobKind, hookimpl
from zcore.db import new_uuid, utcnow
from zcore.errors import StartupError, ZError
from zcore.gc import GarbageCollectorVO, GcOutcome
from zcore.node import Node
from zcore.plugins import PluginSet
from zcore.testing import sha512

MakeNode = Callable[..., Awaitable[Node]]
KIND = "test.collect"
REFERENCE = json.loads((Path(__file__).parents[1] / "reference" / "zstack_api.json")
                       .read_text())


class Collector:
    """A plugin with one GC job kind that records its runs and fails while told to."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str]] = []  # (node uuid, the context's "id")
        self.failures: dict[str, int] = {}  # id -> how many runs still fail
        self.gate: asyncio.Event | None = None  # runs wait for it when set

    async def collect(self, node: Node, context: dict[str, Any]) -> None:
        self.runs.append((node.uuid, context["id"]))
        await asyncio.sleep(0.01)
        if self.gate is not None:
            await self.gate.wait()
        if self.failures.get(context["id"]):
            self.failures[context["id"]] -= 1
            raise RuntimeError(f"host of {context['id']} is not reachable")

    def ran(self, job_id: str) -> int:
        return sum(1 for _, i in self.runs if i == job_id)

    @hookimpl
    def zcore_gc_job_kinds(self) -> Any:
        yield GcJobKind(KIND, self.collect, "records its runs")


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def make_gc_node(make_node: MakeNode, collector: Collector) -> MakeNode:
    """Nodes with only the core and the collector plugin, sharing the test's database."""

    async def make(**options: Any) -> Node:
        return await make_node(("collector", collector), installed=False, **options)

    return make


async def submit(node: Node, job_id: str, **when: Any) -> str:
    when = when or {"trigger": "host-connected:a"}
    return await node.db.run(lambda s: node.gc.submit(s, KIND, job_id, {"id": job_id}, **when))


async def jobs(node: Node) -> dict[str, GarbageCollectorVO]:
    """Every job, by name."""
    def read(session: Session) -> dict[str, GarbageCollectorVO]:
        return {j.name: j for j in session.scalars(select(GarbageCollectorVO))}
    return await node.db.run(read)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def is_done(node: Node, name: str) -> bool:
    job = (await jobs(node)).get(name)
    return job is not None and job.status == "Done"


# --------------------------------------------------------------------------- submitting


async def test_a_job_exists_only_if_its_transaction_commits(make_gc_node: MakeNode) -> None:
    node = await make_gc_node()

    def gives_up(session: Session) -> None:
        node.gc.submit(session, KIND, "rolled-back", {"id": "rolled-back"}, trigger="k")
        raise RuntimeError("the caller's change failed")

    with pytest.raises(RuntimeError):
        await node.db.run(gives_up)
    uuid = await submit(node, "kept", trigger="host-connected:a")
    assert list(await jobs(node)) == ["kept"]
    job = (await jobs(node))["kept"]
    assert (job.uuid, job.status, job.type, job.runnerClass, job.triggerKey) == \
        (uuid, "Idle", "EventBased", KIND, "host-connected:a")
    assert json.loads(job.context) == {"id": "kept"} and job.managementNodeUuid is None


async def test_bad_jobs_are_refused_and_nothing_is_stored(make_gc_node: MakeNode) -> None:
    node = await make_gc_node()
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("gone.kind", {"trigger": "k"},
         f"no active plugin registers the GC job kind 'gone.kind' (registered: {KIND})"),
        (KIND, {}, "give exactly one of trigger="),
        (KIND, {"trigger": "k", "interval": 5}, "give exactly one of trigger="),
        (KIND, {"interval": 0}, "interval 0 must be a positive number"),
        (KIND, {"trigger": "k", "context": {"when": utcnow()}}, "must be a JSON object"),
    ]
    for kind, when, message in cases:
        context = when.pop("context", {"id": "x"})
        with pytest.raises(ZError, match=re.escape(message)) as caught:
            await node.db.run(lambda s, k=kind, c=context, w=when:
                              node.gc.submit(s, k, "bad", c, **w))
        assert caught.value.code == "SYS.1007"
    assert await jobs(node) == {}


def test_two_plugins_cannot_register_one_kind(make_plugins: Callable[..., PluginSet]) -> None:
    with pytest.raises(StartupError, match=f"duplicate GC job kind '{KIND}': registered by "
                                           r"plugin 'first' \(.*\) and by plugin 'second'"):
        make_plugins(("first", Collector()), ("second", Collector()), installed=False)


# --------------------------------------------------------------------------- running


async def test_trigger_runs_only_the_jobs_waiting_for_its_key(
        make_gc_node: MakeNode, collector: Collector) -> None:
    node = await make_gc_node()
    for job_id in ("a1", "a2"):
        await submit(node, job_id, trigger="host-connected:a")
    await submit(node, "b1", trigger="host-connected:b")
    outcomes = await node.gc.trigger("host-connected:a")
    assert sorted((o.name, o.done) for o in outcomes) == [("a1", True), ("a2", True)]
    assert sorted(i for _, i in collector.runs) == ["a1", "a2"]
    found = await jobs(node)
    assert [found[n].status for n in ("a1", "a2", "b1")] == ["Done", "Done", "Idle"]
    assert found["a1"].managementNodeUuid == node.uuid
    assert await node.gc.trigger("host-connected:a") == []  # Done jobs do not run again
    assert len(collector.runs) == 2


async def test_a_failing_job_stays_idle_with_its_error_and_is_retried(
        make_gc_node: MakeNode, collector: Collector) -> None:
    node = await make_gc_node()
    collector.failures["x"] = 1
    await submit(node, "x")
    [outcome] = await node.gc.trigger("host-connected:a")
    assert not outcome.done and outcome.error == "RuntimeError: host of x is not reachable"
    job = (await jobs(node))["x"]
    assert (job.status, job.lastError, job.attempts, job.managementNodeUuid) == \
        ("Idle", "RuntimeError: host of x is not reachable", 1, None)
    [outcome] = await node.gc.trigger("host-connected:a")
    assert outcome.done
    job = (await jobs(node))["x"]
    assert (job.status, job.lastError, job.attempts) == ("Done", None, 2)


async def test_a_run_that_takes_too_long_fails(make_node: MakeNode) -> None:
    async def hangs(node: Node, context: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    class Slow:
        @hookimpl
        def zcore_gc_job_kinds(self) -> Any:
            yield GcJobKind("test.hangs", hangs, timeout=0.1)

    node = await make_node(("slow", Slow()), installed=False)
    await node.db.run(lambda s: node.gc.submit(s, "test.hangs", "h", {}, trigger="k"))
    [outcome] = await node.gc.trigger("k")
    assert not outcome.done and "did not finish within 0.1 s" in (outcome.error or "")
    assert (await jobs(node))["h"].status == "Idle"


async def test_two_nodes_never_run_the_same_job_twice(
        make_gc_node: MakeNode, collector: Collector) -> None:
    first, second = await make_gc_node(), await make_gc_node()
    names = [f"j{i:02}" for i in range(30)]
    for name in names:
        await submit(first, name)
    results = await asyncio.gather(first.gc.trigger("host-connected:a"),
                                   second.gc.trigger("host-connected:a"),
                                   first.gc.trigger("host-connected:a"),
                                   second.gc.trigger("host-connected:a"))
    outcomes: list[GcOutcome] = [o for r in results for o in r]
    assert sorted(o.name for o in outcomes) == names and all(o.done for o in outcomes)
    assert sorted(i for _, i in collector.runs) == names
    found = await jobs(first)
    assert {j.status for j in found.values()} == {"Done"}
    assert {j.managementNodeUuid for j in found.values()} <= {first.uuid, second.uuid}


async def test_a_job_left_processing_by_a_dead_node_runs_again(
        make_gc_node: MakeNode, collector: Collector) -> None:
    node = await make_gc_node()
    await submit(node, "orphan")
    await submit(node, "busy")
    dead, alive = new_uuid(), new_uuid()

    def claimed_by(session: Session, name: str, owner: str, seconds_ago: float) -> None:
        session.execute(update(GarbageCollectorVO).where(GarbageCollectorVO.name == name)
                        .values(status="Processing", managementNodeUuid=owner,
                                lastOpDate=utcnow() - timedelta(seconds=seconds_ago)))

    await node.db.run(claimed_by, "orphan", dead, node.gc.lease + 60)
    await node.db.run(claimed_by, "busy", alive, 1)
    await node.gc.scan()  # or the periodic task's first scan, if it comes first
    await until(lambda: is_done(node, "orphan"))
    found = await jobs(node)
    assert (found["orphan"].status, found["orphan"].managementNodeUuid) == ("Done", node.uuid)
    assert (found["busy"].status, found["busy"].managementNodeUuid) == ("Processing", alive)
    assert collector.runs == [(node.uuid, "orphan")]


async def test_a_node_that_stops_gives_back_the_jobs_it_runs(
        make_gc_node: MakeNode, collector: Collector) -> None:
    first, second = await make_gc_node(), await make_gc_node()
    await submit(first, "long")
    collector.gate = asyncio.Event()
    running = asyncio.create_task(first.gc.trigger("host-connected:a"))

    async def started() -> bool:
        return bool(collector.runs)

    await until(started)
    assert (await jobs(first))["long"].status == "Processing"
    await first.stop()
    [outcome] = await running
    assert not outcome.done and "stopped" in (outcome.error or "")
    job = (await jobs(second))["long"]
    assert (job.status, job.managementNodeUuid) == ("Idle", None)
    collector.gate.set()
    [outcome] = await second.gc.trigger("host-connected:a")
    assert outcome.done and collector.runs[-1] == (second.uuid, "long")


async def test_the_timer_retries_time_based_jobs(
        make_gc_node: MakeNode, collector: Collector) -> None:
    node = await make_gc_node()
    collector.failures["t"] = 1
    await submit(node, "t", interval=0.2)
    assert (await jobs(node))["t"].type == "TimeBased"
    await until(lambda: is_done(node, "t"))
    assert collector.ran("t") == 2


async def test_the_periodic_task_retries_event_based_jobs(
        make_gc_node: MakeNode, collector: Collector) -> None:
    node = await make_gc_node()
    await node.global_config.update("gc", "orphanJobScanInterval", 1)
    collector.failures["e"] = 1
    await submit(node, "e", trigger="an-event-that-never-comes")
    await until(lambda: is_done(node, "e"))
    assert collector.ran("e") == 2


async def test_jobs_of_an_unknown_kind_stay_and_are_reported(
        make_gc_node: MakeNode, caplog: pytest.LogCaptureFixture) -> None:
    node = await make_gc_node()
    now = utcnow()
    with caplog.at_level(logging.WARNING, logger="zcore.gc"):
        await node.db.run(lambda s: s.add(GarbageCollectorVO(
            uuid=new_uuid(), name="old", runnerClass="gone.kind", context="{}",
            status="Idle", type="EventBased", triggerKey="k", attempts=0, createDate=now,
            lastOpDate=now)))
        assert await node.gc.scan() == []
    job = (await jobs(node))["old"]
    assert job.status == "Idle" and "kind 'gone.kind'" in (job.lastError or "")
    assert "DeleteGCJob" in (job.lastError or "")
    assert any("gone.kind" in r.getMessage() for r in caplog.records)
    assert await node.gc.trigger("k") == []
    with pytest.raises(ZError, match="no active plugin on management node") as caught:
        await node.gc.run_job(job.uuid)
    assert caught.value.code == "SYS.1006"


async def test_done_jobs_are_kept_until_the_retention_time(make_gc_node: MakeNode) -> None:
    node = await make_gc_node()
    await submit(node, "d")
    await node.gc.trigger("host-connected:a")
    await node.gc.scan()
    assert (await jobs(node))["d"].status == "Done"
    retention = node.global_config.get("gc", "retentionTime")
    await node.db.run(lambda s: s.execute(update(GarbageCollectorVO).values(
        lastOpDate=utcnow() - timedelta(seconds=retention + 1))))
    await node.gc.scan()
    assert await jobs(node) == {}


# --------------------------------------------------------------------------- the APIs


async def test_gc_jobs_through_the_api(api_client: Any, collector: Collector) -> None:
    client = await api_client(("collector", collector))
    node: Node = client.node
    collector.failures["api"] = 1
    uuid = await submit(node, "api")

    status, body = await client.call_raw("QueryGCJob", q=[f"uuid={uuid}"])
    assert status == 200
    [inventory] = body["inventories"]
    zstack = REFERENCE["inventories"]["GarbageCollectorInventory"]
    assert set(inventory) == set(zstack["fields"])
    assert body["schema"] == {"inventories[0]": zstack["serverClass"]}
    assert (inventory["name"], inventory["runnerClass"], inventory["status"],
            inventory["type"]) == ("api", KIND, "Idle", "EventBased")
    assert json.loads(inventory["context"]) == {"id": "api"}

    with pytest.raises(ZError, match="host of api is not reachable") as caught:
        await client.call("TriggerGCJob", uuid=uuid)
    assert caught.value.code == "SYS.1006"
    assert await client.call("TriggerGCJob", uuid=uuid) == {}
    [done] = (await client.call("QueryGCJob", q=["status=Done"]))["inventories"]
    assert (done["uuid"], done["managementNodeUuid"]) == (uuid, node.uuid)
    with pytest.raises(ZError, match="is Done") as caught:
        await client.call("TriggerGCJob", uuid=uuid)
    assert caught.value.code == "SYS.1006"

    assert await client.call("DeleteGCJob", uuid=uuid) == {}
    assert (await client.call("QueryGCJob", count=True))["total"] == 0
    for api in ("DeleteGCJob", "TriggerGCJob"):
        with pytest.raises(ZError, match=f"no GC job has uuid {uuid}") as caught:
            await client.call(api, uuid=uuid)
        assert caught.value.code == "SYS.1003"


async def test_gc_jobs_are_for_administrators(api_client: Any, collector: Collector) -> None:
    admin = await api_client(("collector", collector))
    await admin.call("CreateAccount", name="tenant", password=sha512("secret"), type="Normal")
    uuid = await submit(admin.node, "x")
    tenant = await api_client(login=False, node=admin.node)
    await tenant.login("tenant", "secret")
    for api, params in (("QueryGCJob", {}), ("TriggerGCJob", {"uuid": uuid}),
                        ("DeleteGCJob", {"uuid": uuid})):
        with pytest.raises(ZError) as caught:
            await tenant.call(api, **params)
        assert caught.value.code == "ID.1002", api
    assert (await jobs(admin.node))["x"].status == "Idle"
