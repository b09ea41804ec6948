"""The cascade graph orders dependants children-first and refuses bad edges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zcore.cascade import CascadeGraph
from zcore.errors import StartupError
from zcore.records import CascadeEdge
from zcore.registry import Provided

TYPES = ["ZoneVO", "ClusterVO", "HostVO", "VmInstanceVO", "VmNicVO", "EipVO", "L2NetworkVO"]


def graph(*edges: tuple[str, str], types: list[str] = TYPES) -> CascadeGraph:
    return CascadeGraph(types, {(c, p): Provided("test", CascadeEdge(c, p)) for c, p in edges})


DATACENTER = [("ClusterVO", "ZoneVO"), ("HostVO", "ClusterVO"), ("VmInstanceVO", "HostVO"),
              ("VmNicVO", "VmInstanceVO"), ("EipVO", "VmNicVO"), ("L2NetworkVO", "ZoneVO")]


def test_deletion_order_puts_every_type_after_its_descendants() -> None:
    order = graph(*DATACENTER).deletion_order("ZoneVO")
    assert order[-1] == "ZoneVO"
    assert order.index("EipVO") < order.index("VmNicVO") < order.index("VmInstanceVO") \
        < order.index("HostVO") < order.index("ClusterVO")
    assert set(order) == set(TYPES)


def test_deletion_order_below_a_middle_type_leaves_out_its_ancestors() -> None:
    assert graph(*DATACENTER).deletion_order("VmInstanceVO") == ["EipVO", "VmNicVO",
                                                                  "VmInstanceVO"]


def test_parents_and_children() -> None:
    g = graph(*DATACENTER)
    assert g.children("ZoneVO") == ["ClusterVO", "L2NetworkVO"]
    assert g.parents("ClusterVO") == ["ZoneVO"]
    with pytest.raises(KeyError):
        g.children("NopeVO")


def test_a_cycle_is_refused_naming_its_edges() -> None:
    with pytest.raises(StartupError, match="cycle: .*ClusterVO belongs to ZoneVO.*ZoneVO "
                                           "belongs to ClusterVO"):
        graph(("ClusterVO", "ZoneVO"), ("ZoneVO", "ClusterVO"))


def test_an_edge_to_an_undeclared_type_is_refused() -> None:
    with pytest.raises(StartupError, match="GhostVO is not a declared resource type"):
        graph(("GhostVO", "ZoneVO"))


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=30))
def test_any_acyclic_graph_orders_children_before_parents(pairs: list[tuple[int, int]]) -> None:
    # Only edges from a higher to a lower number: always acyclic.
    types = [f"T{i}VO" for i in range(10)]
    edges = {(f"T{max(a, b)}VO", f"T{min(a, b)}VO") for a, b in pairs if a != b}
    g = graph(*edges, types=types)
    order = g.deletion_order("T0VO")
    assert order[-1] == "T0VO"
    for child, parent in edges:
        if parent in order:
            assert order.index(child) < order.index(parent)
