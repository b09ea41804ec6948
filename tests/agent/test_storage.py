"""Primary storage commands make real qcow2 files under the agent's root."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from zkvmagent.commands import body

from .conftest import AgentClient, vm_cmd

PS = "/opt/zstack/ps1"
MIB = 1024**2


def info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def qemu_io(path: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)],
                          check=False, capture_output=True, text=True)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """An image on backup storage (outside the agent's root): 16 MiB, its first MiB 0x5a."""
    path = tmp_path / "bs" / "images" / "img1" / "img1.qcow2"
    path.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(16 * MIB)],
                   check=True)
    assert qemu_io(path, "write -P 0x5a 0 1M").returncode == 0
    return path


async def cache_image(agent: AgentClient, prefix: str, image: Path) -> str:
    cache = f"{PS}/imagecache/template/img1/img1.qcow2"
    reply = await agent.ok(f"{prefix}/imagecache/download", {
        "primaryStorageUuid": "ps1", "imageUuid": "img1", "backupStorageUuid": "bs1",
        "backupStorageInstallPath": str(image), "primaryStorageInstallPath": cache})
    assert reply["installPath"] == cache
    return cache


async def test_local_storage_init_reports_the_file_systems_capacity(agent: AgentClient
                                                                    ) -> None:
    reply = await agent.ok("/localstorage/init", {
        "path": PS, "hostUuid": "h1", "uuid": "ps1", "initFilePath": f"{PS}/zstack_smp_init_file"})
    root = agent.agent.system.root
    assert (root / PS.lstrip("/")).is_dir()
    assert (root / PS.lstrip("/") / "zstack_smp_init_file").is_file()
    st = os.statvfs(root)
    assert reply["totalCapacity"] == st.f_blocks * st.f_frsize
    assert 0 < reply["availableCapacity"] <= reply["totalCapacity"]


@pytest.mark.parametrize("prefix", ["/localstorage", "/nfsprimarystorage"])
async def test_root_volume_from_the_image_cache_is_a_qcow2_overlay(
        agent: AgentClient, image: Path, prefix: str) -> None:
    root = agent.agent.system.root
    cache = await cache_image(agent, prefix, image)
    assert (root / cache.lstrip("/")).read_bytes() == image.read_bytes()

    volume = f"{PS}/rootVolumes/vol-v1/v1.qcow2"
    reply = await agent.ok(f"{prefix}/volume/createvolumefromcache", {
        "primaryStorageUuid": "ps1", "volumeUuid": "v1", "templatePathInCache": cache,
        "installUrl": volume, "virtualSize": 32 * MIB})
    assert reply["installPath"] == volume
    found = info(root / volume.lstrip("/"))
    assert found["format"] == "qcow2" and found["virtual-size"] == 32 * MIB
    assert found["full-backing-filename"] == str(root / cache.lstrip("/"))
    assert qemu_io(root / volume.lstrip("/"), "read -P 0x5a 0 1M").returncode == 0

    # An image larger than the asked size keeps its own size.
    small = f"{PS}/rootVolumes/vol-v2/v2.qcow2"
    await agent.ok(f"{prefix}/volume/createvolumefromcache", {
        "templatePathInCache": cache, "installUrl": small, "virtualSize": MIB})
    assert info(root / small.lstrip("/"))["virtual-size"] == 16 * MIB

    await agent.ok(f"{prefix}/delete", {"primaryStorageUuid": "ps1", "path": volume})
    assert not (root / volume.lstrip("/")).exists()


async def test_empty_volume_snapshot_revert_and_template(agent: AgentClient, image: Path,
                                                         tmp_path: Path) -> None:
    root = agent.agent.system.root
    empty = f"{PS}/dataVolumes/vol-d1/d1.qcow2"
    await agent.ok("/localstorage/volume/createempty", {
        "primaryStorageUuid": "ps1", "volumeUuid": "d1", "installUrl": empty,
        "size": 8 * MIB})
    found = info(root / empty.lstrip("/"))
    assert (found["format"], found["virtual-size"]) == ("qcow2", 8 * MIB)
    assert "backing-filename" not in found

    cache = await cache_image(agent, "/localstorage", image)
    volume = f"{PS}/rootVolumes/vol-v1/v1.qcow2"
    await agent.ok("/localstorage/volume/createvolumefromcache", {
        "templatePathInCache": cache, "installUrl": volume, "virtualSize": 16 * MIB})
    volume_file = root / volume.lstrip("/")
    assert qemu_io(volume_file, "write -P 0x11 1M 1M").returncode == 0

    snapshot = f"{PS}/rootVolumes/vol-v1/snapshots/s1.qcow2"
    reply = await agent.ok("/localstorage/snapshot/take", {
        "primaryStorageUuid": "ps1", "volumeUuid": "v1", "volumeInstallPath": volume,
        "installPath": snapshot})
    snapshot_file = root / snapshot.lstrip("/")
    assert reply["snapshotInstallPath"] == snapshot
    assert reply["size"] == snapshot_file.stat().st_size > 0
    assert info(snapshot_file)["format"] == "qcow2"

    # Written after the snapshot, gone after reverting to it.
    assert qemu_io(volume_file, "write -P 0x22 1M 1M").returncode == 0
    reply = await agent.ok("/localstorage/snapshot/revert", {
        "primaryStorageUuid": "ps1", "snapshotInstallPath": snapshot,
        "volumeInstallPath": volume})
    assert reply["newVolumeInstallPath"] == volume
    assert qemu_io(volume_file, "read -P 0x11 1M 1M").returncode == 0
    assert qemu_io(volume_file, "read -P 0x5a 0 1M").returncode == 0

    # A template is the volume flattened, on backup storage.
    template = tmp_path / "bs" / "rootVolumeTemplates" / "t1" / "t1.qcow2"
    reply = await agent.ok("/localstorage/volume/createtemplate/upload", {
        "primaryStorageUuid": "ps1", "volumePath": volume, "imageUuid": "t1",
        "backupStorageUuid": "bs1", "backupStorageInstallPath": str(template)})
    assert reply["backupStorageInstallPath"] == str(template)
    assert reply["size"] == template.stat().st_size
    assert "backing-filename" not in info(template)
    assert qemu_io(template, "read -P 0x5a 0 1M").returncode == 0
    assert qemu_io(template, "read -P 0x11 1M 1M").returncode == 0


async def test_a_missing_image_fails_naming_it(agent: AgentClient, tmp_path: Path) -> None:
    status, reply = await agent.post("/localstorage/imagecache/download", {
        "imageUuid": "img9", "backupStorageInstallPath": str(tmp_path / "nope.qcow2"),
        "primaryStorageInstallPath": f"{PS}/imagecache/template/img9/img9.qcow2"})
    assert status == 200 and reply["success"] is False
    assert "img9" in reply["error"] and "nope.qcow2" in reply["error"]


async def test_nfs_mount_ping_and_unmount_under_the_root(agent: AgentClient) -> None:
    root = agent.agent.system.root
    cmd = {"uuid": "ps2", "url": "nfs.example:/export/ps2",
           "mountPath": "/opt/zstack/nfsprimarystorage/prim-ps2", "options": None}
    status, reply = await agent.post("/nfsprimarystorage/ping", cmd)
    assert reply["success"] is False and "nothing is mounted" in reply["error"]

    reply = await agent.ok("/nfsprimarystorage/mount", cmd)
    assert reply["totalCapacity"] > 0
    assert "nfs.example:/export/ps2 /opt/zstack/nfsprimarystorage/prim-ps2 nfs4" in (
        root / "proc/mounts").read_text()
    await agent.ok("/nfsprimarystorage/mount", cmd)  # mounting again is fine
    assert len((root / "proc/mounts").read_text().splitlines()) == 1
    assert (await agent.ok("/nfsprimarystorage/ping", cmd))["availableCapacity"] > 0

    await agent.ok("/nfsprimarystorage/unmount", cmd)
    status, reply = await agent.post("/nfsprimarystorage/ping", cmd)
    assert (status, reply["success"]) == (200, False)


async def test_paths_cannot_leave_the_root(agent: AgentClient) -> None:
    status, reply = await agent.post("/localstorage/delete", {"path": "/ps/../../etc/passwd"})
    assert status == 200 and reply["success"] is False and "leaves the agent's root" in reply["error"]


async def test_a_vm_runs_on_a_volume_made_from_the_cache(agent: AgentClient,
                                                         image: Path) -> None:
    cache = await cache_image(agent, "/localstorage", image)
    volume = f"{PS}/rootVolumes/vol-v1/v1.qcow2"
    await agent.ok("/localstorage/volume/createvolumefromcache", {
        "templatePathInCache": cache, "installUrl": volume, "virtualSize": 16 * MIB})
    cmd = vm_cmd(data_volumes=0, nics=0)
    cmd.rootVolume.installPath = volume
    await agent.ok("/vm/start", body(cmd))
    dumped = await agent.ok("/vm/dumpxml", {"vmUuid": cmd.vmInstanceUuid})
    source = ET.fromstring(dumped["xml"]).find("devices/disk/source")
    assert source is not None
    disk = Path(source.get("file", ""))
    assert disk == agent.agent.system.root / volume.lstrip("/")
    assert info(disk)["full-backing-filename"] == str(agent.agent.system.root / cache.lstrip("/"))
