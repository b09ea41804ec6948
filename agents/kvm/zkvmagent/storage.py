"""The primary storage commands of local storage and NFS.

``/localstorage/init`` and ``/nfsprimarystorage/{mount,unmount,ping}`` prepare the storage
and report the capacity of the file system holding its directory. The volume commands are
the same under both prefixes (the storage is a directory on the host either way):

* ``/imagecache/download`` copies an image from backup storage into the image cache;
* ``/volume/createvolumefromcache`` makes a qcow2 overlay of a cached image
  (``qemu-img create -f qcow2 -b <cache> -F <format>``);
* ``/volume/createempty`` an empty qcow2 volume;
* ``/delete`` removes a file;
* ``/snapshot/take`` writes the volume's content to the snapshot's file (a qcow2 file on the
  same backing image as the volume, so the snapshot stands alone once taken) and
  ``/snapshot/revert`` writes it back;
* ``/volume/createtemplate/upload`` flattens a volume into a qcow2 file on backup storage.

Host paths are mapped under the agent's root; backup storage paths are not (see
:mod:`zkvmagent.system`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zkvmagent.commands import (
    CREATE_EMPTY_VOLUME_PATH,
    CREATE_TEMPLATE_PATH,
    CREATE_VOLUME_FROM_CACHE_PATH,
    DELETE_BITS_PATH,
    DOWNLOAD_TO_IMAGE_CACHE_PATH,
    LOCAL_STORAGE_INIT_PATH,
    LOCAL_STORAGE_PATH,
    NFS_MOUNT_PATH,
    NFS_PING_PATH,
    NFS_PRIMARY_STORAGE_PATH,
    NFS_UNMOUNT_PATH,
    REVERT_SNAPSHOT_PATH,
    TAKE_SNAPSHOT_PATH,
    AgentReply,
    CapacityRsp,
    CreateEmptyVolumeCmd,
    CreateTemplateFromVolumeCmd,
    CreateVolumeFromCacheCmd,
    DeleteBitsCmd,
    DownloadToImageCacheCmd,
    InstallPathRsp,
    LocalStorageInitCmd,
    NfsPrimaryStorageCmd,
    RevertSnapshotCmd,
    RevertSnapshotRsp,
    TakeSnapshotCmd,
    TakeSnapshotRsp,
    TemplateRsp,
)
from zkvmagent.server import AgentError, Route
from zkvmagent.system import System

if TYPE_CHECKING:
    from zkvmagent.server import Agent

__all__ = ["routes"]

log = logging.getLogger(__name__)


def _capacity(path: Path) -> CapacityRsp:
    total, available = System.capacity(path)
    return CapacityRsp(totalCapacity=total, availableCapacity=available)


def _temp(final: Path) -> Path:
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")


async def _info(agent: Agent, path: Path) -> dict[str, Any]:
    """``qemu-img info`` of ``path``."""
    if not path.is_file():
        raise AgentError(f"{path} does not exist")
    data: dict[str, Any] = json.loads(
        await agent.system.qemu_img("info", "-U", "--output=json", str(path)))
    return data


def _backing(path: Path, info: dict[str, Any]) -> tuple[str, str] | None:
    """The absolute backing file of an image and its format, if it has one."""
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if not backing:
        return None
    resolved = backing if os.path.isabs(backing) else str(path.parent / backing)
    return resolved, info.get("backing-filename-format") or "qcow2"


async def _copy_volume(agent: Agent, source: Path, target: Path, *, flatten: bool) -> int:
    """Write ``source``'s content as a qcow2 file at ``target`` (atomically): on the same
    backing file unless ``flatten``; the new file's size in bytes."""
    info = await _info(agent, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp(target)
    argv = ["convert", "-U", "-f", info.get("format") or "qcow2", "-O", "qcow2"]
    backing = None if flatten else _backing(source, info)
    if backing is not None:
        argv += ["-B", backing[0], "-F", backing[1]]
    try:
        await agent.system.qemu_img(*argv, str(source), str(temp))
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    return target.stat().st_size


# --------------------------------------------------------------------------- the storage


async def local_init(agent: Agent, cmd: LocalStorageInitCmd) -> CapacityRsp:
    directory = agent.system.path(cmd.path)
    directory.mkdir(parents=True, exist_ok=True)
    if cmd.initFilePath:
        marker = agent.system.path(cmd.initFilePath)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return _capacity(directory)


async def nfs_mount(agent: Agent, cmd: NfsPrimaryStorageCmd) -> CapacityRsp:
    await agent.system.mount_nfs(cmd.url, cmd.mountPath, cmd.options)
    return _capacity(agent.system.path(cmd.mountPath))


async def nfs_unmount(agent: Agent, cmd: NfsPrimaryStorageCmd) -> AgentReply:
    await agent.system.unmount(cmd.mountPath)
    return AgentReply()


async def nfs_ping(agent: Agent, cmd: NfsPrimaryStorageCmd) -> CapacityRsp:
    mounted = agent.system.mounted(cmd.mountPath)
    if mounted is None:
        raise AgentError(f"NFS primary storage {cmd.uuid}: nothing is mounted at "
                         f"{cmd.mountPath} (expected {cmd.url})")
    path = agent.system.path(cmd.mountPath)
    if not os.access(path, os.W_OK):
        raise AgentError(f"NFS primary storage {cmd.uuid}: {cmd.mountPath} is not writable")
    return _capacity(path)


# --------------------------------------------------------------------------- volumes


async def download_to_cache(agent: Agent, cmd: DownloadToImageCacheCmd) -> InstallPathRsp:
    source = Path(cmd.backupStorageInstallPath)  # backup storage: not under the root
    target = agent.system.path(cmd.primaryStorageInstallPath)
    if not source.is_file():
        raise AgentError(f"image {cmd.imageUuid}: {source} is not a file on backup storage "
                         f"{cmd.backupStorageUuid}")
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return InstallPathRsp(installPath=cmd.primaryStorageInstallPath)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp(target)
    try:
        await asyncio.to_thread(shutil.copyfile, source, temp)
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    log.info("cached image %s at %s", cmd.imageUuid, target)
    return InstallPathRsp(installPath=cmd.primaryStorageInstallPath)


async def create_from_cache(agent: Agent, cmd: CreateVolumeFromCacheCmd) -> InstallPathRsp:
    cache = agent.system.path(cmd.templatePathInCache)
    target = agent.system.path(cmd.installUrl)
    info = await _info(agent, cache)
    size = max(cmd.virtualSize, int(info.get("virtual-size") or 0))
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp(target)
    try:
        await agent.system.qemu_img("create", "-f", "qcow2", "-b", str(cache), "-F",
                                    info.get("format") or "qcow2", str(temp), str(size))
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    # qemu-img recorded the temporary file's backing path, which is absolute: still right.
    return InstallPathRsp(installPath=cmd.installUrl)


async def create_empty(agent: Agent, cmd: CreateEmptyVolumeCmd) -> InstallPathRsp:
    if cmd.size <= 0:
        raise AgentError(f"volume {cmd.volumeUuid}: size {cmd.size} is not a positive "
                         "number of bytes")
    target = agent.system.path(cmd.installUrl)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp(target)
    try:
        await agent.system.qemu_img("create", "-f", "qcow2", str(temp), str(cmd.size))
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    return InstallPathRsp(installPath=cmd.installUrl)


async def delete_bits(agent: Agent, cmd: DeleteBitsCmd) -> AgentReply:
    agent.system.remove(agent.system.path(cmd.path))
    return AgentReply()


async def take_snapshot(agent: Agent, cmd: TakeSnapshotCmd) -> TakeSnapshotRsp:
    volume = agent.system.path(cmd.volumeInstallPath)
    snapshot = agent.system.path(cmd.installPath)
    size = await _copy_volume(agent, volume, snapshot, flatten=False)
    return TakeSnapshotRsp(snapshotInstallPath=cmd.installPath, size=size)


async def revert_snapshot(agent: Agent, cmd: RevertSnapshotCmd) -> RevertSnapshotRsp:
    snapshot = agent.system.path(cmd.snapshotInstallPath)
    volume = agent.system.path(cmd.volumeInstallPath)
    size = await _copy_volume(agent, snapshot, volume, flatten=False)
    return RevertSnapshotRsp(newVolumeInstallPath=cmd.volumeInstallPath, size=size)


async def create_template(agent: Agent, cmd: CreateTemplateFromVolumeCmd) -> TemplateRsp:
    volume = agent.system.path(cmd.volumePath)
    target = Path(cmd.backupStorageInstallPath)  # backup storage: not under the root
    size = await _copy_volume(agent, volume, target, flatten=True)
    return TemplateRsp(backupStorageInstallPath=cmd.backupStorageInstallPath, size=size)


def routes() -> list[Route]:
    found = [Route(LOCAL_STORAGE_INIT_PATH, LocalStorageInitCmd, local_init),
             Route(NFS_MOUNT_PATH, NfsPrimaryStorageCmd, nfs_mount),
             Route(NFS_UNMOUNT_PATH, NfsPrimaryStorageCmd, nfs_unmount),
             Route(NFS_PING_PATH, NfsPrimaryStorageCmd, nfs_ping)]
    for prefix in (LOCAL_STORAGE_PATH, NFS_PRIMARY_STORAGE_PATH):
        found += [
            Route(prefix + DOWNLOAD_TO_IMAGE_CACHE_PATH, DownloadToImageCacheCmd,
                  download_to_cache),
            Route(prefix + CREATE_VOLUME_FROM_CACHE_PATH, CreateVolumeFromCacheCmd,
                  create_from_cache),
            Route(prefix + CREATE_EMPTY_VOLUME_PATH, CreateEmptyVolumeCmd, create_empty),
            Route(prefix + DELETE_BITS_PATH, DeleteBitsCmd, delete_bits),
            Route(prefix + TAKE_SNAPSHOT_PATH, TakeSnapshotCmd, take_snapshot),
            Route(prefix + REVERT_SNAPSHOT_PATH, RevertSnapshotCmd, revert_snapshot),
            Route(prefix + CREATE_TEMPLATE_PATH, CreateTemplateFromVolumeCmd, create_template),
        ]
    return found
