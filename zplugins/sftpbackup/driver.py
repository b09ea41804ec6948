"""The ``SftpBackupStorage`` driver: images are files in a directory on the backup storage's
host.

For now that host is the management node's own machine: ``url`` is a local directory, used
directly (the agent that reaches other hosts over SSH comes with the agents issue). Layout:
``<url>/images/<image uuid>/<image uuid>.<format>``. A download streams into a hidden
``.<name>.download`` file beside its final place and is renamed once complete, so a file
under its final name is always whole; on failure both are removed. Capacity is the
directory's file system (``shutil.disk_usage``). All file work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from pathlib import Path
from typing import IO, TYPE_CHECKING

from zcore.errors import OPERATION_ERROR, ZError
from zplugins.storage.backup import (
    NO_CAPACITY,
    UNREACHABLE,
    BackupStorageDriver,
    BackupStorageInfo,
    Capacity,
    DownloadResult,
    ImageInfo,
    Progress,
    fetch,
)

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = ["SftpBackupStorage"]

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _prepare(url: str) -> Capacity:
    root = Path(url)
    root.mkdir(parents=True, exist_ok=True)
    if not root.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory")
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "the node may not write in it")
    usage = shutil.disk_usage(root)
    return Capacity(usage.total, usage.free)


def _temp(final: Path) -> Path:
    return final.with_name(f".{final.name}.download")


def _create(temp: Path) -> IO[bytes]:
    temp.parent.mkdir(parents=True, exist_ok=True)
    return open(temp, "wb")


def _commit(handle: IO[bytes], temp: Path, final: Path) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(temp, final)


def _discard(handle: IO[bytes] | None, final: Path) -> None:
    if handle is not None:
        try:
            handle.close()
        except OSError:
            pass
    _temp(final).unlink(missing_ok=True)
    final.unlink(missing_ok=True)
    try:
        final.parent.rmdir()
    except OSError:
        pass  # not empty, or already gone


def _inside(root: str, path: str) -> Path:
    found = Path(path)
    base = Path(root).resolve()
    if base not in found.resolve().parents:
        raise ZError(OPERATION_ERROR, "refusing to delete a file",
                     f"{path} is not inside the backup storage's directory {root}")
    return found


class SftpBackupStorage(BackupStorageDriver):
    """Images as files under a directory of the backup storage's host."""

    type = "SftpBackupStorage"

    def _unreachable(self, bs: BackupStorageInfo, exc: OSError, doing: str) -> ZError:
        return ZError(UNREACHABLE, "backup storage failed",
                      f"{bs.describe()}: {doing} in its directory {bs.url} failed: "
                      f"{exc.strerror or exc}")

    async def connect(self, node: Node, bs: BackupStorageInfo) -> Capacity:
        try:
            return await asyncio.to_thread(_prepare, bs.url)
        except OSError as exc:
            raise self._unreachable(bs, exc, "preparing") from None

    def install_path(self, bs: BackupStorageInfo, image: ImageInfo) -> str:
        return str(Path(bs.url) / "images" / image.uuid / f"{image.uuid}.{image.format}")

    async def download(self, node: Node, bs: BackupStorageInfo, image: ImageInfo, url: str,
                       progress: Progress) -> DownloadResult:
        final = Path(self.install_path(bs, image))
        try:
            free = (await asyncio.to_thread(shutil.disk_usage, bs.url)).free
        except OSError as exc:
            raise self._unreachable(bs, exc, "reading the free space") from None

        def checked(done: int, total: int | None) -> None:
            needed = max(done, total or 0)
            if needed > free:
                raise ZError(NO_CAPACITY, "not enough backup storage capacity",
                             f"{bs.describe()}: its disk has {free} bytes free at {bs.url}; "
                             f"{url} needs {needed}")
            progress(done, total)

        handle: IO[bytes] | None = None
        try:
            handle = await asyncio.to_thread(_create, _temp(final))
            fetched = await fetch(url, handle.write, checked)
            await asyncio.to_thread(_commit, handle, _temp(final), final)
        except BaseException as exc:
            # Even when cancelled: the clean-up runs to its end in its thread.
            await asyncio.shield(asyncio.to_thread(_discard, handle, final))
            if isinstance(exc, OSError):
                if exc.errno in _FULL:
                    raise ZError(NO_CAPACITY, "not enough backup storage capacity",
                                 f"{bs.describe()}: its disk at {bs.url} is full: "
                                 f"{exc.strerror or exc}") from None
                raise self._unreachable(bs, exc, f"writing image {image.uuid}") from None
            raise
        return DownloadResult(str(final), fetched.size, fetched.md5, fetched.virtual_size)

    async def delete(self, node: Node, bs: BackupStorageInfo, install_path: str) -> None:
        final = _inside(bs.url, install_path)
        try:
            await asyncio.to_thread(_discard, None, final)
        except OSError as exc:
            raise self._unreachable(bs, exc, f"deleting {install_path}") from None
