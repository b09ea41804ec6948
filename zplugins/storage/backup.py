"""Backup storage: where images live, attached to zones.

This module is the storage plugin's public surface for backup storage, the one that backend
plugins (``sftpbackup``, ``simulator``) import:

* the models :class:`BackupStorageVO` (``org.zstack.header.storage.backup.BackupStorageInventory``)
  and :class:`BackupStorageZoneRefVO` (which zones a backup storage serves);
* the driver family ``zcore.backup_storage`` (:data:`BACKUP_STORAGES`): a backup storage's
  ``type`` names a subclass of :class:`BackupStorageDriver` registered there
  (``SftpBackupStorage``, ``Simulator``);
* :func:`add_backup_storage`, which a backend's ``Add...BackupStorage`` API calls: it connects
  through the driver, then writes the rows with the capacities the driver reported;
* :func:`fetch`, which streams an ``http(s)://`` or ``file://`` URL chunk by chunk, computing
  size and md5 as it goes, for drivers that download images.

Capacities (``totalCapacity``, ``availableCapacity``, bytes) are indexed integer columns;
what an image takes is reserved with one conditional UPDATE (:func:`reserve_capacity`), never
read-modify-write.

The APIs (in :mod:`zplugins.storage.backup_api`): AttachBackupStorageToZone,
DetachBackupStorageFromZone, QueryBackupStorage, UpdateBackupStorage,
ChangeBackupStorageState, ReconnectBackupStorage and DeleteBackupStorage, as ZStack's.

Cascade: as in ZStack, backup storage does not belong to a zone. Deleting a zone deletes only
its attachments (``CascadeEdge("BackupStorageZoneRefVO", "ZoneVO")``: with the cascade plugin
the backup storage is detached and stays; without it the zone is not deleted while backup
storage is attached). Deleting a backup storage detaches it from its zones (the rows go with
it) and, through the cascade plugin, removes its copies of images
(``CascadeEdge("ImageBackupStorageRefVO", "BackupStorageVO")``); an image left with no copy
goes too.

Queries: ``QueryBackupStorage zoneRef.zoneUuid=...``, ``zoneRef.zone.name=...``,
``imageRef.imageUuid=...``, ``imageRef.image.name=...``; ``QueryZone
backupStorageRef.backupStorage.name=...``. Every account may read backup storage (it is
shared infrastructure, needed to add images); only administrators change it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from urllib.parse import unquote, urlsplit

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint, case, update
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from zcore import (
    ApiMessage,
    CascadeEdge,
    DriverNamespace,
    Migrations,
    QueryExpansion,
    ResourceType,
    StartupError,
)
from zcore.db import Base, ResourceMixin, TimestampMixin, add_resource, is_uuid, new_uuid
from zcore.errors import INVALID_ARGUMENT, RESOURCE_NOT_FOUND, ZError

if TYPE_CHECKING:
    from zcore.api import ApiContext
    from zcore.node import Node

__all__ = [
    "BACKUP_STORAGE",
    "BACKUP_STORAGES",
    "DOWNLOAD_FAILED",
    "NO_CAPACITY",
    "UNREACHABLE",
    "URL_SCHEMES",
    "ZONE_REF",
    "BackupStorageDriver",
    "BackupStorageInfo",
    "BackupStorageSpec",
    "BackupStorageVO",
    "BackupStorageZoneRefVO",
    "Capacity",
    "DownloadResult",
    "Fetched",
    "ImageInfo",
    "Progress",
    "add_backup_storage",
    "backup_storage_driver",
    "backup_storage_info",
    "backup_storage_inventory",
    "check_image_url",
    "check_resource_uuid",
    "fetch",
    "get_backup_storage",
    "release_capacity",
    "reserve_capacity",
]

BACKUP_STORAGE = "BackupStorageVO"
ZONE_REF = "BackupStorageZoneRefVO"

#: The driver namespace of backup storage backends, picked by a backup storage's ``type``.
BACKUP_STORAGES = "zcore.backup_storage"

#: Not enough room on the backup storage for what was asked.
NO_CAPACITY = "BACKUP_STORAGE.1000"
#: The backup storage cannot be reached or refused the operation.
UNREACHABLE = "BACKUP_STORAGE.1001"
#: An image could not be downloaded from its URL.
DOWNLOAD_FAILED = "IMAGE.1000"

#: The URL schemes images may be downloaded from.
URL_SCHEMES = ("http", "https", "file")

_HERE = Path(__file__).resolve().parent
_CHUNK = 1 << 20
_QCOW2_MAGIC = b"QFI\xfb"


# --------------------------------------------------------------------------- models


class BackupStorageVO(ResourceMixin, Base):
    """A backup storage: where images are kept, of the backend its ``type`` names."""

    __tablename__ = "BackupStorageVO"
    __table_args__ = (Index("ix_BackupStorageVO_name", "name"),)

    url: Mapped[str] = mapped_column(String(2048))
    totalCapacity: Mapped[int] = mapped_column(BigInteger(), default=0)
    availableCapacity: Mapped[int] = mapped_column(BigInteger(), default=0, index=True)
    type: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    status: Mapped[str] = mapped_column(String(64), default="Connecting")

    zoneRefs: Mapped[list[BackupStorageZoneRefVO]] = relationship(
        viewonly=True, lazy="selectin",
        order_by=lambda: (BackupStorageZoneRefVO.createDate, BackupStorageZoneRefVO.uuid))


class BackupStorageZoneRefVO(TimestampMixin, Base):
    """A backup storage attached to a zone. Not a resource of its own: no ResourceVO row."""

    __tablename__ = "BackupStorageZoneRefVO"
    __table_args__ = (UniqueConstraint("backupStorageUuid", "zoneUuid"),)

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    backupStorageUuid: Mapped[str] = mapped_column(
        String(32), ForeignKey("BackupStorageVO.uuid", ondelete="CASCADE"))
    # No ON DELETE: the cascade detaches the backup storage before the zone goes.
    zoneUuid: Mapped[str] = mapped_column(String(32), ForeignKey("ZoneVO.uuid"), index=True)


def backup_storage_inventory(row: BackupStorageVO) -> dict[str, Any]:
    """The fields of ZStack's BackupStorageInventory."""
    return {"uuid": row.uuid, "name": row.name, "url": row.url,
            "description": row.description, "totalCapacity": row.totalCapacity,
            "availableCapacity": row.availableCapacity, "type": row.type, "state": row.state,
            "status": row.status, "attachedZoneUuids": [r.zoneUuid for r in row.zoneRefs],
            "createDate": row.createDate, "lastOpDate": row.lastOpDate}


def get_backup_storage(session: Session, uuid: str) -> BackupStorageVO:
    """The backup storage ``uuid``, or ``SYS.1003``."""
    row = session.get(BackupStorageVO, uuid)
    if row is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"{BACKUP_STORAGE} {uuid} does not exist (any more)")
    return row


def reserve_capacity(session: Session, uuid: str, size: int) -> bool:
    """Take ``size`` bytes of the backup storage's available capacity if it has them.

    One conditional UPDATE, so two reservations can never both take the last bytes; False
    when there is not enough (nothing changes then).
    """
    result = session.execute(
        update(BackupStorageVO)
        .where(BackupStorageVO.uuid == uuid, BackupStorageVO.availableCapacity >= size)
        .values(availableCapacity=BackupStorageVO.availableCapacity - size))
    return bool(getattr(result, "rowcount", 0))


def release_capacity(session: Session, uuid: str, size: int) -> None:
    """Give ``size`` bytes back to the backup storage (never above its total)."""
    available = BackupStorageVO.availableCapacity
    total = BackupStorageVO.totalCapacity
    session.execute(
        update(BackupStorageVO).where(BackupStorageVO.uuid == uuid)
        .values(availableCapacity=case((available + size > total, total),
                                       else_=available + size)))


# --------------------------------------------------------------------------- drivers


@dataclass(frozen=True, slots=True)
class BackupStorageInfo:
    """What a driver is told about the backup storage it works on (a detached snapshot)."""

    uuid: str
    name: str
    url: str
    type: str
    totalCapacity: int = 0
    availableCapacity: int = 0
    state: str = "Enabled"
    status: str = "Connected"

    def describe(self) -> str:
        """``backup storage 'name' (uuid)``, for messages."""
        return f"backup storage '{self.name}' ({self.uuid})"


def backup_storage_info(row: BackupStorageVO) -> BackupStorageInfo:
    return BackupStorageInfo(row.uuid, row.name, row.url, row.type, row.totalCapacity,
                             row.availableCapacity, row.state, row.status)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """The image a driver downloads: its uuid, name, ``format`` and ``mediaType``."""

    uuid: str
    name: str
    format: str
    mediaType: str


class Capacity(NamedTuple):
    """Bytes a backup storage holds in all (``total``) and has free (``available``)."""

    total: int
    available: int


class DownloadResult(NamedTuple):
    """Where a downloaded image now lives and what it is.

    ``size`` is the bytes stored, ``md5`` their hex digest, ``virtual_size`` the disk size a
    qcow2 image describes (``None`` for other formats: the image's size is then ``size``).
    """

    install_path: str
    size: int
    md5: str
    virtual_size: int | None = None


#: ``progress(bytes_done, bytes_total_or_None)``: called as a download goes; raising from it
#: aborts the download (the driver then removes what it wrote).
Progress = Callable[[int, int | None], None]


class BackupStorageDriver(ABC):
    """The base of every backup storage backend (namespace ``zcore.backup_storage``).

    A backup storage's ``type`` names the driver; ``type`` here must equal the driver's
    entry-point name (checked at start-up). The node makes a new instance for each use, so
    keep state in the backup storage's rows, not on the instance. Every method gets the node
    and a :class:`BackupStorageInfo`; each raises :class:`~zcore.errors.ZError` with a code
    (:data:`UNREACHABLE`, :data:`NO_CAPACITY`, :data:`DOWNLOAD_FAILED`) and details that name
    the backup storage. Nothing may block the event loop: file work goes to a thread.

    A third-party backend::

        [project.entry-points."zcore.backup_storage"]
        Ceph = "acme_ceph.backup:CephBackupStorage"
    """

    type: ClassVar[str]

    @abstractmethod
    async def connect(self, node: Node, bs: BackupStorageInfo) -> Capacity:
        """Prepare the backup storage for use (when it is added or reconnected) and report
        its capacity. Called before its rows exist when it is being added."""

    async def ping(self, node: Node, bs: BackupStorageInfo) -> None:
        """Raise :data:`UNREACHABLE` if the backup storage cannot be used now."""
        await self.connect(node, bs)

    @abstractmethod
    def install_path(self, bs: BackupStorageInfo, image: ImageInfo) -> str:
        """Where a download of ``image`` will land. Known before the download starts, so
        that :meth:`delete` can clean up after a download the node did not live to finish."""

    @abstractmethod
    async def download(self, node: Node, bs: BackupStorageInfo, image: ImageInfo, url: str,
                       progress: Progress) -> DownloadResult:
        """Download ``url`` (``http(s)://`` or ``file://``) as ``image``.

        Call ``progress(done, total)`` as bytes arrive. On any failure, cancellation
        included, remove every partial file before raising: a failed download leaves
        nothing behind. :func:`fetch` does the transfer for most backends.
        """

    @abstractmethod
    async def delete(self, node: Node, bs: BackupStorageInfo, install_path: str) -> None:
        """Remove an image at ``install_path`` (and what a download of it left there).
        Deleting what is not there is not an error."""


def backup_storage_driver(node: Node, type_: str) -> BackupStorageDriver:
    """A new instance of the driver named ``type_``; ``SYS.1007`` listing the available ones."""
    driver: BackupStorageDriver = node.drivers.create(BACKUP_STORAGES, type_)
    return driver


# --------------------------------------------------------------------------- downloading


class Fetched(NamedTuple):
    """What :func:`fetch` read: ``size`` bytes with hex ``md5``; ``virtual_size`` of a qcow2."""

    size: int
    md5: str
    virtual_size: int | None


def check_image_url(api: str, url: str) -> str:
    """The scheme of an image URL; ``SYS.1007`` for one images cannot be downloaded from."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ZError(INVALID_ARGUMENT, "invalid argument",
                     f"parameter 'url' of {api}: {url!r} is not a URL images can be downloaded "
                     f"from; use one of the schemes {', '.join(s + '://' for s in URL_SCHEMES)}")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'url' of {api}: {url!r} must name an absolute path on "
                         "this machine: file:///path/to/image")
    elif not parts.hostname:
        raise ZError(INVALID_ARGUMENT, "invalid argument",
                     f"parameter 'url' of {api}: {url!r} names no host")
    return scheme


def _failed(url: str, why: str) -> ZError:
    return ZError(DOWNLOAD_FAILED, "image download failed", f"{url}: {why}")


class _Digest:
    """md5, size and the first bytes of a stream; fed in a worker thread."""

    def __init__(self, absorb: Callable[[bytes], object] | None) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.head = b""
        self._absorb = absorb

    def feed(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        if len(self.head) < 32:
            self.head += chunk[:32 - len(self.head)]
        self.size += len(chunk)
        if self._absorb is not None:
            self._absorb(chunk)

    def result(self) -> Fetched:
        virtual = None
        if len(self.head) >= 32 and self.head[:4] == _QCOW2_MAGIC:
            virtual = struct.unpack(">Q", self.head[24:32])[0]
        return Fetched(self.size, self.md5.hexdigest(), virtual)


async def fetch(url: str, absorb: Callable[[bytes], object] | None, progress: Progress,
                *, read_timeout: float = 120.0) -> Fetched:
    """Stream ``url`` chunk by chunk into ``absorb`` (called in a worker thread, may be None).

    ``http(s)://`` through aiohttp, ``file://`` by reading the file in a worker thread;
    size, md5 and (for qcow2) the virtual size are computed on the way. ``progress(done,
    total)`` is called on the event loop after each chunk; what it raises propagates. Errors
    reading the source are :data:`DOWNLOAD_FAILED` naming the URL (an HTTP status other than
    200, a refused connection, a connection that broke before the announced length, a
    missing file); errors from ``absorb`` (a full disk) propagate as they are.
    """
    digest = _Digest(absorb)
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        await _fetch_file(url, digest, progress)
    elif scheme in ("http", "https"):
        await _fetch_http(url, digest, progress, read_timeout)
    else:
        raise _failed(url, f"the scheme {scheme!r} is not supported; use "
                      + ", ".join(s + "://" for s in URL_SCHEMES))
    return digest.result()


async def _fetch_http(url: str, digest: _Digest, progress: Progress,
                      read_timeout: float) -> None:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout)
    total: int | None = None
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, \
                http.get(url, allow_redirects=True) as reply:
            if reply.status != 200:
                raise _failed(url, f"the server answered HTTP {reply.status} "
                                   f"{reply.reason or ''}".rstrip())
            total = reply.content_length
            progress(0, total)
            async for chunk in reply.content.iter_chunked(_CHUNK):
                await asyncio.to_thread(digest.feed, chunk)
                progress(digest.size, total)
    except aiohttp.ClientConnectorError as exc:
        error = exc.os_error
        reason = os.strerror(error.errno) if error is not None and error.errno else str(exc)
        raise _failed(url, f"cannot connect to {exc.host}:{exc.port}: {reason}") from None
    except aiohttp.ClientPayloadError as exc:
        of = f" of {total}" if total is not None else ""
        raise _failed(url, f"the connection broke before the end ({digest.size}{of} bytes "
                           f"read): {exc}") from None
    except aiohttp.ClientError as exc:
        raise _failed(url, f"{type(exc).__name__}: {exc}") from None
    except TimeoutError:
        raise _failed(url, f"no data arrived for {read_timeout:g} s after {digest.size} "
                           "bytes") from None
    if total is not None and digest.size != total:
        raise _failed(url, f"the server announced {total} bytes and sent {digest.size}")


async def _fetch_file(url: str, digest: _Digest, progress: Progress) -> None:
    path = unquote(urlsplit(url).path)

    def open_source() -> tuple[Any, int]:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(21, "not a regular file")
        return open(path, "rb"), info.st_size

    def step(source: Any) -> int:
        try:
            chunk = source.read(_CHUNK)
        except OSError as exc:
            raise _failed(url, f"reading {path} failed: {exc.strerror or exc}") from None
        if chunk:
            digest.feed(chunk)
        return len(chunk)

    try:
        source, total = await asyncio.to_thread(open_source)
    except OSError as exc:
        raise _failed(url, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        progress(0, total)
        while await asyncio.to_thread(step, source):
            progress(digest.size, total)
    finally:
        await asyncio.to_thread(source.close)


# --------------------------------------------------------------------------- adding


@dataclass(frozen=True, slots=True)
class BackupStorageSpec:
    """What an ``Add...BackupStorage`` API asked for. ``totalCapacity``/``availableCapacity``
    are for backends whose capacity is declared rather than measured (the simulator)."""

    name: str
    url: str
    type: str
    description: str | None = None
    uuid: str | None = None
    totalCapacity: int = 0
    availableCapacity: int = 0


def check_resource_uuid(api: str, value: str | None) -> None:
    if value is not None and not is_uuid(value):
        raise ZError(INVALID_ARGUMENT, "invalid argument",
                     f"parameter 'resourceUuid' of {api}: {value!r} is not 32 lower-case hex "
                     "digits; omit it to have one generated")


async def add_backup_storage(
    ctx: ApiContext, spec: BackupStorageSpec,
    extra: Callable[[Session, BackupStorageVO], None] | None = None,
) -> BackupStorageVO:
    """Connect a new backup storage through its driver, then write it, ``Enabled`` and
    ``Connected``, with the capacity the driver reported.

    ``extra(session, row)`` writes the backend's own rows in the same transaction (the sftp
    backend's host and credentials). Nothing is written when connecting fails.
    """
    driver = backup_storage_driver(ctx.node, spec.type)
    uuid = spec.uuid or new_uuid()
    info = BackupStorageInfo(uuid, spec.name, spec.url, spec.type, spec.totalCapacity,
                             spec.availableCapacity, "Enabled", "Connecting")
    capacity = await driver.connect(ctx.node, info)

    def insert(session: Session) -> str:
        row = BackupStorageVO(uuid=uuid, name=spec.name, description=spec.description,
                              url=spec.url, type=spec.type, state="Enabled",
                              status="Connected", totalCapacity=capacity.total,
                              availableCapacity=capacity.available)
        add_resource(session, row, BACKUP_STORAGE, owner_account_uuid=ctx.owner)
        session.flush()
        if extra is not None:
            extra(session, row)
        ctx.add_tags(session, row.uuid, BACKUP_STORAGE)
        return row.uuid

    await ctx.run(insert)
    return await ctx.run(get_backup_storage, uuid)


# --------------------------------------------------------------------------- registration


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(BACKUP_STORAGE, model=BackupStorageVO,
                       inventory="org.zstack.header.storage.backup.BackupStorageInventory",
                       description="Backup storage: where images are kept; attached to zones",
                       owned_through=None, to_inventory=backup_storage_inventory)
    yield ResourceType(ZONE_REF, model=BackupStorageZoneRefVO,
                       description="A backup storage attached to a zone",
                       owned_through=None)


def db_migrations() -> Iterator[Migrations]:
    yield Migrations("image", _HERE / "image_migrations")


def cascade_edges() -> Iterator[CascadeEdge]:
    yield CascadeEdge(ZONE_REF, "ZoneVO", field="zoneUuid")


def query_expansions() -> Iterator[QueryExpansion]:
    yield QueryExpansion(BACKUP_STORAGE, "zoneRef", ZONE_REF, foreign_key="backupStorageUuid")
    yield QueryExpansion(ZONE_REF, "zone", "ZoneVO", local_key="zoneUuid")
    yield QueryExpansion(ZONE_REF, "backupStorage", BACKUP_STORAGE,
                         local_key="backupStorageUuid")
    yield QueryExpansion("ZoneVO", "backupStorageRef", ZONE_REF, foreign_key="zoneUuid")


def driver_namespaces() -> Iterator[DriverNamespace]:
    yield DriverNamespace(BACKUP_STORAGES, BackupStorageDriver,
                          "Backup storage backends, picked by a backup storage's type")


def api_messages() -> Iterator[ApiMessage]:
    from zplugins.storage.backup_api import APIS

    for message in APIS:
        yield ApiMessage(message)


def node_starting(node: Node) -> None:
    # A backup storage stores the entry-point name; the driver must call itself the same.
    wrong = []
    for name in node.drivers.names(BACKUP_STORAGES):
        driver = node.drivers.get(BACKUP_STORAGES, name)
        declared = getattr(driver, "type", None)
        if declared != name:
            wrong.append(f"driver '{name}' ({driver.__module__}.{driver.__qualname__}) declares "
                         f"type {declared!r}; it must be {name!r}, its entry-point name in "
                         f"{BACKUP_STORAGES}")
    if wrong:
        raise StartupError("backup storage drivers are inconsistent:\n"
                           + "\n".join(f"  - {w}" for w in wrong))
