"""Primary storage capacity: reservations, over-provisioning, reserved capacity, totals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from zcore.node import Node
from zplugins.simulator.hosts import SIMULATOR
from zplugins.storage.primary_models import PrimaryStorageVO
from zplugins.storage.public import Capacity, release_capacity, reserve_capacity

from ..compute.helpers import call, cluster, fails, tenant, zone

pytestmark = pytest.mark.db

GiB = 1024 ** 3


@pytest.fixture(autouse=True)
def simulated_world() -> Iterator[None]:
    yield
    SIMULATOR.clear()


async def sim_ps(node: Node, zone_uuid: str, name: str = "ps", total: int = 10 * GiB,
                 available: int | None = None, **params: Any) -> dict[str, Any]:
    reply = await call(node, "AddSimulatorPrimaryStorage", name=name, zoneUuid=zone_uuid,
                       url=f"/{name}", totalCapacity=total,
                       availableCapacity=total if available is None else available, **params)
    inventory: dict[str, Any] = reply["inventory"]
    return inventory


async def capacity(node: Node, uuid: str) -> tuple[int, int]:
    found = (await call(node, "QueryPrimaryStorage", q=[f"uuid={uuid}"]))["inventories"][0]
    return found["totalCapacity"], found["availableCapacity"]


async def reserve(node: Node, uuid: str, size: int) -> bool:
    return await node.db.run(reserve_capacity, uuid, size)


async def release(node: Node, uuid: str, size: int) -> None:
    await node.db.run(release_capacity, uuid, size)


async def test_reservations_never_make_the_capacity_negative(node: Node) -> None:
    z = await zone(node)
    ps = await sim_ps(node, z["uuid"])
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 9 * GiB)  # 1G kept free
    assert await reserve(node, ps["uuid"], 4 * GiB)
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 5 * GiB)
    # More than is available: refused, nothing changes.
    assert not await reserve(node, ps["uuid"], 5 * GiB + 1)
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 5 * GiB)
    assert await reserve(node, ps["uuid"], 5 * GiB)
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 0)
    assert not await reserve(node, ps["uuid"], 1)
    await release(node, ps["uuid"], 9 * GiB)
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 9 * GiB)
    # Releasing more than was reserved gives back only what was.
    await release(node, ps["uuid"], GiB)
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 9 * GiB)
    with pytest.raises(ValueError):
        await reserve(node, ps["uuid"], -1)
    with pytest.raises(ValueError):
        await release(node, ps["uuid"], -1)
    # The database itself refuses a negative capacity, whoever writes it.

    def negative(session: Session) -> None:
        session.execute(update(PrimaryStorageVO).where(PrimaryStorageVO.uuid == ps["uuid"])
                        .values(availableCapacity=-1))

    with pytest.raises(DBAPIError):  # IntegrityError; MariaDB: OperationalError 4025
        await node.db.run(negative)
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 9 * GiB)


async def test_concurrent_reservations_take_no_more_than_is_available(node: Node) -> None:
    z = await zone(node)
    ps = await sim_ps(node, z["uuid"])
    results = await asyncio.gather(*(reserve(node, ps["uuid"], GiB) for _ in range(20)))
    assert sum(results) == 9
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 0)


async def test_over_provisioning_and_reserved_capacity_are_global_configuration(
        node: Node) -> None:
    z = await zone(node)
    ps = await sim_ps(node, z["uuid"], total=10 * GiB, available=8 * GiB)
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 7 * GiB)
    assert await reserve(node, ps["uuid"], 3 * GiB)
    await node.global_config.update("mevoco", "overProvisioning.primaryStorage", 2.5)
    # 25G virtual; 2G used by others, 1G kept free, 3G reserved.
    assert await capacity(node, ps["uuid"]) == (25 * GiB, 19 * GiB)
    await node.global_config.update("primaryStorage", "reservedCapacity", "512M")
    assert await capacity(node, ps["uuid"]) == (25 * GiB, 19 * GiB + 512 * 1024 ** 2)
    # Less than is reserved: nothing is available, and the reservations are kept.
    await node.global_config.update("mevoco", "overProvisioning.primaryStorage", 0.4)
    assert await capacity(node, ps["uuid"]) == (4 * GiB, 0)
    assert not await reserve(node, ps["uuid"], 1)
    await release(node, ps["uuid"], 2 * GiB)
    assert await capacity(node, ps["uuid"]) == (4 * GiB, 512 * 1024 ** 2)  # 4 - 2 - 0.5 - 1
    await node.global_config.update("mevoco", "overProvisioning.primaryStorage", 1.0)
    await node.global_config.update("primaryStorage", "reservedCapacity", "1G")
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 6 * GiB)


@pytest.mark.parametrize("key,value", [
    (("mevoco", "overProvisioning.primaryStorage"), 0),
    (("mevoco", "overProvisioning.primaryStorage"), -1.5),
    (("primaryStorage", "reservedCapacity"), "lots"),
    (("primaryStorage", "reservedCapacity"), "-1G"),
    (("primaryStorage", "reservedCapacity"), "9999999P"),
    (("mevoco", "overProvisioning.primaryStorage"), 1e300),
    (("primaryStorage", "ping.interval"), 0),
])
async def test_bad_configuration_is_refused(node: Node, key: tuple[str, str],
                                            value: Any) -> None:
    z = await zone(node)
    ps = await sim_ps(node, z["uuid"])
    await fails(call(node, "UpdateGlobalConfig", category=key[0], name=key[1], value=value),
                "SYS.1007")
    assert await capacity(node, ps["uuid"]) == (10 * GiB, 9 * GiB)


async def test_local_storage_capacity_follows_its_hosts(node: Node) -> None:
    z = await zone(node)
    c = await cluster(node, z["uuid"], "c1", hypervisorType="Simulator")
    hosts = []
    for i, disk in enumerate((Capacity(100 * GiB, 90 * GiB), Capacity(50 * GiB, 50 * GiB))):
        h = (await call(node, "AddSimulatorHost", clusterUuid=c["uuid"], name=f"h{i}",
                        managementIp=f"10.0.0.{i + 1}", cpuCapacity=4,
                        memoryCapacity=8 * GiB))["inventory"]
        SIMULATOR.host(h["uuid"]).state["localStorage"] = disk
        hosts.append(h)
    local = (await call(node, "AddLocalPrimaryStorage", name="local", zoneUuid=z["uuid"],
                        url="/zstack_ps"))["inventory"]
    await call(node, "AttachPrimaryStorageToCluster", primaryStorageUuid=local["uuid"],
               clusterUuid=c["uuid"])
    assert await capacity(node, local["uuid"]) == (150 * GiB, 139 * GiB)
    assert await reserve(node, local["uuid"], 39 * GiB)
    # A host leaves: the next ping counts the remaining one; the reservation stays.
    await call(node, "DeleteHost", uuid=hosts[1]["uuid"])
    from zplugins.storage.primary_ops import ping_all

    await ping_all(node)
    assert await capacity(node, local["uuid"]) == (100 * GiB, 50 * GiB)


async def test_get_primary_storage_capacity_sums_what_is_asked(node: Node) -> None:
    z1, z2 = await zone(node, "z1"), await zone(node, "z2")
    c = await cluster(node, z1["uuid"], "c1", hypervisorType="Simulator")
    a = await sim_ps(node, z1["uuid"], "a", total=10 * GiB)
    b = await sim_ps(node, z1["uuid"], "b", total=20 * GiB, available=10 * GiB)
    other = await sim_ps(node, z2["uuid"], "c", total=40 * GiB)
    await call(node, "AttachPrimaryStorageToCluster", primaryStorageUuid=b["uuid"],
               clusterUuid=c["uuid"])

    async def get(**params: Any) -> tuple[int, int, int, int]:
        reply = await call(node, "GetPrimaryStorageCapacity", **params)
        return (reply["totalCapacity"], reply["availableCapacity"],
                reply["totalPhysicalCapacity"], reply["availablePhysicalCapacity"])

    assert await get(zoneUuids=[z1["uuid"]]) == (30 * GiB, 18 * GiB, 30 * GiB, 20 * GiB)
    assert await get(clusterUuids=[c["uuid"]]) == (20 * GiB, 9 * GiB, 20 * GiB, 10 * GiB)
    assert await get(primaryStorageUuids=[a["uuid"], other["uuid"]]) == \
        (50 * GiB, 48 * GiB, 50 * GiB, 50 * GiB)
    assert await get(all=True) == (70 * GiB, 57 * GiB, 70 * GiB, 60 * GiB)
    assert await get(zoneUuids=[z2["uuid"]], primaryStorageUuids=[a["uuid"]]) == (0, 0, 0, 0)
    error = await fails(call(node, "GetPrimaryStorageCapacity"), "SYS.1007")
    assert "all=true" in error.details
    # A tenant sums only its own.
    assert (await call(node, "GetPrimaryStorageCapacity", tenant("a"), all=True))[
        "totalCapacity"] == 0
