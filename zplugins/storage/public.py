"""The storage plugin's public API for other plugins.

Plugins never import the storage plugin's internals; they use this module.

Primary storage backends (feature plugins such as ``localstorage``, ``nfs``, ``simulator``):

* subclass :class:`PrimaryStorageDriver` and register it in the entry-point namespace
  ``zcore.primary_storage`` (:data:`PRIMARY_STORAGE`) under the name stored in the storage's
  ``type``;
* subclass :class:`AddPrimaryStorageMessage` for their ``Add...PrimaryStorage`` API, setting
  ``storage_type`` and the route; it checks the common parameters, creates the storage through
  the chain ``primary-storage-add`` (persist, then the driver's ``connect``) and answers with
  its inventory.

Capacity, for the VM issue's allocators (bytes; see :mod:`zplugins.storage.primary_ops` for
how the columns are computed):

* choose a primary storage with an indexed query on ``PrimaryStorageVO.availableCapacity``;
* :func:`reserve_capacity` inside the transaction that records the volume: a conditional
  UPDATE that succeeds only if that much is available, so it never goes negative;
* :func:`release_capacity` when the volume goes.

Detaching a primary storage from a cluster runs the chain ``primary-storage-detach``: a plugin
whose resources use the storage there (volumes of VMs in the cluster, with the VM issue)
inserts a step before ``release-primary-storage-on-cluster-hosts`` that raises a ``ZError``
naming them, which refuses the detachment before anything changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from zcore.api import NAME_REGEX, ApiContext, APIMessage, Param
from zcore.errors import INVALID_ARGUMENT, ZError
from zplugins.storage.primary_driver import (
    PRIMARY_STORAGE,
    PS_ATTACH_FAILED,
    PS_CONNECT_FAILED,
    Capacity,
    PrimaryStorageDriver,
    PrimaryStorageInfo,
)
from zplugins.storage.primary_ops import load, parse_size, release, reserve

__all__ = [
    "ADD_CHAIN",
    "PRIMARY_STORAGE",
    "PS_ATTACH_FAILED",
    "PS_CONNECT_FAILED",
    "AddPrimaryStorageMessage",
    "Capacity",
    "PrimaryStorageDriver",
    "PrimaryStorageInfo",
    "PrimaryStorageSpec",
    "parse_size",
    "release_capacity",
    "reserve_capacity",
]

#: The chain that adds a primary storage: ``persist-primary-storage`` (provides
#: ``primary_storage``, the new row), then ``connect-primary-storage``.
ADD_CHAIN = "primary-storage-add"

PS = "PrimaryStorageVO"


def reserve_capacity(session: Session, ps_uuid: str, size: int) -> bool:
    """Reserve ``size`` bytes of primary storage ``ps_uuid`` in this transaction.

    True if reserved; False (and nothing changed) if less than ``size`` is available.
    ``ValueError`` for a negative size.
    """
    return reserve(session, ps_uuid, size)


def release_capacity(session: Session, ps_uuid: str, size: int) -> None:
    """Give back ``size`` bytes reserved on primary storage ``ps_uuid``, in this transaction.

    Never releases more than is reserved; ``ValueError`` for a negative size.
    """
    release(session, ps_uuid, size)


@dataclass(frozen=True, slots=True)
class PrimaryStorageSpec:
    """What an ``Add...PrimaryStorage`` call asked for.

    ``physical`` is an initial physical capacity (the simulator's, given at add); others
    learn it from their driver's ``connect`` or from their hosts.
    """

    zone_uuid: str
    name: str
    url: str
    type: str
    description: str | None = None
    uuid: str | None = None
    physical: Capacity | None = None


class AddPrimaryStorageMessage(APIMessage, resource_type=PS,
                               result={"inventory": "PrimaryStorageInventory"}):
    """The base of ``Add...PrimaryStorage`` APIs (ZStack's ``APIAddPrimaryStorageMsg``).

    Subclasses give the route in the class statement and set ``storage_type`` (the driver
    name); they may override :meth:`check_url` and :meth:`spec`.
    """

    storage_type: ClassVar[str] = ""

    url = Param(str, required=True, max_length=2048, non_empty=True)
    name = Param(str, required=True, max_length=255, valid_regex=NAME_REGEX)
    description = Param(str, max_length=2048)
    type = Param(str, description="The storage type; if given, it must be this API's own")
    zoneUuid = Param(str, required=True, resource_type="ZoneVO")
    resourceUuid = Param(str, description="The uuid the new primary storage gets (32 "
                                          "lower-case hex digits, unused); by default a new one")
    tagUuids = Param(list, description="Not supported yet: give systemTags or userTags")

    def check_url(self, ctx: ApiContext) -> None:
        """Refuse a malformed ``url`` with ``SYS.1007``; by default any non-empty text."""

    def spec(self) -> PrimaryStorageSpec:
        return PrimaryStorageSpec(self.zoneUuid, self.name, self.url.strip(),
                                  self.storage_type, self.description, self.resourceUuid)

    async def validate(self, ctx: ApiContext) -> None:
        if self.tagUuids:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'tagUuids' of {self.api_name}: attaching existing tags by "
                         "uuid is not supported yet; give the tags as systemTags or userTags "
                         "instead")
        if self.type is not None and self.type != self.storage_type:
            raise ZError(INVALID_ARGUMENT, "invalid argument",
                         f"parameter 'type' of {self.api_name}: {self.type!r} is not "
                         f"{self.storage_type!r}, the only type this API adds; leave it out")
        ctx.node.drivers.get(PRIMARY_STORAGE, self.storage_type)
        self.check_url(ctx)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        flow = await ctx.node.run_flow(ADD_CHAIN, {"api": ctx, "primary_storage_spec":
                                                   self.spec()})
        row = await ctx.run(load, flow["primary_storage"].uuid)
        return {"inventory": ctx.inventory(PS, row)}
