"""Hosts: added, connected, pinged, with CPU and memory capacity.

Resource ``HostVO`` (``org.zstack.header.host.HostInventory``; a hypervisor may answer with
its own class and extra fields, such as ZStack's ``KVMHostInventory``). A host belongs to a
cluster (``CascadeEdge("HostVO", "ClusterVO", field="clusterUuid")``) and so to its zone;
queries reach across: ``QueryHost cluster.zone.name=z1``, ``QueryCluster host.status=...``,
``QueryZone host.managementIp=...``.

APIs, as ZStack's: ``QueryHost``, ``UpdateHost``, ``ChangeHostState``, ``ReconnectHost``,
``DeleteHost``; each hypervisor plugin adds the API that adds its hosts by subclassing
:class:`AddHostMessage` (``AddKVMHost``, ``AddSimulatorHost``).

Adding a host writes it ``Enabled`` and ``Connecting``, then runs the chain ``host-connect``
(``connect-host`` → steps other plugins insert → ``mark-host-connected``). If any step fails,
the host is deleted again and the API fails with ``HOST.1000`` naming the step and the cause,
as in ZStack: a host is added connected or not at all. ``ReconnectHost`` runs the same chain;
if it fails the host is left ``Disconnected`` and the API fails. A host whose management IP
changes (``UpdateHost``) is reconnected at once.

``ChangeHostState``: ``enable`` and ``disable`` set ``Enabled`` / ``Disabled``; ``maintain``
passes through ``PreMaintenance`` (where VMs will be migrated or stopped, once there are VMs)
to ``Maintenance``. Only an ``Enabled`` and ``Connected`` host takes new VMs.

Global configuration (ZStack's names): ``host.ping.interval`` (seconds between pings, 60),
``host.ping.maxFailure`` (pings missed in a row before a host is ``Disconnected``, 3),
``host.ping.parallelismDegree`` (pings in flight at once, 100),
``host.cpu.overProvisioning.ratio`` (10) and ``host.reservedMemory`` (``1G``); see
:mod:`zplugins.compute.host_service` for how capacity follows them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore import (
    ApiMessage,
    CascadeEdge,
    FlowStep,
    GlobalConfigOption,
    QueryExpansion,
    ResourceType,
)
from zcore.api import ApiContext, APIMessage, Caller, Param, QueryMessage
from zcore.db import add_resource, delete_resource, new_uuid
from zcore.errors import INVALID_ARGUMENT, ZError
from zplugins.compute.common import DELETE_MODES, get_row, refuse_tag_uuids
from zplugins.compute.host_service import (
    CATEGORY,
    CONNECTING,
    CPU_RATIO,
    HOST_CONNECT_FAILED,
    HOSTS,
    PING_INTERVAL,
    PING_MAX_FAILURE,
    PING_PARALLELISM,
    RESERVED_MEMORY,
    ConnectHost,
    HostInfo,
    HostService,
    MarkHostConnected,
    host_event,
    parse_size,
    service,
)
from zplugins.compute.models import ClusterVO, HostVO, VmInstanceVO

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "AddHostMessage",
    "ChangeHostState",
    "DeleteHost",
    "QueryHost",
    "ReconnectHost",
    "UpdateHost",
    "host_inventory",
]

HOST = "HostVO"
INVENTORY = {"inventory": "HostInventory"}

#: ``stateEvent`` of ChangeHostState and the state each one leads to.
HOST_STATE_EVENTS = {"enable": "Enabled", "disable": "Disabled", "maintain": "Maintenance"}
PRE_MAINTENANCE = "PreMaintenance"

_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
                       r"(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


def host_inventory(host: HostVO) -> dict[str, Any]:
    """The fields of ZStack's HostInventory, in its order.

    There is no IPMI or hardware monitoring (yet): those fields are always null.
    """
    return {"zoneUuid": host.zoneUuid, "name": host.name, "uuid": host.uuid,
            "clusterUuid": host.clusterUuid, "description": host.description,
            "managementIp": host.managementIp, "hypervisorType": host.hypervisorType,
            "state": host.state, "status": host.status,
            "totalCpuCapacity": host.totalCpuCapacity,
            "availableCpuCapacity": host.availableCpuCapacity, "cpuSockets": host.cpuSockets,
            "totalMemoryCapacity": host.totalMemoryCapacity,
            "availableMemoryCapacity": host.availableMemoryCapacity, "cpuNum": host.cpuNum,
            "ipmiAddress": None, "ipmiUsername": None, "ipmiPort": None,
            "ipmiPowerStatus": None, "cpuStatus": None, "memoryStatus": None,
            "diskStatus": None, "nicStatus": None, "gpuStatus": None,
            "powerSupplyStatus": None, "fanStatus": None, "raidStatus": None,
            "temperatureStatus": None, "architecture": host.architecture,
            "createDate": host.createDate, "lastOpDate": host.lastOpDate}


def check_management_ip(api: str, value: str) -> str:
    """An IPv4 or IPv6 address or a host name, as ZStack accepts; else ``SYS.1007``."""
    text = value.strip()
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if _HOSTNAME.match(text) and not re.fullmatch(r"[\d.]+", text):
        return text
    raise ZError(INVALID_ARGUMENT, "invalid argument",
                 f"parameter 'managementIp' of {api}: {value!r} is neither an IP address nor "
                 "a host name")


def _ip_taken(session: Session, ip: str, other_than: str | None = None) -> HostVO | None:
    query = select(HostVO).where(HostVO.managementIp == ip)
    if other_than is not None:
        query = query.where(HostVO.uuid != other_than)
    return session.scalars(query).first()


def _refuse_taken_ip(api: str, taken: HostVO | None, ip: str) -> None:
    if taken is not None:
        raise ZError(INVALID_ARGUMENT, "invalid argument",
                     f"parameter 'managementIp' of {api}: host '{taken.name}' ({taken.uuid}) "
                     f"already has management IP {ip}; a host is added once")


def _get(session: Session, uuid: str) -> HostVO:
    return get_row(session, HostVO, HOST, uuid)


async def _reply(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    row = await ctx.run(_get, uuid)
    inventory = ctx.inventory(HOST, row)
    return {"inventory": (await service(ctx.node).inventories([inventory]))[0]}


# --------------------------------------------------------------------------- adding hosts


class AddHostMessage(APIMessage):
    """The base of the APIs that add hosts of one hypervisor (``AddKVMHost``).

    A subclass names its route in the class statement (``path="/hosts/kvm"``), sets
    ``hypervisor_type`` and declares its own parameters. It may override
    :meth:`persist_details` (write hypervisor-specific rows in the transaction that writes
    the host), :meth:`prepare` (before the host is connected) and :meth:`forget` (the host
    could not be added: undo :meth:`prepare`). The rest is common: the cluster must exist,
    be visible to the caller and be of ``hypervisor_type``; the management IP must be an
    address or a host name no other host has; then the host is written and connected.
    """

    hypervisor_type: ClassVar[str] = ""

    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    managementIp = Param(str, required=True, non_empty=True,
                         description="An IP address or host name that no other host has")
    clusterUuid = Param(str, required=True, resource_type="ClusterVO")
    resourceUuid = Param(str, description="The uuid the new host gets (32 lower-case hex "
                                          "digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        kwargs.setdefault("method", "POST")
        kwargs.setdefault("resource_type", HOST)
        kwargs.setdefault("result", INVENTORY)
        super().__init_subclass__(**kwargs)

    def persist_details(self, session: Session, host_uuid: str) -> None:
        """Write hypervisor-specific rows of the new host (same transaction). Default: none."""

    async def prepare(self, ctx: ApiContext, host_uuid: str) -> None:
        """Called once the host is written, before it is connected. Default: nothing."""

    async def forget(self, ctx: ApiContext, host_uuid: str) -> None:
        """The host could not be added and was deleted again. Default: nothing."""

    async def validate(self, ctx: ApiContext) -> None:
        refuse_tag_uuids(self.api_name, self.tagUuids)
        ip = check_management_ip(self.api_name, self.managementIp)

        def look(session: Session) -> tuple[ClusterVO, HostVO | None]:
            return get_row(session, ClusterVO, "ClusterVO", self.clusterUuid), \
                _ip_taken(session, ip)

        cluster, taken = await ctx.run(look)
        if cluster.hypervisorType != self.hypervisor_type:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'clusterUuid' of {self.api_name}: cluster "
                         f"'{cluster.name}' ({cluster.uuid}) is for {cluster.hypervisorType} "
                         f"hosts; {self.api_name} adds {self.hypervisor_type} hosts, which "
                         f"need a cluster of hypervisorType {self.hypervisor_type}")
        _refuse_taken_ip(self.api_name, taken, ip)
        service(ctx.node).driver(self.hypervisor_type)  # available and complete

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        hosts = service(ctx.node)
        uuid = self.resourceUuid or new_uuid()
        info = await ctx.run(self._insert, uuid, ctx)
        try:
            await self.prepare(ctx, uuid)
            await hosts.connect(uuid)
        except BaseException as exc:
            # Nothing of a host that could not be connected stays, even when cancelled.
            await asyncio.shield(self._undo(ctx, hosts, info))
            if not isinstance(exc, ZError):
                raise
            cause = exc.cause if exc.code == HOST_CONNECT_FAILED and exc.cause else exc
            raise ZError(HOST_CONNECT_FAILED, "cannot add host",
                         f"{exc.details or exc.description}; the host was not added",
                         cause=cause) from exc
        return await _reply(ctx, uuid)

    async def _undo(self, ctx: ApiContext, hosts: HostService, info: HostInfo) -> None:
        await ctx.run(_delete_host_rows, info.uuid)
        await hosts.forget(info)
        await self.forget(ctx, info.uuid)

    def _insert(self, session: Session, uuid: str, ctx: ApiContext) -> HostInfo:
        ip = check_management_ip(self.api_name, self.managementIp)
        cluster = get_row(session, ClusterVO, "ClusterVO", self.clusterUuid)
        _refuse_taken_ip(self.api_name, _ip_taken(session, ip), ip)
        host = HostVO(uuid=uuid, name=self.name, description=self.description,
                      zoneUuid=cluster.zoneUuid, clusterUuid=cluster.uuid, managementIp=ip,
                      hypervisorType=self.hypervisor_type, state="Enabled", status=CONNECTING,
                      totalCpuCapacity=0, availableCpuCapacity=0, totalMemoryCapacity=0,
                      availableMemoryCapacity=0, reservedMemoryCapacity=0)
        add_resource(session, host, HOST, owner_account_uuid=ctx.owner)
        try:
            session.flush()
        except IntegrityError as exc:  # the same IP, added at the same moment
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'managementIp' of {self.api_name}: another host with "
                         f"management IP {ip} was added meanwhile") from exc
        self.persist_details(session, uuid)
        ctx.add_tags(session, uuid, HOST)
        session.flush()
        return HostInfo.of(host)


def _delete_host_rows(session: Session, uuid: str) -> None:
    row = session.get(HostVO, uuid)
    if row is None:
        return
    # Its VMs outlive it, Stopped and on no host: they can start on another host that
    # reaches their storage, or be destroyed.
    session.execute(update(VmInstanceVO).where(VmInstanceVO.hostUuid == uuid).values(
        state="Stopped", hostUuid=None).execution_options(synchronize_session=False))
    session.execute(update(VmInstanceVO).where(VmInstanceVO.lastHostUuid == uuid).values(
        lastHostUuid=None).execution_options(synchronize_session=False))
    delete_resource(session, row)


async def _host_deleted(node: Node, host: HostInfo) -> None:
    await service(node).forget(host)
    # GC jobs waiting for the host see it gone and finish.
    node.spawn(node.gc.trigger(host_event(host.uuid)), name=f"gc-host-{host.uuid}")


async def _delete_host(node: Node, caller: Caller, uuid: str, mode: str) -> None:
    """How the cascade deletes a host: its rows, then its driver forgets it."""
    row = await node.db.run(lambda s: s.get(HostVO, uuid))
    if row is None:
        return

    async def delete() -> None:
        await node.db.run(_delete_host_rows, uuid)
        await _host_deleted(node, HostInfo.of(row))

    await node.queues.run(f"host-{uuid}", 1, delete)


# --------------------------------------------------------------------------- the other APIs


class QueryHost(QueryMessage, path="/hosts", resource=HOST):
    """Query hosts; ``cluster.<field>`` and ``zone.<field>`` reach their cluster and zone.

    Each host answers with its hypervisor's inventory (``KVMHostInventory`` for KVM hosts)
    unless ``fields`` asks for some fields only.
    """

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        body = await ctx.node.api.query(ctx, self)
        inventories = body.get("inventories")
        if inventories and not self.fields:
            body["inventories"] = await service(ctx.node).inventories(inventories)
        return body


class UpdateHost(APIMessage, method="PUT", path="/hosts/{uuid}/actions", resource_type=HOST,
                 result=INVENTORY):
    """Change a host's name, description or management IP; only the parameters given.

    A new management IP must be an address or host name no other host has; the host is
    reconnected at its new address (if that fails, it is left ``Disconnected`` and the call
    still succeeds: the address is what the administrator said).
    """

    uuid = Param(str, required=True, resource_type=HOST)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)
    managementIp = Param(str, max_length=255, non_empty=True)

    async def validate(self, ctx: ApiContext) -> None:
        if self.managementIp is not None:
            ip = check_management_ip(self.api_name, self.managementIp)
            _refuse_taken_ip(self.api_name, await ctx.run(_ip_taken, ip, self.uuid), ip)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        hosts = service(ctx.node)

        def change(session: Session) -> bool:
            host = _get(session, self.uuid)
            if self.name is not None:
                host.name = self.name
            if self.description is not None:
                host.description = self.description
            moved = False
            if self.managementIp is not None:
                ip = check_management_ip(self.api_name, self.managementIp)
                moved = ip != host.managementIp
                _refuse_taken_ip(self.api_name, _ip_taken(session, ip, self.uuid), ip)
                host.managementIp = ip
            try:
                session.flush()
            except IntegrityError as exc:
                raise ZError(INVALID_ARGUMENT, "invalid argument",
                             f"parameter 'managementIp' of {self.api_name}: another host "
                             f"took management IP {self.managementIp} meanwhile") from exc
            return moved

        async def update() -> None:
            if await ctx.run(change):
                try:
                    await hosts.connect_now(self.uuid)
                except ZError:
                    pass  # the host is Disconnected; its status says so

        await ctx.node.queues.run(f"host-{self.uuid}", 1, update)
        return await _reply(ctx, self.uuid)


class ChangeHostState(APIMessage, method="PUT", path="/hosts/{uuid}/actions",
                      resource_type=HOST, result=INVENTORY):
    """``enable`` → ``Enabled``, ``disable`` → ``Disabled``, ``maintain`` → ``Maintenance``
    (through ``PreMaintenance``; there are no VMs to migrate yet). Only an ``Enabled`` host
    takes new VMs."""

    uuid = Param(str, required=True, resource_type=HOST)
    stateEvent = Param(str, required=True, valid_values=tuple(HOST_STATE_EVENTS))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        target = HOST_STATE_EVENTS[self.stateEvent]

        def set_state(session: Session, state: str) -> None:
            _get(session, self.uuid).state = state

        async def change() -> None:
            if self.stateEvent == "maintain":
                # VMs will be migrated or stopped here, with the host marked PreMaintenance
                # so that no new VM lands on it meanwhile.
                await ctx.run(set_state, PRE_MAINTENANCE)
            await ctx.run(set_state, target)

        await ctx.node.queues.run(f"host-{self.uuid}", 1, change)
        return await _reply(ctx, self.uuid)


class ReconnectHost(APIMessage, method="PUT", path="/hosts/{uuid}/actions",
                    resource_type=HOST, result=INVENTORY):
    """Connect a host again (chain ``host-connect``): its capacity is read anew and every
    plugin prepares it again. Fails with ``HOST.1000`` (the host is then ``Disconnected``)."""

    uuid = Param(str, required=True, resource_type=HOST)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await service(ctx.node).connect(self.uuid)
        return await _reply(ctx, self.uuid)


class DeleteHost(APIMessage, method="DELETE", path="/hosts/{uuid}", resource_type=HOST,
                 result={}):
    """Delete a host (and, through the cascade plugin, what belongs to it)."""

    uuid = Param(str, required=True, resource_type=HOST)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        async def delete() -> None:
            row = await ctx.run(lambda s: s.get(HostVO, self.uuid))
            if row is None:
                return
            await ctx.delete(HOST, self.uuid, self.deleteMode, _delete_host_rows)
            await _host_deleted(ctx.node, HostInfo.of(row))

        await ctx.node.queues.run(f"host-{self.uuid}", 1, delete)
        return {}


APIS: tuple[type[APIMessage], ...] = (QueryHost, UpdateHost, ChangeHostState, ReconnectHost,
                                      DeleteHost)


# --------------------------------------------------------------------------- the plugin's hooks


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(HOST, model=HostVO, inventory="org.zstack.header.host.HostInventory",
                       description="A physical host in a cluster, run by a hypervisor",
                       to_inventory=host_inventory, columns_only=True, delete=_delete_host,
                       hidden=("reservedMemoryCapacity",))


def cascade_edges() -> Iterator[CascadeEdge]:
    yield CascadeEdge(HOST, "ClusterVO", field="clusterUuid")


def query_expansions() -> Iterator[QueryExpansion]:
    yield QueryExpansion(HOST, "cluster", "ClusterVO", local_key="clusterUuid")
    yield QueryExpansion(HOST, "zone", "ZoneVO", local_key="zoneUuid")
    yield QueryExpansion("ClusterVO", "host", HOST, foreign_key="clusterUuid")
    yield QueryExpansion("ZoneVO", "host", HOST, foreign_key="zoneUuid")


def _size(value: str) -> None:
    parse_size(value)


def global_configs() -> Iterator[GlobalConfigOption]:
    yield GlobalConfigOption(CATEGORY, PING_INTERVAL, int, 60,
                             "Seconds between two pings of each host", min=1, max=86400)
    yield GlobalConfigOption(CATEGORY, PING_MAX_FAILURE, int, 3,
                             "Pings a connected host may miss in a row before it is marked "
                             "Disconnected", min=1, max=1000)
    yield GlobalConfigOption(CATEGORY, PING_PARALLELISM, int, 100,
                             "Hosts a node pings at the same time", min=1, max=10000)
    yield GlobalConfigOption(CATEGORY, CPU_RATIO, int, 10,
                             "CPU over-provisioning: a host's totalCpuCapacity is its cpuNum "
                             "times this", min=1, max=1000)
    yield GlobalConfigOption(CATEGORY, RESERVED_MEMORY, str, "1G",
                             "Memory of each host kept for the host itself (bytes, or with K, "
                             "M, G, T), not available to VMs", validator=_size)


def flow_steps() -> Iterator[FlowStep]:
    yield FlowStep("connect-host", ConnectHost())
    yield FlowStep("mark-host-connected", MarkHostConnected())


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)


async def node_starting(node: Node) -> None:
    hosts = HostService(node)
    node.app[HOSTS] = hosts
    await hosts.start()


async def node_stopping(node: Node) -> None:
    hosts = node.app.get(HOSTS)
    if hosts is not None:
        await hosts.close()
