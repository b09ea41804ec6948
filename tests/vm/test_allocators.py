"""Host allocation: strategies, filters, atomic reservations, the steps, MigrateVm."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text, update
from sqlalchemy.orm import Session

from zcore.api import SYSTEM
from zcore.db import ResourceVO, add_resource, new_uuid, utcnow
from zcore.errors import ZError
from zcore.flow import FlowContext
from zcore.node import Node
from zcore.testing.env import Environment
from zplugins.compute import allocators
from zplugins.compute.allocators import (
    HOST_ALLOCATION_FAILED,
    HOST_ALLOCATORS,
    AllocateHost,
    DefaultHostAllocatorStrategy,
    HostAllocatorStrategy,
    HostRequest,
    LastHostPreferredAllocatorStrategy,
    LeastVmPreferredHostAllocatorStrategy,
    MigrateVmAllocatorStrategy,
    MinimumCPUUsageHostAllocatorStrategy,
    release_host,
)
from zplugins.compute.models import ClusterVO, HostVO, VmInstanceVO, ZoneVO
from zplugins.simulator.hosts import SIMULATOR

pytestmark = pytest.mark.db

GiB = 1024**3

#: The unit tests need compute and the simulator only (other plugins' VM steps are in flux).
ONLY_COMPUTE = ("storage", "network", "localstorage", "nfs", "sftpbackup", "simulator")


@pytest.fixture(autouse=True)
def simulated_world() -> Iterator[None]:
    yield
    SIMULATOR.clear()


async def call(node: Node, api: str, **params: Any) -> dict[str, Any]:
    return await node.api.call(api, params, caller=SYSTEM)


async def world(node: Node, *clusters: int) -> list[list[str]]:
    """One zone, a KVM cluster per argument with that many Connected hosts; their uuids.

    Rows are written directly: allocation reads only the database.
    """
    out: list[list[str]] = []

    def insert(session: Session) -> None:
        zone = add_resource(session, ZoneVO(uuid=new_uuid(), name="z1"), "ZoneVO")
        ip = 0
        for c, count in enumerate(clusters):
            cluster = add_resource(session, ClusterVO(uuid=new_uuid(), name=f"c{c}",
                                                      zoneUuid=zone.uuid,
                                                      hypervisorType="KVM"), "ClusterVO")
            hosts = []
            for h in range(count):
                ip += 1
                host = HostVO(uuid=new_uuid(), name=f"h{c}{h}", zoneUuid=zone.uuid,
                              clusterUuid=cluster.uuid, managementIp=f"10.0.0.{ip}",
                              hypervisorType="KVM", state="Enabled", status="Connected",
                              cpuNum=8, totalCpuCapacity=80, availableCpuCapacity=80,
                              totalMemoryCapacity=64 * GiB,
                              availableMemoryCapacity=63 * GiB)
                add_resource(session, host, "HostVO")
                hosts.append(host.uuid)
            out.append(hosts)
            session.flush()

    await node.db.run(insert)
    return out


async def set_free(node: Node, host: str, cpu: int, memory: int) -> None:
    def change(session: Session) -> None:
        session.execute(update(HostVO).where(HostVO.uuid == host).values(
            availableCpuCapacity=cpu, availableMemoryCapacity=memory))

    await node.db.run(change)


async def free(node: Node, host: str) -> tuple[int, int]:
    row = await node.db.run(lambda s: s.get_one(HostVO, host))
    return row.availableCpuCapacity, row.availableMemoryCapacity


async def allocate(node: Node, strategy: HostAllocatorStrategy, **request: Any) -> str:
    request.setdefault("cpuNum", 1)
    request.setdefault("memorySize", GiB)
    row = await node.db.run(strategy.allocate, HostRequest(**request))
    return row.uuid


async def no_host(node: Node, strategy: HostAllocatorStrategy, **request: Any) -> str:
    with pytest.raises(ZError) as caught:
        await allocate(node, strategy, **request)
    assert caught.value.code == HOST_ALLOCATION_FAILED
    return str(caught.value.details)


async def add_vm(node: Node, host: str | None, *, last: str | None = None,
                 cpu: int = 2, memory: int = 2 * GiB, state: str = "Running") -> str:
    uuid = new_uuid()

    def insert(session: Session) -> None:
        add_resource(session, VmInstanceVO(uuid=uuid, name=f"vm-{uuid[:6]}", cpuNum=cpu,
                                           memorySize=memory, hostUuid=host,
                                           lastHostUuid=last, state=state,
                                           hypervisorType="KVM"), "VmInstanceVO")

    await node.db.run(insert)
    return uuid


#: The allocation plans depend on each database's planner, and the reservation on whether it
#: says which row an UPDATE changed: those tests run on every backend that --db selects,
#: --db-everywhere or not.
EVERY_BACKEND = pytest.mark.parametrize(
    "database_backend", ["sqlite", "postgresql", "mariadb"], indirect=True)


@pytest.fixture
def selected_backend(request: pytest.FixtureRequest, database_backend: str) -> str:
    chosen = {name.strip().lower() for name in str(request.config.getoption("--db")).split(",")}
    if database_backend not in chosen and "all" not in chosen:
        pytest.skip(f"--db does not select {database_backend}")
    return database_backend


@EVERY_BACKEND
async def test_concurrent_reservations_never_overcommit(selected_backend: str,
                                                       make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[h1, h2]] = await world(node, 2)
    await set_free(node, h1, 80, 30 * GiB)   # 30 VMs of 1 GiB each
    await set_free(node, h2, 80, 30 * GiB)

    results = await asyncio.gather(
        *(allocate(node, DefaultHostAllocatorStrategy()) for _ in range(100)),
        return_exceptions=True)

    placed = [r for r in results if isinstance(r, str)]
    failed = [r for r in results if not isinstance(r, str)]
    assert len(placed) == 60
    assert placed.count(h1) == placed.count(h2) == 30
    assert all(isinstance(e, ZError) and e.code == HOST_ALLOCATION_FAILED for e in failed)
    assert await free(node, h1) == (50, 0)
    assert await free(node, h2) == (50, 0)


@EVERY_BACKEND
async def test_a_held_reservation_that_changed_nothing_is_made_again_and_taken_once(
        selected_backend: str, make_node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """MariaDB and MySQL lock the best host as they read it and hold its reservation back;
    should that UPDATE change no row, the candidates are read and reserved again."""
    if selected_backend != "mariadb":
        pytest.skip("the held reservation is MariaDB's and MySQL's")
    node = await make_node(disable=ONLY_COMPUTE)
    [[h1, h2]] = await world(node, 2)
    await set_free(node, h1, 80, 30 * GiB)
    await set_free(node, h2, 80, 20 * GiB)
    misses = [1_000]  # how many held reservations to make find no row: every one
    write_held = allocators.write_held

    def missing(session: Session, statement: Any, values: Any) -> bool:
        if misses[0]:  # as if the row had changed: the UPDATE finds none
            misses[0] -= 1
            statement = update(HostVO).where(HostVO.uuid == "0" * 32).values(
                availableCpuCapacity=HostVO.availableCpuCapacity - 1)
        return write_held(session, statement, values)

    monkeypatch.setattr(allocators, "write_held", missing)
    # Each held reservation finds no row: at the latest when the allocation runs on its own,
    # the miss raises in it, and it reads the candidates and reserves one of them.
    assert await allocate(node, DefaultHostAllocatorStrategy()) == h1
    assert misses[0] < 1_000
    assert await free(node, h1) == (79, 29 * GiB)  # taken once, not twice, not never

    # Only the first misses; in a writer group it fails with another allocation's statement,
    # and the group runs again, each allocation on its own.
    misses[0] = 1
    placed = await asyncio.gather(*(allocate(node, DefaultHostAllocatorStrategy())
                                    for _ in range(5)))
    assert misses == [0] and placed == [h1] * 5
    assert await free(node, h1) == (74, 24 * GiB)
    assert await free(node, h2) == (80, 20 * GiB)


async def test_default_takes_the_most_free_memory_and_least_vm_the_fewest_vms(
        make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[h1, h2, h3]] = await world(node, 3)
    await set_free(node, h1, 80, 20 * GiB)
    await set_free(node, h2, 80, 40 * GiB)
    await set_free(node, h3, 80, 30 * GiB)
    assert await allocate(node, DefaultHostAllocatorStrategy()) == h2
    assert await free(node, h2) == (79, 39 * GiB)

    for host in (h2, h2, h3):
        await add_vm(node, host)
    assert await allocate(node, LeastVmPreferredHostAllocatorStrategy()) == h1


async def test_strategies_are_drivers(make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    names = node.drivers.names(HOST_ALLOCATORS)
    assert {"DefaultHostAllocatorStrategy", "LeastVmPreferredHostAllocatorStrategy",
            "LastHostPreferredAllocatorStrategy", "MigrateVmAllocatorStrategy"} <= set(names)
    assert node.global_config.get("vm", "hostAllocatorStrategy") == \
        "DefaultHostAllocatorStrategy"


async def test_last_host_preferred_when_it_fits(make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[h1, h2]] = await world(node, 2)
    await set_free(node, h1, 80, 10 * GiB)
    await set_free(node, h2, 80, 40 * GiB)
    last = LastHostPreferredAllocatorStrategy()
    assert await allocate(node, last, lastHostUuid=h1) == h1
    # Too little memory left there: the fallback (most free memory) decides.
    assert await allocate(node, last, lastHostUuid=h1, memorySize=20 * GiB) == h2


async def test_migrate_strategy_never_picks_the_current_host(make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[h1, h2]] = await world(node, 2)
    await set_free(node, h1, 80, 40 * GiB)
    await set_free(node, h2, 80, 10 * GiB)
    assert await allocate(node, MigrateVmAllocatorStrategy(), currentHostUuid=h1) == h2
    details = await no_host(node, MigrateVmAllocatorStrategy(), currentHostUuid=h1,
                            hostUuid=h1)
    assert "excluded" in details


async def test_pinning_avoid_list_and_conditions(make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[a1, a2], [b1]] = await world(node, 2, 1)
    for host, memory in ((a1, 40), (a2, 30), (b1, 10)):
        await set_free(node, host, 80, memory * GiB)
    strategy = DefaultHostAllocatorStrategy()
    assert await allocate(node, strategy, hostUuid=a2) == a2
    b_cluster = (await node.db.run(lambda s: s.get(HostVO, b1))).clusterUuid
    assert await allocate(node, strategy, clusterUuid=b_cluster) == b1
    assert await allocate(node, strategy, avoidHostUuids=(a1,)) == a2
    assert await allocate(node, strategy,
                          conditions=(HostVO.clusterUuid.in_([b_cluster]),)) == b1
    details = await no_host(node, strategy, avoidHostUuids=(a1, a2),
                            conditions=(HostVO.clusterUuid != b_cluster,))
    assert "primary storage and networks" in details


async def test_no_host_says_why(make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[h1]] = await world(node, 1)
    await set_free(node, h1, 80, 16 * GiB)
    strategy = DefaultHostAllocatorStrategy()

    details = await no_host(node, strategy, cpuNum=8, memorySize=32 * GiB)
    assert "8 CPUs and 32 GiB free" in details and "32 GiB of memory free" in details
    details = await no_host(node, strategy, cpuNum=100)
    assert "100 CPUs free" in details
    details = await no_host(node, strategy, hostUuid="0" * 32)
    assert f"host {'0' * 32} does not exist" in details

    await call(node, "ChangeHostState", uuid=h1, stateEvent="disable")
    details = await no_host(node, strategy)
    assert "Enabled and Connected" in details
    assert await free(node, h1) == (80, 16 * GiB)  # nothing reserved by failures


async def test_release_host_gives_capacity_back(make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[h1]] = await world(node, 1)
    await set_free(node, h1, 78, 14 * GiB)
    vm = await add_vm(node, h1)
    await node.db.run(release_host, vm)
    assert await free(node, h1) == (80, 16 * GiB)
    row = await node.db.run(lambda s: s.get(VmInstanceVO, vm))
    assert (row.hostUuid, row.lastHostUuid, row.state) == (None, h1, "Running")
    await node.db.run(release_host, vm)  # holds no host: nothing more given back
    assert await free(node, h1) == (80, 16 * GiB)


async def test_allocate_host_step_prefers_last_host_and_rolls_back(make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[h1, h2]] = await world(node, 2)
    await set_free(node, h1, 80, 10 * GiB)
    await set_free(node, h2, 80, 40 * GiB)
    vm = await add_vm(node, None, last=h1, state="Starting")
    ctx = FlowContext("vm-start", {"vm_uuid": vm, "host_conditions": []}, node)

    await AllocateHost().run(ctx)
    assert ctx["host"].uuid == h1
    row = await node.db.run(lambda s: s.get(VmInstanceVO, vm))
    assert (row.hostUuid, row.clusterUuid) == (h1, ctx["host"].clusterUuid)
    assert await free(node, h1) == (78, 8 * GiB)

    await AllocateHost().rollback(ctx)
    assert await free(node, h1) == (80, 10 * GiB)
    row = await node.db.run(lambda s: s.get(VmInstanceVO, vm))
    assert row.hostUuid is None


async def test_allocate_host_step_uses_the_vm_strategy(make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[h1, h2]] = await world(node, 2)
    await set_free(node, h1, 80, 10 * GiB)
    await set_free(node, h2, 80, 40 * GiB)
    for _ in range(2):
        await add_vm(node, h2)
    vm = await add_vm(node, None, state="Starting")

    def prefer_least_vms(session: Session) -> None:
        session.get_one(VmInstanceVO, vm).allocatorStrategy = \
            "LeastVmPreferredHostAllocatorStrategy"

    await node.db.run(prefer_least_vms)
    ctx = FlowContext("vm-start", {"vm_uuid": vm, "host_conditions": []}, node)
    await AllocateHost().run(ctx)
    assert ctx["host"].uuid == h1


async def test_minimum_cpu_usage_takes_the_most_free_cpu(make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[h1, h2]] = await world(node, 2)
    await set_free(node, h1, 60, 20 * GiB)
    await set_free(node, h2, 40, 30 * GiB)
    assert await allocate(node, MinimumCPUUsageHostAllocatorStrategy()) == h1
    assert await allocate(node, DefaultHostAllocatorStrategy()) == h2


async def test_identical_hosts_take_one_vm_each_in_turn(make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [hosts] = await world(node, 6)
    strategy = DefaultHostAllocatorStrategy()
    chosen = [await allocate(node, strategy) for _ in range(12)]
    # The host just chosen has less room than its peers: each takes one VM, then again.
    assert sorted(chosen[:6]) == sorted(hosts) and chosen[6:] == chosen[:6]


async def test_hosts_with_more_room_that_do_not_qualify_are_passed_over(
        make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[disabled, disconnected, kvm_elsewhere, fits, smaller], [in_disabled_cluster]] = \
        await world(node, 5, 1)
    for memory, host in enumerate((smaller, fits, kvm_elsewhere, disconnected, disabled,
                                   in_disabled_cluster), start=10):
        await set_free(node, host, 80, memory * GiB)
    other = (await node.db.run(lambda s: s.get_one(HostVO, in_disabled_cluster))).clusterUuid

    def spoil(session: Session) -> None:
        session.execute(update(HostVO).where(HostVO.uuid == disabled).values(state="Disabled"))
        session.execute(update(HostVO).where(HostVO.uuid == disconnected)
                        .values(status="Disconnected"))
        session.execute(update(HostVO).where(HostVO.uuid == kvm_elsewhere)
                        .values(hypervisorType="Xen"))
        session.execute(update(ClusterVO).where(ClusterVO.uuid == other)
                        .values(state="Disabled"))

    await node.db.run(spoil)
    strategy = DefaultHostAllocatorStrategy()
    assert await allocate(node, strategy, hypervisorType="KVM") == fits
    details = await no_host(node, strategy, hypervisorType="KVM", memorySize=12 * GiB)
    assert "12 GiB of memory free" in details


# --------------------------------------------------------------------------- scale

async def copy_hosts(node: Node, template: str, count: int, *, analyze: bool = True) -> None:
    """``count`` Connected hosts like ``template``, each with a little less memory free,
    written in bulk; then (``analyze``) the statistics a server has once autovacuum (or
    InnoDB) saw them."""

    def insert_many(session: Session) -> None:
        host = session.get_one(HostVO, template)
        row = {c.key: getattr(host, c.key) for c in HostVO.__table__.columns}
        now = utcnow()
        uuids = [new_uuid() for _ in range(count)]
        session.execute(insert(ResourceVO), [
            {"uuid": u, "resourceName": f"many{i}", "resourceType": "HostVO",
             "createDate": now} for i, u in enumerate(uuids, start=1)])
        session.execute(insert(HostVO), [
            {**row, "uuid": u, "name": f"many{i}", "createDate": now, "lastOpDate": now,
             "managementIp": f"10.200.{i >> 8 & 255}.{i & 255}", "status": "Connected",
             "availableCpuCapacity": host.availableCpuCapacity - i % 7,
             "availableMemoryCapacity": host.availableMemoryCapacity - (1 + i % 1000) * 2**20}
            for i, u in enumerate(uuids, start=1)])

    def statistics(session: Session) -> None:
        statement = {"postgresql": 'ANALYZE "HostVO"'}.get(node.db.dialect,
                                                           "ANALYZE TABLE HostVO")
        result = session.connection().execute(text(statement))
        if result.returns_rows:
            result.all()

    await node.db.run(insert_many)
    if analyze and node.db.dialect != "sqlite":
        await node.db.run(statistics)


def _is_candidate_query(statement: str) -> bool:
    """The query of the candidates: a SELECT, or on PostgreSQL and SQLite the reservation
    of the best one, an UPDATE whose subquery reads them."""
    return (statement.lstrip().upper().startswith(("SELECT", "UPDATE")) and "LIMIT" in statement
            and "ORDER BY" in statement and "HostVO" in statement)


def explain(session: Session, statement: str, parameters: Any) -> str:
    """How the database plans ``statement``: SQLite's plan lines; PostgreSQL's; MariaDB's
    rows as ``table type key=... Extra``."""
    conn = session.connection()
    dialect = conn.dialect.name
    if dialect == "sqlite":
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
        return "\n".join(str(r[-1]) for r in rows)
    rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
    if dialect == "postgresql":
        return "\n".join(str(r[0]) for r in rows)
    # MariaDB, MySQL: id, select_type, table, type, possible_keys, key, ..., Extra
    return "\n".join(f"{r[2]} {r[3]} key={r[5]} {r[-1]}" for r in rows)


def plan_of(session: Session, strategy: HostAllocatorStrategy, request: HostRequest, *,
            reservation: bool = False) -> str:
    """The plan of the candidate query that ``strategy`` runs to allocate ``request`` (or,
    ``reservation``, of the UPDATE that reserves the host)."""
    conn = session.connection()
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if (statement.lstrip().upper().startswith("UPDATE") if reservation
                else _is_candidate_query(statement)):
            seen.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", capture)
    try:
        strategy.allocate(session, request)
    finally:
        event.remove(conn, "before_cursor_execute", capture)
    return explain(session, *seen[0])


def assert_walks(plan: str, dialect: str, index: str) -> None:
    """``plan`` reads ``index`` from the most room down and sorts nothing."""
    if dialect == "sqlite":
        assert f"USING INDEX {index} (state=? AND status=?" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    elif dialect == "postgresql":
        assert f'Index Scan Backward using "{index}"' in plan, plan
        assert "Sort" not in plan and "Join" not in plan, plan
    else:
        assert plan.splitlines()[0].startswith("HostVO ") and f"key={index}" in plan, plan
        assert "filesort" not in plan and "temporary" not in plan, plan


@EVERY_BACKEND
@pytest.mark.parametrize(("strategy", "index"), [
    (DefaultHostAllocatorStrategy, "ix_HostVO_allocation_memory"),
    (MinimumCPUUsageHostAllocatorStrategy, "ix_HostVO_allocation_cpu"),
])
async def test_allocation_walks_an_index_instead_of_sorting_every_host(
        selected_backend: str, make_node: Any, strategy: type[HostAllocatorStrategy],
        index: str) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[first]] = await world(node, 1)
    await copy_hosts(node, first, 3000)
    row = await node.db.run(lambda s: s.get_one(HostVO, first))
    zone, cluster = row.zoneUuid, row.clusterUuid
    # As the storage and network steps add them: clusters that reach the VM's resources.
    request = HostRequest(cpuNum=1, memorySize=GiB, hypervisorType="KVM", conditions=(
        HostVO.zoneUuid.in_([zone]),
        HostVO.clusterUuid.in_(select(ClusterVO.uuid).where(ClusterVO.zoneUuid == zone)),
        HostVO.clusterUuid.in_(select(ClusterVO.uuid).where(ClusterVO.uuid == cluster))))

    plan = await node.db.run(plan_of, strategy(), request)

    assert_walks(plan, node.db.dialect, index)


@EVERY_BACKEND
async def test_a_reservation_finds_its_host_by_primary_key_without_statistics(
        selected_backend: str, make_node: Any) -> None:
    node = await make_node(disable=ONLY_COMPUTE)
    [[first]] = await world(node, 1)
    await copy_hosts(node, first, 3000, analyze=False)

    plan = await node.db.run(plan_of, DefaultHostAllocatorStrategy(), HostRequest(
        cpuNum=1, memorySize=GiB), reservation=True)

    if node.db.dialect == "sqlite":
        assert "USING INDEX sqlite_autoindex_HostVO_1 (uuid=?)" in plan, plan
    elif node.db.dialect == "postgresql":
        assert 'Index Scan using "pk_HostVO"' in plan, plan
    else:
        assert "key=PRIMARY" in plan, plan


@EVERY_BACKEND
async def test_creating_a_vm_walks_the_allocation_index(selected_backend: str,
                                                        vm_cloud: Environment) -> None:
    env = vm_cloud
    # Hosts with less room than host1 and host2, which take the VM (they are simulated).
    await copy_hosts(env.node, env.uuid("host1"), 3000)
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if _is_candidate_query(statement) and "availableMemoryCapacity" in statement:
            seen.append((statement, parameters))

    engine = env.node.db.engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        vm = await _create_vm(env)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert vm["hostUuid"] in {env.uuid("host1"), env.uuid("host2")}
    assert seen, "no host allocation query was seen"

    # With the storage and network plugins' conditions, which PostgreSQL and MariaDB
    # would otherwise join from the small tables, sorting every host of the cluster.
    plan = await env.node.db.run(explain, *seen[0])

    assert_walks(plan, env.node.db.dialect, "ix_HostVO_allocation_memory")


# --------------------------------------------------------------------------- end to end


async def _create_vm(env: Environment, **params: Any) -> dict[str, Any]:
    offering = env.uuid("small")
    reply = await env.client.call(
        "CreateVmInstance", name="vm1", instanceOfferingUuid=offering,
        imageUuid=env.uuid("image1"), l3NetworkUuids=[env.uuid("l3a")], **params)
    inventory: dict[str, Any] = reply["inventory"]
    return inventory


async def test_migrate_vm_end_to_end(vm_cloud: Environment) -> None:
    env = vm_cloud
    vm = await _create_vm(env)
    source = vm["hostUuid"]
    hosts = {env.uuid("host1"), env.uuid("host2")}
    (dest,) = hosts - {source}
    before = {h: await free(env.node, h) for h in hosts}

    candidates = await env.client.call("GetVmMigrationCandidateHosts",
                                       vmInstanceUuid=vm["uuid"])
    assert [h["uuid"] for h in candidates["inventories"]] == [dest]

    moved = (await env.client.call("MigrateVm", vmInstanceUuid=vm["uuid"]))["inventory"]
    assert (moved["hostUuid"], moved["lastHostUuid"], moved["state"]) == \
        (dest, source, "Running")
    cpu, memory = vm["cpuNum"], vm["memorySize"]
    assert await free(env.node, source) == (before[source][0] + cpu,
                                            before[source][1] + memory)
    assert await free(env.node, dest) == (before[dest][0] - cpu, before[dest][1] - memory)

    with pytest.raises(ZError) as caught:
        await env.client.call("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=dest)
    assert caught.value.code == "SYS.1007"


async def test_candidates_for_creating_and_change_offering(vm_cloud: Environment) -> None:
    env = vm_cloud
    found = await env.client.call(
        "GetCandidateZonesClustersHostsForCreatingVm", imageUuid=env.uuid("image1"),
        l3NetworkUuids=[env.uuid("l3a")], cpuNum=1, memorySize=GiB)
    assert {h["uuid"] for h in found["hosts"]} == {env.uuid("host1"), env.uuid("host2")}
    assert [c["uuid"] for c in found["clusters"]] == [env.uuid("cluster1")]
    too_big = await env.client.call(
        "GetCandidateZonesClustersHostsForCreatingVm", imageUuid=env.uuid("image1"),
        l3NetworkUuids=[env.uuid("l3a")], cpuNum=1, memorySize=1024 * GiB)
    assert too_big["hosts"] == [] and too_big["zones"] == []

    vm = await _create_vm(env)
    with pytest.raises(ZError) as caught:
        await env.client.call("ChangeInstanceOffering", vmInstanceUuid=vm["uuid"],
                              instanceOfferingUuid=env.uuid("small"))
    assert caught.value.code == "VM.1000"
    await env.client.call("StopVmInstance", uuid=vm["uuid"])
    big = (await env.client.call("CreateInstanceOffering", name="big", cpuNum=4,
                                 memorySize=4 * GiB))["inventory"]
    changed = (await env.client.call("ChangeInstanceOffering", vmInstanceUuid=vm["uuid"],
                                     instanceOfferingUuid=big["uuid"]))["inventory"]
    assert (changed["cpuNum"], changed["memorySize"]) == (4, 4 * GiB)
    rows = await env.node.db.run(lambda s: list(s.scalars(select(HostVO))))
    assert all(r.availableCpuCapacity >= 0 and r.availableMemoryCapacity >= 0 for r in rows)
