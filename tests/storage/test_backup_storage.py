"""Backup storage: sftp and simulated backends, zones, queries, deletion, migrations."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.compute.helpers import MakeNode, call, details, fails, tenant, zone
from zcore import ZError
from zcore.db import Base, ResourceVO, new_uuid
from zcore.node import Node
from zplugins.sftpbackup.models import SftpBackupStorageVO
from zplugins.storage.backup import (
    BACKUP_STORAGES,
    BackupStorageDriver,
    BackupStorageInfo,
    BackupStorageVO,
    BackupStorageZoneRefVO,
    ImageInfo,
    backup_storage_driver,
)

pytestmark = pytest.mark.db

GiB = 1 << 30


async def sftp(node: Node, directory: Path, name: str = "bs1", **params: Any) -> dict[str, Any]:
    params.setdefault("hostname", "localhost")
    return (await call(node, "AddSftpBackupStorage", name=name, url=str(directory),
                       username="root", password="password", **params))["inventory"]


async def simulator(node: Node, name: str = "sim", total: int = 100 * GiB,
                    available: int | None = None) -> dict[str, Any]:
    return (await call(node, "AddSimulatorBackupStorage", name=name, url="/sim",
                       totalCapacity=total,
                       availableCapacity=total if available is None else available))["inventory"]


def number(session: Session, statement: Any) -> int:
    return int(session.scalar(statement) or 0)


async def rows(node: Node) -> dict[str, int]:
    def count(session: Session) -> dict[str, int]:
        return {
            "backup_storage": number(session,
                                     select(func.count()).select_from(BackupStorageVO)),
            "sftp": number(session, select(func.count()).select_from(SftpBackupStorageVO)),
            "zone_refs": number(session,
                                select(func.count()).select_from(BackupStorageZoneRefVO)),
            "resources": number(session, select(func.count()).select_from(ResourceVO).where(
                ResourceVO.resourceType == "BackupStorageVO")),
        }

    return await node.db.run(count)


NOTHING = {"backup_storage": 0, "sftp": 0, "zone_refs": 0, "resources": 0}


# --------------------------------------------------------------------------- adding


async def test_sftp_backup_storage_is_a_directory_with_its_disk_capacity(
        api_client: Any, tmp_path: Path) -> None:
    client = await api_client()
    directory = tmp_path / "store" / "bs"
    bs = (await client.call("AddSftpBackupStorage", name="bs1", url=str(directory),
                            hostname="localhost", username="root", password="password",
                            description="images"))["inventory"]
    assert directory.is_dir()
    usage = shutil.disk_usage(directory)
    assert bs["totalCapacity"] == usage.total
    assert abs(bs["availableCapacity"] - usage.free) < 64 << 20
    assert (bs["type"], bs["state"], bs["status"], bs["url"]) == \
        ("SftpBackupStorage", "Enabled", "Connected", str(directory))
    assert bs["attachedZoneUuids"] == []
    assert set(bs) == {"uuid", "name", "url", "description", "totalCapacity",
                       "availableCapacity", "type", "state", "status", "createDate",
                       "lastOpDate", "attachedZoneUuids"}
    found = (await client.call("QueryBackupStorage", q=[f"uuid={bs['uuid']}"]))["inventories"]
    assert found == [bs]
    sftp_row = await client.node.db.run(lambda s: s.get(SftpBackupStorageVO, bs["uuid"]))
    assert (sftp_row.hostname, sftp_row.username, sftp_row.sshPort) == ("localhost", "root", 22)


async def test_bad_sftp_backup_storage_is_refused_and_nothing_is_written(
        node: Node, tmp_path: Path) -> None:
    error = await fails(sftp(node, Path("relative/dir")), "SYS.1007")
    assert "absolute path" in error.details
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    error = await fails(sftp(node, a_file), "BACKUP_STORAGE.1001")
    assert str(a_file) in error.details
    await fails(sftp(node, tmp_path / "bs", sshPort=70000), "SYS.1007")
    await fails(sftp(node, tmp_path / "bs", importImages=True), "SYS.1007")
    await fails(sftp(node, tmp_path / "bs", resourceUuid="not-a-uuid"), "SYS.1007")
    await fails(call(node, "AddSftpBackupStorage", tenant("1"), name="bs", hostname="h",
                     url=str(tmp_path / "bs"), username="u", password="p"), "ID.1002")
    assert await rows(node) == NOTHING
    assert not (tmp_path / "bs").exists()


async def test_the_same_directory_of_a_host_is_refused_twice(node: Node, tmp_path: Path) -> None:
    first = await sftp(node, tmp_path / "bs")
    error = await fails(sftp(node, tmp_path / "bs" / ".", name="again"), "SYS.1007")
    assert first["uuid"] in error.details and str(tmp_path / "bs") in error.details
    await sftp(node, tmp_path / "bs", name="other host", hostname="10.0.0.2")
    assert (await rows(node))["backup_storage"] == 2


async def test_simulated_backup_storage_has_the_capacity_it_is_given(node: Node) -> None:
    bs = await simulator(node, total=10 * GiB, available=4 * GiB)
    assert (bs["type"], bs["totalCapacity"], bs["availableCapacity"], bs["status"]) == \
        ("Simulator", 10 * GiB, 4 * GiB, "Connected")
    error = await fails(simulator(node, total=GiB, available=2 * GiB), "SYS.1007")
    assert "availableCapacity" in error.details
    await fails(simulator(node, total=-1), "SYS.1007")
    assert (await rows(node))["backup_storage"] == 1


# --------------------------------------------------------------------------- zones


async def test_backup_storage_attaches_to_zones_once_each(api_client: Any) -> None:
    client = await api_client()
    bs = (await client.call("AddSimulatorBackupStorage", name="sim", url="/sim",
                            totalCapacity=GiB, availableCapacity=GiB))["inventory"]
    z1 = (await client.call("CreateZone", name="z1"))["inventory"]
    z2 = (await client.call("CreateZone", name="z2"))["inventory"]
    attached = (await client.call("AttachBackupStorageToZone", zoneUuid=z1["uuid"],
                                  backupStorageUuid=bs["uuid"]))["inventory"]
    assert attached["attachedZoneUuids"] == [z1["uuid"]]
    error = await fails(client.call("AttachBackupStorageToZone", zoneUuid=z1["uuid"],
                                    backupStorageUuid=bs["uuid"]), "SYS.1007")
    assert "already attached" in error.details and z1["uuid"] in error.details
    await client.call("AttachBackupStorageToZone", zoneUuid=z2["uuid"],
                      backupStorageUuid=bs["uuid"])
    names = await client.call("QueryBackupStorage", q=["zoneRef.zone.name=z2"])
    assert [b["uuid"] for b in names["inventories"]] == [bs["uuid"]]
    zones = await client.call("QueryZone", q=["backupStorageRef.backupStorage.name=sim"])
    assert sorted(z["uuid"] for z in zones["inventories"]) == sorted([z1["uuid"], z2["uuid"]])
    detached = (await client.call("DetachBackupStorageFromZone", zoneUuid=z1["uuid"],
                                  backupStorageUuid=bs["uuid"]))["inventory"]
    assert detached["attachedZoneUuids"] == [z2["uuid"]]
    assert (await client.call("QueryBackupStorage",
                              q=[f"zoneRef.zoneUuid={z1['uuid']}"]))["inventories"] == []


async def test_detaching_what_is_not_attached_is_refused(node: Node) -> None:
    bs = await simulator(node)
    z = await zone(node)
    error = await fails(call(node, "DetachBackupStorageFromZone", zoneUuid=z["uuid"],
                             backupStorageUuid=bs["uuid"]), "SYS.1007")
    assert "not attached" in error.details
    await fails(call(node, "AttachBackupStorageToZone", zoneUuid="0" * 32,
                     backupStorageUuid=bs["uuid"]), "SYS.1003")
    await fails(call(node, "AttachBackupStorageToZone", tenant("1"), zoneUuid=z["uuid"],
                     backupStorageUuid=bs["uuid"]), "ID.1002")
    assert (await rows(node))["zone_refs"] == 0


async def test_deleting_a_zone_detaches_its_backup_storage_which_stays(node: Node) -> None:
    bs = await simulator(node)
    z1, z2 = await zone(node, "z1"), await zone(node, "z2")
    for z in (z1, z2):
        await call(node, "AttachBackupStorageToZone", zoneUuid=z["uuid"],
                   backupStorageUuid=bs["uuid"])
    await call(node, "DeleteZone", uuid=z1["uuid"])
    left = (await call(node, "QueryBackupStorage"))["inventories"]
    assert [(b["uuid"], b["attachedZoneUuids"]) for b in left] == [(bs["uuid"], [z2["uuid"]])]


async def test_without_cascade_a_zone_with_backup_storage_is_not_deleted(
        make_node: MakeNode) -> None:
    node = await make_node(disable=("cascade",))
    bs = await simulator(node)
    z = await zone(node)
    await call(node, "AttachBackupStorageToZone", zoneUuid=z["uuid"],
               backupStorageUuid=bs["uuid"])
    error = await fails(call(node, "DeleteZone", uuid=z["uuid"]), "SYS.1004")
    assert "BackupStorageZoneRefVO" in details(error)
    assert len((await call(node, "QueryZone"))["inventories"]) == 1
    await call(node, "DetachBackupStorageFromZone", zoneUuid=z["uuid"],
               backupStorageUuid=bs["uuid"])
    await call(node, "DeleteZone", uuid=z["uuid"])


# --------------------------------------------------------------------------- changing


async def test_update_state_and_reconnect(node: Node, tmp_path: Path) -> None:
    bs = await sftp(node, tmp_path / "bs")
    updated = (await call(node, "UpdateBackupStorage", uuid=bs["uuid"], name="renamed",
                          description="d"))["inventory"]
    assert (updated["name"], updated["description"], updated["url"]) == \
        ("renamed", "d", bs["url"])
    disabled = (await call(node, "ChangeBackupStorageState", uuid=bs["uuid"],
                           stateEvent="disable"))["inventory"]
    assert disabled["state"] == "Disabled"
    await fails(call(node, "ChangeBackupStorageState", uuid=bs["uuid"], stateEvent="maintain"),
                "SYS.1007")
    # The directory went and a file took its place: reconnecting fails and says why.
    shutil.rmtree(tmp_path / "bs")
    (tmp_path / "bs").write_text("")
    error = await fails(call(node, "ReconnectBackupStorage", uuid=bs["uuid"]),
                        "BACKUP_STORAGE.1001")
    assert str(tmp_path / "bs") in error.details
    found = (await call(node, "QueryBackupStorage", q=[f"uuid={bs['uuid']}"]))["inventories"]
    assert found[0]["status"] == "Disconnected"
    (tmp_path / "bs").unlink()
    again = (await call(node, "ReconnectBackupStorage", uuid=bs["uuid"]))["inventory"]
    assert again["status"] == "Connected" and (tmp_path / "bs").is_dir()
    sftp_update = (await call(node, "UpdateSftpBackupStorage", uuid=bs["uuid"],
                              hostname="10.0.0.9", sshPort=2222, password="new"))["inventory"]
    assert sftp_update["name"] == "renamed"
    row = await node.db.run(lambda s: s.get(SftpBackupStorageVO, bs["uuid"]))
    assert row is not None
    assert (row.hostname, row.sshPort, row.password) == ("10.0.0.9", 2222, "new")
    sim = await simulator(node)
    await fails(call(node, "UpdateSftpBackupStorage", uuid=sim["uuid"], hostname="h"),
                "SYS.1007")


async def test_every_account_reads_backup_storage_and_only_admins_change_it(
        node: Node) -> None:
    bs = await simulator(node)
    seen = (await call(node, "QueryBackupStorage", tenant("1")))["inventories"]
    assert [b["uuid"] for b in seen] == [bs["uuid"]]
    for api, params in (("UpdateBackupStorage", {"name": "x"}),
                        ("ChangeBackupStorageState", {"stateEvent": "disable"}),
                        ("ReconnectBackupStorage", {}), ("DeleteBackupStorage", {})):
        await fails(call(node, api, tenant("1"), uuid=bs["uuid"], **params), "ID.1002")
    assert (await call(node, "QueryBackupStorage"))["inventories"] == [bs]


async def test_deleting_backup_storage_detaches_it(node: Node, tmp_path: Path) -> None:
    bs = await sftp(node, tmp_path / "bs")
    z = await zone(node)
    await call(node, "AttachBackupStorageToZone", zoneUuid=z["uuid"],
               backupStorageUuid=bs["uuid"])
    await call(node, "DeleteBackupStorage", uuid=bs["uuid"])
    assert await rows(node) == NOTHING
    assert len((await call(node, "QueryZone"))["inventories"]) == 1
    await fails(call(node, "DeleteBackupStorage", uuid=bs["uuid"]), "SYS.1003")


# --------------------------------------------------------------------------- plugins


async def test_the_drivers_call_themselves_by_their_entry_point_names(node: Node) -> None:
    assert node.drivers.names(BACKUP_STORAGES) == ["SftpBackupStorage", "Simulator"]
    for name in node.drivers.names(BACKUP_STORAGES):
        driver = node.drivers.get(BACKUP_STORAGES, name)
        assert issubclass(driver, BackupStorageDriver) and driver.type == name


async def test_the_node_starts_without_sftpbackup(make_node: MakeNode, tmp_path: Path) -> None:
    node = await make_node(disable=("sftpbackup",))
    assert node.drivers.names(BACKUP_STORAGES) == ["Simulator"]
    await fails(sftp(node, tmp_path / "bs"), "SYS.1008")
    await simulator(node)


async def test_the_migrations_match_the_models(node: Node) -> None:
    ours = {"BackupStorageVO", "BackupStorageZoneRefVO", "ImageVO", "ImageBackupStorageRefVO",
            "SftpBackupStorageVO"}

    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in ours

    def diff(session: Session) -> list[Any]:
        context = MigrationContext.configure(
            session.connection(), opts={"compare_type": True, "include_object": include})
        return list(compare_metadata(context, Base.metadata))

    assert await node.db.run(diff) == []


# --------------------------------------------------------------------------- driver conformance


class _Stop(Exception):
    pass


class BackupStorageConformance:
    """What every backup storage driver must do; each driver's test class sets ``name``."""

    name: str

    def info(self, tmp_path: Path) -> BackupStorageInfo:
        return BackupStorageInfo(new_uuid(), "bs", str(tmp_path / "bs"), self.name, 10 * GiB,
                                 10 * GiB)

    def driver(self, node: Node) -> BackupStorageDriver:
        return backup_storage_driver(node, self.name)

    def source(self, tmp_path: Path, size: int = 3 * (1 << 20) + 7) -> tuple[str, bytes]:
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        path = tmp_path / "source.raw"
        path.write_bytes(data)
        return f"file://{path}", data

    async def test_connect_reports_its_capacity(self, node: Node, tmp_path: Path) -> None:
        capacity = await self.driver(node).connect(node, self.info(tmp_path))
        assert 0 < capacity.available <= capacity.total

    async def test_a_download_reports_progress_and_what_it_stored(
            self, node: Node, tmp_path: Path) -> None:
        bs, driver = self.info(tmp_path), self.driver(node)
        await driver.connect(node, bs)
        url, data = self.source(tmp_path)
        image = ImageInfo(new_uuid(), "image", "raw", "RootVolumeTemplate")
        seen: list[tuple[int, int | None]] = []
        result = await driver.download(node, bs, image, url,
                                       lambda done, total: seen.append((done, total)))
        assert (result.size, result.md5) == (len(data), hashlib.md5(data).hexdigest())
        assert result.install_path == driver.install_path(bs, image)
        assert seen[-1] == (len(data), len(data)) and len(seen) > 2
        assert [done for done, _ in seen] == sorted(done for done, _ in seen)
        await driver.delete(node, bs, result.install_path)
        await driver.delete(node, bs, result.install_path)  # deleting twice is no error
        assert not [p for p in (tmp_path / "bs").rglob("*") if p.is_file()]

    async def test_an_aborted_download_leaves_nothing(self, node: Node, tmp_path: Path) -> None:
        bs, driver = self.info(tmp_path), self.driver(node)
        await driver.connect(node, bs)
        url, _ = self.source(tmp_path)
        image = ImageInfo(new_uuid(), "image", "raw", "RootVolumeTemplate")

        def stop_half_way(done: int, total: int | None) -> None:
            if done >= 1 << 20:
                raise _Stop()

        with pytest.raises(_Stop):
            await driver.download(node, bs, image, url, stop_half_way)
        assert not [p for p in (tmp_path / "bs").rglob("*") if p.is_file()]
        with pytest.raises(ZError) as caught:
            await driver.download(node, bs, image, f"file://{tmp_path}/missing", stop_half_way)
        assert caught.value.code == "IMAGE.1000"


class TestSftpBackupStorageDriver(BackupStorageConformance):
    name = "SftpBackupStorage"


class TestSimulatorBackupStorageDriver(BackupStorageConformance):
    name = "Simulator"
