"""The KVM hypervisor driver: ZStack's KVM agent protocol over HTTP.

Every command is a JSON POST to ``http://<managementIp>:<kvm.agent.port><path>``; the agent
answers a JSON object with ``success`` and, when it failed, ``error``. Connecting a host
sends ``/host/echo`` (is the agent there?), ``/host/connect`` (this node manages you, send
events to ``sendCommandUrl``), ``/host/fact`` (operating system, CPU architecture) and
``/host/capacity`` (CPUs, sockets, speed, memory); pinging sends ``/host/ping``, whose reply
must name the host (an agent answering for another host is a wrong host, not a live one).
Before connecting, ``/host/version`` decides whether the agent must be deployed first
(:mod:`zplugins.kvm.deploy`).

Long commands (VM lifecycle, volumes, NICs, and every ``call`` outside ``/host/``) use
ZStack's asynchronous protocol: the request carries the headers ``taskuuid`` and
``callbackurl``; the agent answers at once and later POSTs the reply to
``<node>/zstack/asyncrest/callback`` with the same ``taskuuid``, which completes the waiting
command (:meth:`KvmHypervisor.complete`); the command's timeout still applies.
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuid_module
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from zkvmagent import __version__ as AGENT_VERSION

from zcore.errors import ZError
from zplugins.compute.hypervisor import HostFacts, HypervisorDriver
from zplugins.compute.public import HOST_CONNECT_FAILED, HOST_OPERATION_FAILED
from zplugins.kvm import commands as cmds
from zplugins.kvm import deploy
from zplugins.kvm.models import KVMHostVO

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.compute.public import HostInfo, NicTO, VmTO, VolumeTO

log = logging.getLogger(__name__)

__all__ = ["AGENT_PORT", "CATEGORY", "KvmHypervisor"]

#: Global configuration of the KVM plugin.
CATEGORY = "kvm"
AGENT_PORT = "agent.port"

ECHO_PATH = "/host/echo"
CONNECT_PATH = "/host/connect"
FACT_PATH = "/host/fact"
CAPACITY_PATH = "/host/capacity"
PING_PATH = "/host/ping"
VERSION_PATH = "/host/version"

#: Where agents post the replies of asynchronous commands, on the node's HTTP server.
CALLBACK_PATH = "/zstack/asyncrest/callback"
#: Where agents post events (``commandpath: /kvm/reportvmstate``).
EVENT_PATH = "/zstack/asyncrest/sendcommand"

#: Commands answered synchronously: quick questions to the agent.
_SYNC_COMMANDS = ("/host/", cmds.VM_SYNC_PATH, cmds.GET_VNC_PORT_PATH)

#: Seconds a command may take when its caller gives no timeout, and each connect step.
COMMAND_TIMEOUT = 300.0
CONNECT_TIMEOUT = 30.0
#: Seconds to wait for ``/host/version`` before deploying the agent.
VERSION_TIMEOUT = 10.0
#: Seconds a live migration may take.
MIGRATE_TIMEOUT = 1800.0

#: What ``/vm/vmsync`` reports, as the node's VM states.
_SYNC_STATES = {"Running": "Running", "Paused": "Paused", "Shutdown": "Stopped",
                "Crashed": "Stopped"}


class AgentError(ConnectionError):
    """The agent could not be reached, or answered something that is not a reply."""


def _os_fields(session: Session, uuid: str, fact: Mapping[str, Any]) -> None:
    def text(key: str) -> str | None:
        value = fact.get(key)
        return str(value)[:64] if value not in (None, "") else None

    session.execute(update(KVMHostVO).where(KVMHostVO.uuid == uuid).values(
        osDistribution=text("osDistribution"), osRelease=text("osRelease"),
        osVersion=text("osVersion")))


def _details(session: Session, uuids: list[str]) -> dict[str, dict[str, Any]]:
    rows = session.scalars(select(KVMHostVO).where(KVMHostVO.uuid.in_(uuids)))
    return {row.uuid: {"username": row.username, "sshPort": row.sshPort,
                       "osDistribution": row.osDistribution, "osRelease": row.osRelease,
                       "osVersion": row.osVersion} for row in rows}


class KvmHypervisor(HypervisorDriver):
    """KVM hosts, through the KVM agent on each of them."""

    hypervisor_type = "KVM"
    host_inventory_class = "org.zstack.kvm.KVMHostInventory"

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None
        #: Asynchronous commands waiting for their reply, by task uuid.
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60))
        return self._http

    @staticmethod
    def url(node: Node, host: HostInfo, path: str) -> str:
        """Where the agent of ``host`` takes command ``path``."""
        ip = host.managementIp
        if ":" in ip:  # an IPv6 address
            ip = f"[{ip}]"
        return f"http://{ip}:{node.global_config.get(CATEGORY, AGENT_PORT)}{path}"

    async def _post(self, node: Node, host: HostInfo, path: str, body: Mapping[str, Any],
                    timeout: float, *, json_reply: bool = True) -> dict[str, Any]:
        if not path.startswith(_SYNC_COMMANDS):
            return await self._post_async(node, host, path, body, timeout)
        return await self._send(node, host, path, body, timeout, json_reply=json_reply)

    async def _send(self, node: Node, host: HostInfo, path: str, body: Mapping[str, Any],
                    timeout: float, *, json_reply: bool = True,
                    headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        url = self.url(node, host, path)
        try:
            async with self._session().post(
                    url, json=dict(body), headers=dict(headers or {}),
                    timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
                text = await reply.text()
                if reply.status != 200:
                    raise AgentError(f"the agent at {url} answered HTTP {reply.status}: "
                                     f"{text[:200]}")
                if not json_reply:
                    return {"success": True}
                try:
                    data = await reply.json(content_type=None)
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    raise AgentError(f"the agent at {url} answered {text[:200]!r}, not a JSON "
                                     "object")
                return data
        except TimeoutError:
            raise TimeoutError(f"the agent at {url} did not answer within {timeout:g} s") \
                from None
        except aiohttp.ClientError as exc:
            raise AgentError(f"cannot reach the agent at {url}: {exc}") from exc

    async def _post_async(self, node: Node, host: HostInfo, path: str,
                          body: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``path`` with ``taskuuid`` and ``callbackurl``; wait for the callback."""
        task = uuid_module.uuid4().hex
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[task] = waiter
        url = self.url(node, host, path)
        try:
            async with asyncio.timeout(timeout):
                accepted = await self._send(
                    node, host, path, body, min(timeout, CONNECT_TIMEOUT),
                    headers={"taskuuid": task, "callbackurl": f"{node.url}{CALLBACK_PATH}"})
                if accepted.get("success") is False:
                    return accepted  # refused at once: nothing runs
                return await waiter
        except TimeoutError:
            raise TimeoutError(f"the agent at {url} did not complete task {task} within "
                               f"{timeout:g} s") from None
        finally:
            self._waiters.pop(task, None)

    def complete(self, task: str, reply: dict[str, Any]) -> bool:
        """The agent posted the reply of task ``task``; False if no command waits for it."""
        waiter = self._waiters.pop(task, None)
        if waiter is None or waiter.done():
            return False
        waiter.set_result(reply)
        return True

    async def agent_version(self, node: Node, host: HostInfo) -> str | None:
        """The version the agent of ``host`` runs; ``None`` when it does not answer one."""
        try:
            reply = await self._send(node, host, VERSION_PATH, {}, VERSION_TIMEOUT)
        except (AgentError, TimeoutError) as exc:
            log.info("%s: no KVM agent answers %s: %s", host, VERSION_PATH, exc)
            return None
        version = reply.get("version")
        return str(version) if reply.get("success") is not False and version else None

    async def _command(self, node: Node, host: HostInfo, path: str,
                       body: Mapping[str, Any]) -> dict[str, Any]:
        reply = await self._post(node, host, path, body, CONNECT_TIMEOUT)
        if reply.get("success") is False:
            raise ZError(HOST_CONNECT_FAILED, "cannot connect host",
                         f"the agent failed {path}: "
                         f"{reply.get('error') or 'it gave no reason'}")
        return reply

    async def connect(self, node: Node, host: HostInfo, known: HostFacts | None) -> HostFacts:
        if node.global_config.get(CATEGORY, deploy.DEPLOY):
            version = await self.agent_version(node, host)
            if version == AGENT_VERSION:
                log.info("%s: the KVM agent %s runs; not deploying it", host, version)
            else:
                await deploy.deploy_agent(node, host)
        await self._post(node, host, ECHO_PATH, {}, CONNECT_TIMEOUT, json_reply=False)
        await self._command(node, host, CONNECT_PATH, {
            "hostUuid": host.uuid,
            "sendCommandUrl": f"{node.url}{EVENT_PATH}"})
        fact = await self._command(node, host, FACT_PATH, {"hostUuid": host.uuid})
        capacity = await self._command(node, host, CAPACITY_PATH, {"hostUuid": host.uuid})
        try:
            facts = HostFacts(cpuNum=int(capacity["cpuNum"]),
                              cpuSockets=int(capacity.get("cpuSockets") or 1),
                              totalMemory=int(capacity["totalMemory"]),
                              cpuSpeed=int(capacity.get("cpuSpeed") or 0),
                              architecture=fact.get("cpuArchitecture") or None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ZError(HOST_CONNECT_FAILED, "cannot connect host",
                         f"the agent answered {CAPACITY_PATH} without a valid "
                         f"cpuNum and totalMemory: {capacity}") from exc
        await node.db.run(_os_fields, host.uuid, fact)
        return facts

    async def ping(self, node: Node, host: HostInfo, timeout: float) -> None:
        reply = await self._post(node, host, PING_PATH, {"hostUuid": host.uuid}, timeout)
        if reply.get("success") is False:
            raise AgentError(f"the agent failed the ping: {reply.get('error')}")
        if reply.get("hostUuid") != host.uuid:
            raise AgentError(f"the agent at {host.managementIp} answers for host "
                             f"{reply.get('hostUuid')}, not for {host.uuid}")

    async def call(self, node: Node, host: HostInfo, path: str, body: Mapping[str, Any],
                   timeout: float | None) -> dict[str, Any]:
        return await self._post(node, host, path, body, timeout or COMMAND_TIMEOUT)

    async def host_inventory_fields(self, node: Node, hosts: Sequence[Mapping[str, Any]]
                                    ) -> dict[str, dict[str, Any]]:
        return await node.db.run(_details, [h["uuid"] for h in hosts])

    # ----------------------------------------------------------------- VMs

    async def _vm(self, node: Node, host: HostInfo, path: str, cmd: cmds.AgentCommand,
                  vm_uuid: str | None, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """Send a VM command; a ZError naming the host, the command and the VM if it fails."""
        what = f"command {path}" + (f" for VM {vm_uuid}" if vm_uuid else "")
        try:
            reply = await self._post(node, host, path, cmds.body(cmd), timeout)
        except (AgentError, TimeoutError) as exc:
            raise ZError(HOST_OPERATION_FAILED, "agent command failed",
                         f"{what} on {host} failed: {exc}") from exc
        if reply.get("success") is False:
            raise ZError(HOST_OPERATION_FAILED, "agent command failed",
                         f"{what} on {host} failed: "
                         f"{reply.get('error') or 'the agent gave no reason'}")
        return reply

    async def start_vm(self, node: Node, host: HostInfo, vm: VmTO) -> None:
        await self._vm(node, host, cmds.START_VM_PATH,
                       cmds.start_vm_cmd(vm, timeout=int(COMMAND_TIMEOUT)), vm.uuid)

    async def stop_vm(self, node: Node, host: HostInfo, vm_uuid: str, *, type: str = "grace",
                      timeout: float = 60) -> None:
        await self._vm(node, host, cmds.STOP_VM_PATH,
                       cmds.StopVmCmd(uuid=vm_uuid, type=type, timeout=int(timeout)), vm_uuid,
                       timeout + CONNECT_TIMEOUT)

    async def reboot_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        await self._vm(node, host, cmds.REBOOT_VM_PATH, cmds.RebootVmCmd(uuid=vm_uuid), vm_uuid)

    async def pause_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        await self._vm(node, host, cmds.PAUSE_VM_PATH, cmds.PauseVmCmd(uuid=vm_uuid), vm_uuid)

    async def resume_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        await self._vm(node, host, cmds.RESUME_VM_PATH, cmds.ResumeVmCmd(uuid=vm_uuid), vm_uuid)

    async def destroy_vm(self, node: Node, host: HostInfo, vm_uuid: str) -> None:
        await self._vm(node, host, cmds.DESTROY_VM_PATH, cmds.DestroyVmCmd(uuid=vm_uuid),
                       vm_uuid)

    async def migrate_vm(self, node: Node, host: HostInfo, vm_uuid: str,
                         destination: HostInfo) -> None:
        await self._vm(node, host, cmds.MIGRATE_VM_PATH, cmds.MigrateVmCmd(
            vmUuid=vm_uuid, destHostIp=destination.managementIp, srcHostIp=host.managementIp,
            timeout=int(MIGRATE_TIMEOUT)), vm_uuid, MIGRATE_TIMEOUT)

    async def attach_volume(self, node: Node, host: HostInfo, vm_uuid: str,
                            volume: VolumeTO) -> None:
        await self._vm(node, host, cmds.ATTACH_VOLUME_PATH, cmds.AttachDataVolumeCmd(
            vmInstanceUuid=vm_uuid, volume=cmds.volume_to(volume)), vm_uuid)

    async def detach_volume(self, node: Node, host: HostInfo, vm_uuid: str,
                            volume: VolumeTO) -> None:
        await self._vm(node, host, cmds.DETACH_VOLUME_PATH, cmds.DetachDataVolumeCmd(
            vmInstanceUuid=vm_uuid, volume=cmds.volume_to(volume)), vm_uuid)

    async def attach_nic(self, node: Node, host: HostInfo, vm_uuid: str, nic: NicTO) -> None:
        await self._vm(node, host, cmds.ATTACH_NIC_PATH,
                       cmds.AttachNicCmd(vmUuid=vm_uuid, nic=cmds.nic_to(nic)), vm_uuid)

    async def detach_nic(self, node: Node, host: HostInfo, vm_uuid: str, nic: NicTO) -> None:
        await self._vm(node, host, cmds.DETACH_NIC_PATH,
                       cmds.DetachNicCmd(vmUuid=vm_uuid, nic=cmds.nic_to(nic)), vm_uuid)

    async def vm_states(self, node: Node, host: HostInfo) -> dict[str, str]:
        reply = await self._vm(node, host, cmds.VM_SYNC_PATH, cmds.VmSyncCmd(), None)
        states = reply.get("states") or {}
        if not isinstance(states, dict):
            raise ZError(HOST_OPERATION_FAILED, "agent command failed",
                         f"command {cmds.VM_SYNC_PATH} on {host} answered states "
                         f"{states!r}, not an object of VM uuid to state")
        result: dict[str, str] = {}
        for uuid, state in states.items():
            mapped = _SYNC_STATES.get(state)
            if mapped is None:
                # A transient libvirt state (NoState, ...): the next sync decides.
                log.warning("%s reports VM %s in state %r; ignored", host, uuid, state)
                continue
            result[str(uuid)] = mapped
        return result

    async def console_address(self, node: Node, host: HostInfo, vm_uuid: str
                              ) -> dict[str, Any]:
        reply = await self._vm(node, host, cmds.GET_VNC_PORT_PATH,
                               cmds.GetVncPortCmd(vmUuid=vm_uuid), vm_uuid)
        try:
            port = int(reply["port"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ZError(HOST_OPERATION_FAILED, "agent command failed",
                         f"command {cmds.GET_VNC_PORT_PATH} for VM {vm_uuid} on {host} "
                         f"answered no valid port: {reply}") from exc
        return {"hostIp": host.managementIp, "port": port,
                "protocol": reply.get("protocol") or "vnc"}

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
            await asyncio.sleep(0)  # let the connector close its transports
