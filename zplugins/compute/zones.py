"""Zone APIs and the step that writes a zone.

``CreateZone`` runs the chain ``zone-create`` (``zplugins/compute/flows/zone-create.yaml``)
with the context keys ``api`` (the :class:`~zcore.api.ApiContext`) and ``zone_spec`` (a
:class:`ZoneSpec`); its step ``persist-zone`` provides ``zone``, the new row. Other plugins
insert their steps before or after ``persist-zone``.

As in ZStack, at most one zone is the default one: a zone created or updated with
``isDefault`` true takes the mark from the others. A zone is always created ``Enabled``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from zcore.api import NAME_REGEX, ApiContext, APIMessage, Param, QueryMessage
from zcore.db import add_resource
from zplugins.compute.common import (
    DELETE_MODES,
    STATE_EVENTS,
    PersistResource,
    delete_rows,
    get_row,
    refuse_tag_uuids,
)
from zplugins.compute.models import ZoneVO

__all__ = [
    "ChangeZoneState",
    "CreateZone",
    "DeleteZone",
    "PersistZone",
    "QueryZone",
    "UpdateZone",
    "ZoneSpec",
    "zone_inventory",
]

ZONE = "ZoneVO"
INVENTORY = {"inventory": "ZoneInventory"}


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """What CreateZone asked for."""

    name: str
    description: str | None = None
    is_default: bool = False
    uuid: str | None = None


def zone_inventory(zone: ZoneVO) -> dict[str, Any]:
    """The fields of ZStack's ZoneInventory, in its order."""
    return {"uuid": zone.uuid, "name": zone.name, "description": zone.description,
            "state": zone.state, "type": zone.type, "isDefault": zone.isDefault,
            "createDate": zone.createDate, "lastOpDate": zone.lastOpDate}


def _clear_other_defaults(session: Session, uuid: str) -> None:
    session.execute(update(ZoneVO).where(ZoneVO.uuid != uuid, ZoneVO.isDefault.is_(True))
                    .values(isDefault=False))


def _insert_zone(session: Session, spec: ZoneSpec, api: ApiContext) -> ZoneVO:
    zone = ZoneVO(name=spec.name, description=spec.description, state="Enabled",
                  type="zstack", isDefault=spec.is_default)
    if spec.uuid is not None:
        zone.uuid = spec.uuid
    add_resource(session, zone, ZONE, owner_account_uuid=api.owner)
    session.flush()
    if spec.is_default:
        _clear_other_defaults(session, zone.uuid)
    api.add_tags(session, zone.uuid, ZONE)
    return zone


class PersistZone(PersistResource):
    """Write the zone, its resource row and the call's tags in one transaction."""

    requires = ("api", "zone_spec")
    provides = ("zone",)
    model = ZoneVO
    insert = staticmethod(_insert_zone)


def _get(session: Session, uuid: str) -> ZoneVO:
    return get_row(session, ZoneVO, ZONE, uuid)


# --------------------------------------------------------------------------- APIs


class CreateZone(APIMessage, method="POST", path="/zones", resource_type=ZONE, result=INVENTORY):
    """Create a zone, ``Enabled``; owned by the caller's account."""

    name = Param(str, required=True, max_length=255, valid_regex=NAME_REGEX)
    description = Param(str, max_length=2048)
    isDefault = Param(bool, description="Make it the default zone (the others stop being it)")
    resourceUuid = Param(str, description="The uuid the new zone gets (32 lower-case hex "
                                          "digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    async def validate(self, ctx: ApiContext) -> None:
        refuse_tag_uuids(self.api_name, self.tagUuids)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        spec = ZoneSpec(self.name, self.description, bool(self.isDefault), self.resourceUuid)
        flow = await ctx.node.run_flow("zone-create", {"api": ctx, "zone_spec": spec})
        zone = await ctx.run(_get, flow["zone"].uuid)
        return {"inventory": ctx.inventory(ZONE, zone)}


class UpdateZone(APIMessage, method="PUT", path="/zones/{uuid}/actions", resource_type=ZONE,
                 result=INVENTORY):
    """Change a zone's name, description or default mark; only the parameters given."""

    name = Param(str, max_length=255, valid_regex=NAME_REGEX)
    description = Param(str, max_length=2048)
    uuid = Param(str, required=True, resource_type=ZONE)
    isDefault = Param(bool)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> ZoneVO:
            zone = _get(session, self.uuid)
            if self.name is not None:
                zone.name = self.name
            if self.description is not None:
                zone.description = self.description
            if self.isDefault is not None:
                zone.isDefault = self.isDefault
                if self.isDefault:
                    _clear_other_defaults(session, zone.uuid)
            session.flush()
            return zone

        return {"inventory": ctx.inventory(ZONE, await ctx.run(change))}


class ChangeZoneState(APIMessage, method="PUT", path="/zones/{uuid}/actions",
                      resource_type=ZONE, result=INVENTORY):
    """``enable`` makes a zone ``Enabled``, ``disable`` makes it ``Disabled``."""

    uuid = Param(str, required=True, resource_type=ZONE)
    stateEvent = Param(str, required=True, valid_values=tuple(STATE_EVENTS))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> ZoneVO:
            zone = _get(session, self.uuid)
            zone.state = STATE_EVENTS[self.stateEvent]
            session.flush()
            return zone

        return {"inventory": ctx.inventory(ZONE, await ctx.run(change))}


class DeleteZone(APIMessage, method="DELETE", path="/zones/{uuid}", resource_type=ZONE,
                 result={}):
    """Delete a zone. Its clusters go first through the cascade plugin; without it, a zone
    that still has clusters is not deleted (``SYS.1004`` naming them)."""

    uuid = Param(str, required=True, resource_type=ZONE)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ctx.delete(ZONE, self.uuid, self.deleteMode, delete_rows(ZoneVO, ZONE))
        return {}


class QueryZone(QueryMessage, path="/zones", resource=ZONE):
    """Query zones; ``cluster.<field>`` reaches the fields of their clusters."""


APIS: tuple[type[APIMessage], ...] = (CreateZone, UpdateZone, ChangeZoneState, DeleteZone,
                                      QueryZone)
