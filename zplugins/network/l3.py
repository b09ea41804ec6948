"""L3 networks and their DNS servers.

``CreateL3Network`` runs the chain ``l3-network-create`` (step ``persist-l3-network``,
context ``api`` and ``l3_spec``, provides ``l3_network``). An L3 network sits on an L2
network and is in its zone; only ``L3BasicNetwork`` and IPv4 are supported so far. As in
ZStack, ``system`` and ``category`` combine only as (false, Public), (false, Private),
(true, Public) and (true, System).

The inventory lists the network's DNS servers (in the order they were added), its IP ranges
and its network services as ZStack's L3NetworkInventory does; ``hostRoute`` and
``reservedIpRanges`` are empty lists until those features arrive.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore import ApiMessage, CascadeEdge, FlowStep, QueryExpansion, ResourceType
from zcore.api import ApiContext, APIMessage, Inventory, Param, QueryMessage
from zcore.db import add_resource
from zcore.errors import OPERATION_ERROR, ZError
from zplugins.network.common import (
    DELETE_MODES,
    PersistStep,
    delete_rows,
    get_row,
    invalid,
    refuse_tag_uuids,
)
from zplugins.network.models import L2NetworkVO, L3NetworkDnsVO, L3NetworkVO

__all__ = [
    "AddDnsToL3Network",
    "ChangeL3NetworkState",
    "CreateL3Network",
    "DeleteL3Network",
    "L3Spec",
    "QueryL3Network",
    "RemoveDnsFromL3Network",
    "UpdateL3Network",
    "l3_fields",
]

L3 = "L3NetworkVO"
L3_INVENTORY = "org.zstack.header.network.l3.L3NetworkInventory"
IP_RANGE_INVENTORY = "org.zstack.header.network.l3.IpRangeInventory"
SERVICE_REF_INVENTORY = "org.zstack.header.network.service.NetworkServiceL3NetworkRefInventory"
RESULT = {"inventory": "L3NetworkInventory"}

L3_TYPES = ("L3BasicNetwork",)
CATEGORIES = ("Public", "Private", "System")
#: (system, category) pairs ZStack accepts.
VALID_COMBINATIONS = ((False, "Public"), (False, "Private"), (True, "Public"), (True, "System"))
STATE_EVENTS = {"enable": "Enabled", "disable": "Disabled"}

_DOMAIN_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


# --------------------------------------------------------------------------- inventories


def ip_range_fields(row: Any) -> dict[str, Any]:
    """ZStack's IpRangeInventory."""
    return {"uuid": row.uuid, "l3NetworkUuid": row.l3NetworkUuid, "name": row.name,
            "description": row.description, "startIp": row.startIp, "endIp": row.endIp,
            "netmask": row.netmask, "gateway": row.gateway, "networkCidr": row.networkCidr,
            "ipVersion": row.ipVersion, "prefixLen": row.prefixLen,
            "addressMode": row.addressMode, "ipRangeType": row.ipRangeType,
            "createDate": row.createDate, "lastOpDate": row.lastOpDate}


def service_ref_fields(row: Any) -> dict[str, Any]:
    """ZStack's NetworkServiceL3NetworkRefInventory."""
    return {"l3NetworkUuid": row.l3NetworkUuid,
            "networkServiceProviderUuid": row.networkServiceProviderUuid,
            "networkServiceType": row.networkServiceType}


def l3_fields(row: L3NetworkVO) -> dict[str, Any]:
    """ZStack's L3NetworkInventory, with its IP ranges and services as nested inventories."""
    return {
        "uuid": row.uuid, "name": row.name, "description": row.description, "type": row.type,
        "zoneUuid": row.zoneUuid, "l2NetworkUuid": row.l2NetworkUuid, "state": row.state,
        "system": row.system, "category": row.category, "ipVersion": row.ipVersion,
        "dnsDomain": row.dnsDomain, "enableIPAM": row.enableIPAM, "isolated": row.isolated,
        "dns": [d.dns for d in row.dnsRows],
        "ipRanges": [Inventory(IP_RANGE_INVENTORY, ip_range_fields(r)) for r in row.ipRanges],
        "networkServices": [Inventory(SERVICE_REF_INVENTORY, service_ref_fields(s))
                            for s in row.networkServiceRefs],
        "hostRoute": [], "reservedIpRanges": [],
        "createDate": row.createDate, "lastOpDate": row.lastOpDate,
    }


def l3_inventory(row: L3NetworkVO) -> Inventory:
    return Inventory(L3_INVENTORY, l3_fields(row))


def inventory_of(session: Session, uuid: str) -> Inventory:
    """The inventory of L3 network ``uuid``, read in ``session``."""
    row = get_row(session, L3NetworkVO, L3, uuid)
    session.refresh(row)  # its DNS, ranges and services as they are now
    return l3_inventory(row)


# --------------------------------------------------------------------------- creation


@dataclass(frozen=True, slots=True)
class L3Spec:
    """What CreateL3Network asked for."""

    l2_network_uuid: str
    name: str
    description: str | None = None
    type: str = "L3BasicNetwork"
    category: str = "Private"
    system: bool = False
    dns_domain: str | None = None
    enable_ipam: bool = True
    uuid: str | None = None


def _insert_l3(session: Session, spec: L3Spec, api: ApiContext) -> L3NetworkVO:
    l2 = get_row(session, L2NetworkVO, "L2NetworkVO", spec.l2_network_uuid)
    row = L3NetworkVO(zoneUuid=l2.zoneUuid, l2NetworkUuid=l2.uuid, name=spec.name,
                      description=spec.description, type=spec.type, state="Enabled",
                      category=spec.category, system=spec.system, dnsDomain=spec.dns_domain,
                      ipVersion=4, enableIPAM=spec.enable_ipam, isolated=False)
    if spec.uuid is not None:
        row.uuid = spec.uuid
    add_resource(session, row, L3, owner_account_uuid=api.owner)
    session.flush()
    api.add_tags(session, row.uuid, L3)
    return row


class PersistL3Network(PersistStep):
    """Write the L3 network, its resource row and the call's tags in one transaction."""

    requires = ("api", "l3_spec")
    provides = ("l3_network",)
    model = L3NetworkVO
    insert = staticmethod(_insert_l3)


def _check_domain(api: str, value: str) -> None:
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or len(labels) < 2 or not all(_DOMAIN_LABEL.match(p) for p in labels) \
            or labels[-1].isdigit():
        raise invalid(api, f"parameter 'dnsDomain': {value!r} is not a valid domain name")


def _check_combination(api: str, system: bool, category: str) -> None:
    if (system, category) not in VALID_COMBINATIONS:
        shown = ", ".join(f"system={str(s).lower()} with category={c}"
                          for s, c in VALID_COMBINATIONS)
        raise invalid(api, f"system={str(system).lower()} and category={category} do not go "
                           f"together; valid are {shown}")


class CreateL3Network(APIMessage, method="POST", path="/l3-networks", resource_type=L3,
                      result=RESULT):
    """Create an L3 network on an L2 network, ``Enabled``, in the L2 network's zone."""

    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    type = Param(str, default="L3BasicNetwork", description="Only L3BasicNetwork so far")
    l2NetworkUuid = Param(str, required=True, resource_type="L2NetworkVO")
    category = Param(str, default="Private", valid_values=CATEGORIES)
    ipVersion = Param(int, valid_values=(4, 6), description="Only 4 is supported so far")
    system = Param(bool, default=False)
    dnsDomain = Param(str, max_length=255)
    enableIPAM = Param(bool, default=True)
    resourceUuid = Param(str, description="The uuid the new network gets (32 lower-case hex "
                                          "digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    async def validate(self, ctx: ApiContext) -> None:
        refuse_tag_uuids(self.api_name, self.tagUuids)
        if self.type not in L3_TYPES:
            raise invalid(self.api_name, f"parameter 'type': unsupported L3 network type "
                                         f"{self.type!r}; supported: {', '.join(L3_TYPES)}")
        if self.ipVersion not in (None, 4):
            raise invalid(self.api_name, "parameter 'ipVersion': IPv6 L3 networks are not "
                                         "supported yet; use 4")
        if self.dnsDomain is not None:
            _check_domain(self.api_name, self.dnsDomain)
        _check_combination(self.api_name, bool(self.system), self.category)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        spec = L3Spec(self.l2NetworkUuid, self.name, self.description, self.type,
                      self.category, bool(self.system), self.dnsDomain, bool(self.enableIPAM),
                      self.resourceUuid)
        flow = await ctx.node.run_flow("l3-network-create", {"api": ctx, "l3_spec": spec})
        return {"inventory": await ctx.run(inventory_of, flow["l3_network"].uuid)}


class UpdateL3Network(APIMessage, method="PUT", path="/l3-networks/{uuid}/actions",
                      resource_type=L3, result=RESULT):
    """Change an L3 network's name, description, DNS domain, category or system mark."""

    uuid = Param(str, required=True, resource_type=L3)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)
    dnsDomain = Param(str, max_length=255)
    category = Param(str, valid_values=CATEGORIES)
    system = Param(bool)

    async def validate(self, ctx: ApiContext) -> None:
        if self.dnsDomain is not None:
            _check_domain(self.api_name, self.dnsDomain)
        if self.category is None and self.system is None:
            return
        row = await ctx.run(get_row, L3NetworkVO, L3, self.uuid)
        if self.system is not None and self.category is None and self.system != row.system:
            raise invalid(self.api_name, "give 'category' together with 'system': changing "
                                         "whether a network is a system one changes which "
                                         "categories it may have")
        _check_combination(self.api_name,
                           row.system if self.system is None else self.system,
                           self.category or row.category)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> Inventory:
            row = get_row(session, L3NetworkVO, L3, self.uuid)
            for key in ("name", "description", "dnsDomain", "category", "system"):
                value = getattr(self, key)
                if value is not None:
                    setattr(row, key, value)
            session.flush()
            return inventory_of(session, self.uuid)

        return {"inventory": await ctx.run(change)}


class ChangeL3NetworkState(APIMessage, method="PUT", path="/l3-networks/{uuid}/actions",
                           resource_type=L3, result=RESULT):
    """``enable`` makes an L3 network ``Enabled``, ``disable`` makes it ``Disabled``."""

    uuid = Param(str, required=True, resource_type=L3)
    stateEvent = Param(str, required=True, valid_values=tuple(STATE_EVENTS))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> Inventory:
            row = get_row(session, L3NetworkVO, L3, self.uuid)
            row.state = STATE_EVENTS[self.stateEvent]
            session.flush()
            return inventory_of(session, self.uuid)

        return {"inventory": await ctx.run(change)}


class DeleteL3Network(APIMessage, method="DELETE", path="/l3-networks/{uuid}",
                      resource_type=L3, result={}):
    """Delete an L3 network; its IP ranges go first through the cascade plugin, its DNS
    servers, service attachments and used IPs with it."""

    uuid = Param(str, required=True, resource_type=L3)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ctx.delete(L3, self.uuid, self.deleteMode, delete_rows(L3NetworkVO, L3))
        return {}


class QueryL3Network(QueryMessage, path="/l3-networks", resource=L3):
    """Query L3 networks; ``l2Network.``, ``zone.``, ``ipRanges.`` and ``networkServices.``
    reach related fields (``l2Network.cluster.uuid=...``: the networks of a cluster)."""


# --------------------------------------------------------------------------- DNS


def _dns_address(api: str, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise invalid(api, f"parameter 'dns': {value!r} is not an IP address") from None


def _dns_taken(api: str, l3_uuid: str, dns: str) -> ZError:
    return ZError(OPERATION_ERROR, "DNS already added",
                  f"{api}: L3 network {l3_uuid} already has the DNS server {dns}")


class AddDnsToL3Network(APIMessage, method="POST", path="/l3-networks/{l3NetworkUuid}/dns",
                        resource_type=L3, result=RESULT):
    """Add a DNS server (an IPv4 or IPv6 address) to an L3 network, after the others."""

    l3NetworkUuid = Param(str, required=True, resource_type=L3)
    dns = Param(str, required=True, max_length=255)

    async def validate(self, ctx: ApiContext) -> None:
        dns = _dns_address(self.api_name, self.dns)

        def taken(session: Session) -> bool:
            return session.scalar(select(L3NetworkDnsVO.id).where(
                L3NetworkDnsVO.l3NetworkUuid == self.l3NetworkUuid,
                L3NetworkDnsVO.dns == dns)) is not None

        if await ctx.run(taken):
            raise _dns_taken(self.api_name, self.l3NetworkUuid, dns)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        dns = _dns_address(self.api_name, self.dns)

        def add(session: Session) -> Inventory:
            get_row(session, L3NetworkVO, L3, self.l3NetworkUuid)
            session.add(L3NetworkDnsVO(l3NetworkUuid=self.l3NetworkUuid, dns=dns))
            try:
                session.flush()
            except IntegrityError as exc:
                raise _dns_taken(self.api_name, self.l3NetworkUuid, dns) from exc
            return inventory_of(session, self.l3NetworkUuid)

        return {"inventory": await ctx.run(add)}


class RemoveDnsFromL3Network(APIMessage, method="DELETE",
                             path="/l3-networks/{l3NetworkUuid}/dns/{dns}", resource_type=L3,
                             result=RESULT):
    """Remove a DNS server from an L3 network; removing one it does not have changes
    nothing, as in ZStack."""

    l3NetworkUuid = Param(str, required=True, resource_type=L3)
    dns = Param(str, required=True, max_length=255)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        try:
            dns = str(ipaddress.ip_address(self.dns.strip()))
        except ValueError:
            dns = self.dns

        def remove(session: Session) -> Inventory:
            session.execute(delete(L3NetworkDnsVO).where(
                L3NetworkDnsVO.l3NetworkUuid == self.l3NetworkUuid, L3NetworkDnsVO.dns == dns))
            return inventory_of(session, self.l3NetworkUuid)

        return {"inventory": await ctx.run(remove)}


APIS: tuple[type[APIMessage], ...] = (
    CreateL3Network, UpdateL3Network, ChangeL3NetworkState, DeleteL3Network, QueryL3Network,
    AddDnsToL3Network, RemoveDnsFromL3Network)


# --------------------------------------------------------------------------- registration


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(L3, model=L3NetworkVO, inventory=L3_INVENTORY, to_inventory=l3_fields,
                       description="An L3 network on an L2 network: IP ranges, DNS, services")


def cascade_edges() -> Iterator[CascadeEdge]:
    yield CascadeEdge(L3, "L2NetworkVO", field="l2NetworkUuid")
    yield CascadeEdge(L3, "ZoneVO", field="zoneUuid")


def query_expansions() -> Iterator[QueryExpansion]:
    yield QueryExpansion(L3, "zone", "ZoneVO", local_key="zoneUuid")
    yield QueryExpansion(L3, "l2Network", "L2NetworkVO", local_key="l2NetworkUuid")
    yield QueryExpansion("L2NetworkVO", "l3Network", L3, foreign_key="l2NetworkUuid")
    yield QueryExpansion("L2VlanNetworkVO", "l3Network", L3, foreign_key="l2NetworkUuid")
    yield QueryExpansion("ClusterL2NetworkVO", "l3Network", L3, foreign_key="l2NetworkUuid")
    yield QueryExpansion("ZoneVO", "l3Network", L3, foreign_key="zoneUuid")


def flow_steps() -> Iterator[FlowStep]:
    yield FlowStep("persist-l3-network", PersistL3Network())


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)
