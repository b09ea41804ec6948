"""An example plugin: a greeting from global configuration, served over HTTP and the bus."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from zcore import GlobalConfigOption, WebRoute, hookimpl

if TYPE_CHECKING:
    from zcore.node import Node

ZCORE_REQUIRES = ("mgmtnode",)


def _not_shouting(value: str) -> None:
    if value.isupper():
        raise ValueError("a greeting must not shout")


@hookimpl
def zcore_global_configs() -> Iterator[GlobalConfigOption]:
    yield GlobalConfigOption("hello", "greeting", str, "Hello", "What /hello says",
                             validator=_not_shouting)


@hookimpl
def zcore_web_routes() -> Iterator[WebRoute]:
    from zstack_hello.service import hello

    yield WebRoute("GET", "/hello", hello, name="hello")


@hookimpl
def zcore_node_starting(node: Node) -> None:
    from zstack_hello.service import Greeter

    node.bus.register("hello", Greeter(node).handle)
