"""What other plugins may use of the network plugin.

Registering a network service provider (the plugin that implements Flat or VirtualRouter
networking calls this from its ``zcore_node_starting``)::

    from zplugins.network.public import register_network_service_provider

    @hookimpl
    async def zcore_node_starting(node):
        await register_network_service_provider(
            node, type="Flat", name="Flat Network Service Provider",
            service_types=["DHCP", "DNS", "Userdata"])

Bridge names, for the plugins that plug VM NICs into L2 networks: :func:`bridge_name`.

A provider that does something on hosts for the VMs' NICs (DHCP entries, ...) also
registers a backend (:class:`NetworkServiceBackend`), from the same hook::

        register_network_service_backend(node, "Flat", FlatBackend())

The VM chains then call ``apply(node, host, nics)`` when a VM is created or started on
``host`` and ``release(node, host, nics)`` when it stops or is destroyed, with the NICs
(``NicTO``) on L3 networks that have a service of that provider. A failing ``apply`` fails
(and rolls back) the operation.

Anything else in ``zplugins.network`` is private to it.
"""

from __future__ import annotations

import uuid as _uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore.db import add_resource
from zcore.errors import INVALID_ARGUMENT, ZError

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = [
    "NetworkServiceBackend",
    "bridge_name",
    "network_service_backends",
    "provider_uuid",
    "register_network_service_backend",
    "register_network_service_provider",
]

_PROVIDERS = _uuid.UUID("5f0c1f5e-2d9a-4b1e-9a57-7d3c2f6e0a11")


def provider_uuid(provider_type: str) -> str:
    """The uuid of the provider of type ``provider_type``: the same on every node."""
    return _uuid.uuid5(_PROVIDERS, provider_type).hex


def bridge_name(physical_interface: str, vlan: int | None = None) -> str:
    """The Linux bridge of an L2 network on its hosts: ``br_eth0``, ``br_eth0_100``."""
    return f"br_{physical_interface}" if not vlan else f"br_{physical_interface}_{vlan}"


async def register_network_service_provider(
    node: Node, *, type: str, name: str, service_types: Iterable[str],
    description: str | None = None,
) -> str:
    """Make the provider of type ``type`` exist with these service types; its uuid.

    Call it when the node starts, every time: the provider's row is created the first time
    and brought up to date afterwards (name, description, service types), so several nodes
    may register the same provider at once. Service types no longer offered are removed
    from the provider (L3 networks that use them keep them until detached). ``type`` is
    the provider's stable name (``Flat``, ``VirtualRouter``), by which callers of
    AttachNetworkServiceToL3Network may name it instead of its uuid.
    """
    types = list(dict.fromkeys(service_types))
    if not type or not name or not types or not all(isinstance(t, str) and t for t in types):
        raise ZError(INVALID_ARGUMENT, "invalid network service provider",
                     f"provider {type!r} needs a type, a name and at least one service type; "
                     f"got name {name!r} and service types {types!r}")
    uuid = provider_uuid(type)

    def upsert(session: Session) -> None:
        from zplugins.network.models import NetworkServiceProviderVO, NetworkServiceTypeVO

        row = session.get(NetworkServiceProviderVO, uuid)
        if row is None:
            row = NetworkServiceProviderVO(uuid=uuid, type=type, name=name,
                                           description=description)
            add_resource(session, row, "NetworkServiceProviderVO")
        else:
            row.name = name
            row.description = description
        session.flush()
        have = set(session.scalars(select(NetworkServiceTypeVO.type).where(
            NetworkServiceTypeVO.networkServiceProviderUuid == uuid)))
        session.execute(delete(NetworkServiceTypeVO).where(
            NetworkServiceTypeVO.networkServiceProviderUuid == uuid,
            NetworkServiceTypeVO.type.not_in(types)))
        for service in types:
            if service not in have:
                session.add(NetworkServiceTypeVO(networkServiceProviderUuid=uuid, type=service))
        session.flush()

    for attempt in range(3):
        try:
            await node.db.run(upsert)
            break
        except (IntegrityError, ZError):
            if attempt == 2:  # another node kept winning the race; it registered it then
                raise
    return uuid


class NetworkServiceBackend(Protocol):
    """What a network service provider does on a host for VM NICs (see the module doc).

    ``host`` is a ``zplugins.compute.public.HostInfo`` (``None`` when the VM has no host,
    e.g. destroying a VM that never started), ``nics`` the ``NicTO`` of the VM whose L3
    networks use this provider. ``release`` must tolerate NICs never applied.
    """

    async def apply(self, node: Node, host: Any, nics: list[Any]) -> None: ...

    async def release(self, node: Node, host: Any, nics: list[Any]) -> None: ...


_BACKENDS: web.AppKey[dict[str, NetworkServiceBackend]] = web.AppKey(
    "zplugins.network.service_backends")


def network_service_backends(node: Node) -> dict[str, NetworkServiceBackend]:
    """The node's backends by provider type (created empty on first use)."""
    found = node.app.get(_BACKENDS)
    if found is None:
        found = {}
        node.app[_BACKENDS] = found
    return found


def register_network_service_backend(node: Node, provider_type: str,
                                     backend: NetworkServiceBackend) -> None:
    """Have ``backend`` called for the NICs on L3 networks served by ``provider_type``."""
    network_service_backends(node)[provider_type] = backend
