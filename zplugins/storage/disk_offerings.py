"""Disk offerings: the sizes of data volumes, as ZStack's.

Resource ``DiskOfferingVO`` (``org.zstack.header.configuration.DiskOfferingInventory``: uuid,
name, description, diskSize, sortKey, state, type, allocatorStrategy, createDate,
lastOpDate). APIs: CreateDiskOffering, UpdateDiskOffering, ChangeDiskOfferingState,
DeleteDiskOffering, QueryDiskOffering, with ZStack's routes and parameters.

As in ZStack: ``diskSize`` is in bytes, at least 1; the create parameter is spelt
``allocationStrategy`` while the inventory field is ``allocatorStrategy`` (default
``DefaultPrimaryStorageAllocationStrategy``; one of ZStack's primary storage allocation
strategies until those are drivers); without ``type`` the offering is of type
``DefaultDiskOfferingType``; an offering is created ``Enabled``. Deleting one does not touch
the volumes created from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from zcore import ApiMessage, Migrations, ResourceType
from zcore.api import ApiContext, APIMessage, Param, QueryMessage
from zcore.db import Base, ResourceMixin, add_resource, delete_resource
from zcore.errors import DELETE_FAILED, INVALID_ARGUMENT, RESOURCE_NOT_FOUND, ZError

__all__ = [
    "PRIMARY_STORAGE_ALLOCATION_STRATEGIES",
    "ChangeDiskOfferingState",
    "CreateDiskOffering",
    "DeleteDiskOffering",
    "DiskOfferingVO",
    "QueryDiskOffering",
    "UpdateDiskOffering",
    "disk_offering_inventory",
]

OFFERING = "DiskOfferingVO"
INVENTORY = {"inventory": "DiskOfferingInventory"}
MAX_LONG = 2**63 - 1

#: ZStack's primary storage allocation strategies; the first is the default.
PRIMARY_STORAGE_ALLOCATION_STRATEGIES = (
    "DefaultPrimaryStorageAllocationStrategy",
    "LocalPrimaryStorageStrategy",
)

#: ZStack's type of a disk offering created without one.
DEFAULT_TYPE = "DefaultDiskOfferingType"

STATE_EVENTS = {"enable": "Enabled", "disable": "Disabled"}
DELETE_MODES = ("Permissive", "Enforcing")

_HERE = Path(__file__).resolve().parent


class DiskOfferingVO(ResourceMixin, Base):
    """A data volume size, and how to pick primary storage for it."""

    __tablename__ = "DiskOfferingVO"
    __table_args__ = (Index("ix_DiskOfferingVO_name", "name"),)

    diskSize: Mapped[int] = mapped_column(BigInteger())
    sortKey: Mapped[int] = mapped_column(Integer(), default=0)
    state: Mapped[str] = mapped_column(String(64), default="Enabled")
    type: Mapped[str] = mapped_column(String(64), default=DEFAULT_TYPE)
    allocatorStrategy: Mapped[str | None] = mapped_column(String(255), default=None)


def disk_offering_inventory(row: DiskOfferingVO) -> dict[str, Any]:
    """The fields of ZStack's DiskOfferingInventory."""
    return {"uuid": row.uuid, "name": row.name, "description": row.description,
            "diskSize": row.diskSize, "sortKey": row.sortKey, "state": row.state,
            "type": row.type, "allocatorStrategy": row.allocatorStrategy,
            "createDate": row.createDate, "lastOpDate": row.lastOpDate}


def _get(session: Session, uuid: str) -> DiskOfferingVO:
    row = session.get(DiskOfferingVO, uuid)
    if row is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"{OFFERING} {uuid} does not exist (any more)")
    return row


def _delete(session: Session, uuid: str) -> None:
    row = session.get(DiskOfferingVO, uuid)
    if row is None:
        return
    try:
        delete_resource(session, row)
    except IntegrityError as exc:
        raise ZError(DELETE_FAILED, f"cannot delete {OFFERING} {uuid}",
                     "a resource that refers to it was created meanwhile; try again") from exc


# --------------------------------------------------------------------------- APIs


class CreateDiskOffering(APIMessage, method="POST", path="/disk-offerings",
                         resource_type=OFFERING, result=INVENTORY):
    """Create a disk offering, ``Enabled``; owned by the caller's account."""

    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    diskSize = Param(int, required=True, number_range=(1, MAX_LONG), api_type="Long",
                     description="Bytes (10 GiB is 10737418240)")
    sortKey = Param(int, description="Orders offerings in user interfaces")
    allocationStrategy = Param(
        str, description="How primary storage is picked for its volumes (the inventory's "
                         "allocatorStrategy): " + ", ".join(PRIMARY_STORAGE_ALLOCATION_STRATEGIES))
    type = Param(str, valid_values=("zstack",))
    resourceUuid = Param(str, description="The uuid the new offering gets (32 lower-case hex "
                                          "digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    async def validate(self, ctx: ApiContext) -> None:
        if self.tagUuids:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'tagUuids' of {self.api_name}: attaching existing tags by "
                         "uuid is not supported yet; give the tags as systemTags or userTags "
                         "instead")
        strategy = self.allocationStrategy
        if strategy is not None and strategy not in PRIMARY_STORAGE_ALLOCATION_STRATEGIES:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'allocationStrategy' of {self.api_name}: {strategy!r} is "
                         "not a primary storage allocation strategy; valid: "
                         + ", ".join(PRIMARY_STORAGE_ALLOCATION_STRATEGIES))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def insert(session: Session) -> DiskOfferingVO:
            row = DiskOfferingVO(
                name=self.name, description=self.description, diskSize=self.diskSize,
                sortKey=self.sortKey or 0, state="Enabled", type=self.type or DEFAULT_TYPE,
                allocatorStrategy=(self.allocationStrategy
                                   or PRIMARY_STORAGE_ALLOCATION_STRATEGIES[0]))
            if self.resourceUuid is not None:
                row.uuid = self.resourceUuid
            add_resource(session, row, OFFERING, owner_account_uuid=ctx.owner)
            session.flush()
            ctx.add_tags(session, row.uuid, OFFERING)
            return row

        return {"inventory": ctx.inventory(OFFERING, await ctx.run(insert))}


class UpdateDiskOffering(APIMessage, method="PUT", path="/disk-offerings/{uuid}/actions",
                         resource_type=OFFERING, result=INVENTORY):
    """Change a disk offering's name or description; only those given. Its size does not
    change: volumes made from it keep theirs."""

    uuid = Param(str, required=True, resource_type=OFFERING)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> DiskOfferingVO:
            row = _get(session, self.uuid)
            if self.name is not None:
                row.name = self.name
            if self.description is not None:
                row.description = self.description
            session.flush()
            return row

        return {"inventory": ctx.inventory(OFFERING, await ctx.run(change))}


class ChangeDiskOfferingState(APIMessage, method="PUT", path="/disk-offerings/{uuid}/actions",
                              resource_type=OFFERING, result=INVENTORY):
    """``enable`` makes an offering ``Enabled``, ``disable`` makes it ``Disabled`` (no new
    volume may be created from it)."""

    uuid = Param(str, required=True, resource_type=OFFERING)
    stateEvent = Param(str, required=True, valid_values=tuple(STATE_EVENTS))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> DiskOfferingVO:
            row = _get(session, self.uuid)
            row.state = STATE_EVENTS[self.stateEvent]
            session.flush()
            return row

        return {"inventory": ctx.inventory(OFFERING, await ctx.run(change))}


class DeleteDiskOffering(APIMessage, method="DELETE", path="/disk-offerings/{uuid}",
                         resource_type=OFFERING, result={}):
    """Delete a disk offering; volumes created from it are not affected."""

    uuid = Param(str, required=True, resource_type=OFFERING)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ctx.delete(OFFERING, self.uuid, self.deleteMode, _delete)
        return {}


class QueryDiskOffering(QueryMessage, path="/disk-offerings", resource=OFFERING):
    """Query disk offerings (``diskSize>=10737418240 state=Enabled``)."""


APIS: tuple[type[APIMessage], ...] = (CreateDiskOffering, UpdateDiskOffering,
                                      ChangeDiskOfferingState, DeleteDiskOffering,
                                      QueryDiskOffering)


# --------------------------------------------------------------------------- hooks


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(OFFERING, model=DiskOfferingVO,
                       inventory="org.zstack.header.configuration.DiskOfferingInventory",
                       description="A data volume size",
                       to_inventory=disk_offering_inventory, columns_only=True)


def db_migrations() -> Iterator[Migrations]:
    yield Migrations("diskoffering", _HERE / "disk_offering_migrations")


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)
