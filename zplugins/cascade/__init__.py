"""Cascade: deleting a resource first deletes what belongs to it, children first.

Without this plugin, deleting a resource that still has dependants (a zone with clusters) is
refused with ``SYS.1004`` naming them. With it, the ``zcore_delete_dependants`` hook deletes
each dependant the core found through the cascade edges, deepest first, through
``node.api.remove(caller, type, uuid, mode)``: the type's ``ResourceType.delete`` if it has
one, else its rows (and with them its tags). Then the core deletes the resource itself.

What ``deleteMode`` means here:

* ``Permissive`` (the default): when deleting a dependant fails, the deletion stops there
  with ``SYS.1004`` naming the dependant, its cause attached. The resource itself and the
  dependants not reached yet stay; those deleted before the failure stay deleted (each
  dependant is deleted on its own, there is no transaction around them all).
* ``Enforcing``: a dependant whose deletion fails is logged and its rows are deleted anyway,
  without its type's clean-up; the other dependants and the resource itself are deleted.

Before a ``Permissive`` deletion touches anything, every dependant whose type has a
``ResourceType.check_delete`` is asked whether it may go; one veto (a ``ZError`` giving the
reason) stops the deletion with ``SYS.1004`` naming the dependant and the reason, and nothing
is deleted. ``Enforcing`` does not ask.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import delete
from sqlalchemy.orm import Session

from zcore import ZError, hookimpl
from zcore.db import ResourceVO, delete_resource
from zcore.errors import DELETE_FAILED

if TYPE_CHECKING:
    from zcore.api import Caller
    from zcore.node import Node

log = logging.getLogger("zplugins.cascade")

ENFORCING = "Enforcing"


@hookimpl
async def zcore_delete_dependants(node: Node, caller: Caller, resource_type: str, uuid: str,
                                  dependants: list[tuple[str, str]], mode: str) -> bool:
    if mode != ENFORCING:
        deleting = frozenset({uuid, *(dependant for _, dependant in dependants)})
        for kind, dependant in dependants:
            check = node.registry.resource_types[kind].record.check_delete
            if check is None:
                continue
            try:
                await check(node, caller, dependant, deleting)
            except ZError as exc:
                raise ZError(DELETE_FAILED, f"cannot delete {resource_type} {uuid}",
                             f"{kind} {dependant}, which belongs to it, may not be deleted: "
                             f"{exc.description}: {exc.details}; nothing was deleted. Fix the "
                             "cause, or delete with deleteMode=Enforcing to delete it anyway",
                             cause=exc) from exc
    for kind, dependant in dependants:
        try:
            await node.api.remove(caller, kind, dependant, mode)
        except Exception as exc:
            if mode != ENFORCING:
                if not isinstance(exc, ZError):
                    raise
                raise ZError(DELETE_FAILED, f"cannot delete {resource_type} {uuid}",
                             f"deleting {kind} {dependant}, which belongs to it, failed: "
                             f"{exc}; {resource_type} {uuid} was not deleted. Fix the cause, "
                             "or delete with deleteMode=Enforcing to delete it anyway",
                             cause=exc) from exc
            log.warning("deleting %s %s (deleteMode=Enforcing): deleting %s %s, which belongs "
                        "to it, failed; deleting its rows anyway", resource_type, uuid, kind,
                        dependant, exc_info=exc)
            model = node.registry.resource_types[kind].record.model
            await node.db.run(_delete_rows, model, dependant)
    return True


def _delete_rows(session: Session, model: type | None, uuid: str) -> None:
    row = session.get(model, uuid) if model is not None else None
    if row is not None:
        delete_resource(session, row)
    else:
        session.execute(delete(ResourceVO).where(ResourceVO.uuid == uuid))
