"""Network: L2 and L3 networks, IP ranges and DNS, and the network-service framework.

An essential plugin. Each family lives in its own module, contributing to the hooks below:
``l2`` (L2 networks, attached to clusters, their bridges on the hosts), ``l3`` (L3 networks
and their DNS servers), ``ip_ranges`` (IP ranges, free IPs, IP capacity), ``services``
(network service providers and the services they give L3 networks), ``ip_allocators`` (IP
allocator strategies, drivers in ``zcore.ip_allocators``; global configuration
``l3.ipAllocatorStrategy``), ``nic_steps`` (the steps of the VM chains) and ``nics`` (VM
NICs, used IPs, ``vmNics`` of VM inventories, the VM NIC APIs). Other plugins use
:mod:`zplugins.network.public` only.

Resources: ``L2NetworkVO`` (VLAN networks are also ``L2VlanNetworkVO`` for
``QueryL2VlanNetwork``), ``L3NetworkVO``, ``IpRangeVO``, ``NetworkServiceProviderVO``, and
the queryable attachments ``L2NetworkClusterRefVO`` and ``NetworkServiceL3NetworkRefVO``.
An L2 network belongs to a zone, an L3 network to its L2 network and zone, an IP range to
its L3 network: deleting a zone or an L2 or L3 network deletes what belongs to it through
the ``cascade`` plugin (or is refused without it). DNS servers, used IPs and attachments
go with their network; attachments to a cluster go with the cluster.

Queries reach across: ``QueryL3Network l2Network.cluster.uuid=...``,
``QueryL3Network ipRanges.startIp=...``, ``QueryL2Network zone.name=...``,
``QueryCluster l2Network.name=...``, ``QueryZone l3Network.name=...``.

Chains, shipped beside this file (``flows/``): ``l2-network-create``, ``l2-network-attach``,
``l2-network-detach``, ``l3-network-create``; the step ``prepare-l2-networks`` goes into the
compute plugin's ``host-connect`` chain after ``connect-host``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zcore import FlowChainFile, Migrations, hookimpl
from zcore.parts import Parts

if TYPE_CHECKING:
    from zcore.node import Node

ZCORE_REQUIRES = ("compute",)

_HERE = Path(__file__).resolve().parent

#: Modules that contribute to this plugin's hooks through functions named after them.
PARTS = Parts(__name__, ("l2", "l3", "ip_ranges", "ip_allocators", "services", "nic_steps", "nics"))


@hookimpl
def zcore_resource_types() -> Iterator[Any]:
    yield from PARTS.collect("resource_types")


@hookimpl
def zcore_inventory_extensions() -> Iterator[Any]:
    yield from PARTS.collect("inventory_extensions")


@hookimpl
def zcore_system_tag_patterns() -> Iterator[Any]:
    yield from PARTS.collect("system_tag_patterns")


@hookimpl
def zcore_global_configs() -> Iterator[Any]:
    yield from PARTS.collect("global_configs")


@hookimpl
def zcore_driver_namespaces() -> Iterator[Any]:
    yield from PARTS.collect("driver_namespaces")


@hookimpl
def zcore_db_migrations() -> Iterator[Any]:
    yield Migrations("network", _HERE / "migrations")


@hookimpl
def zcore_cascade_edges() -> Iterator[Any]:
    yield from PARTS.collect("cascade_edges")


@hookimpl
def zcore_query_expansions() -> Iterator[Any]:
    yield from PARTS.collect("query_expansions")


@hookimpl
def zcore_flow_steps() -> Iterator[Any]:
    yield from PARTS.collect("flow_steps")


@hookimpl
def zcore_flow_chains() -> Iterator[Any]:
    for path in sorted((_HERE / "flows").glob("*.yaml")):
        yield FlowChainFile(path)


@hookimpl
def zcore_flow_insertions() -> Iterator[Any]:
    yield from PARTS.collect("flow_insertions")


@hookimpl
def zcore_api_messages() -> Iterator[Any]:
    yield from PARTS.collect("api_messages")


@hookimpl
async def zcore_node_starting(node: Node) -> None:
    await PARTS.notify("node_starting", node)


@hookimpl
async def zcore_node_stopping(node: Node) -> None:
    await PARTS.notify("node_stopping", node)
