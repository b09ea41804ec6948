"""AddImage: downloads from a local HTTP server and from files, progress, failures, queries."""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.compute.helpers import MakeNode, call, fails, tenant
from zcore import FlowInsertion, FlowStep, ZError, hookimpl
from zcore.db import ResourceVO
from zcore.flow import FlowContext, Step
from zcore.node import Node
from zcore.testing.node import free_port
from zplugins.storage.backup import BackupStorageVO
from zplugins.storage.image_models import ImageBackupStorageRefVO, ImageVO

pytestmark = pytest.mark.db

MiB = 1 << 20
GiB = 1 << 30
PAYLOAD = random.Random(7).randbytes(3 * MiB + 12345)
MD5 = hashlib.md5(PAYLOAD).hexdigest()
#: A qcow2 header describing a 10 GiB disk, and some clusters.
QCOW2 = (b"QFI\xfb" + struct.pack(">I", 3) + bytes(16) + struct.pack(">Q", 10 * GiB)
         + random.Random(8).randbytes(MiB))


@dataclass
class Server:
    """A local HTTP server of images; ``gate`` holds the slow route half way."""

    url: str
    gate: asyncio.Event = field(default_factory=asyncio.Event)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    gate = asyncio.Event()

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="application/octet-stream")

    async def qcow2(request: web.Request) -> web.Response:
        return web.Response(body=QCOW2, content_type="application/octet-stream")

    async def drop(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse()
        reply.content_length = len(PAYLOAD)
        await reply.prepare(request)
        await reply.write(PAYLOAD[:len(PAYLOAD) // 2])
        assert request.transport is not None
        request.transport.close()  # the connection breaks half way
        return reply

    async def slow(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse()
        reply.content_length = len(PAYLOAD)
        await reply.prepare(request)
        await reply.write(PAYLOAD[:MiB])
        await gate.wait()
        await reply.write(PAYLOAD[MiB:])
        await reply.write_eof()
        return reply

    app = web.Application()
    app.router.add_get("/images/centos.qcow2", image)
    app.router.add_get("/images/disk.qcow2", qcow2)
    app.router.add_get("/images/drop.qcow2", drop)
    app.router.add_get("/images/slow.qcow2", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Server(f"http://127.0.0.1:{port}/images", gate)
    finally:
        gate.set()
        await runner.cleanup()


async def sftp(node: Node, directory: Path, name: str = "bs1") -> dict[str, Any]:
    return (await call(node, "AddSftpBackupStorage", name=name, url=str(directory),
                       hostname="localhost", username="root",
                       password="password"))["inventory"]


async def simulator(node: Node, name: str = "sim", available: int = 100 * GiB
                    ) -> dict[str, Any]:
    return (await call(node, "AddSimulatorBackupStorage", name=name, url="/sim",
                       totalCapacity=100 * GiB, availableCapacity=available))["inventory"]


async def add_image(node: Node, url: str, *bs_uuids: str, caller: Any = None,
                    **params: Any) -> dict[str, Any]:
    params.setdefault("name", "image")
    args = (caller,) if caller is not None else ()
    return (await call(node, "AddImage", *args, url=url, backupStorageUuids=list(bs_uuids),
                       **params))["inventory"]


async def available(node: Node, bs_uuid: str) -> int:
    row = await node.db.run(lambda s: s.get(BackupStorageVO, bs_uuid))
    assert row is not None
    return row.availableCapacity


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def number(session: Session, statement: Any) -> int:
    return int(session.scalar(statement) or 0)


async def image_rows(node: Node) -> dict[str, int]:
    def count(session: Session) -> dict[str, int]:
        return {
            "images": number(session, select(func.count()).select_from(ImageVO)),
            "refs": number(session, select(func.count()).select_from(ImageBackupStorageRefVO)),
            "resources": number(session, select(func.count()).select_from(ResourceVO).where(
                ResourceVO.resourceType == "ImageVO")),
        }

    return await node.db.run(count)


NO_IMAGE = {"images": 0, "refs": 0, "resources": 0}


# --------------------------------------------------------------------------- downloads


async def test_an_image_is_downloaded_over_http_into_sftp_backup_storage(
        api_client: Any, server: Server, tmp_path: Path) -> None:
    client = await api_client()
    bs = (await client.call("AddSftpBackupStorage", name="bs1", url=str(tmp_path / "bs"),
                            hostname="localhost", username="root",
                            password="password"))["inventory"]
    before = await available(client.node, bs["uuid"])
    url = f"{server.url}/centos.qcow2"
    image = (await client.call("AddImage", name="centos", url=url, format="qcow2",
                               platform="Linux", guestOsType="CentOS 7",
                               backupStorageUuids=[bs["uuid"]]))["inventory"]
    assert (image["status"], image["state"], image["mediaType"], image["format"]) == \
        ("Ready", "Enabled", "RootVolumeTemplate", "qcow2")
    assert (image["size"], image["actualSize"], image["md5Sum"]) == \
        (len(PAYLOAD), len(PAYLOAD), MD5)
    assert (image["url"], image["platform"], image["guestOsType"], image["system"]) == \
        (url, "Linux", "CentOS 7", False)
    [ref] = image["backupStorageRefs"]
    assert (ref["backupStorageUuid"], ref["status"]) == (bs["uuid"], "Ready")
    stored = Path(ref["installPath"])
    assert stored.read_bytes() == PAYLOAD
    assert files(tmp_path / "bs") == [stored]
    assert await available(client.node, bs["uuid"]) == before - len(PAYLOAD)
    found = (await client.call("QueryImage", q=[f"uuid={image['uuid']}"]))["inventories"]
    assert found == [image]
    assert set(image) == {"uuid", "name", "description", "state", "status", "size",
                          "actualSize", "md5Sum", "url", "mediaType", "guestOsType", "type",
                          "platform", "format", "system", "architecture", "virtio",
                          "backupStorageRefs", "systemTags", "createDate", "lastOpDate"}
    assert set(ref) == {"imageUuid", "backupStorageUuid", "installPath", "exportUrl",
                        "exportMd5Sum", "status", "createDate", "lastOpDate"}


async def test_progress_is_readable_while_the_download_runs(
        api_client: Any, server: Server, tmp_path: Path) -> None:
    client = await api_client()
    bs = (await client.call("AddSftpBackupStorage", name="bs1", url=str(tmp_path / "bs"),
                            hostname="localhost", username="root",
                            password="password"))["inventory"]
    adding = asyncio.create_task(client.call("AddImage", name="slow",
                                             url=f"{server.url}/slow.qcow2",
                                             backupStorageUuids=[bs["uuid"]]))
    seen: dict[str, Any] = {}
    for _ in range(500):
        found = (await client.call("QueryImage", q=["name=slow"]))["inventories"]
        if found and found[0]["actualSize"] >= MiB:
            seen = found[0]
            break
        await asyncio.sleep(0.02)
    assert seen, "the download's progress never showed"
    assert (seen["status"], seen["size"]) == ("Downloading", len(PAYLOAD))
    assert MiB <= seen["actualSize"] < len(PAYLOAD)
    assert seen["backupStorageRefs"][0]["status"] == "Downloading"
    # Deleting it now is refused: it is still downloading.
    await fails(client.call("DeleteImage", uuid=seen["uuid"]), "SYS.1006")
    assert not adding.done()
    server.gate.set()
    image = (await adding)["inventory"]
    assert (image["status"], image["actualSize"], image["md5Sum"]) == \
        ("Ready", len(PAYLOAD), MD5)


async def test_an_image_is_copied_from_a_file_url(node: Node, tmp_path: Path) -> None:
    bs = await sftp(node, tmp_path / "bs")
    source = tmp_path / "source dir" / "debian.iso"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    image = await add_image(node, "file://" + str(source).replace(" ", "%20"), bs["uuid"])
    assert (image["format"], image["mediaType"], image["md5Sum"], image["size"]) == \
        ("iso", "ISO", MD5, len(PAYLOAD))
    assert Path(image["backupStorageRefs"][0]["installPath"]).read_bytes() == PAYLOAD


async def test_a_qcow2_image_has_the_virtual_size_of_its_disk(
        node: Node, server: Server, tmp_path: Path) -> None:
    bs = await sftp(node, tmp_path / "bs")
    image = await add_image(node, f"{server.url}/disk.qcow2", bs["uuid"])
    assert (image["size"], image["actualSize"]) == (10 * GiB, len(QCOW2))
    assert await available(node, bs["uuid"]) <= bs["availableCapacity"] - len(QCOW2)


async def test_a_simulated_backup_storage_measures_and_keeps_nothing(
        node: Node, server: Server) -> None:
    bs = await simulator(node)
    image = await add_image(node, f"{server.url}/centos.qcow2", bs["uuid"],
                            mediaType="DataVolumeTemplate")
    assert (image["status"], image["md5Sum"], image["actualSize"], image["format"]) == \
        ("Ready", MD5, len(PAYLOAD), "qcow2")
    assert await available(node, bs["uuid"]) == 100 * GiB - len(PAYLOAD)


async def test_an_image_goes_to_several_backup_storages(
        node: Node, server: Server, tmp_path: Path) -> None:
    one, two = await sftp(node, tmp_path / "one", "one"), await sftp(node, tmp_path / "two", "two")
    image = await add_image(node, f"{server.url}/centos.qcow2", one["uuid"], two["uuid"],
                            one["uuid"])
    assert sorted(r["backupStorageUuid"] for r in image["backupStorageRefs"]) == \
        sorted([one["uuid"], two["uuid"]])
    for ref in image["backupStorageRefs"]:
        assert Path(ref["installPath"]).read_bytes() == PAYLOAD
    by_bs = await call(node, "QueryImage", q=["backupStorageRefs.backupStorage.name=two"])
    assert [i["uuid"] for i in by_bs["inventories"]] == [image["uuid"]]
    holding = await call(node, "QueryBackupStorage", q=[f"imageRef.image.name={image['name']}"])
    assert sorted(b["uuid"] for b in holding["inventories"]) == \
        sorted([one["uuid"], two["uuid"]])


async def test_an_image_is_kept_where_its_download_succeeded(
        node: Node, server: Server, tmp_path: Path) -> None:
    good = await sftp(node, tmp_path / "good")
    small = await simulator(node, "small", available=MiB)
    image = await add_image(node, f"{server.url}/centos.qcow2", good["uuid"], small["uuid"])
    assert [r["backupStorageUuid"] for r in image["backupStorageRefs"]] == [good["uuid"]]
    assert await available(node, small["uuid"]) == MiB


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("route", ["missing.qcow2", "drop.qcow2", "refused", "no file"])
async def test_a_failed_download_leaves_no_image_and_no_file(
        node: Node, server: Server, tmp_path: Path, route: str) -> None:
    bs = await sftp(node, tmp_path / "bs")
    before = await available(node, bs["uuid"])
    url = {"refused": f"http://127.0.0.1:{free_port()}/x.qcow2",
           "no file": f"file://{tmp_path}/nowhere.qcow2"}.get(route, f"{server.url}/{route}")
    error = await fails(add_image(node, url, bs["uuid"]), "IMAGE.1000")
    text = f"{error.description}: {error.details}"
    assert url in text and bs["uuid"] in text
    why = {"missing.qcow2": "HTTP 404", "drop.qcow2": "connection broke",
           "refused": "Connection refused", "no file": "No such file"}[route]
    assert why in text
    assert (await call(node, "QueryImage"))["inventories"] == []
    assert await image_rows(node) == NO_IMAGE
    assert files(tmp_path / "bs") == []
    assert await available(node, bs["uuid"]) == before


async def test_bad_image_urls_are_refused_before_anything_happens(
        node: Node, tmp_path: Path) -> None:
    bs = await sftp(node, tmp_path / "bs")
    for url in ("ftp://example.com/a.qcow2", "/tmp/a.qcow2", "http:///a.qcow2",
                "file://otherhost/a.qcow2", "file:relative.qcow2"):
        error = await fails(add_image(node, url, bs["uuid"]), "SYS.1007")
        assert url in error.details
    (tmp_path / "a.qcow2").write_bytes(b"x")
    error = await fails(add_image(node, f"file://{tmp_path}/a.qcow2", bs["uuid"],
                                  caller=tenant("1")), "SYS.1007")
    assert "administrators" in error.details
    assert await image_rows(node) == NO_IMAGE


async def test_a_full_backup_storage_refuses_the_image(node: Node, server: Server) -> None:
    bs = await simulator(node, available=MiB)
    error = await fails(add_image(node, f"{server.url}/centos.qcow2", bs["uuid"]),
                        "BACKUP_STORAGE.1000")
    assert bs["uuid"] in error.details and str(MiB) in error.details
    assert await image_rows(node) == NO_IMAGE
    assert await available(node, bs["uuid"]) == MiB


async def test_an_sftp_backup_storage_without_room_keeps_no_partial_file(
        node: Node, server: Server, tmp_path: Path) -> None:
    bs = await sftp(node, tmp_path / "bs")

    def nearly_full(session: Session) -> None:
        row = session.get(BackupStorageVO, bs["uuid"])
        assert row is not None
        row.availableCapacity = 2 * MiB

    await node.db.run(nearly_full)
    error = await fails(add_image(node, f"{server.url}/centos.qcow2", bs["uuid"]),
                        "BACKUP_STORAGE.1000")
    assert bs["uuid"] in error.details
    assert files(tmp_path / "bs") == [] and await image_rows(node) == NO_IMAGE
    assert await available(node, bs["uuid"]) == 2 * MiB


async def test_images_go_only_to_usable_backup_storage(node: Node, server: Server,
                                                       tmp_path: Path) -> None:
    bs = await sftp(node, tmp_path / "bs")
    url = f"{server.url}/centos.qcow2"
    await fails(add_image(node, url, "0" * 32), "SYS.1003")
    await fails(add_image(node, url, "not-a-uuid"), "SYS.1007")
    await call(node, "ChangeBackupStorageState", uuid=bs["uuid"], stateEvent="disable")
    error = await fails(add_image(node, url, bs["uuid"]), "SYS.1006")
    assert "Disabled" in error.details
    await call(node, "ChangeBackupStorageState", uuid=bs["uuid"], stateEvent="enable")
    await fails(add_image(node, url), "SYS.1007")  # no backup storage at all
    await fails(add_image(node, url, bs["uuid"], format="vmdk"), "SYS.1007")
    await fails(add_image(node, url, bs["uuid"], format="iso",
                          mediaType="RootVolumeTemplate"), "SYS.1007")
    await fails(add_image(node, url, bs["uuid"], mediaType="ISO", format="qcow2"), "SYS.1007")
    assert await image_rows(node) == NO_IMAGE and files(tmp_path / "bs") == []


# --------------------------------------------------------------------------- changing


async def test_update_and_change_state(node: Node, server: Server) -> None:
    bs = await simulator(node)
    image = await add_image(node, f"{server.url}/centos.qcow2", bs["uuid"], name="centos")
    updated = (await call(node, "UpdateImage", uuid=image["uuid"], name="centos7",
                          guestOsType="CentOS", platform="Linux", system=True,
                          architecture="x86_64"))["inventory"]
    assert (updated["name"], updated["guestOsType"], updated["platform"], updated["system"],
            updated["architecture"], updated["md5Sum"]) == \
        ("centos7", "CentOS", "Linux", True, "x86_64", MD5)
    await fails(call(node, "UpdateImage", uuid=image["uuid"], format="iso"), "SYS.1007")
    disabled = (await call(node, "ChangeImageState", uuid=image["uuid"],
                           stateEvent="disable"))["inventory"]
    assert disabled["state"] == "Disabled"
    found = await call(node, "QueryImage", q=["state=Disabled", "name=centos7"])
    assert [i["uuid"] for i in found["inventories"]] == [image["uuid"]]


async def test_accounts_see_only_their_images(node: Node, server: Server) -> None:
    bs = await simulator(node)
    mine = await add_image(node, f"{server.url}/centos.qcow2", bs["uuid"], caller=tenant("1"),
                           systemTags=[], userTags=["gold"])
    seen = (await call(node, "QueryImage", tenant("1")))["inventories"]
    assert [i["uuid"] for i in seen] == [mine["uuid"]]
    assert (await call(node, "QueryImage", tenant("2")))["inventories"] == []
    await fails(call(node, "DeleteImage", tenant("2"), uuid=mine["uuid"]), "ID.1002")
    tagged = await call(node, "QueryImage", tenant("1"), q=["__userTag__=gold"])
    assert [i["uuid"] for i in tagged["inventories"]] == [mine["uuid"]]


# --------------------------------------------------------------------------- faults


class _Boom(Step):
    async def run(self, ctx: FlowContext) -> None:
        raise ZError("SYS.1006", "injected", "the test made the chain fail here")


def boom_after(anchor: str) -> object:
    class plugin:  # a test plugin that makes image-add fail right after ``anchor``
        @staticmethod
        @hookimpl
        def zcore_flow_steps() -> Any:
            yield FlowStep("boom", _Boom())

        @staticmethod
        @hookimpl
        def zcore_flow_insertions() -> Any:
            yield FlowInsertion("image-add", "boom", after=anchor)

    return plugin


@pytest.mark.parametrize("anchor", ["persist-image", "download-image", "mark-image-ready"])
async def test_a_failure_after_any_step_leaves_nothing(
        make_node: MakeNode, server: Server, tmp_path: Path, anchor: str) -> None:
    node = await make_node(("boom", boom_after(anchor)))
    assert "boom" in node.flows.chains["image-add"].step_names
    one, two = await sftp(node, tmp_path / "one", "one"), await simulator(node)
    before = [await available(node, bs["uuid"]) for bs in (one, two)]
    error = await fails(add_image(node, f"{server.url}/centos.qcow2", one["uuid"], two["uuid"]),
                        "SYS.1006")
    assert error.location == "boom"
    assert await image_rows(node) == NO_IMAGE
    assert files(tmp_path / "one") == []
    assert [await available(node, bs["uuid"]) for bs in (one, two)] == before


async def test_a_cancelled_download_leaves_nothing(node: Node, server: Server,
                                                   tmp_path: Path) -> None:
    bs = await sftp(node, tmp_path / "bs")
    adding = asyncio.create_task(add_image(node, f"{server.url}/slow.qcow2", bs["uuid"]))
    for _ in range(500):
        if files(tmp_path / "bs"):
            break
        await asyncio.sleep(0.02)
    assert files(tmp_path / "bs"), "the download never started"
    adding.cancel()  # as when the node stops
    with pytest.raises(asyncio.CancelledError):
        await adding
    assert files(tmp_path / "bs") == []
    assert await image_rows(node) == NO_IMAGE
