"""The graph of which resource types belong to which, ordered children-first.

Plugins declare edges (:class:`~zcore.records.CascadeEdge`: ``ClusterVO`` belongs to
``ZoneVO``); the graph is a networkx ``DiGraph`` from parent to child. Deleting a resource
touches its dependants deepest first, so :meth:`CascadeGraph.deletion_order` lists every type
below a root with each type after all of its own descendants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import networkx as nx

from zcore.errors import StartupError
from zcore.registry import Provided

__all__ = ["CascadeGraph"]


class CascadeGraph:
    """Parent/child edges between resource types, validated at start-up.

    Every edge's ends must be declared resource types and the graph must be acyclic;
    otherwise :class:`StartupError` names the edges and the plugins that declared them.
    """

    def __init__(self, types: Iterable[str], edges: Mapping[tuple[str, str], Provided],
                 labels: Mapping[str, str] | None = None) -> None:
        labels = labels or {}
        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_nodes_from(types)
        problems = []
        for (child, parent), provided in edges.items():
            unknown = [t for t in (child, parent) if t not in graph]
            if unknown:
                who = labels.get(provided.plugin, f"plugin '{provided.plugin}'")
                problems.append(f"{who} declares {child} -> {parent}, but "
                                f"{' and '.join(unknown)} is not a declared resource type")
                continue
            graph.add_edge(parent, child,
                           plugin=labels.get(provided.plugin, f"plugin '{provided.plugin}'"))
        if not problems:
            try:
                cycle = nx.find_cycle(graph)
            except nx.NetworkXNoCycle:
                cycle = []
            if cycle:
                described = ", ".join(f"{c} belongs to {p} ({graph.edges[p, c]['plugin']})"
                                      for p, c in cycle)
                problems.append(f"resource types belong to each other in a cycle: {described}")
        if problems:
            raise StartupError("the cascade graph is invalid:\n"
                               + "\n".join(f"  - {p}" for p in problems))
        self._graph = graph

    def parents(self, resource_type: str) -> list[str]:
        """The types a resource of ``resource_type`` directly belongs to."""
        return sorted(self._graph.predecessors(self._known(resource_type)))

    def children(self, resource_type: str) -> list[str]:
        """The types that directly belong to ``resource_type``."""
        return sorted(self._graph.successors(self._known(resource_type)))

    def deletion_order(self, resource_type: str) -> list[str]:
        """Every type below ``resource_type``, each after all of its descendants.

        The root itself comes last. Types at equal depth are sorted by name, so the order is
        stable across runs.
        """
        below = nx.descendants(self._graph, self._known(resource_type)) | {resource_type}
        sub = self._graph.subgraph(below)
        return list(reversed(list(nx.lexicographical_topological_sort(sub))))

    def _known(self, resource_type: str) -> str:
        if resource_type not in self._graph:
            raise KeyError(f"unknown resource type {resource_type!r}")
        return resource_type
