"""Helpers for the identity tests: log in through the API, act as the session's caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from zcore.api import Caller, Inventory
from zcore.node import Node
from zcore.testing import sha512
from zplugins.identity.service import IdentityService, identity

MakeNode = Callable[..., Awaitable[Node]]


async def login(node: Node, name: str = "admin", password: str = "password") -> str:
    """Log in with the SHA-512 digest of ``password``, as ZStack clients do; the session uuid."""
    reply = await node.api.call("LogInByAccount",
                                {"accountName": name, "password": sha512(password)})
    uuid: str = reply["inventory"]["uuid"]
    return uuid


async def caller_of(node: Node, session_uuid: str) -> Caller:
    return await identity(node).check(session_uuid)


async def as_user(node: Node, name: str = "admin", password: str = "password") -> Caller:
    return await caller_of(node, await login(node, name, password))


async def create_account(node: Node, admin: Caller, name: str, password: str = "secret",
                         **params: Any) -> Inventory:
    reply = await node.api.call("CreateAccount",
                                {"name": name, "password": sha512(password), **params},
                                caller=admin)
    inventory: Inventory = reply["inventory"]
    return inventory


def move_time(*nodes: Node, seconds: float) -> None:
    """Make the identity service of each node believe ``seconds`` have passed."""
    for node in nodes:
        service: IdentityService = identity(node)
        base = service.clock
        service.clock = lambda base=base: base() + seconds  # type: ignore[misc]
