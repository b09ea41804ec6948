"""Images: downloaded to backup storage, with progress; deleted, recovered and expunged.

Resources: ``ImageVO`` (``org.zstack.header.image.ImageInventory``) and its copies on backup
storage, ``ImageBackupStorageRefVO`` (``ImageBackupStorageRefInventory``, the image's
``backupStorageRefs``). APIs, as ZStack's: AddImage, QueryImage, UpdateImage,
ChangeImageState, DeleteImage, RecoverImage, ExpungeImage.

AddImage downloads an ``http(s)://`` or ``file://`` URL (``file://`` for administrators
only: it reads this machine's files) to each backup storage through its driver, in the
workflow chain ``image-add`` (:mod:`zplugins.storage.image_add`, which says how progress is
shown and what a failure leaves: nothing). ``format`` is ``qcow2``, ``raw`` or ``iso``; an
ISO is ``format=iso`` and ``mediaType=ISO``, each implying the other when left out; without
either, ``RootVolumeTemplate`` and the format the URL's extension names (else ``raw``).

Deletion is delayed, as ZStack's, by the global configuration ``image.deletionPolicy``:

* ``Direct``: DeleteImage expunges at once: the files go from the backup storage, then the rows;
* ``Delay`` (the default): the image becomes ``Deleted`` (its copies too) and can be
  recovered (RecoverImage) until it is expunged, by ExpungeImage or by the node once it has
  been deleted for ``image.expungePeriod`` seconds (checked every ``image.expungeInterval``);
* ``Never``: as ``Delay``, but only ExpungeImage expunges.

DeleteImage, RecoverImage and ExpungeImage take ``backupStorageUuids`` to act on some copies
only; the image itself is ``Deleted`` once all of its copies are, and goes once none is left.
Expunging returns the image's bytes to each backup storage's available capacity.

Queries: ``QueryImage backupStorageRefs.backupStorageUuid=...``,
``backupStorageRefs.backupStorage.name=...``; ``QueryBackupStorage imageRef.image.name=...``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import posixpath
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from zcore import (
    ApiMessage,
    CascadeEdge,
    FlowChainFile,
    FlowStep,
    GlobalConfigOption,
    QueryExpansion,
    ResourceType,
)
from zcore.api import ApiContext, APIMessage, Caller, Param, QueryMessage
from zcore.db import is_uuid, utcnow
from zcore.errors import INVALID_ARGUMENT, OPERATION_ERROR, RESOURCE_NOT_FOUND, ZError
from zplugins.storage.backup import (
    BACKUP_STORAGE,
    BackupStorageVO,
    backup_storage_driver,
    backup_storage_info,
    check_image_url,
    release_capacity,
)
from zplugins.storage.image_add import (
    CHAIN,
    DownloadImage,
    ImageSpec,
    MarkImageReady,
    PersistImage,
    delete_image_rows,
    usable_backup_storage,
)
from zplugins.storage.image_models import (
    IMAGE,
    IMAGE_REF,
    ImageBackupStorageRefVO,
    ImageVO,
    image_inventory,
    image_ref_inventory,
)

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "APIS",
    "AddImage",
    "ChangeImageState",
    "DeleteImage",
    "ExpungeImage",
    "ImageBackupStorageRefVO",
    "ImageVO",
    "QueryImage",
    "RecoverImage",
    "UpdateImage",
    "expunge_due",
    "expunge_image",
]

log = logging.getLogger("zplugins.storage.images")

_HERE = Path(__file__).resolve().parent

INVENTORY = {"inventory": "ImageInventory"}
CATEGORY = "image"
DELETION_POLICIES = ("Direct", "Delay", "Never")
MEDIA_TYPES = ("RootVolumeTemplate", "ISO", "DataVolumeTemplate")
FORMATS = ("qcow2", "raw", "iso")
PLATFORMS = ("Linux", "Windows", "Other", "Paravirtualization", "WindowsVirtio")
ARCHITECTURES = ("x86_64", "aarch64", "mips64el", "loongarch64")
STATE_EVENTS = {"enable": "Enabled", "disable": "Disabled"}
DELETE_MODES = ("Permissive", "Enforcing")
_EXTENSIONS = {".qcow2": "qcow2", ".img": "raw", ".raw": "raw", ".iso": "iso"}


# --------------------------------------------------------------------------- helpers


def _get(session: Session, uuid: str) -> ImageVO:
    image = session.get(ImageVO, uuid)
    if image is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"{IMAGE} {uuid} does not exist (any more)")
    return image


def _queue(uuid: str) -> str:
    return f"image-{uuid}"


def _refs(image: ImageVO, api: str, bs_uuids: list[str] | None) -> list[ImageBackupStorageRefVO]:
    """The image's copies on ``bs_uuids`` (each must hold one), or all of them."""
    if not bs_uuids:
        return list(image.backupStorageRefs)
    by_bs = {ref.backupStorageUuid: ref for ref in image.backupStorageRefs}
    missing = [u for u in dict.fromkeys(bs_uuids) if u not in by_bs]
    if missing:
        raise ZError(INVALID_ARGUMENT, "invalid argument",
                     f"parameter 'backupStorageUuids' of {api}: image {image.uuid} has no copy "
                     f"on backup storage {', '.join(missing)}")
    return [by_bs[u] for u in dict.fromkeys(bs_uuids)]


def _refuse_downloading(api: str, image: ImageVO) -> None:
    if image.status == "Downloading":
        raise ZError(OPERATION_ERROR, "image is downloading",
                     f"{api}: image '{image.name}' ({image.uuid}) is still downloading; wait "
                     "until it is Ready")


def _inventory(ctx: ApiContext, image: ImageVO) -> dict[str, Any]:
    return {"inventory": ctx.inventory(IMAGE, image)}


# --------------------------------------------------------------------------- expunging


async def expunge_image(node: Node, image_uuid: str, ref_uuids: list[str] | None = None,
                        *, tolerate: bool = False) -> None:
    """Remove copies of an image from their backup storage, then their rows; the image's
    rows too once no copy is left. ``ref_uuids`` picks copies (default: all).

    A file that cannot be deleted keeps its copy row and the error propagates, unless
    ``tolerate`` (the cascade in Enforcing mode), which logs it and forgets the copy anyway.
    """
    def load(session: Session) -> tuple[int, list[tuple[str, str, str | None, Any]]] | None:
        image = session.get(ImageVO, image_uuid)
        if image is None:
            return None
        picked = []
        for ref in image.backupStorageRefs:
            if ref_uuids is not None and ref.uuid not in ref_uuids:
                continue
            bs = session.get(BackupStorageVO, ref.backupStorageUuid)
            picked.append((ref.uuid, ref.backupStorageUuid, ref.installPath,
                           backup_storage_info(bs) if bs is not None else None))
        return image.actualSize, picked

    loaded = await node.db.run(load)
    if loaded is None:
        return
    size, picked = loaded
    for ref_uuid, bs_uuid, path, bs in picked:
        if bs is not None and path:
            try:
                await backup_storage_driver(node, bs.type).delete(node, bs, path)
            except Exception:
                if not tolerate:
                    raise
                log.warning("expunging image %s: deleting %s from %s failed; forgetting the "
                            "copy anyway", image_uuid, path, bs.describe(), exc_info=True)
        await node.db.run(_forget_ref, image_uuid, ref_uuid, bs_uuid, size)


def _forget_ref(session: Session, image_uuid: str, ref_uuid: str, bs_uuid: str,
                size: int) -> None:
    ref = session.get(ImageBackupStorageRefVO, ref_uuid)
    if ref is not None:
        if ref.status != "Downloading":
            release_capacity(session, bs_uuid, size)
        session.delete(ref)
        session.flush()
    left = session.scalar(select(ImageBackupStorageRefVO.uuid)
                          .where(ImageBackupStorageRefVO.imageUuid == image_uuid).limit(1))
    if left is None:
        delete_image_rows(session, image_uuid)


def _due(session: Session, deleted_before: Any, stale_before: Any
         ) -> list[tuple[str, list[str] | None]]:
    """Copies deleted before ``deleted_before`` and downloads silent since ``stale_before``."""
    found: dict[str, list[str] | None] = {}
    for ref in session.scalars(select(ImageBackupStorageRefVO).where(
            ImageBackupStorageRefVO.status == "Deleted",
            ImageBackupStorageRefVO.lastOpDate < deleted_before)):
        picked = found.setdefault(ref.imageUuid, [])
        if picked is not None:
            picked.append(ref.uuid)
    # A download whose node died: its progress stopped moving the image's lastOpDate.
    for uuid in session.scalars(select(ImageVO.uuid).where(
            ImageVO.status == "Downloading", ImageVO.lastOpDate < stale_before)):
        found[uuid] = None
    return list(found.items())


async def expunge_due(node: Node) -> int:
    """Expunge what is due: copies deleted longer than ``image.expungePeriod`` ago (unless
    the policy is ``Never``), and downloads abandoned by a node that stopped. Returns how
    many images were touched."""
    now = utcnow()
    period = node.global_config.get(CATEGORY, "expungePeriod")
    policy = node.global_config.get(CATEGORY, "deletionPolicy")
    deleted_before = now - timedelta(seconds=period) if policy != "Never" \
        else now - timedelta(days=365 * 1000)
    stale_before = now - timedelta(seconds=node.api.timeout_of("AddImage") + 60)
    due = await node.db.run(_due, deleted_before, stale_before)
    for image_uuid, ref_uuids in due:
        try:
            await node.queues.run(_queue(image_uuid), 1,
                                  functools.partial(expunge_image, node, image_uuid, ref_uuids))
        except Exception:
            log.warning("expunging image %s failed; trying again later", image_uuid,
                        exc_info=True)
    return len(due)


async def _expunge_loop(node: Node) -> None:
    wake = asyncio.Event()
    node.global_config.watch(CATEGORY, "expungeInterval", lambda old, new: wake.set())
    while True:
        interval = node.global_config.get(CATEGORY, "expungeInterval")
        try:
            await asyncio.wait_for(wake.wait(), interval)
        except TimeoutError:
            pass
        wake.clear()
        try:
            await expunge_due(node)
        except Exception:
            log.exception("the periodic image expunge failed")


async def _delete_image(node: Node, caller: Caller, uuid: str, mode: str) -> None:
    # The cascade (an account deleted): expunge the image at once.
    await node.queues.run(_queue(uuid), 1, lambda: expunge_image(
        node, uuid, tolerate=mode == "Enforcing"))


async def _delete_ref(node: Node, caller: Caller, uuid: str, mode: str) -> None:
    # The cascade (a backup storage deleted): remove the copy; the image goes with its last.
    ref = await node.db.run(lambda s: s.get(ImageBackupStorageRefVO, uuid))
    if ref is None:
        return
    await node.queues.run(_queue(ref.imageUuid), 1, lambda: expunge_image(
        node, ref.imageUuid, [uuid], tolerate=mode == "Enforcing"))


# --------------------------------------------------------------------------- APIs


def _guess_format(url: str) -> str | None:
    return _EXTENSIONS.get(posixpath.splitext(urlsplit(url).path.lower())[1])


class AddImage(APIMessage, method="POST", path="/images", resource_type=IMAGE,
               result=INVENTORY):
    """Download an image from ``url`` to each backup storage of ``backupStorageUuids``.

    The job runs until the download ends; meanwhile QueryImage shows the image
    ``Downloading`` with ``actualSize`` of ``size`` bytes done. Owned by the caller's account.
    """

    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    url = Param(str, required=True, max_length=1024, non_empty=True)
    mediaType = Param(str, valid_values=MEDIA_TYPES)
    guestOsType = Param(str, max_length=255)
    architecture = Param(str, max_length=32, valid_values=ARCHITECTURES)
    system = Param(bool, default=False)
    format = Param(str, valid_values=FORMATS)
    platform = Param(str, valid_values=PLATFORMS)
    backupStorageUuids = Param(list, required=True, non_empty=True,
                               description="Uuids of Enabled, Connected backup storage")
    type = Param(str, valid_values=("zstack",))
    virtio = Param(bool, default=True)
    resourceUuid = Param(str, description="The uuid the new image gets (32 lower-case hex "
                                          "digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    def spec(self) -> ImageSpec:
        media, fmt = self.mediaType, self.format
        if fmt is None:
            fmt = "iso" if media == "ISO" else _guess_format(self.url) or "raw"
            if fmt == "iso" and media not in (None, "ISO"):
                fmt = "raw"
        if media is None:
            media = "ISO" if fmt == "iso" else "RootVolumeTemplate"
        uuids = tuple(dict.fromkeys(str(u) for u in self.backupStorageUuids))
        return ImageSpec(self.name, self.url.strip(), media, fmt, uuids, self.description,
                         self.guestOsType, self.platform, bool(self.system),
                         self.architecture, bool(self.virtio), self.type or "zstack",
                         self.resourceUuid)

    async def validate(self, ctx: ApiContext) -> None:
        api = self.api_name
        if self.tagUuids:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'tagUuids' of {api}: attaching existing tags by uuid is "
                         "not supported yet; give the tags as systemTags or userTags instead")
        scheme = check_image_url(api, self.url)
        if scheme == "file" and not ctx.caller.is_admin:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'url' of {api}: only administrators may add images from "
                         "file:// URLs (they read the management node's files); use http(s)")
        if self.resourceUuid is not None and not is_uuid(self.resourceUuid):
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'resourceUuid' of {api}: {self.resourceUuid!r} is not 32 "
                         "lower-case hex digits; omit it to have one generated")
        for uuid in self.backupStorageUuids:
            if not is_uuid(uuid):
                raise ZError(INVALID_ARGUMENT, "invalid argument",
                             f"parameter 'backupStorageUuids' of {api}: {uuid!r} is not a "
                             "resource uuid (32 lower-case hex digits)")
        spec = self.spec()
        if (spec.format == "iso") != (spec.mediaType == "ISO"):
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"{api}: format {spec.format!r} does not go with mediaType "
                         f"{spec.mediaType!r}; an ISO image is format 'iso' and mediaType "
                         "'ISO', and only an ISO is")
        await ctx.run(usable_backup_storage, api, spec.backupStorageUuids)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        flow = await ctx.node.run_flow(CHAIN, {"api": ctx, "image_spec": self.spec()})
        return _inventory(ctx, await ctx.run(_get, flow["image"].uuid))


class QueryImage(QueryMessage, path="/images", resource=IMAGE):
    """Query images; ``backupStorageRefs.<field>`` reaches their copies and
    ``backupStorageRefs.backupStorage.<field>`` the backup storage holding them."""


class UpdateImage(APIMessage, method="PUT", path="/images/{uuid}/actions", resource_type=IMAGE,
                  result=INVENTORY):
    """Change an image's descriptive fields; only the parameters given."""

    uuid = Param(str, required=True, resource_type=IMAGE)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)
    guestOsType = Param(str, max_length=255)
    mediaType = Param(str, max_length=255, valid_values=("RootVolumeTemplate",
                                                         "DataVolumeTemplate", "ISO"))
    format = Param(str, max_length=255, valid_values=("raw", "qcow2", "iso"))
    system = Param(bool)
    platform = Param(str, valid_values=PLATFORMS)
    architecture = Param(str, max_length=32, valid_values=ARCHITECTURES)
    virtio = Param(bool)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> None:
            image = _get(session, self.uuid)
            for name in ("name", "description", "guestOsType", "mediaType", "format",
                         "system", "platform", "architecture", "virtio"):
                value = getattr(self, name)
                if value is not None:
                    setattr(image, name, value)
            if (image.format == "iso") != (image.mediaType == "ISO"):
                raise ZError(INVALID_ARGUMENT, "invalid argument",
                             f"{self.api_name}: format {image.format!r} does not go with "
                             f"mediaType {image.mediaType!r}; an ISO image is format 'iso' "
                             "and mediaType 'ISO', and only an ISO is")

        await ctx.run(change)
        return _inventory(ctx, await ctx.run(_get, self.uuid))


class ChangeImageState(APIMessage, method="PUT", path="/images/{uuid}/actions",
                       resource_type=IMAGE, result=INVENTORY):
    """``enable`` or ``disable``: a disabled image makes no new VMs or volumes."""

    uuid = Param(str, required=True, resource_type=IMAGE)
    stateEvent = Param(str, required=True, valid_values=tuple(STATE_EVENTS))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> None:
            _get(session, self.uuid).state = STATE_EVENTS[self.stateEvent]

        await ctx.run(change)
        return _inventory(ctx, await ctx.run(_get, self.uuid))


class DeleteImage(APIMessage, method="DELETE", path="/images/{uuid}", resource_type=IMAGE,
                  result={}):
    """Delete an image (or its copies on ``backupStorageUuids``) as ``image.deletionPolicy``
    says: ``Direct`` expunges, ``Delay`` and ``Never`` mark it ``Deleted``, recoverable.
    Refused while it downloads (``SYS.1006``)."""

    uuid = Param(str, required=True, resource_type=IMAGE)
    backupStorageUuids = Param(list, non_empty=True)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def validate(self, ctx: ApiContext) -> None:
        image = await ctx.run(_get, self.uuid)
        _refuse_downloading(self.api_name, image)
        _refs(image, self.api_name, self.backupStorageUuids)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        policy = ctx.node.global_config.get(CATEGORY, "deletionPolicy")

        def mark(session: Session) -> list[str]:
            image = _get(session, self.uuid)
            _refuse_downloading(self.api_name, image)
            refs = _refs(image, self.api_name, self.backupStorageUuids)
            if policy == "Direct":
                return [ref.uuid for ref in refs]
            now = utcnow()
            for ref in refs:
                if ref.status != "Deleted":
                    ref.status = "Deleted"
                    ref.lastOpDate = now
            picked = {ref.uuid for ref in refs}
            if all(r.status == "Deleted" or r.uuid in picked for r in image.backupStorageRefs):
                image.status = "Deleted"
            return []

        async def delete() -> None:
            expunge = await ctx.run(mark)
            if expunge:
                await expunge_image(ctx.node, self.uuid, expunge)

        await ctx.node.queues.run(_queue(self.uuid), 1, delete)
        return {}


class RecoverImage(APIMessage, method="PUT", path="/images/{imageUuid}/actions",
                   resource_type=IMAGE, result=INVENTORY):
    """Bring back a ``Deleted`` image (or its copies on ``backupStorageUuids``) that has not
    been expunged yet; ``SYS.1006`` when there is nothing deleted to recover."""

    imageUuid = Param(str, required=True, resource_type=IMAGE)
    backupStorageUuids = Param(list)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def recover(session: Session) -> None:
            image = _get(session, self.imageUuid)
            refs = [r for r in _refs(image, self.api_name, self.backupStorageUuids)
                    if r.status == "Deleted"]
            if not refs:
                raise ZError(OPERATION_ERROR, "image is not deleted",
                             f"{self.api_name}: image '{image.name}' ({image.uuid}) has no "
                             "deleted copy to recover"
                             + (" on the backup storage given" if self.backupStorageUuids
                                else ""))
            for ref in refs:
                ref.status = "Ready"
            image.status = "Ready"

        await ctx.node.queues.run(_queue(self.imageUuid), 1, lambda: ctx.run(recover))
        return _inventory(ctx, await ctx.run(_get, self.imageUuid))


class ExpungeImage(APIMessage, method="PUT", path="/images/{imageUuid}/actions",
                   resource_type=IMAGE, result={}):
    """Remove a ``Deleted`` image's files from backup storage (its copies on
    ``backupStorageUuids``, or all), then its rows; ``SYS.1006`` for an image not deleted."""

    uuid = Param(str, description="Ignored, as in ZStack: imageUuid names the image")
    imageUuid = Param(str, required=True, resource_type=IMAGE)
    backupStorageUuids = Param(list, non_empty=True)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def pick(session: Session) -> list[str]:
            image = _get(session, self.imageUuid)
            refs = _refs(image, self.api_name, self.backupStorageUuids)
            alive = [r.backupStorageUuid for r in refs if r.status != "Deleted"]
            if alive:
                raise ZError(OPERATION_ERROR, "image is not deleted",
                             f"{self.api_name}: image '{image.name}' ({image.uuid}) is not "
                             f"deleted on backup storage {', '.join(alive)}; delete it first "
                             "(DeleteImage)")
            return [r.uuid for r in refs]

        async def expunge() -> None:
            await expunge_image(ctx.node, self.imageUuid, await ctx.run(pick))

        await ctx.node.queues.run(_queue(self.imageUuid), 1, expunge)
        return {}


APIS: tuple[type[APIMessage], ...] = (AddImage, QueryImage, UpdateImage, ChangeImageState,
                                      DeleteImage, RecoverImage, ExpungeImage)


# --------------------------------------------------------------------------- registration


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(IMAGE, model=ImageVO, inventory="org.zstack.header.image.ImageInventory",
                       description="An image: a volume template or an ISO on backup storage",
                       to_inventory=image_inventory, delete=_delete_image)
    yield ResourceType(IMAGE_REF, model=ImageBackupStorageRefVO,
                       inventory="org.zstack.header.image.ImageBackupStorageRefInventory",
                       description="A copy of an image on one backup storage",
                       owned_through="imageUuid", to_inventory=image_ref_inventory,
                       delete=_delete_ref)


def cascade_edges() -> Iterator[CascadeEdge]:
    yield CascadeEdge(IMAGE_REF, BACKUP_STORAGE, field="backupStorageUuid")


def query_expansions() -> Iterator[QueryExpansion]:
    yield QueryExpansion(IMAGE, "backupStorageRefs", IMAGE_REF, foreign_key="imageUuid")
    yield QueryExpansion(IMAGE_REF, "image", IMAGE, local_key="imageUuid")
    yield QueryExpansion(IMAGE_REF, "backupStorage", BACKUP_STORAGE,
                         local_key="backupStorageUuid")
    yield QueryExpansion(BACKUP_STORAGE, "imageRef", IMAGE_REF, foreign_key="backupStorageUuid")


def global_configs() -> Iterator[GlobalConfigOption]:
    yield GlobalConfigOption(
        CATEGORY, "deletionPolicy", str, "Delay",
        "What DeleteImage does: Direct expunges at once; Delay marks the image Deleted, "
        "recoverable until it is expunged after image.expungePeriod; Never marks it Deleted "
        "until ExpungeImage", choices=DELETION_POLICIES)
    yield GlobalConfigOption(
        CATEGORY, "expungePeriod", int, 86400,
        "Seconds a deleted image stays recoverable before the node expunges it (deletion "
        "policy Delay)", min=1)
    yield GlobalConfigOption(
        CATEGORY, "expungeInterval", int, 3600,
        "Seconds between two looks for deleted images due to be expunged", min=1)


def flow_steps() -> Iterator[FlowStep]:
    yield FlowStep("persist-image", PersistImage())
    yield FlowStep("download-image", DownloadImage())
    yield FlowStep("mark-image-ready", MarkImageReady())


def flow_chains() -> Iterator[FlowChainFile]:
    yield FlowChainFile(_HERE / "image_flows" / f"{CHAIN}.yaml")


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)


def node_starting(node: Node) -> None:
    node.spawn(_expunge_loop(node), name="image-expunge")
