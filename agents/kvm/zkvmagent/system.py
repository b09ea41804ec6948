"""The host's system as the agent changes it: files, bridges, NFS mounts, ``qemu-img``.

Every path the node names is a path on the host; :class:`System` maps it under ``root`` (the
configuration's ``root``, ``/`` in production). A test points ``root`` at a temporary
directory and the agent then works there instead of on the real system:

* files (volumes, the image cache, the state file) are real files under the root, made by
  the real ``qemu-img``;
* network interfaces are read from ``<root>/sys/class/net`` as on Linux. Under ``/`` bridges
  and VLAN subinterfaces are made with ``ip link``; under another root they are recorded
  there the way sysfs shows them (``sys/class/net/br_eth0/bridge/``,
  ``sys/class/net/br_eth0/brif/eth0``, ``sys/class/net/eth0.100/lower_eth0``), and a physical
  interface the node names is taken to exist (the root stands for a host that has it);
* NFS mounts are read from ``<root>/proc/mounts``; under ``/`` they are made with ``mount``,
  under another root recorded as a line of that file.

Backup storage paths are not host paths (the storage is another machine, reached here by a
path readable from the host), so they are never mapped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from pathlib import Path

__all__ = ["IFNAMSIZ", "System", "SystemFailure"]

log = logging.getLogger(__name__)

#: Linux's longest interface name is 15 characters.
IFNAMSIZ = 15
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


class SystemFailure(RuntimeError):
    """A system operation failed; the message names the command or the path and why."""


class System:
    """Files, bridges and mounts under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root).resolve()
        #: Whether the agent runs against the real system (root ``/``).
        self.real = self.root == Path("/")

    # ----------------------------------------------------------------- paths and commands

    def path(self, host_path: str) -> Path:
        """Where the host path ``host_path`` (absolute) is under the root."""
        if not host_path.startswith("/"):
            raise SystemFailure(f"{host_path!r} is not an absolute path")
        mapped = Path(os.path.normpath(self.root / host_path.lstrip("/")))
        if not mapped.is_relative_to(self.root):
            raise SystemFailure(f"{host_path!r} leaves the agent's root {self.root}")
        return mapped

    async def run(self, *argv: str, timeout: float = 600.0) -> str:
        """Run ``argv``; its standard output, or ``SystemFailure`` with its error output."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise SystemFailure(f"cannot run {argv[0]}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SystemFailure(f"{' '.join(argv)} took more than {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise SystemFailure(f"{' '.join(argv)} failed (exit status {proc.returncode}): "
                               f"{err.decode(errors='replace').strip()}")
        return out.decode(errors="replace")

    @staticmethod
    def capacity(path: Path) -> tuple[int, int]:
        """Total and available bytes of the file system holding ``path`` (or its nearest
        existing parent)."""
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        st = os.statvfs(probe)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    # ----------------------------------------------------------------- network interfaces

    def _net(self, name: str) -> Path:
        return self.path(f"/sys/class/net/{name}")

    @staticmethod
    def check_name(name: str, what: str) -> None:
        """``SystemFailure`` unless ``name`` can name a Linux network interface."""
        if not name or len(name) > IFNAMSIZ or not _IFNAME.match(name):
            raise SystemFailure(f"{what} {name!r} is not a valid interface name (1 to "
                               f"{IFNAMSIZ} letters, digits, '_', '.', ':' or '-')")

    def interface_exists(self, name: str) -> bool:
        return self._net(name).exists()

    def is_bridge(self, name: str) -> bool:
        return (self._net(name) / "bridge").is_dir()

    def bridge_ports(self, name: str) -> list[str]:
        """The interfaces plugged into bridge ``name``."""
        ports = self._net(name) / "brif"
        return sorted(p.name for p in ports.iterdir()) if ports.is_dir() else []

    async def _physical(self, name: str) -> None:
        self.check_name(name, "physical interface")
        if self.interface_exists(name):
            return
        if self.real:
            raise SystemFailure(f"the host has no network interface {name}")
        self._net(name).mkdir(parents=True, exist_ok=True)

    async def create_vlan(self, interface: str, vlan: int) -> str:
        """Make VLAN subinterface ``<interface>.<vlan>`` (if it is not there); its name."""
        if not 1 <= vlan <= 4094:
            raise SystemFailure(f"VLAN id {vlan} is out of range (1 to 4094)")
        await self._physical(interface)
        name = f"{interface}.{vlan}"
        self.check_name(name, "VLAN subinterface")
        if self.interface_exists(name):
            return name
        if self.real:
            await self.run("ip", "link", "add", "link", interface, "name", name, "type",
                           "vlan", "id", str(vlan))
            await self.run("ip", "link", "set", "dev", name, "up")
        else:
            self._net(name).mkdir(parents=True)
            (self._net(name) / f"lower_{interface}").touch()
        log.info("created VLAN subinterface %s", name)
        return name

    async def create_bridge(self, bridge: str, interface: str) -> None:
        """Make bridge ``bridge`` with ``interface`` plugged in; nothing that exists already
        is made again."""
        self.check_name(bridge, "bridge")
        if interface.split(".", 1)[0] == interface:
            await self._physical(interface)
        elif not self.interface_exists(interface):
            raise SystemFailure(f"the host has no network interface {interface}")
        if self.interface_exists(bridge) and not self.is_bridge(bridge):
            raise SystemFailure(f"{bridge} exists on the host and is not a bridge")
        if not self.is_bridge(bridge):
            if self.real:
                await self.run("ip", "link", "add", "name", bridge, "type", "bridge")
            else:
                (self._net(bridge) / "bridge").mkdir(parents=True)
                (self._net(bridge) / "brif").mkdir()
            log.info("created bridge %s", bridge)
        if interface not in self.bridge_ports(bridge):
            if self.real:
                await self.run("ip", "link", "set", "dev", interface, "master", bridge)
            else:
                (self._net(bridge) / "brif" / interface).touch()
            log.info("plugged %s into bridge %s", interface, bridge)
        if self.real:
            await self.run("ip", "link", "set", "dev", interface, "up")
            await self.run("ip", "link", "set", "dev", bridge, "up")

    # ----------------------------------------------------------------- NFS mounts

    def _mounts_file(self) -> Path:
        return self.path("/proc/mounts")

    def mounted(self, mount_path: str) -> str | None:
        """What is mounted at host path ``mount_path`` (the source), or ``None``."""
        target = mount_path.rstrip("/") or "/"
        mounts = self._mounts_file()
        if not mounts.exists():
            return None
        for line in mounts.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] == target:
                return parts[0]
        return None

    async def mount_nfs(self, url: str, mount_path: str, options: str | None) -> None:
        """Mount the export ``url`` at ``mount_path`` unless it is mounted there already."""
        current = self.mounted(mount_path)
        if current == url:
            return
        if current is not None:
            raise SystemFailure(f"{mount_path} already holds {current}, not {url}")
        self.path(mount_path).mkdir(parents=True, exist_ok=True)
        if self.real:
            argv = ["mount", "-t", "nfs"] + (["-o", options] if options else []) + [
                url, mount_path]
            await self.run(*argv, timeout=120)
        else:
            mounts = self._mounts_file()
            mounts.parent.mkdir(parents=True, exist_ok=True)
            with mounts.open("a") as f:
                f.write(f"{url} {mount_path.rstrip('/')} nfs4 {options or 'rw'} 0 0\n")
        log.info("mounted %s at %s", url, mount_path)

    async def unmount(self, mount_path: str) -> None:
        """Unmount ``mount_path`` if something is mounted there."""
        if self.mounted(mount_path) is None:
            return
        if self.real:
            await self.run("umount", mount_path, timeout=120)
        else:
            target = mount_path.rstrip("/")
            mounts = self._mounts_file()
            kept = [line for line in mounts.read_text().splitlines()
                    if line.split()[1:2] != [target]]
            mounts.write_text("".join(f"{line}\n" for line in kept))
        log.info("unmounted %s", mount_path)

    # ----------------------------------------------------------------- files

    async def qemu_img(self, *args: str) -> str:
        """Run ``qemu-img`` (``-U``, shared locks, where a running VM may hold the file)."""
        return await self.run("qemu-img", *args)

    @staticmethod
    def remove(path: Path) -> None:
        """Remove a file, or a directory with everything in it; nothing if it is absent."""
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
