"""The APIs the core serves itself: tags, global configuration and the version.

They belong to the core plugin (``zcore``) because tags and global configuration are core
services every plugin uses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zcore import __version__
from zcore.api import PERMISSION_DENIED, ApiContext, APIMessage, Param, QueryMessage
from zcore.db import GlobalConfigVO, ResourceVO, SystemTagVO, UserTagVO
from zcore.errors import INVALID_ARGUMENT, OPERATION_ERROR, RESOURCE_NOT_FOUND, ZError
from zcore.records import ApiMessage, ResourceType

__all__ = ["api_messages", "resource_types"]

SYSTEM_TAG_INVENTORY = "org.zstack.header.tag.SystemTagInventory"
USER_TAG_INVENTORY = "org.zstack.header.tag.UserTagInventory"
GLOBAL_CONFIG_INVENTORY = "org.zstack.core.config.GlobalConfigInventory"

_TAG_FIELDS = ("uuid", "resourceUuid", "resourceType", "tag", "type", "createDate",
               "lastOpDate")


def _system_tag(row: SystemTagVO) -> dict[str, Any]:
    return {**{f: getattr(row, f) for f in _TAG_FIELDS}, "inherent": row.inherent}


def _user_tag(row: UserTagVO) -> dict[str, Any]:
    return {**{f: getattr(row, f) for f in _TAG_FIELDS}, "tagPatternUuid": row.tagPatternUuid}


def resource_types() -> list[ResourceType]:
    return [
        ResourceType("SystemTagVO", model=SystemTagVO, inventory=SYSTEM_TAG_INVENTORY,
                     owned_through="resourceUuid", to_inventory=_system_tag,
                     description="a system tag"),
        ResourceType("UserTagVO", model=UserTagVO, inventory=USER_TAG_INVENTORY,
                     owned_through="resourceUuid", to_inventory=_user_tag,
                     description="a user tag"),
        ResourceType("GlobalConfigVO", model=GlobalConfigVO, inventory=GLOBAL_CONFIG_INVENTORY,
                     owned_through=None, description="a global configuration option"),
    ]


# --------------------------------------------------------------------------- tags


class _CreateTag(APIMessage):
    resourceType = Param(str, required=True)
    resourceUuid = Param(str, required=True)
    tag = Param(str, required=True, non_empty=True, max_length=2048)

    async def _target(self, ctx: ApiContext) -> None:
        if self.resourceType not in ctx.node.registry.resource_types:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'resourceType' of {self.api_name}: {self.resourceType!r} "
                         "is not a resource type")
        uuid = self.resourceUuid

        def look(session: Session) -> tuple[str, str | None] | None:
            row = session.execute(select(ResourceVO.resourceType, ResourceVO.ownerAccountUuid)
                                  .where(ResourceVO.uuid == uuid)).first()
            return None if row is None else (row[0], row[1])

        found = await ctx.run(look)
        if found is None or found[0] != self.resourceType:
            raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                         f"parameter 'resourceUuid' of {self.api_name}: no "
                         f"{self.resourceType} has uuid {uuid}")
        if not ctx.caller.is_admin and found[1] != ctx.caller.account_uuid:
            raise ZError(PERMISSION_DENIED, "permission denied",
                         f"{self.resourceType} {uuid} belongs to another account")


class CreateSystemTag(_CreateTag, method="POST", path="/system-tags",
                      result={"inventory": "SystemTagInventory"}):
    """Attach a system tag; it must match a pattern registered for the resource type."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await self._target(ctx)
        ctx.node.tags.patterns.check(self.tag, self.resourceType)
        row = await ctx.run(ctx.node.tags.add_system_tag, self.resourceUuid,
                            self.resourceType, self.tag)
        return {"inventory": ctx.inventory("SystemTagVO", row)}


class CreateUserTag(_CreateTag, method="POST", path="/user-tags",
                    result={"inventory": "UserTagInventory"}):
    """Attach a free-text user tag to a resource."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await self._target(ctx)
        row = await ctx.run(ctx.node.tags.add_user_tag, self.resourceUuid,
                            self.resourceType, self.tag)
        return {"inventory": ctx.inventory("UserTagVO", row)}


class DeleteTag(APIMessage, method="DELETE", path="/tags/{uuid}", result={}):
    """Delete a system or user tag; tags the system set itself (inherent) cannot go."""

    uuid = Param(str, required=True)
    deleteMode = Param(str, default="Permissive", valid_values=("Permissive", "Enforcing"))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        uuid = self.uuid
        account = ctx.caller.filter_account

        def delete(session: Session) -> None:
            for row in (session.get(SystemTagVO, uuid), session.get(UserTagVO, uuid)):
                if row is None:
                    continue
                if account is not None:
                    owner = session.scalar(select(ResourceVO.ownerAccountUuid)
                                           .where(ResourceVO.uuid == row.resourceUuid))
                    if owner != account:
                        raise ZError(PERMISSION_DENIED, "permission denied",
                                     f"tag {uuid} is on a resource of another account")
                if isinstance(row, SystemTagVO) and row.inherent:
                    raise ZError(OPERATION_ERROR, "cannot delete an inherent system tag",
                                 f"system tag {uuid} ({row.tag!r}) was set by the system")
                session.delete(row)
                return
            raise ZError(RESOURCE_NOT_FOUND, "resource not found", f"no tag has uuid {uuid}")

        await ctx.run(delete)
        return {}


class QuerySystemTag(QueryMessage, path="/system-tags", resource="SystemTagVO"):
    """Query system tags."""


class QueryUserTag(QueryMessage, path="/user-tags", resource="UserTagVO"):
    """Query user tags."""


# --------------------------------------------------------------------------- global config


class QueryGlobalConfig(QueryMessage, path="/global-configurations", resource="GlobalConfigVO"):
    """Query global configuration options."""


class UpdateGlobalConfig(APIMessage, method="PUT",
                         path="/global-configurations/{category}/{name}/actions",
                         admin_only=True, result={"inventory": "GlobalConfigInventory"}):
    """Change a global configuration option on every node; the value is validated first."""

    category = Param(str, required=True)
    name = Param(str, required=True)
    value = Param(str)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        if self.value is None:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'value' of UpdateGlobalConfig is required to change "
                         f"{self.category}.{self.name}; use ResetGlobalConfig for the default")
        fields = await ctx.node.global_config.update(self.category, self.name, self.value)
        return {"inventory": _global_config(fields)}


class ResetGlobalConfig(APIMessage, method="PUT", path="/global-configurations/actions",
                        admin_only=True, result={}):
    """Set every global configuration option back to its default."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        config = ctx.node.global_config
        for inventory in await config.inventories():
            category, name = inventory["category"], inventory["name"]
            try:
                option = config.option(category, name)
            except ZError:  # stored by a plugin this node does not run
                continue
            if config.get(category, name) != option.default:
                await config.reset(category, name)
        return {}


def _global_config(fields: dict[str, Any]) -> Any:
    from zcore.api import Inventory

    return Inventory(GLOBAL_CONFIG_INVENTORY, fields)


# --------------------------------------------------------------------------- the node


class GetVersion(APIMessage, method="PUT", path="/management-nodes/actions", is_async=False,
                 need_session=False, result={"version": "String"}):
    """The management node's version."""

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        return {"version": __version__}


def api_messages() -> list[ApiMessage]:
    return [ApiMessage(cls) for cls in (
        CreateSystemTag, CreateUserTag, DeleteTag, QuerySystemTag, QueryUserTag,
        QueryGlobalConfig, UpdateGlobalConfig, ResetGlobalConfig, GetVersion)]
