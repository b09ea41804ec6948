"""The APIs of zone labels: create, delete, query."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from zcore.api import NAME_REGEX, ApiContext, APIMessage, Inventory, Param, QueryMessage
from zcore.db import add_resource, delete_resource
from zstack_zone_labels import LABEL, ZONE
from zstack_zone_labels.models import COLORS, ZoneLabelVO

__all__ = ["CreateZoneLabel", "DeleteZoneLabel", "QueryZoneLabel"]


class CreateZoneLabel(APIMessage, method="POST", path="/zone-labels", resource_type=LABEL,
                      result={"inventory": "ZoneLabelInventory"}):
    """Put a coloured label on a zone."""

    zoneUuid = Param(str, required=True, resource_type=ZONE,
                     description="the zone to label")
    name = Param(str, required=True, max_length=255, valid_regex=NAME_REGEX)
    description = Param(str, max_length=2048)
    color = Param(str, valid_values=COLORS, default="green")
    resourceUuid = Param(str, description="the new label's uuid, if the caller chooses it")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def create(session: Session) -> Inventory:
            label = add_resource(
                session,
                ZoneLabelVO(uuid=self.resourceUuid, name=self.name,
                            description=self.description, zoneUuid=self.zoneUuid,
                            color=self.color),
                LABEL, owner_account_uuid=ctx.owner)
            ctx.add_tags(session, label.uuid, LABEL)
            session.flush()
            return ctx.inventory(LABEL, label)

        return {"inventory": await ctx.run(create)}


class DeleteZoneLabel(APIMessage, method="DELETE", path="/zone-labels/{uuid}", result={}):
    """Remove a label from its zone."""

    uuid = Param(str, required=True, resource_type=LABEL)
    deleteMode = Param(str, default="Permissive", valid_values=("Permissive", "Enforcing"))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def delete_rows(session: Session, uuid: str) -> None:
            label = session.get(ZoneLabelVO, uuid)
            if label is not None:
                delete_resource(session, label)

        await ctx.delete(LABEL, self.uuid, self.deleteMode, delete_rows)
        return {}


class QueryZoneLabel(QueryMessage, path="/zone-labels", resource=LABEL,
                     result={"inventories": "List<ZoneLabelInventory>", "total": "Long"}):
    """Query zone labels; ``zone.<field>`` reaches the labelled zone."""
