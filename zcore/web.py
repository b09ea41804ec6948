"""What HTTP handlers need from the core: the node's application key and the health check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = ["NODE", "health"]

NODE: web.AppKey[Node] = web.AppKey("zcore.node")


async def health(request: web.Request) -> web.Response:
    """``GET /health``: 200 with the node's identity while it serves."""
    node = request.app[NODE]
    from zcore import __version__

    return web.json_response({
        "status": "ok",
        "nodeUuid": node.uuid,
        "version": __version__,
        "database": node.db.dialect,
        "plugins": {info.name: info.status for info in node.plugins.infos},
    })
