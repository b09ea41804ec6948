"""The example plugin, installed as a separate distribution, works through the public paths."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from zcore.errors import ZError
from zcore.node import Node

MakeNode = Callable[..., Awaitable[Node]]


async def test_it_is_found_through_its_entry_point(make_node: MakeNode) -> None:
    node = await make_node()
    info = node.plugins.info("hello")
    assert (info.status, info.distribution, info.version) == ("active", "zstack-hello", "1.0.0")


async def test_it_greets_over_http_with_its_global_config(make_node: MakeNode) -> None:
    node = await make_node(serve=True)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/hello", params={"name": "ops"}) as reply:
            assert reply.status == 200
            assert await reply.json() == {"greeting": "Hello, ops!", "count": 1}
        await node.global_config.update("hello", "greeting", "Bonjour")
        async with http.get(f"{node.url}/hello") as reply:
            assert await reply.json() == {"greeting": "Bonjour, world!", "count": 2}


async def test_its_validator_guards_the_option(make_node: MakeNode) -> None:
    node = await make_node()
    with pytest.raises(ZError, match="must not shout"):
        await node.global_config.update("hello", "greeting", "HEY")


async def test_disabling_it_removes_the_route(make_node: MakeNode) -> None:
    node = await make_node(disable=("hello",), serve=True)
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/hello") as reply:
        assert reply.status == 404
