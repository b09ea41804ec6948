"""DeleteImage, RecoverImage, ExpungeImage and the periodic expunge, by deletion policy."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.compute.helpers import MakeNode, call, details, fails
from zcore.node import Node
from zplugins.storage.images import expunge_due

from .test_images import image_rows, sftp, simulator

pytestmark = pytest.mark.db

MiB = 1 << 20
PAYLOAD = bytes(range(256)) * (MiB // 256) * 2
MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "source.qcow2"
    path.write_bytes(PAYLOAD)
    return f"file://{path}"


async def image_on(node: Node, source: str, *bs_uuids: str) -> dict[str, Any]:
    return (await call(node, "AddImage", name="image", url=source,
                       backupStorageUuids=list(bs_uuids)))["inventory"]


async def available(node: Node, bs_uuid: str) -> int:
    found = await call(node, "QueryBackupStorage", q=[f"uuid={bs_uuid}"])
    value: int = found["inventories"][0]["availableCapacity"]
    return value


async def policy(node: Node, value: str) -> None:
    await call(node, "UpdateGlobalConfig", category="image", name="deletionPolicy", value=value)


async def query(node: Node, uuid: str) -> dict[str, Any] | None:
    found = (await call(node, "QueryImage", q=[f"uuid={uuid}"]))["inventories"]
    return found[0] if found else None


async def test_a_deleted_image_is_kept_until_it_is_recovered(
        api_client: Any, source: str, tmp_path: Path) -> None:
    client = await api_client()
    node = client.node
    bs = await sftp(node, tmp_path / "bs")
    image = await image_on(node, source, bs["uuid"])
    stored = Path(image["backupStorageRefs"][0]["installPath"])
    await client.call("DeleteImage", uuid=image["uuid"])
    deleted = await query(node, image["uuid"])
    assert deleted is not None
    assert (deleted["status"], deleted["backupStorageRefs"][0]["status"]) == \
        ("Deleted", "Deleted")
    assert stored.read_bytes() == PAYLOAD
    # Deleting again changes nothing.
    await client.call("DeleteImage", uuid=image["uuid"])
    recovered = (await client.call("RecoverImage", imageUuid=image["uuid"]))["inventory"]
    assert (recovered["status"], recovered["backupStorageRefs"][0]["status"],
            recovered["md5Sum"]) == ("Ready", "Ready", MD5)
    error = await fails(client.call("RecoverImage", imageUuid=image["uuid"]), "SYS.1006")
    assert "no deleted copy" in error.details


async def test_expunging_removes_the_files_then_the_rows(
        api_client: Any, source: str, tmp_path: Path) -> None:
    client = await api_client()
    node = client.node
    bs = await sftp(node, tmp_path / "bs")
    before = await available(node, bs["uuid"])
    image = await image_on(node, source, bs["uuid"])
    assert await available(node, bs["uuid"]) == before - len(PAYLOAD)
    error = await fails(client.call("ExpungeImage", imageUuid=image["uuid"]), "SYS.1006")
    assert "delete it first" in error.details
    await client.call("DeleteImage", uuid=image["uuid"])
    await client.call("ExpungeImage", imageUuid=image["uuid"])
    assert await query(node, image["uuid"]) is None
    assert await image_rows(node) == {"images": 0, "refs": 0, "resources": 0}
    assert not any((tmp_path / "bs").rglob("*.qcow2"))
    assert await available(node, bs["uuid"]) == before
    await fails(client.call("RecoverImage", imageUuid=image["uuid"]), "SYS.1003")


async def test_direct_deletion_expunges_at_once(node: Node, source: str,
                                                tmp_path: Path) -> None:
    await policy(node, "Direct")
    bs = await sftp(node, tmp_path / "bs")
    before = await available(node, bs["uuid"])
    image = await image_on(node, source, bs["uuid"])
    await call(node, "DeleteImage", uuid=image["uuid"])
    assert await query(node, image["uuid"]) is None
    assert not any((tmp_path / "bs").rglob("*.qcow2"))
    assert await available(node, bs["uuid"]) == before


async def test_a_copy_is_deleted_recovered_and_expunged_on_its_own(
        node: Node, source: str, tmp_path: Path) -> None:
    one, two = await sftp(node, tmp_path / "one", "one"), await sftp(node, tmp_path / "two", "two")
    image = await image_on(node, source, one["uuid"], two["uuid"])
    await call(node, "DeleteImage", uuid=image["uuid"], backupStorageUuids=[one["uuid"]])
    found = await query(node, image["uuid"])
    assert found is not None and found["status"] == "Ready"
    statuses = {r["backupStorageUuid"]: r["status"] for r in found["backupStorageRefs"]}
    assert statuses == {one["uuid"]: "Deleted", two["uuid"]: "Ready"}
    error = await fails(call(node, "ExpungeImage", imageUuid=image["uuid"],
                             backupStorageUuids=[two["uuid"]]), "SYS.1006")
    assert two["uuid"] in error.details
    await call(node, "ExpungeImage", imageUuid=image["uuid"], backupStorageUuids=[one["uuid"]])
    found = await query(node, image["uuid"])
    assert found is not None
    assert [r["backupStorageUuid"] for r in found["backupStorageRefs"]] == [two["uuid"]]
    assert not any((tmp_path / "one").rglob("*.qcow2"))
    assert any((tmp_path / "two").rglob("*.qcow2"))
    sim = await simulator(node)
    await fails(call(node, "DeleteImage", uuid=image["uuid"], backupStorageUuids=[sim["uuid"]]),
                "SYS.1007")


async def test_deleted_images_are_expunged_after_the_expunge_period(
        node: Node, source: str, tmp_path: Path) -> None:
    bs = await sftp(node, tmp_path / "bs")
    kept = await image_on(node, source, bs["uuid"])
    gone = await image_on(node, source, bs["uuid"])
    await call(node, "DeleteImage", uuid=gone["uuid"])
    await call(node, "UpdateGlobalConfig", category="image", name="expungePeriod", value="1")
    await call(node, "UpdateGlobalConfig", category="image", name="expungeInterval", value="1")
    for _ in range(100):
        if await query(node, gone["uuid"]) is None:
            break
        await asyncio.sleep(0.1)
    assert await query(node, gone["uuid"]) is None
    assert not Path(gone["backupStorageRefs"][0]["installPath"]).exists()
    found = await query(node, kept["uuid"])
    assert found is not None and found["status"] == "Ready"


async def test_the_never_policy_keeps_deleted_images_until_expunged(
        node: Node, source: str, tmp_path: Path) -> None:
    await policy(node, "Never")
    await call(node, "UpdateGlobalConfig", category="image", name="expungePeriod", value="1")
    bs = await sftp(node, tmp_path / "bs")
    image = await image_on(node, source, bs["uuid"])
    await call(node, "DeleteImage", uuid=image["uuid"])
    await asyncio.sleep(1.1)
    await expunge_due(node)
    found = await query(node, image["uuid"])
    assert found is not None and found["status"] == "Deleted"
    await call(node, "ExpungeImage", imageUuid=image["uuid"])
    assert await query(node, image["uuid"]) is None


async def test_bad_deletion_settings_are_refused(node: Node) -> None:
    await fails(policy(node, "Later"), "SYS.1007")
    await fails(call(node, "UpdateGlobalConfig", category="image", name="expungePeriod",
                     value="0"), "SYS.1007")


async def test_deleting_backup_storage_removes_its_copies_and_lone_images(
        node: Node, source: str, tmp_path: Path) -> None:
    one, two = await sftp(node, tmp_path / "one", "one"), await sftp(node, tmp_path / "two", "two")
    shared = await image_on(node, source, one["uuid"], two["uuid"])
    lone = await image_on(node, source, one["uuid"])
    await call(node, "DeleteBackupStorage", uuid=one["uuid"])
    assert await query(node, lone["uuid"]) is None
    found = await query(node, shared["uuid"])
    assert found is not None
    assert [r["backupStorageUuid"] for r in found["backupStorageRefs"]] == [two["uuid"]]
    assert not any((tmp_path / "one").rglob("*.qcow2"))
    assert await image_rows(node) == {"images": 1, "refs": 1, "resources": 1}


async def test_without_cascade_backup_storage_with_images_is_not_deleted(
        make_node: MakeNode, source: str, tmp_path: Path) -> None:
    node = await make_node(disable=("cascade",))
    bs = await sftp(node, tmp_path / "bs")
    image = await image_on(node, source, bs["uuid"])
    error = await fails(call(node, "DeleteBackupStorage", uuid=bs["uuid"]), "SYS.1004")
    assert "ImageBackupStorageRefVO" in details(error)
    found = await query(node, image["uuid"])
    assert found is not None and found["status"] == "Ready"
    await call(node, "DeleteImage", uuid=image["uuid"])
    await call(node, "ExpungeImage", imageUuid=image["uuid"])
    await call(node, "DeleteBackupStorage", uuid=bs["uuid"])


async def test_every_image_action_works_over_rest(api_client: Any, source: str) -> None:
    client = await api_client()
    bs = await simulator(client.node)
    image = await image_on(client.node, source, bs["uuid"])
    await client.call("DeleteImage", uuid=image["uuid"])
    await client.call("RecoverImage", imageUuid=image["uuid"])
    updated = (await client.call("UpdateImage", uuid=image["uuid"], name="new"))["inventory"]
    assert updated["name"] == "new"
    changed = (await client.call("ChangeImageState", uuid=image["uuid"],
                                 stateEvent="disable"))["inventory"]
    assert changed["state"] == "Disabled"
