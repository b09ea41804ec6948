"""The network-service framework: providers and the services they give L3 networks.

A provider (``NetworkServiceProviderVO``: Flat, VirtualRouter, ...) offers service types
(DHCP, DNS, SNAT, EIP, ...). Providers are registered by the plugins that implement them,
with :func:`zplugins.network.public.register_network_service_provider` from their
``zcore_node_starting``; this plugin registers none.

``AttachNetworkServiceToL3Network`` takes ``networkServices``, a map from a provider (its
uuid or, as in ZStack, its type) to the service types it is to give the L3 network. An
unknown provider or a type it does not offer is ``SYS.1007``; a service type the L3
network already has (from any provider) is ``SYS.1006``: one provider per service type.
``DetachNetworkServiceFromL3Network`` removes the services named in ``networkServices``
(or every provider's ``service``); naming services the network does not have changes
nothing, as in ZStack.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore import ApiMessage, QueryExpansion, ResourceType
from zcore.api import ApiContext, APIMessage, Inventory, Param, QueryMessage
from zcore.errors import OPERATION_ERROR, ZError
from zplugins.network.common import get_row, invalid
from zplugins.network.l3 import SERVICE_REF_INVENTORY, inventory_of, service_ref_fields
from zplugins.network.models import (
    L3NetworkVO,
    NetworkServiceL3NetworkRefVO,
    NetworkServiceProviderVO,
    NetworkServiceTypeVO,
)

__all__ = [
    "AttachNetworkServiceToL3Network",
    "DetachNetworkServiceFromL3Network",
    "QueryNetworkServiceL3NetworkRef",
    "QueryNetworkServiceProvider",
    "provider_fields",
]

PROVIDER = "NetworkServiceProviderVO"
REF = "NetworkServiceL3NetworkRefVO"
PROVIDER_INVENTORY = "org.zstack.header.network.service.NetworkServiceProviderInventory"
L3_RESULT = {"inventory": "L3NetworkInventory"}


def provider_fields(row: NetworkServiceProviderVO) -> dict[str, Any]:
    """ZStack's NetworkServiceProviderInventory (providers attach to no L2 network yet)."""
    return {"uuid": row.uuid, "name": row.name, "description": row.description,
            "type": row.type, "networkServiceTypes": row.networkServiceTypes,
            "attachedL2NetworkUuids": [], "createDate": row.createDate,
            "lastOpDate": row.lastOpDate}


def _services(api: str, raw: dict[str, Any], *, required: bool) -> dict[str, list[str]]:
    """``networkServices`` as provider -> service types, each a non-empty list of names."""
    if required and not raw:
        raise invalid(api, "parameter 'networkServices' must not be empty: map a provider "
                           "(uuid or type) to the service types it is to give")
    services: dict[str, list[str]] = {}
    for provider, value in raw.items():
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise invalid(api, f"parameter 'networkServices': provider {provider!r} must map "
                               f"to a list of service types, not {value!r}")
        names = [i.strip() for i in items if i.strip()]
        if not names:
            raise invalid(api, f"parameter 'networkServices': give the service types of "
                               f"provider {provider!r}")
        services[str(provider)] = list(dict.fromkeys(names))
    return services


def _providers(session: Session, keys: list[str]) -> dict[str, NetworkServiceProviderVO]:
    """Providers by the uuid or type the caller named them with."""
    rows = session.scalars(select(NetworkServiceProviderVO).where(
        NetworkServiceProviderVO.uuid.in_(keys) | NetworkServiceProviderVO.type.in_(keys)))
    found: dict[str, NetworkServiceProviderVO] = {}
    for row in rows:
        for key in (row.uuid, row.type):
            if key in keys:
                found[key] = row
    return found


def _check_attach(session: Session, api: str, l3_uuid: str,
                  services: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The (provider uuid, service type) pairs to attach, all checked."""
    get_row(session, L3NetworkVO, "L3NetworkVO", l3_uuid)
    providers = _providers(session, list(services))
    pairs: list[tuple[str, str]] = []
    for key, types in services.items():
        provider = providers.get(key)
        if provider is None:
            known = ", ".join(f"{p.type} ({p.uuid})" for p in session.scalars(
                select(NetworkServiceProviderVO).order_by(NetworkServiceProviderVO.type)))
            raise invalid(api, f"parameter 'networkServices': no network service provider has "
                               f"the uuid or type {key!r}; providers: {known or 'none'}")
        offered = provider.networkServiceTypes
        missing = [t for t in types if t not in offered]
        if missing:
            raise invalid(api, f"network service provider {provider.type} ({provider.uuid}) "
                               f"does not provide {', '.join(missing)}; it provides "
                               f"{', '.join(offered) or 'nothing'}")
        pairs.extend((provider.uuid, t) for t in types)
    seen: dict[str, str] = {}
    for provider_uuid, service in pairs:
        if service in seen and seen[service] != provider_uuid:
            raise invalid(api, f"service {service} is asked of two providers ({seen[service]} "
                               f"and {provider_uuid}); an L3 network gets each service from "
                               "one provider")
        seen[service] = provider_uuid
    existing = set(session.scalars(select(NetworkServiceL3NetworkRefVO.networkServiceType)
                                   .where(NetworkServiceL3NetworkRefVO.l3NetworkUuid == l3_uuid)))
    for service in seen:
        if service in existing:
            raise _attached(api, l3_uuid, service)
    return list(dict.fromkeys(pairs))


def _attached(api: str, l3_uuid: str, service: str) -> ZError:
    return ZError(OPERATION_ERROR, "network service already attached",
                  f"{api}: L3 network {l3_uuid} already has the network service {service}; "
                  "detach it first to take it from another provider")


class AttachNetworkServiceToL3Network(APIMessage, method="POST",
                                      path="/l3-networks/{l3NetworkUuid}/network-services",
                                      resource_type="L3NetworkVO", result=L3_RESULT):
    """Give an L3 network services of providers: ``{"<provider>": ["DHCP", "DNS"]}``."""

    l3NetworkUuid = Param(str, required=True, resource_type="L3NetworkVO")
    networkServices = Param(dict, required=True,
                            description="Provider uuid (or type) -> list of service types")

    async def validate(self, ctx: ApiContext) -> None:
        services = _services(self.api_name, self.networkServices, required=True)
        await ctx.run(_check_attach, self.api_name, self.l3NetworkUuid, services)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        services = _services(self.api_name, self.networkServices, required=True)

        def attach(session: Session) -> Inventory:
            pairs = _check_attach(session, self.api_name, self.l3NetworkUuid, services)
            for provider_uuid, service in pairs:
                session.add(NetworkServiceL3NetworkRefVO(
                    l3NetworkUuid=self.l3NetworkUuid, networkServiceProviderUuid=provider_uuid,
                    networkServiceType=service))
            try:
                session.flush()
            except IntegrityError as exc:  # attached meanwhile by another call
                raise _attached(self.api_name, self.l3NetworkUuid,
                                ", ".join(s for _, s in pairs)) from exc
            return inventory_of(session, self.l3NetworkUuid)

        return {"inventory": await ctx.run(attach)}


class DetachNetworkServiceFromL3Network(APIMessage, method="DELETE",
                                        path="/l3-networks/{l3NetworkUuid}/network-services",
                                        resource_type="L3NetworkVO", result=L3_RESULT):
    """Take services from an L3 network: those in ``networkServices``, or ``service``."""

    l3NetworkUuid = Param(str, required=True, resource_type="L3NetworkVO")
    networkServices = Param(dict, description="Provider uuid (or type) -> list of service "
                                              "types (in a query string: "
                                              "networkServices.<provider>=DHCP,DNS)")
    service = Param(str, max_length=255, description="A service type, from any provider")

    async def validate(self, ctx: ApiContext) -> None:
        if not self.networkServices and not self.service:
            raise invalid(self.api_name, "give networkServices or service")
        _services(self.api_name, self.networkServices or {}, required=False)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        services = _services(self.api_name, self.networkServices or {}, required=False)

        def detach(session: Session) -> Inventory:
            get_row(session, L3NetworkVO, "L3NetworkVO", self.l3NetworkUuid)
            ref = NetworkServiceL3NetworkRefVO
            mine = ref.l3NetworkUuid == self.l3NetworkUuid
            providers = _providers(session, list(services))
            for key, types in services.items():
                provider = providers.get(key)
                if provider is not None:
                    session.execute(delete(ref).where(
                        mine, ref.networkServiceProviderUuid == provider.uuid,
                        ref.networkServiceType.in_(types)))
            if self.service:
                session.execute(delete(ref).where(mine, ref.networkServiceType == self.service))
            return inventory_of(session, self.l3NetworkUuid)

        return {"inventory": await ctx.run(detach)}


class QueryNetworkServiceProvider(QueryMessage, path="/network-services/providers",
                                  resource=PROVIDER):
    """Query network service providers."""


class QueryNetworkServiceL3NetworkRef(QueryMessage, path="/l3-networks/network-services/refs",
                                      resource=REF):
    """Query which provider gives which service to which L3 network."""


APIS: tuple[type[APIMessage], ...] = (
    AttachNetworkServiceToL3Network, DetachNetworkServiceFromL3Network,
    QueryNetworkServiceProvider, QueryNetworkServiceL3NetworkRef)


def resource_types() -> Iterator[ResourceType]:
    # Providers belong to the system: every account may see them.
    yield ResourceType(PROVIDER, model=NetworkServiceProviderVO, inventory=PROVIDER_INVENTORY,
                       to_inventory=provider_fields, owned_through=None,
                       description="A provider of network services, registered by a plugin")
    yield ResourceType("NetworkServiceTypeVO", model=NetworkServiceTypeVO, owned_through=None,
                       description="A service type a provider offers")
    yield ResourceType(REF, model=NetworkServiceL3NetworkRefVO, inventory=SERVICE_REF_INVENTORY,
                       to_inventory=service_ref_fields, owned_through="l3NetworkUuid",
                       description="A service of a provider enabled on an L3 network")


def query_expansions() -> Iterator[QueryExpansion]:
    yield QueryExpansion("L3NetworkVO", "networkServices", REF, foreign_key="l3NetworkUuid")
    yield QueryExpansion(REF, "l3Network", "L3NetworkVO", local_key="l3NetworkUuid")
    yield QueryExpansion(REF, "networkServiceProvider", PROVIDER,
                         local_key="networkServiceProviderUuid")
    yield QueryExpansion(PROVIDER, "networkServiceTypes", "NetworkServiceTypeVO",
                         foreign_key="networkServiceProviderUuid")


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)
