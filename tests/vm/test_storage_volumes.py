"""Volumes on simulator storage: data volume APIs, primary storage choice and reservation,
and the storage steps of the VM chains."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from zcore.db import utcnow
from zcore.errors import ZError
from zcore.testing.env import Environment
from zplugins.storage import primary_ops
from zplugins.storage.primary_models import PrimaryStorageVO
from zplugins.storage.volume_models import VolumeVO
from zplugins.storage.volume_ops import PS_ALLOCATION_FAILED, reserve_on_cluster
from zplugins.storage.volumes import expunge_old_volumes

GiB = 2**30


async def available(env: Environment, ps_name: str = "ps1") -> int:
    def read(session: Any) -> int:
        row = session.get(PrimaryStorageVO, env.uuid(ps_name), populate_existing=True)
        return int(row.availableCapacity)

    return await env.node.db.run(read)


async def test_a_data_volume_on_a_primary_storage_holds_its_size_until_expunged(
        vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    before = await available(env)
    volume = (await call("CreateDataVolume", name="d1", diskSize=5 * GiB,
                         primaryStorageUuid=env.uuid("ps1")))["inventory"]
    assert volume["status"] == "Ready" and volume["type"] == "Data"
    assert volume["primaryStorageUuid"] == env.uuid("ps1") and volume["installPath"]
    assert await available(env) == before - 5 * GiB

    await call("DeleteDataVolume", uuid=volume["uuid"])
    deleted = (await call("QueryVolume", q=[f"uuid={volume['uuid']}"]))["inventories"][0]
    assert deleted["status"] == "Deleted"
    assert await available(env) == before - 5 * GiB  # kept until expunged
    recovered = (await call("RecoverDataVolume", uuid=volume["uuid"]))["inventory"]
    assert recovered["status"] == "Ready"

    with pytest.raises(ZError) as refused:
        await call("ExpungeDataVolume", uuid=volume["uuid"])
    assert refused.value.code == "VOLUME.1000" and "DeleteDataVolume" in refused.value.details
    await call("DeleteDataVolume", uuid=volume["uuid"])
    await call("ExpungeDataVolume", uuid=volume["uuid"])
    assert (await call("QueryVolume", q=[f"uuid={volume['uuid']}"]))["inventories"] == []
    assert await available(env) == before


async def test_a_data_volume_without_storage_takes_no_capacity(vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    before = await available(env)
    volume = (await call("CreateDataVolume", name="d2",
                         diskOfferingUuid=env.uuid("disk10G")))["inventory"]
    assert volume["status"] == "NotInstantiated" and volume["size"] == 10 * GiB
    assert volume["primaryStorageUuid"] is None
    assert await available(env) == before
    await call("DeleteDataVolume", uuid=volume["uuid"])
    assert (await call("QueryVolume", q=[f"uuid={volume['uuid']}"]))["inventories"] == []


async def test_create_data_volume_wants_exactly_one_size(vm_cloud: Environment) -> None:
    with pytest.raises(ZError, match="exactly one of diskOfferingUuid and diskSize"):
        await vm_cloud.client.call("CreateDataVolume", name="d3")
    assert (await vm_cloud.client.call("QueryVolume", q=["name=d3"]))["inventories"] == []


async def test_a_volume_larger_than_the_storage_is_refused_and_nothing_is_left(
        vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    before = await available(env)
    with pytest.raises(ZError) as refused:
        await call("CreateDataVolume", name="huge", diskSize=before + 1,
                   primaryStorageUuid=env.uuid("ps1"))
    assert refused.value.code == PS_ALLOCATION_FAILED
    assert (await call("QueryVolume", q=["name=huge"]))["inventories"] == []
    assert await available(env) == before


async def test_reservation_picks_the_storage_with_most_space_and_refuses_when_none_fits(
        vm_cloud: Environment) -> None:
    env = vm_cloud
    cluster = env.uuid("cluster1")
    free = await available(env)

    def reserve_twice(session: Any) -> list[str]:
        return [reserve_on_cluster(session, cluster, free - GiB),
                reserve_on_cluster(session, cluster, GiB)]

    assert await env.node.db.run(reserve_twice) == [env.uuid("ps1"), env.uuid("ps1")]
    assert await available(env) == 0

    def one_more(session: Any) -> str:
        return reserve_on_cluster(session, cluster, 1)

    with pytest.raises(ZError) as refused:
        await env.node.db.run(one_more)
    assert refused.value.code == PS_ALLOCATION_FAILED and cluster in refused.value.details


async def test_a_held_reservation_that_changed_nothing_is_made_again_and_taken_once(
        vm_cloud: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    """MariaDB and MySQL lock the best storage as they read it and hold its reservation
    back; should that UPDATE change no row, the candidates are read and reserved again."""
    env = vm_cloud
    if env.node.db.dialect not in ("mysql", "mariadb"):
        pytest.skip("the held reservation is MariaDB's and MySQL's")
    cluster, free = env.uuid("cluster1"), await available(env)
    misses = [1_000]  # how many held reservations to make find no row: every one
    write_held = primary_ops.write_held

    def missing(session: Any, statement: Any, values: Any) -> bool:
        if misses[0]:  # as if the row had changed: the UPDATE finds none
            misses[0] -= 1
            values = {**values, "ps_uuid": "0" * 32}
        return write_held(session, statement, values)

    monkeypatch.setattr(primary_ops, "write_held", missing)

    def reserve(session: Any) -> str:
        return reserve_on_cluster(session, cluster, GiB)

    # Each held reservation finds no row: at the latest when the reservation runs on its own,
    # the miss raises in it, and it reads the candidates and reserves one of them.
    assert await env.node.db.run(reserve) == env.uuid("ps1")
    assert misses[0] < 1_000
    assert await available(env) == free - GiB  # taken once, not twice, not never

    # Only the first misses; in a writer group it fails with another reservation's statement,
    # and the group runs again, each reservation on its own.
    misses[0] = 1
    picked = await asyncio.gather(*(env.node.db.run(reserve) for _ in range(5)))
    assert misses == [0] and picked == [env.uuid("ps1")] * 5
    assert await available(env) == free - 6 * GiB


async def test_each_reservation_takes_the_storage_with_most_space_and_only_from_it(
        make_env: Any, vm_cloud_spec: dict[str, Any]) -> None:
    zone = vm_cloud_spec["zones"][0]
    zone["primaryStorage"].append({"name": "ps2", "type": "Simulator", "url": "/sim/ps2",
                                   "totalCapacity": "1T", "availableCapacity": "1T"})
    zone["clusters"][0]["primaryStorage"] = ["ps1", "ps2"]
    env = await make_env(vm_cloud_spec)
    cluster, ps1, ps2 = env.uuid("cluster1"), env.uuid("ps1"), env.uuid("ps2")
    free1, free2 = await available(env, "ps1"), await available(env, "ps2")
    assert free1 > free2

    def reserve(session: Any, size: int) -> str:
        return reserve_on_cluster(session, cluster, size)

    first = free1 - free2 + GiB  # ps1 then has less left than ps2
    assert await env.node.db.run(reserve, first) == ps1
    assert await env.node.db.run(reserve, GiB) == ps2
    tie = min(ps1, ps2)  # as much free on both now: the lower uuid
    assert await env.node.db.run(reserve, GiB) == tie
    assert (await available(env, "ps1"), await available(env, "ps2")) == \
        (free1 - first - (GiB if tie == ps1 else 0), free2 - GiB - (GiB if tie == ps2 else 0))


async def test_a_vm_gets_root_and_data_volumes_and_expunging_gives_the_space_back(
        vm_cloud: Environment) -> None:
    env, call = vm_cloud, vm_cloud.client.call
    before = await available(env)
    vm = (await call("CreateVmInstance", name="vm1", instanceOfferingUuid=env.uuid("small"),
                     imageUuid=env.uuid("image1"), l3NetworkUuids=[env.uuid("l3a")],
                     dataDiskOfferingUuids=[env.uuid("disk10G")]))["inventory"]
    volumes = vm["allVolumes"]
    assert [v["type"] for v in volumes] == ["Root", "Data"]
    assert [v["deviceId"] for v in volumes] == [0, 1]
    assert {v["status"] for v in volumes} == {"Ready"}
    assert vm["rootVolumeUuid"] == volumes[0]["uuid"]
    used = sum(v["size"] for v in volumes)
    assert await available(env) == before - used

    extra = (await call("CreateDataVolume", name="extra", diskSize=GiB))["inventory"]
    attached = (await call("AttachDataVolumeToVm", volumeUuid=extra["uuid"],
                           vmInstanceUuid=vm["uuid"]))["inventory"]
    assert attached["status"] == "Ready" and attached["deviceId"] == 2
    assert await available(env) == before - used - GiB
    await call("DetachDataVolumeFromVm", uuid=extra["uuid"])

    await call("DestroyVmInstance", uuid=vm["uuid"])
    root = (await call("QueryVolume", q=[f"uuid={volumes[0]['uuid']}"]))["inventories"][0]
    assert root["status"] == "Deleted"
    await call("ExpungeVmInstance", uuid=vm["uuid"])
    assert (await call("QueryVolume", q=[f"uuid={volumes[0]['uuid']}"]))["inventories"] == []
    data = (await call("QueryVolume", q=[f"uuid={volumes[1]['uuid']}"]))["inventories"][0]
    assert data["vmInstanceUuid"] is None and data["lastVmInstanceUuid"] == vm["uuid"]
    for uuid in (data["uuid"], extra["uuid"]):
        await call("DeleteDataVolume", uuid=uuid)
        await call("ExpungeDataVolume", uuid=uuid)
    assert await available(env) == before

    def count(session: Any) -> int:
        return len(list(session.scalars(select(VolumeVO))))

    assert await env.node.db.run(count) == 0


async def test_the_expunge_task_expunges_only_data_volumes_deleted_long_ago(
        vm_cloud: Environment) -> None:
    call = vm_cloud.client.call
    old, young, kept = [(await call("CreateDataVolume", name=name,
                                    diskOfferingUuid=vm_cloud.uuid("disk10G"),
                                    primaryStorageUuid=vm_cloud.uuid("ps1")))["inventory"]
                        for name in ("old", "young", "kept")]
    for volume in (old, young):
        await call("DeleteDataVolume", uuid=volume["uuid"])

    def backdate(session: Any) -> None:
        session.execute(update(VolumeVO).where(VolumeVO.uuid.in_([old["uuid"], kept["uuid"]]))
                        .values(lastOpDate=utcnow() - timedelta(days=2)))

    await vm_cloud.node.db.run(backdate)
    assert await expunge_old_volumes(vm_cloud.node) == [old["uuid"]]
    left = (await call("QueryVolume", q=["type=Data"]))["inventories"]
    assert sorted((v["name"], v["status"]) for v in left) == [("kept", "Ready"),
                                                               ("young", "Deleted")]

    await vm_cloud.node.global_config.update("volume", "deletionPolicy", "Never")
    await vm_cloud.node.db.run(backdate)
    assert await expunge_old_volumes(vm_cloud.node) == []


async def test_a_primary_storage_holding_volumes_of_the_clusters_vms_stays_attached(
        vm_cloud: Environment) -> None:
    call = vm_cloud.client.call
    vm = (await call("CreateVmInstance", name="vm1", imageUuid=vm_cloud.uuid("image1"),
                     instanceOfferingUuid=vm_cloud.uuid("small"),
                     l3NetworkUuids=[vm_cloud.uuid("l3a")]))["inventory"]
    with pytest.raises(ZError, match=f"holds volumes of VMs.*{vm['uuid']}"):
        await call("DetachPrimaryStorageFromCluster", primaryStorageUuid=vm_cloud.uuid("ps1"),
                   clusterUuid=vm_cloud.uuid("cluster1"))
    ps = (await call("QueryPrimaryStorage", q=[f"uuid={vm_cloud.uuid('ps1')}"]))["inventories"]
    assert ps[0]["attachedClusterUuids"] == [vm_cloud.uuid("cluster1")]

    await call("DestroyVmInstance", uuid=vm["uuid"])
    await call("ExpungeVmInstance", uuid=vm["uuid"])
    await call("DetachPrimaryStorageFromCluster", primaryStorageUuid=vm_cloud.uuid("ps1"),
               clusterUuid=vm_cloud.uuid("cluster1"))


async def test_volumes_on_local_storage_stay_with_their_host(
        make_env: Any, vm_cloud_spec: dict[str, Any]) -> None:
    zone = vm_cloud_spec["zones"][0]
    zone["primaryStorage"] = [{"name": "ps1", "type": "LocalStorage", "url": "/zstack/local"}]
    env = await make_env(vm_cloud_spec)
    call = env.client.call
    host1, host2 = env.uuid("host1"), env.uuid("host2")

    def create(name: str, host: str) -> Any:
        return call("CreateVmInstance", name=name, imageUuid=env.uuid("image1"),
                    instanceOfferingUuid=env.uuid("small"), l3NetworkUuids=[env.uuid("l3a")],
                    dataDiskOfferingUuids=[env.uuid("disk10G")], hostUuid=host)

    vm = (await create("vm1", host1))["inventory"]
    await create("busy", host1)  # host2 now has the most free memory
    await call("StopVmInstance", uuid=vm["uuid"])
    started = (await call("StartVmInstance", uuid=vm["uuid"]))["inventory"]
    assert started["hostUuid"] == host1  # where its disks are

    other = (await create("vm2", host2))["inventory"]
    data = next(v for v in other["allVolumes"] if v["type"] == "Data")
    await call("DetachDataVolumeFromVm", uuid=data["uuid"])
    with pytest.raises(ZError, match=f"local storage of host {host2}"):
        await call("AttachDataVolumeToVm", volumeUuid=data["uuid"],
                   vmInstanceUuid=vm["uuid"])
    attached = (await call("AttachDataVolumeToVm", volumeUuid=data["uuid"],
                           vmInstanceUuid=other["uuid"]))["inventory"]
    assert attached["vmInstanceUuid"] == other["uuid"] and "hostUuid" not in attached


async def test_the_snapshot_tree_shows_each_snapshot_under_its_parent(
        vm_cloud: Environment) -> None:
    call = vm_cloud.client.call
    vm = (await call("CreateVmInstance", name="vm1", imageUuid=vm_cloud.uuid("image1"),
                     instanceOfferingUuid=vm_cloud.uuid("small"),
                     l3NetworkUuids=[vm_cloud.uuid("l3a")]))["inventory"]
    await call("StopVmInstance", uuid=vm["uuid"])
    root = vm["rootVolumeUuid"]
    first = (await call("CreateVolumeSnapshot", volumeUuid=root, name="s1"))["inventory"]
    second = (await call("CreateVolumeSnapshot", volumeUuid=root, name="s2"))["inventory"]

    [tree] = (await call("QueryVolumeSnapshotTree", q=[f"volumeUuid={root}"]))["inventories"]
    top = tree["tree"]
    assert top["inventory"]["uuid"] == first["uuid"] and top["parentUuid"] is None
    [child] = top["children"]
    assert child["inventory"]["name"] == "s2" and child["parentUuid"] == first["uuid"]
    assert child["inventory"]["uuid"] == second["uuid"] and child["children"] == []
