"""What the network modules share: row look-ups, deletion, a persisting step, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zcore.db import delete_resource
from zcore.errors import DELETE_FAILED, INVALID_ARGUMENT, RESOURCE_NOT_FOUND, ZError
from zcore.flow import FlowContext, Step

if TYPE_CHECKING:
    from zcore.api import ApiContext

__all__ = ["DELETE_MODES", "PersistStep", "delete_rows", "get_row", "invalid",
           "refuse_tag_uuids"]

T = TypeVar("T")

#: ``deleteMode`` of the delete APIs.
DELETE_MODES = ("Permissive", "Enforcing")


def invalid(api: str, details: str) -> ZError:
    """``SYS.1007`` for a bad argument of ``api``."""
    return ZError(INVALID_ARGUMENT, "invalid argument", f"{api}: {details}")


def refuse_tag_uuids(api: str, tag_uuids: list[Any] | None) -> None:
    """``tagUuids`` attach existing tag objects (ZStack's tag2), which we do not have yet."""
    if tag_uuids:
        raise invalid(api, "parameter 'tagUuids': attaching existing tags by uuid is not "
                           "supported yet; give the tags as systemTags or userTags instead")


def get_row(session: Session, model: type[T], kind: str, uuid: str) -> T:
    """The row of ``kind`` ``uuid``, or ``SYS.1003`` (it was deleted since the call began)."""
    row = session.get(model, uuid)
    if row is None:
        raise ZError(RESOURCE_NOT_FOUND, "resource not found",
                     f"{kind} {uuid} does not exist (any more)")
    return row


def delete_rows(model: type, kind: str) -> Callable[[Session, str], None]:
    """A ``delete_rows(session, uuid)`` for :meth:`zcore.api.ApiContext.delete`."""

    def delete(session: Session, uuid: str) -> None:
        row = session.get(model, uuid)
        if row is None:
            return
        try:
            delete_resource(session, row)
        except IntegrityError as exc:
            # Something was added under it after its dependants were looked up.
            raise ZError(DELETE_FAILED, f"cannot delete {kind} {uuid}",
                         "a resource that belongs to it was created meanwhile; try again") \
                from exc

    return delete


class PersistStep(Step):
    """Write a resource (and its resource row and the call's tags) in one transaction.

    Subclasses set ``requires = ("api", "<spec key>")``, ``provides = ("<row key>",)``,
    ``model`` and ``insert(session, spec, api)``. Rolled back by deleting the row again.
    """

    model: ClassVar[type]

    @staticmethod
    def insert(session: Session, spec: Any, api: ApiContext) -> Any:
        raise NotImplementedError

    async def run(self, ctx: FlowContext) -> None:
        api: ApiContext = ctx["api"]
        ctx[self.provides[0]] = await api.run(self.insert, ctx[self.requires[1]], api)

    async def rollback(self, ctx: FlowContext) -> None:
        row = ctx.get(self.provides[0])
        if row is not None:
            await ctx["api"].run(_delete_row, self.model, row.uuid)


def _delete_row(session: Session, model: type, uuid: str) -> None:
    row = session.get(model, uuid)
    if row is not None:
        delete_resource(session, row)
