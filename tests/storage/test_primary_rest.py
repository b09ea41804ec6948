"""Primary storage through ZStack's REST protocol, as an SDK would use it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from zcore.db import ResourceVO
from zplugins.simulator.hosts import SIMULATOR
from zplugins.storage.primary_models import (
    PrimaryStorageClusterRefVO,
    PrimaryStorageHostRefVO,
    PrimaryStorageVO,
)
from zplugins.storage.public import Capacity

pytestmark = pytest.mark.db

GiB = 1024 ** 3
SERVER_CLASS = "org.zstack.header.storage.primary.PrimaryStorageInventory"


@pytest.fixture(autouse=True)
def simulated_world() -> Iterator[None]:
    yield
    SIMULATOR.clear()


async def test_a_zone_of_storage_through_rest(api_client: Any) -> None:
    client = await api_client()
    z = (await client.call("CreateZone", name="z1"))["inventory"]
    c1 = (await client.call("CreateCluster", zoneUuid=z["uuid"], name="c1",
                            hypervisorType="Simulator"))["inventory"]
    c2 = (await client.call("CreateCluster", zoneUuid=z["uuid"], name="c2",
                            hypervisorType="Simulator"))["inventory"]
    hosts = []
    for i, c in enumerate((c1, c1, c2)):
        h = (await client.call("AddSimulatorHost", clusterUuid=c["uuid"], name=f"h{i + 1}",
                               managementIp=f"10.0.0.{i + 1}", cpuCapacity=8,
                               memoryCapacity=16 * GiB))["inventory"]
        SIMULATOR.host(h["uuid"]).state["localStorage"] = Capacity((i + 1) * 100 * GiB,
                                                                   (i + 1) * 100 * GiB)
        hosts.append(h)

    # Bad input answers an error and adds nothing.
    status, body = await client.call_raw("AddNfsPrimaryStorage", name="nfs",
                                         zoneUuid=z["uuid"], url="nas/exports")
    assert status == 503 and body["error"]["code"] == "SYS.1007"
    assert "server:/path" in body["error"]["details"]

    status, body = await client.call_raw("AddNfsPrimaryStorage", name="nfs", zoneUuid=z["uuid"],
                                         url="nas:/exports", userTags=["shared"])
    assert status == 200 and body["schema"] == {"inventory": SERVER_CLASS}
    nfs = body["inventory"]
    local = (await client.call("AddLocalPrimaryStorage", name="local", zoneUuid=z["uuid"],
                               url="/zstack_ps"))["inventory"]
    for c in (c1, c2):
        attached = await client.call("AttachPrimaryStorageToCluster",
                                     primaryStorageUuid=nfs["uuid"], clusterUuid=c["uuid"])
    assert attached["inventory"]["attachedClusterUuids"] == [c1["uuid"], c2["uuid"]]
    local = (await client.call("AttachPrimaryStorageToCluster", primaryStorageUuid=local["uuid"],
                               clusterUuid=c1["uuid"]))["inventory"]
    assert local["totalPhysicalCapacity"] == 300 * GiB  # h1 and h2
    for h in hosts:
        assert "/nfsprimarystorage/mount" in [p for p, _ in SIMULATOR.host(h["uuid"]).calls]

    status, body = await client.request("GET", "/primary-storage",
                                        params=[("q", f"cluster.host.uuid={hosts[2]['uuid']}")])
    assert status == 200 and [i["name"] for i in body["inventories"]] == ["nfs"]
    assert body["schema"] == {"inventories[0]": SERVER_CLASS}
    status, body = await client.request("GET", f"/primary-storage/{local['uuid']}")
    assert status == 200 and body["inventories"][0]["uuid"] == local["uuid"]
    found = await client.call("QueryPrimaryStorage", q=["zone.name=z1"], sort="-name")
    assert [i["name"] for i in found["inventories"]] == ["nfs", "local"]
    capacity = await client.call("GetPrimaryStorageCapacity", zoneUuids=[z["uuid"]])
    assert capacity["totalPhysicalCapacity"] == 300 * GiB + 10 * 1024 * GiB

    state = await client.call("ChangePrimaryStorageState", uuid=local["uuid"],
                              stateEvent="disable")
    assert state["inventory"]["state"] == "Disabled"
    again = await client.call("ReconnectPrimaryStorage", uuid=nfs["uuid"])
    assert again["inventory"]["status"] == "Connected"
    detached = await client.call("DetachPrimaryStorageFromCluster",
                                 primaryStorageUuid=nfs["uuid"], clusterUuid=c2["uuid"])
    assert detached["inventory"]["attachedClusterUuids"] == [c1["uuid"]]
    assert "/nfsprimarystorage/unmount" in [p for p, _ in SIMULATOR.host(hosts[2]["uuid"]).calls]
    status, body = await client.call_raw("AttachPrimaryStorageToCluster",
                                         primaryStorageUuid=nfs["uuid"], clusterUuid=c1["uuid"])
    assert status == 503 and body["error"]["code"] == "SYS.1007"

    # One DeleteZone takes it all away.
    assert await client.call("DeleteZone", uuid=z["uuid"]) == {}

    def leftovers(session: Any) -> list[int]:
        return [session.scalar(select(func.count()).select_from(model))
                for model in (PrimaryStorageVO, PrimaryStorageClusterRefVO,
                              PrimaryStorageHostRefVO)] + \
            [session.scalar(select(func.count()).select_from(ResourceVO).where(
                ResourceVO.resourceType.in_(("PrimaryStorageVO", "HostVO", "ClusterVO",
                                             "ZoneVO"))))]

    assert await client.node.db.run(leftovers) == [0, 0, 0, 0]
