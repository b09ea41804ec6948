"""Instance offerings: the CPU and memory sizes a VM is created with, as ZStack's.

Resource ``InstanceOfferingVO`` (``org.zstack.header.configuration.InstanceOfferingInventory``:
uuid, name, description, cpuNum, cpuSpeed, memorySize, reservedMemorySize, type,
allocatorStrategy, sortKey, state, createDate, lastOpDate). APIs: CreateInstanceOffering,
UpdateInstanceOffering, ChangeInstanceOfferingState, DeleteInstanceOffering,
QueryInstanceOffering, with ZStack's routes and parameters.

As in ZStack: sizes are bytes; ``memorySize`` is at least 16 MiB (nothing boots with less);
``cpuNum`` is 1 to 1024; ``type`` is ``UserVm``; ``allocatorStrategy`` defaults to
``DefaultHostAllocatorStrategy`` and must be one of ZStack's host allocator strategies (until
host allocators are drivers that decide); an offering is created ``Enabled``. Several
offerings may share a name. Deleting one does not touch the VMs created from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from zcore import ApiMessage, Migrations, ResourceType
from zcore.api import ApiContext, APIMessage, Param, QueryMessage
from zcore.db import Base, ResourceMixin, add_resource
from zcore.errors import INVALID_ARGUMENT, ZError
from zplugins.compute.common import (
    DELETE_MODES,
    STATE_EVENTS,
    delete_rows,
    get_row,
    refuse_tag_uuids,
)

__all__ = [
    "HOST_ALLOCATOR_STRATEGIES",
    "INSTANCE_OFFERING_TYPES",
    "MIN_MEMORY_SIZE",
    "ChangeInstanceOfferingState",
    "CreateInstanceOffering",
    "DeleteInstanceOffering",
    "InstanceOfferingVO",
    "QueryInstanceOffering",
    "UpdateInstanceOffering",
    "instance_offering_inventory",
]

OFFERING = "InstanceOfferingVO"
INVENTORY = {"inventory": "InstanceOfferingInventory"}
MAX_LONG = 2**63 - 1
MiB = 1024**2

#: ZStack refuses less: "no modern operating system is likely able to boot with" it.
MIN_MEMORY_SIZE = 16 * MiB

#: ZStack's host allocator strategies that a user may choose; the first is the default.
HOST_ALLOCATOR_STRATEGIES = (
    "DefaultHostAllocatorStrategy",
    "LeastVmPreferredHostAllocatorStrategy",
    "MinimumCPUUsageHostAllocatorStrategy",
    "MinimumMemoryUsageHostAllocatorStrategy",
    "MaxInstancePerHostHostAllocatorStrategy",
)

#: What CreateInstanceOffering makes; virtual-router offerings have their own API.
INSTANCE_OFFERING_TYPES = ("UserVm",)

_HERE = Path(__file__).resolve().parent


class InstanceOfferingVO(ResourceMixin, Base):
    """A VM size: CPUs, memory, and how to pick a host for it."""

    __tablename__ = "InstanceOfferingVO"
    __table_args__ = (Index("ix_InstanceOfferingVO_name", "name"),)

    cpuNum: Mapped[int] = mapped_column(Integer())
    cpuSpeed: Mapped[int] = mapped_column(Integer(), default=0)
    memorySize: Mapped[int] = mapped_column(BigInteger())
    reservedMemorySize: Mapped[int] = mapped_column(BigInteger(), default=0)
    type: Mapped[str] = mapped_column(String(64), default="UserVm")
    allocatorStrategy: Mapped[str | None] = mapped_column(String(255), default=None)
    sortKey: Mapped[int] = mapped_column(Integer(), default=0)
    state: Mapped[str] = mapped_column(String(64), default="Enabled")


def instance_offering_inventory(row: InstanceOfferingVO) -> dict[str, Any]:
    """The fields of ZStack's InstanceOfferingInventory."""
    return {"uuid": row.uuid, "name": row.name, "description": row.description,
            "cpuNum": row.cpuNum, "cpuSpeed": row.cpuSpeed, "memorySize": row.memorySize,
            "reservedMemorySize": row.reservedMemorySize, "type": row.type,
            "allocatorStrategy": row.allocatorStrategy, "sortKey": row.sortKey,
            "state": row.state, "createDate": row.createDate, "lastOpDate": row.lastOpDate}


def _bytes(value: int) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value} bytes"


def check_allocator_strategy(api: str, value: str | None) -> None:
    """Refuse (``SYS.1007``, listing them) a strategy that is not one of ZStack's."""
    if value is not None and value not in HOST_ALLOCATOR_STRATEGIES:
        raise ZError(INVALID_ARGUMENT, "invalid argument",
                     f"parameter 'allocatorStrategy' of {api}: {value!r} is not a host "
                     "allocator strategy; valid: " + ", ".join(HOST_ALLOCATOR_STRATEGIES))


def _get(session: Session, uuid: str) -> InstanceOfferingVO:
    return get_row(session, InstanceOfferingVO, OFFERING, uuid)


# --------------------------------------------------------------------------- APIs


class CreateInstanceOffering(APIMessage, method="POST", path="/instance-offerings",
                             resource_type=OFFERING, result=INVENTORY):
    """Create an instance offering, ``Enabled``; owned by the caller's account."""

    name = Param(str, required=True, max_length=255)
    description = Param(str, max_length=2048)
    cpuNum = Param(int, required=True, number_range=(1, 1024), description="Virtual CPUs")
    memorySize = Param(int, required=True, number_range=(1, MAX_LONG), api_type="Long",
                       description=f"Bytes of memory; at least {MIN_MEMORY_SIZE} (16 MiB)")
    reservedMemorySize = Param(int, number_range=(0, MAX_LONG), api_type="Long",
                               description="Bytes of the memory reserved; at most memorySize")
    allocatorStrategy = Param(str, description="How a host is picked for its VMs: "
                                               + ", ".join(HOST_ALLOCATOR_STRATEGIES))
    sortKey = Param(int, description="Orders offerings in user interfaces")
    type = Param(str, description="The kind of VM it is for: " + ", ".join(
        INSTANCE_OFFERING_TYPES))
    resourceUuid = Param(str, description="The uuid the new offering gets (32 lower-case hex "
                                          "digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    async def validate(self, ctx: ApiContext) -> None:
        refuse_tag_uuids(self.api_name, self.tagUuids)
        check_allocator_strategy(self.api_name, self.allocatorStrategy)
        if self.type is not None and self.type not in INSTANCE_OFFERING_TYPES:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'type' of {self.api_name}: {self.type!r} is not an "
                         "instance offering type; valid: " + ", ".join(INSTANCE_OFFERING_TYPES))
        if self.memorySize < MIN_MEMORY_SIZE:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'memorySize' of {self.api_name}: {self.memorySize} bytes "
                         f"({_bytes(self.memorySize)}) is less than {MIN_MEMORY_SIZE} bytes "
                         "(16 MiB); no modern operating system boots with less (memorySize "
                         "is in bytes: 1 GiB is 1073741824)")
        if (self.reservedMemorySize or 0) > self.memorySize:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'reservedMemorySize' of {self.api_name}: "
                         f"{self.reservedMemorySize} bytes is more than memorySize "
                         f"{self.memorySize} bytes")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def insert(session: Session) -> InstanceOfferingVO:
            row = InstanceOfferingVO(
                name=self.name, description=self.description, cpuNum=self.cpuNum, cpuSpeed=0,
                memorySize=self.memorySize, reservedMemorySize=self.reservedMemorySize or 0,
                type=self.type or INSTANCE_OFFERING_TYPES[0],
                allocatorStrategy=self.allocatorStrategy or HOST_ALLOCATOR_STRATEGIES[0],
                sortKey=self.sortKey or 0, state="Enabled")
            if self.resourceUuid is not None:
                row.uuid = self.resourceUuid
            add_resource(session, row, OFFERING, owner_account_uuid=ctx.owner)
            session.flush()
            ctx.add_tags(session, row.uuid, OFFERING)
            return row

        return {"inventory": ctx.inventory(OFFERING, await ctx.run(insert))}


class UpdateInstanceOffering(APIMessage, method="PUT", path="/instance-offerings/{uuid}/actions",
                             resource_type=OFFERING, result=INVENTORY):
    """Change an offering's name, description or allocator strategy; only those given.

    Its sizes do not change: VMs made from it keep the sizes they were made with, and an
    offering says what they are.
    """

    uuid = Param(str, required=True, resource_type=OFFERING)
    name = Param(str, max_length=255)
    description = Param(str, max_length=2048)
    allocatorStrategy = Param(str, description="One of " + ", ".join(HOST_ALLOCATOR_STRATEGIES))

    async def validate(self, ctx: ApiContext) -> None:
        check_allocator_strategy(self.api_name, self.allocatorStrategy)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> InstanceOfferingVO:
            row = _get(session, self.uuid)
            for field in ("name", "description", "allocatorStrategy"):
                value = getattr(self, field)
                if value is not None:
                    setattr(row, field, value)
            session.flush()
            return row

        return {"inventory": ctx.inventory(OFFERING, await ctx.run(change))}


class ChangeInstanceOfferingState(APIMessage, method="PUT",
                                  path="/instance-offerings/{uuid}/actions",
                                  resource_type=OFFERING, result=INVENTORY):
    """``enable`` makes an offering ``Enabled``, ``disable`` makes it ``Disabled`` (no new VM
    may be created from it)."""

    uuid = Param(str, required=True, resource_type=OFFERING)
    stateEvent = Param(str, required=True, valid_values=tuple(STATE_EVENTS))

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        def change(session: Session) -> InstanceOfferingVO:
            row = _get(session, self.uuid)
            row.state = STATE_EVENTS[self.stateEvent]
            session.flush()
            return row

        return {"inventory": ctx.inventory(OFFERING, await ctx.run(change))}


class DeleteInstanceOffering(APIMessage, method="DELETE", path="/instance-offerings/{uuid}",
                             resource_type=OFFERING, result={}):
    """Delete an instance offering; VMs created from it are not affected."""

    uuid = Param(str, required=True, resource_type=OFFERING)
    deleteMode = Param(str, default="Permissive", valid_values=DELETE_MODES)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ctx.delete(OFFERING, self.uuid, self.deleteMode,
                         delete_rows(InstanceOfferingVO, OFFERING))
        return {}


class QueryInstanceOffering(QueryMessage, path="/instance-offerings", resource=OFFERING):
    """Query instance offerings (``cpuNum>=4 memorySize>=4294967296 state=Enabled``)."""


APIS: tuple[type[APIMessage], ...] = (CreateInstanceOffering, UpdateInstanceOffering,
                                      ChangeInstanceOfferingState, DeleteInstanceOffering,
                                      QueryInstanceOffering)


# --------------------------------------------------------------------------- hooks


def resource_types() -> Iterator[ResourceType]:
    yield ResourceType(OFFERING, model=InstanceOfferingVO,
                       inventory="org.zstack.header.configuration.InstanceOfferingInventory",
                       description="A VM size: CPUs and memory",
                       to_inventory=instance_offering_inventory, columns_only=True)


def db_migrations() -> Iterator[Migrations]:
    yield Migrations("offering", _HERE / "offering_migrations")


def api_messages() -> Iterator[ApiMessage]:
    for message in APIS:
        yield ApiMessage(message)
