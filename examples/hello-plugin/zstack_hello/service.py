"""The greeting service on the bus and its HTTP route."""

from __future__ import annotations

from aiohttp import web

from zcore.bus import Message, Reply
from zcore.node import Node
from zcore.web import NODE


class Greet(Message, frozen=True, kw_only=True):
    name: str


class Greeting(Reply, frozen=True, kw_only=True):
    text: str
    count: int


class Greeter:
    """Answers Greet messages with the configured greeting and a running count."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._count = 0

    async def handle(self, msg: Message) -> Greeting:
        assert isinstance(msg, Greet)
        self._count += 1
        greeting = self._node.global_config.get("hello", "greeting")
        return Greeting(text=f"{greeting}, {msg.name}!", count=self._count)


async def hello(request: web.Request) -> web.Response:
    node = request.app[NODE]
    reply = await node.bus.send("hello", Greet(name=request.query.get("name", "world")),
                                timeout=5)
    assert isinstance(reply, Greeting)
    return web.json_response({"greeting": reply.text, "count": reply.count})
