"""The network plugin: its migrations, chains and registrations."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from zcore.db import Base
from zcore.node import Node

from .helpers import MakeNode, call, fails

pytestmark = pytest.mark.db

TABLES = {"L2NetworkVO", "L2NetworkClusterRefVO", "L3NetworkVO", "IpRangeVO", "L3NetworkDnsVO",
          "UsedIpVO", "NetworkServiceProviderVO", "NetworkServiceTypeVO",
          "NetworkServiceL3NetworkRefVO"}


async def test_the_migrations_match_the_models(node: Node) -> None:
    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in TABLES

    def diff(session: Session) -> list[Any]:
        context = MigrationContext.configure(
            session.connection(), opts={"compare_type": True, "include_object": include})
        return list(compare_metadata(context, Base.metadata))

    assert await node.db.run(diff) == []


async def test_the_chains_and_the_host_connect_step(node: Node) -> None:
    chains = node.flows.chains
    assert chains["l2-network-attach"].step_names == ("attach-l2-network", "realize-l2-network")
    assert chains["l2-network-detach"].step_names == ("refuse-l2-detach-with-vms",
                                                      "detach-l2-network")
    steps = chains["host-connect"].step_names
    assert steps.index("prepare-l2-networks") > steps.index("connect-host")
    assert node.registry.flow_steps["prepare-l2-networks"].plugin == "network"


async def test_the_node_starts_without_the_network_plugin(make_node: MakeNode) -> None:
    node = await make_node(disable=("network",))
    assert "l2-network-attach" not in node.flows
    assert "prepare-l2-networks" not in node.flows.chains["host-connect"].step_names
    await fails(call(node, "CreateL2NoVlanNetwork", name="n", zoneUuid="0" * 32,
                     physicalInterface="eth0"), "SYS.1008")
