"""AddImage's workflow: ``image-add`` (``image_flows/image-add.yaml``).

``persist-image`` writes the image, ``Downloading``, with one copy row per backup storage;
``download-image`` has each backup storage's driver download the URL, all at once, and takes
the bytes from the backup storage's available capacity; ``mark-image-ready`` records size and
md5 and makes the image ``Ready``. The context keys are ``api`` (the
:class:`~zcore.api.ApiContext`), ``image_spec`` (an :class:`ImageSpec`), then ``image`` and
``downloads``. Other plugins may insert steps around these (checking an image's content,
converting it).

Progress: while the download runs, the image's ``actualSize`` counts the bytes downloaded (by
the slowest backup storage) and ``size`` the bytes expected (0 while unknown), written every
0.2 s, so ``QueryImage`` shows how far it got. Once ``Ready``, ``actualSize`` is the stored
size and ``size`` the virtual size (a qcow2 image's disk size, else the stored size).

Failures: a backup storage that fails (bad URL, broken connection, no room) has its partial
file removed by its driver. If every backup storage failed, the chain rolls back: the files
downloaded are deleted, their capacity returned, and the image's rows deleted, so no image is
left behind; the error keeps the cause's code (``IMAGE.1000`` for the download,
``BACKUP_STORAGE.1000`` for room) and names the URL and the backup storage. As in ZStack, an
image added to several backup storages is kept on those that succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from zcore.db import add_resource, delete_resource
from zcore.errors import OPERATION_ERROR, RESOURCE_NOT_FOUND, ZError
from zcore.flow import FlowContext, Step
from zplugins.storage.backup import (
    NO_CAPACITY,
    BackupStorageInfo,
    BackupStorageVO,
    DownloadResult,
    ImageInfo,
    backup_storage_driver,
    backup_storage_info,
    release_capacity,
    reserve_capacity,
)
from zplugins.storage.image_models import IMAGE, ImageBackupStorageRefVO, ImageVO

if TYPE_CHECKING:
    from zcore.api import ApiContext
    from zcore.node import Node

__all__ = ["CHAIN", "DownloadImage", "ImageSpec", "MarkImageReady", "PersistImage",
           "image_info", "usable_backup_storage"]

log = logging.getLogger("zplugins.storage.images")

CHAIN = "image-add"

#: Seconds between two writes of a download's progress.
PROGRESS_INTERVAL = 0.2
#: Seconds after which progress is written even if it did not move (the image's lastOpDate
#: then shows the download is alive).
HEARTBEAT = 10.0


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What AddImage asked for, checked."""

    name: str
    url: str
    mediaType: str
    format: str
    backupStorageUuids: tuple[str, ...]
    description: str | None = None
    guestOsType: str | None = None
    platform: str | None = None
    system: bool = False
    architecture: str | None = None
    virtio: bool = True
    type: str = "zstack"
    uuid: str | None = None


def image_info(image: ImageVO) -> ImageInfo:
    return ImageInfo(image.uuid, image.name, image.format, image.mediaType)


def usable_backup_storage(session: Session, api: str, uuids: tuple[str, ...]
                          ) -> list[BackupStorageVO]:
    """The backup storage ``uuids``, each of which must exist, be Enabled and Connected."""
    rows = {row.uuid: row for row in session.scalars(
        select(BackupStorageVO).where(BackupStorageVO.uuid.in_(uuids)))}
    for uuid in uuids:
        row = rows.get(uuid)
        if row is None:
            raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                         f"parameter 'backupStorageUuids' of {api}: no BackupStorageVO has "
                         f"uuid {uuid}")
        if row.state != "Enabled" or row.status != "Connected":
            raise ZError(OPERATION_ERROR, "backup storage not usable",
                         f"{api}: backup storage '{row.name}' ({uuid}) is {row.state} and "
                         f"{row.status}; images go only to Enabled and Connected backup "
                         "storage (enable or reconnect it)")
    return [rows[uuid] for uuid in uuids]


def delete_image_rows(session: Session, uuid: str) -> None:
    """Delete an image's rows: the image, its copies, its resource row and tags."""
    image = session.get(ImageVO, uuid)
    if image is not None:
        session.execute(delete(ImageBackupStorageRefVO)
                        .where(ImageBackupStorageRefVO.imageUuid == uuid))
        delete_resource(session, image)


# --------------------------------------------------------------------------- persist-image


def _insert_image(session: Session, spec: ImageSpec, api: ApiContext) -> ImageVO:
    targets = usable_backup_storage(session, api.api, spec.backupStorageUuids)
    image = ImageVO(name=spec.name, description=spec.description, url=spec.url,
                    mediaType=spec.mediaType, format=spec.format, guestOsType=spec.guestOsType,
                    platform=spec.platform, system=spec.system,
                    architecture=spec.architecture, virtio=spec.virtio, type=spec.type,
                    state="Enabled", status="Downloading", size=0, actualSize=0)
    if spec.uuid is not None:
        image.uuid = spec.uuid
    add_resource(session, image, IMAGE, owner_account_uuid=api.owner)
    session.flush()
    info = image_info(image)
    for row in targets:
        driver = backup_storage_driver(api.node, row.type)
        session.add(ImageBackupStorageRefVO(
            imageUuid=image.uuid, backupStorageUuid=row.uuid, status="Downloading",
            installPath=driver.install_path(backup_storage_info(row), info)))
    session.flush()
    api.add_tags(session, image.uuid, IMAGE)
    return image


class PersistImage(Step):
    """Write the image (``Downloading``) and a copy row per backup storage."""

    requires = ("api", "image_spec")
    provides = ("image",)

    async def run(self, ctx: FlowContext) -> None:
        api: ApiContext = ctx["api"]
        ctx["image"] = await api.run(_insert_image, ctx["image_spec"], api)

    async def rollback(self, ctx: FlowContext) -> None:
        image = ctx.get("image")
        if image is not None:
            await ctx["api"].run(delete_image_rows, image.uuid)


# --------------------------------------------------------------------------- download-image


@dataclass(slots=True)
class Copy:
    """One backup storage's download: where it landed, and whether its bytes are reserved."""

    bs: BackupStorageInfo
    result: DownloadResult
    reserved: bool = False


class _Meter:
    """The progress of one image's downloads, written to the image row now and then."""

    def __init__(self, node: Node, image_uuid: str, bs_uuids: list[str]) -> None:
        self.node = node
        self.image_uuid = image_uuid
        self.done = dict.fromkeys(bs_uuids, 0)
        self.total: dict[str, int | None] = dict.fromkeys(bs_uuids)
        self.changed = False

    def update(self, bs_uuid: str, done: int, total: int | None) -> None:
        self.done[bs_uuid] = done
        self.total[bs_uuid] = total
        self.changed = True

    def figures(self) -> tuple[int, int]:
        totals = [t for t in self.total.values() if t is not None]
        return min(self.done.values(), default=0), max(totals, default=0)

    async def report(self) -> None:
        loop = asyncio.get_running_loop()
        written = loop.time()
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            if not self.changed and loop.time() - written < HEARTBEAT:
                continue
            self.changed = False
            written = loop.time()
            done, total = self.figures()
            try:
                await self.node.db.run(_record_progress, self.image_uuid, done, total)
            except Exception:  # progress is a courtesy: never fail the download for it
                log.warning("recording the download progress of image %s failed",
                            self.image_uuid, exc_info=True)


def _record_progress(session: Session, image_uuid: str, done: int, total: int) -> None:
    session.execute(update(ImageVO)
                    .where(ImageVO.uuid == image_uuid, ImageVO.status == "Downloading")
                    .values(actualSize=done, size=total))


def _targets(session: Session, image_uuid: str) -> list[BackupStorageInfo]:
    rows = session.scalars(
        select(BackupStorageVO).join(
            ImageBackupStorageRefVO,
            ImageBackupStorageRefVO.backupStorageUuid == BackupStorageVO.uuid)
        .where(ImageBackupStorageRefVO.imageUuid == image_uuid)
        .order_by(ImageBackupStorageRefVO.createDate, ImageBackupStorageRefVO.uuid))
    return [backup_storage_info(row) for row in rows]


def _no_room(bs: BackupStorageInfo, url: str, needed: int, available: int) -> ZError:
    return ZError(NO_CAPACITY, "not enough backup storage capacity",
                  f"{bs.describe()} has {available} bytes available; the image at {url} "
                  f"needs {needed}")


def _failed_on(image: ImageVO, bs: BackupStorageInfo, exc: ZError) -> ZError:
    return ZError(exc.code, f"cannot add image '{image.name}'",
                  f"downloading {image.url} to {bs.describe()} failed: {exc.details}",
                  cause=exc)


class DownloadImage(Step):
    """Download the URL to every backup storage at once and reserve the bytes on each."""

    requires = ("api", "image")
    provides = ("downloads",)

    async def run(self, ctx: FlowContext) -> None:
        api: ApiContext = ctx["api"]
        image: ImageVO = ctx["image"]
        targets = await api.run(_targets, image.uuid)
        copies: dict[str, Copy] = {}
        ctx["downloads"] = copies
        meter = _Meter(api.node, image.uuid, [bs.uuid for bs in targets])
        reporter = asyncio.create_task(meter.report(), name=f"image-progress-{image.uuid}")
        try:
            outcomes = await asyncio.gather(
                *(self._one(api, image, bs, meter, copies) for bs in targets),
                return_exceptions=True)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        failures = [(bs, exc) for bs, exc in zip(targets, outcomes, strict=True)
                    if isinstance(exc, BaseException)]
        for _, exc in failures:
            if not isinstance(exc, Exception):
                raise exc
        errors = [(bs, exc if isinstance(exc, ZError) else ZError.wrap(exc))
                  for bs, exc in failures]
        if not copies:
            first = errors[0][1]
            if len(errors) > 1:
                first = ZError(first.code, f"cannot add image '{image.name}'",
                               "; ".join(e.details for _, e in errors), cause=first)
            raise first
        if errors:
            for bs, exc in errors:
                log.warning("image %s (%s) is not kept on %s: %s", image.name, image.uuid,
                            bs.describe(), exc)
            await api.run(_forget_copies, image.uuid, [bs.uuid for bs, _ in errors])

    async def _one(self, api: ApiContext, image: ImageVO, bs: BackupStorageInfo,
                   meter: _Meter, copies: dict[str, Copy]) -> None:
        node = api.node
        driver = backup_storage_driver(node, bs.type)
        limit = bs.availableCapacity

        def progress(done: int, total: int | None) -> None:
            needed = done if total is None else max(done, total)
            if needed > limit:
                raise _no_room(bs, image.url, needed, limit)
            meter.update(bs.uuid, done, total)

        try:
            result = await driver.download(node, bs, image_info(image), image.url, progress)
        except ZError as exc:
            raise _failed_on(image, bs, exc) from exc
        copy = copies[bs.uuid] = Copy(bs, result)
        copy.reserved = await api.run(reserve_capacity, bs.uuid, result.size)
        if not copy.reserved:
            del copies[bs.uuid]
            await driver.delete(node, bs, result.install_path)
            available = await api.run(_available, bs.uuid)
            raise _failed_on(image, bs, _no_room(bs, image.url, result.size, available))

    async def rollback(self, ctx: FlowContext) -> None:
        api: ApiContext = ctx["api"]
        for copy in list(ctx.get("downloads", {}).values()):
            driver = backup_storage_driver(api.node, copy.bs.type)
            await driver.delete(api.node, copy.bs, copy.result.install_path)
            if copy.reserved:
                await api.run(release_capacity, copy.bs.uuid, copy.result.size)


def _available(session: Session, bs_uuid: str) -> int:
    row = session.get(BackupStorageVO, bs_uuid)
    return row.availableCapacity if row is not None else 0


def _forget_copies(session: Session, image_uuid: str, bs_uuids: list[str]) -> None:
    session.execute(delete(ImageBackupStorageRefVO).where(
        ImageBackupStorageRefVO.imageUuid == image_uuid,
        ImageBackupStorageRefVO.backupStorageUuid.in_(bs_uuids)))


# --------------------------------------------------------------------------- mark-image-ready


def _ready(session: Session, image_uuid: str, copies: dict[str, Copy]) -> None:
    image = session.get(ImageVO, image_uuid)
    if image is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"image {image_uuid} was deleted while it was downloading")
    first = next(iter(copies.values())).result
    image.status = "Ready"
    image.actualSize = first.size
    image.size = first.virtual_size if first.virtual_size is not None else first.size
    image.md5Sum = first.md5
    for ref in session.scalars(select(ImageBackupStorageRefVO)
                               .where(ImageBackupStorageRefVO.imageUuid == image_uuid)):
        copy = copies.get(ref.backupStorageUuid)
        if copy is not None:
            ref.status = "Ready"
            ref.installPath = copy.result.install_path


class MarkImageReady(Step):
    """Record size, md5 and where each copy lives; the image becomes ``Ready``."""

    requires = ("api", "image", "downloads")

    async def run(self, ctx: FlowContext) -> None:
        await ctx["api"].run(_ready, ctx["image"].uuid, ctx["downloads"])
