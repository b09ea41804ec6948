"""The garbage collector's APIs: QueryGCJob, TriggerGCJob, DeleteGCJob (administrators only).

They belong to the core plugin (``zcore``) because the garbage collector is a core service
(:mod:`zcore.gc`) every plugin uses.
"""

from __future__ import annotations

from typing import Any

from zcore.api import ApiContext, APIMessage, Param, QueryMessage
from zcore.errors import OPERATION_ERROR, ZError
from zcore.gc import INVENTORY, GarbageCollectorVO, gc_inventory
from zcore.records import ApiMessage, ResourceType

__all__ = ["DeleteGCJob", "QueryGCJob", "TriggerGCJob", "api_messages", "resource_types"]


def resource_types() -> list[ResourceType]:
    return [ResourceType("GarbageCollectorVO", model=GarbageCollectorVO, inventory=INVENTORY,
                         owned_through=None, to_inventory=gc_inventory, columns_only=True,
                         description="a garbage-collector job")]


class QueryGCJob(QueryMessage, path="/gc-jobs", resource="GarbageCollectorVO",
                 admin_only=True):
    """Query garbage-collector jobs: what waits (Idle), runs (Processing) or was collected."""


class TriggerGCJob(APIMessage, method="PUT", path="/gc-jobs/{uuid}/actions", admin_only=True,
                   result={}):
    """Run a garbage-collector job now, whatever event or timer it waits for.

    Fails with ``SYS.1006`` when the run does not finish the work: the job stays Idle, with
    the error, and is tried again on its next event or timer.
    """

    uuid = Param(str, required=True)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        outcome = await ctx.node.gc.run_job(self.uuid)
        if not outcome.done:
            raise ZError(OPERATION_ERROR, "GC job not done",
                         f"GC job {self.uuid} ({outcome.name}) ran and did not finish: "
                         f"{outcome.error}; it stays Idle and is tried again on its next "
                         "event or timer")
        return {}


class DeleteGCJob(APIMessage, method="DELETE", path="/gc-jobs/{uuid}", admin_only=True,
                  result={}):
    """Delete a garbage-collector job: the work it would have finished is abandoned."""

    uuid = Param(str, required=True)

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        await ctx.node.gc.delete_job(self.uuid)
        return {}


def api_messages() -> list[ApiMessage]:
    return [ApiMessage(cls) for cls in (QueryGCJob, TriggerGCJob, DeleteGCJob)]
