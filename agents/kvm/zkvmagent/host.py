"""The host commands: ``/host/echo``, ``/host/version``, ``/host/connect``, ``/host/ping``,
``/host/fact`` and ``/host/capacity``."""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING

import libvirt

from zkvmagent import __version__
from zkvmagent.commands import (
    CAPACITY_PATH,
    CONNECT_PATH,
    ECHO_PATH,
    FACT_PATH,
    PING_PATH,
    VERSION_PATH,
    ConnectCmd,
    ConnectRsp,
    EmptyCmd,
    HostCapacityCmd,
    HostCapacityRsp,
    HostFactCmd,
    HostFactRsp,
    PingCmd,
    PingRsp,
    VersionRsp,
)
from zkvmagent.server import Route
from zkvmagent.system import SystemFailure

if TYPE_CHECKING:
    from zkvmagent.server import Agent

__all__ = ["routes", "version_text"]


def version_text(number: int) -> str:
    """libvirt's version number (``9000000``) as text (``9.0.0``)."""
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def _os_release() -> dict[str, str]:
    for candidate in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        try:
            text = candidate.read_text()
        except OSError:
            continue
        values = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
        return values
    return {}


def _cpuinfo() -> tuple[str | None, str | None]:
    """The CPU's model name and its virtualization flag (``vmx``, ``svm``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, None
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    words = set(flags.group(1).split()) if flags else set()
    flag = "vmx" if "vmx" in words else "svm" if "svm" in words else None
    return (model.group(1).strip() if model else None), flag


async def echo(agent: Agent, cmd: EmptyCmd) -> None:
    return None


async def version(agent: Agent, cmd: EmptyCmd) -> VersionRsp:
    return VersionRsp(version=__version__)


async def connect(agent: Agent, cmd: ConnectCmd) -> ConnectRsp:
    agent.state.hostUuid = cmd.hostUuid
    agent.state.sendCommandUrl = cmd.sendCommandUrl
    agent.save_state()

    def versions(conn: libvirt.virConnect) -> tuple[int, int]:
        return conn.getLibVersion(), conn.getVersion()

    lib, hypervisor = await agent.virt.call(versions)
    return ConnectRsp(libvirtVersion=version_text(lib), qemuVersion=version_text(hypervisor))


async def ping(agent: Agent, cmd: PingCmd) -> PingRsp:
    # A libvirt that stopped answering makes the host unusable: the ping says so.
    await agent.virt.call(lambda conn: conn.getLibVersion())
    return PingRsp(hostUuid=agent.state.hostUuid, version=__version__)


async def fact(agent: Agent, cmd: HostFactCmd) -> HostFactRsp:
    def facts(conn: libvirt.virConnect) -> tuple[str, str, int]:
        return conn.getInfo()[0], conn.getHostname(), conn.getLibVersion()

    arch, hostname, lib = await agent.virt.call(facts)
    release = _os_release()
    model, flag = _cpuinfo()
    try:
        qemu_img = (await agent.system.qemu_img("--version")).splitlines()[0]
    except (SystemFailure, IndexError):
        qemu_img = None
    return HostFactRsp(
        osDistribution=release.get("NAME") or platform.system(),
        osVersion=release.get("VERSION_ID") or platform.release(),
        osRelease=release.get("VERSION_CODENAME") or release.get("VERSION") or "",
        cpuArchitecture=arch or platform.machine(), cpuModelName=model, hostname=hostname,
        libvirtVersion=version_text(lib), qemuImgVersion=qemu_img, hvmCpuFlag=flag)


async def capacity(agent: Agent, cmd: HostCapacityCmd) -> HostCapacityRsp:
    def measure(conn: libvirt.virConnect) -> HostCapacityRsp:
        _model, memory_mib, cpus, mhz, nodes, sockets, _cores, _threads = conn.getInfo()
        used_cpu = used_memory = 0
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            _state, _max_memory, memory_kib, vcpus, _time = dom.info()
            used_cpu += vcpus
            used_memory += memory_kib * 1024
        return HostCapacityRsp(cpuNum=cpus, cpuSockets=nodes * sockets, cpuSpeed=mhz,
                               totalMemory=memory_mib * 1024 * 1024, usedCpu=used_cpu,
                               usedMemory=used_memory)

    return await agent.virt.call(measure)


def routes() -> list[Route]:
    return [
        Route(ECHO_PATH, EmptyCmd, echo),
        Route(VERSION_PATH, EmptyCmd, version),
        Route(CONNECT_PATH, ConnectCmd, connect),
        Route(PING_PATH, PingCmd, ping),
        Route(FACT_PATH, HostFactCmd, fact),
        Route(CAPACITY_PATH, HostCapacityCmd, capacity),
    ]
