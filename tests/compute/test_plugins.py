"""The compute, cascade, kvm and simulator plugins: start-up, drivers, chains, migrations."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from zcore.config import load_settings
from zcore.db import Base
from zcore.errors import StartupError
from zcore.node import Node
from zcore.plugins import inspect_plugins
from zplugins.compute.hypervisor import HYPERVISORS, HypervisorDriver

from .helpers import MakeNode, call, cluster, fails, zone

pytestmark = pytest.mark.db

OPTIONAL = ("cascade", "kvm", "simulator")


def needing(plugin: str) -> tuple[str, ...]:
    """The installed plugins that require ``plugin``, directly or not (they go when it goes)."""
    infos = inspect_plugins(load_settings(environ={}))
    gone = {plugin}
    while True:
        more = {i.name for i in infos if set(i.requires) & gone} - gone
        if not more:
            return tuple(sorted(gone - {plugin}))
        gone |= more


@pytest.mark.parametrize("blocked", OPTIONAL)
async def test_the_node_starts_without_each_optional_plugin(make_node: MakeNode,
                                                            blocked: str) -> None:
    node = await make_node(disable=(blocked,))
    assert node.plugins.info(blocked).status == "disabled"
    z = await zone(node)
    hypervisor = "KVM" if blocked != "kvm" else "Simulator"
    await cluster(node, z["uuid"], hypervisorType=hypervisor)


async def test_the_node_starts_without_compute(make_node: MakeNode) -> None:
    dependants = needing("compute")
    assert {"kvm", "simulator"} <= set(dependants)
    node = await make_node(disable=("compute", *dependants))
    assert "zone-create" not in node.flows and "cluster-create" not in node.flows
    assert HYPERVISORS not in node.drivers.namespaces
    await fails(call(node, "CreateZone", name="z1"), "SYS.1008")


async def test_the_create_chains_come_from_the_compute_plugin(node: Node) -> None:
    chains = node.registry.flow_chains
    assert chains["zone-create"].plugin == "compute"
    assert chains["cluster-create"].plugin == "compute"
    assert node.flows.chains["zone-create"].step_names == ("persist-zone",)
    assert node.flows.chains["cluster-create"].step_names == ("persist-cluster",)
    assert node.registry.flow_steps["persist-zone"].plugin == "compute"


# --------------------------------------------------------------------------- drivers


class HypervisorConformance:
    """What every hypervisor driver must do; grows with HypervisorDriver."""

    name: str

    def driver(self, node: Node) -> type[HypervisorDriver]:
        found: type[HypervisorDriver] = node.drivers.get(HYPERVISORS, self.name)
        return found

    async def test_it_is_a_hypervisor_driver(self, node: Node) -> None:
        assert issubclass(self.driver(node), HypervisorDriver)

    async def test_it_calls_itself_by_its_entry_point_name(self, node: Node) -> None:
        assert self.driver(node).hypervisor_type == self.name

    async def test_a_cluster_of_its_type_can_be_created(self, node: Node) -> None:
        z = await zone(node)
        assert (await cluster(node, z["uuid"], hypervisorType=self.name))[
            "hypervisorType"] == self.name


class TestKvm(HypervisorConformance):
    name = "KVM"


class TestSimulator(HypervisorConformance):
    name = "Simulator"


def test_every_installed_hypervisor_has_a_conformance_test() -> None:
    ours = {ep.name for ep in entry_points(group=HYPERVISORS)
            if ep.value.startswith("zplugins.")}
    tested = {cls.name for cls in HypervisorConformance.__subclasses__()}
    assert ours == tested


def xen_distribution(fake_distribution: Callable[..., Path], declared: str) -> None:
    fake_distribution(
        "acme-xen", "1.0",
        {"zcore.plugins": {"xen": "acme_xen"},
         "zcore.hypervisors": {"Xen": "acme_xen.hypervisor:XenHypervisor"}},
        {"acme_xen/__init__.py": "ZCORE_REQUIRES = ('compute',)\n",
         "acme_xen/hypervisor.py":
            "from zplugins.compute.hypervisor import HypervisorDriver\n"
            f"class XenHypervisor(HypervisorDriver):\n    hypervisor_type = {declared!r}\n"})


async def test_a_third_party_hypervisor_can_be_used(make_node: MakeNode,
                                                    fake_distribution: Any) -> None:
    xen_distribution(fake_distribution, "Xen")
    node = await make_node()
    assert node.drivers.names(HYPERVISORS) == ["KVM", "Simulator", "Xen"]
    z = await zone(node)
    assert (await cluster(node, z["uuid"], hypervisorType="Xen"))["hypervisorType"] == "Xen"


async def test_a_driver_that_misnames_itself_stops_start_up(make_node: MakeNode,
                                                            fake_distribution: Any) -> None:
    xen_distribution(fake_distribution, "xen")
    with pytest.raises(StartupError) as caught:
        await make_node()
    message = str(caught.value)
    assert "driver 'Xen' (acme_xen.hypervisor.XenHypervisor) declares hypervisor_type 'xen'" \
        in message and "it must be 'Xen'" in message


# --------------------------------------------------------------------------- migrations


async def test_the_migrations_match_the_models(node: Node) -> None:
    ours = {"ZoneVO", "ClusterVO"}

    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in ours

    def diff(session: Session) -> list[Any]:
        context = MigrationContext.configure(
            session.connection(), opts={"compare_type": True, "include_object": include})
        return list(compare_metadata(context, Base.metadata))

    assert await node.db.run(diff) == []
