"""``GetTaskProgress``: the steps an API job reported (:mod:`zcore.progress`).

A core API like those of :mod:`zcore.gc_apis`, since task progress is a core facility any
plugin reports to.
"""

from __future__ import annotations

from typing import Any

from zcore.api import ApiContext, APIMessage, Inventory, Param
from zcore.progress import INVENTORY, progresses
from zcore.records import ApiMessage

__all__ = ["GetTaskProgress", "api_messages"]


class GetTaskProgress(APIMessage, method="GET", path="/task-progresses/{apiId}",
                      result={"inventories": "List"}):
    """The progress of an API job: its latest step, or every step with ``all``."""

    apiId = Param(str, required=True, description="The API job's uuid")
    all = Param(bool, default=False, description="Every step, oldest first")

    async def handle(self, ctx: ApiContext) -> dict[str, Any]:
        steps = progresses(ctx.node).steps(self.apiId)
        if not self.all:
            steps = steps[-1:]
        return {"inventories": [Inventory(INVENTORY, step.inventory(self.apiId))
                                for step in steps]}


def api_messages() -> list[ApiMessage]:
    return [ApiMessage(GetTaskProgress)]
