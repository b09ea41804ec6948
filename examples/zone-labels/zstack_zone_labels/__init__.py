"""An example plugin: coloured labels on zones.

It adds a resource type of its own (``ZoneLabelVO``, in a table on its own Alembic branch),
three APIs (``CreateZoneLabel``, ``DeleteZoneLabel``, ``QueryZoneLabel``), query expansions
both ways between labels and zones (``QueryZone label.color=red``, ``QueryZoneLabel
zone.name=z1``) and a system tag for zones (``zonelabels::owner::{owner}``). It reaches the
``compute`` plugin's zones only by their public names: the resource type ``ZoneVO`` and the
table ``ZoneVO``.

This module is what the entry point loads, so it stays light: the model and the APIs are
imported inside the hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zcore import (
    ApiMessage,
    CascadeEdge,
    Migrations,
    QueryExpansion,
    ResourceType,
    SystemTagPattern,
    hookimpl,
)

ZCORE_REQUIRES = ("compute",)

#: The resource type of a label, and the class name of its inventory on the wire.
LABEL = "ZoneLabelVO"
LABEL_INVENTORY = "org.example.zonelabels.ZoneLabelInventory"
#: The compute plugin's resource type of a zone.
ZONE = "ZoneVO"


@hookimpl
def zcore_resource_types() -> Iterator[ResourceType]:
    from zstack_zone_labels.models import ZoneLabelVO

    yield ResourceType(LABEL, model=ZoneLabelVO, inventory=LABEL_INVENTORY,
                       description="a coloured label on a zone")


@hookimpl
def zcore_db_migrations() -> Iterator[Migrations]:
    yield Migrations("zonelabels", Path(__file__).parent / "migrations")


@hookimpl
def zcore_api_messages() -> Iterator[ApiMessage]:
    from zstack_zone_labels.apis import CreateZoneLabel, DeleteZoneLabel, QueryZoneLabel

    yield ApiMessage(CreateZoneLabel)
    yield ApiMessage(DeleteZoneLabel)
    yield ApiMessage(QueryZoneLabel)


@hookimpl
def zcore_query_expansions() -> Iterator[QueryExpansion]:
    # A zone's labels (one-to-many): QueryZone label.color=red.
    yield QueryExpansion(ZONE, "label", LABEL, foreign_key="zoneUuid")
    # A label's zone: QueryZoneLabel zone.name=z1.
    yield QueryExpansion(LABEL, "zone", ZONE, local_key="zoneUuid")


@hookimpl
def zcore_cascade_edges() -> Iterator[CascadeEdge]:
    # Deleting a zone deletes its labels first.
    yield CascadeEdge(LABEL, ZONE, field="zoneUuid")


@hookimpl
def zcore_system_tag_patterns() -> Iterator[SystemTagPattern]:
    yield SystemTagPattern("zonelabels::owner::{owner}", ZONE,
                           "The team that owns the zone, for the labels' dashboards")
