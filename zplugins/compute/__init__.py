"""Compute: zones and clusters, and the hypervisor driver namespace.

Resources: ``ZoneVO`` (``org.zstack.header.zone.ZoneInventory``) and ``ClusterVO``
(``org.zstack.header.cluster.ClusterInventory``); a cluster belongs to a zone
(``CascadeEdge("ClusterVO", "ZoneVO", field="zoneUuid")``), so deleting a zone with clusters
is refused unless the ``cascade`` plugin deletes them. Queries reach across:
``QueryCluster zone.name=z1`` and ``QueryZone cluster.name=c1``.

APIs: CreateZone, UpdateZone, ChangeZoneState, DeleteZone, QueryZone, CreateCluster,
UpdateCluster, ChangeClusterState, DeleteCluster, QueryCluster, as ZStack's.

Creation runs the workflow chains ``zone-create`` and ``cluster-create``, shipped with this
plugin (``flows/`` beside this file) rather than in the distribution's ``flows/``: a chain
there would name steps that no plugin provides when compute is disabled, and the node would
not start. Other plugins insert their steps around ``persist-zone`` and ``persist-cluster``.

Hosts and instance offerings live in their own modules (``hosts``, ``offerings``), each of
which contributes to the hooks below through plain functions of the same names without the
``zcore_`` prefix (``resource_types()``, ``api_messages()``, ``node_starting(node)``, ...).

Hypervisors are drivers in the namespace ``zcore.hypervisors`` (base class
:class:`zplugins.compute.hypervisor.HypervisorDriver`); the ``kvm`` and ``simulator`` plugins
provide ``KVM`` and ``Simulator``. A cluster's ``hypervisorType`` must name one available on
the node.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zcore import (
    ApiMessage,
    CascadeEdge,
    DriverNamespace,
    FlowChainFile,
    FlowStep,
    Migrations,
    QueryExpansion,
    ResourceType,
    StartupError,
    hookimpl,
)
from zcore.parts import Parts

if TYPE_CHECKING:
    from zcore.node import Node

_HERE = Path(__file__).resolve().parent

#: Modules that contribute to this plugin's hooks through functions named after them.
PARTS = Parts(__name__, ("hosts", "offerings", "vm_service", "vm_steps", "allocators",
                               "vms"))


@hookimpl
def zcore_resource_types() -> Iterator[ResourceType]:
    from zplugins.compute.clusters import cluster_inventory
    from zplugins.compute.models import ClusterVO, ZoneVO
    from zplugins.compute.zones import zone_inventory

    yield ResourceType("ZoneVO", model=ZoneVO,
                       inventory="org.zstack.header.zone.ZoneInventory",
                       description="A zone: the top of the resource tree",
                       to_inventory=zone_inventory, columns_only=True)
    yield ResourceType("ClusterVO", model=ClusterVO,
                       inventory="org.zstack.header.cluster.ClusterInventory",
                       description="A cluster of hosts of one hypervisor type, in a zone",
                       to_inventory=cluster_inventory, columns_only=True)
    yield from PARTS.collect("resource_types")


@hookimpl
def zcore_db_migrations() -> Iterator[Migrations]:
    yield Migrations("compute", _HERE / "migrations")
    yield from PARTS.collect("db_migrations")


@hookimpl
def zcore_cascade_edges() -> Iterator[CascadeEdge]:
    from zplugins.compute.vms import vm_cascade_edges

    yield CascadeEdge("ClusterVO", "ZoneVO", field="zoneUuid")
    # Dependants are deleted in the order of the edges: a cluster's VMs before its hosts.
    yield from vm_cascade_edges()
    yield from PARTS.collect("cascade_edges")


@hookimpl
def zcore_query_expansions() -> Iterator[QueryExpansion]:
    yield QueryExpansion("ClusterVO", "zone", "ZoneVO", local_key="zoneUuid")
    yield QueryExpansion("ZoneVO", "cluster", "ClusterVO", foreign_key="zoneUuid")
    yield from PARTS.collect("query_expansions")


@hookimpl
def zcore_driver_namespaces() -> Iterator[DriverNamespace]:
    from zplugins.compute.hypervisor import HYPERVISORS, HypervisorDriver

    yield DriverNamespace(HYPERVISORS, HypervisorDriver,
                          "Hypervisors, picked by a cluster's hypervisorType")
    yield from PARTS.collect("driver_namespaces")


@hookimpl
def zcore_flow_steps() -> Iterator[FlowStep]:
    from zplugins.compute.clusters import PersistCluster
    from zplugins.compute.zones import PersistZone

    yield FlowStep("persist-zone", PersistZone())
    yield FlowStep("persist-cluster", PersistCluster())
    yield from PARTS.collect("flow_steps")


@hookimpl
def zcore_flow_chains() -> Iterator[FlowChainFile]:
    for path in sorted((_HERE / "flows").glob("*.yaml")):
        yield FlowChainFile(path)
    yield from PARTS.collect("flow_chains")


@hookimpl
def zcore_api_messages() -> Iterator[ApiMessage]:
    from zplugins.compute import clusters, zones

    for message in (*zones.APIS, *clusters.APIS):
        yield ApiMessage(message)
    yield from PARTS.collect("api_messages")


@hookimpl
def zcore_global_configs() -> Iterator[Any]:
    yield from PARTS.collect("global_configs")


@hookimpl
def zcore_system_tag_patterns() -> Iterator[Any]:
    yield from PARTS.collect("system_tag_patterns")


@hookimpl
def zcore_gc_job_kinds() -> Iterator[Any]:
    yield from PARTS.collect("gc_job_kinds")


@hookimpl
def zcore_flow_insertions() -> Iterator[Any]:
    yield from PARTS.collect("flow_insertions")


@hookimpl
async def zcore_node_stopping(node: Node) -> None:
    await PARTS.notify("node_stopping", node)


@hookimpl
async def zcore_node_starting(node: Node) -> None:
    from zplugins.compute.hypervisor import HYPERVISORS

    # A cluster stores the entry-point name; the driver must call itself the same.
    wrong = []
    for name in node.drivers.names(HYPERVISORS):
        driver = node.drivers.get(HYPERVISORS, name)
        declared = getattr(driver, "hypervisor_type", None)
        if declared != name:
            wrong.append(f"driver '{name}' ({driver.__module__}.{driver.__qualname__}) declares "
                         f"hypervisor_type {declared!r}; it must be {name!r}, its entry-point "
                         f"name in {HYPERVISORS}")
    if wrong:
        raise StartupError("hypervisor drivers are inconsistent:\n"
                           + "\n".join(f"  - {w}" for w in wrong))
    await PARTS.notify("node_starting", node)
