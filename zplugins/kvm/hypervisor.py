"""The KVM hypervisor driver: ZStack's KVM agent protocol over HTTP.

Every command is a JSON POST to ``http://<managementIp>:<kvm.agent.port><path>``; the agent
answers a JSON object with ``success`` and, when it failed, ``error``. Connecting a host
sends ``/host/echo`` (is the agent there?), ``/host/connect`` (this node manages you, send
events to ``sendCommandUrl``), ``/host/fact`` (operating system, CPU architecture) and
``/host/capacity`` (CPUs, sockets, speed, memory); pinging sends ``/host/ping``, whose reply
must name the host (an agent answering for another host is a wrong host, not a live one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from zcore.errors import ZError
from zplugins.compute.hypervisor import HostFacts, HypervisorDriver
from zplugins.compute.public import HOST_CONNECT_FAILED
from zplugins.kvm.models import KVMHostVO

if TYPE_CHECKING:
    from zcore.node import Node
    from zplugins.compute.public import HostInfo

__all__ = ["AGENT_PORT", "CATEGORY", "KvmHypervisor"]

#: Global configuration of the KVM plugin.
CATEGORY = "kvm"
AGENT_PORT = "agent.port"

ECHO_PATH = "/host/echo"
CONNECT_PATH = "/host/connect"
FACT_PATH = "/host/fact"
CAPACITY_PATH = "/host/capacity"
PING_PATH = "/host/ping"

#: Seconds a command may take when its caller gives no timeout, and each connect step.
COMMAND_TIMEOUT = 300.0
CONNECT_TIMEOUT = 30.0


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
        url = self.url(node, host, path)
        try:
            async with self._session().post(
                    url, json=dict(body), timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
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

    async def _command(self, node: Node, host: HostInfo, path: str,
                       body: Mapping[str, Any]) -> dict[str, Any]:
        reply = await self._post(node, host, path, body, CONNECT_TIMEOUT)
        if reply.get("success") is False:
            raise ZError(HOST_CONNECT_FAILED, "cannot connect host",
                         f"the agent failed {path}: "
                         f"{reply.get('error') or 'it gave no reason'}")
        return reply

    async def connect(self, node: Node, host: HostInfo, known: HostFacts | None) -> HostFacts:
        await self._post(node, host, ECHO_PATH, {}, CONNECT_TIMEOUT, json_reply=False)
        await self._command(node, host, CONNECT_PATH, {
            "hostUuid": host.uuid,
            # Where the agent will send events; the route arrives with the agent's issue.
            "sendCommandUrl": f"{node.url}/zstack/asyncrest/sendcommand"})
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

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
            await asyncio.sleep(0)  # let the connector close its transports
