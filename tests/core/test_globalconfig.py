"""Global configuration declared by plugins, stored in the database, changed at run time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from zcore import GlobalConfigOption, hookimpl
from zcore.db import GlobalConfigVO
from zcore.errors import ZError
from zcore.node import Node

MakeNode = Callable[..., Awaitable[Node]]


def even(value: int) -> None:
    if value % 2:
        raise ValueError("must be even")


class Options:
    def __init__(self, default: int = 4, description: str = "workers") -> None:
        self.default, self.description = default, description

    @hookimpl
    def zcore_global_configs(self) -> Any:
        yield GlobalConfigOption("test", "workers", int, self.default, self.description,
                                 validator=even, min=2, max=64)
        yield GlobalConfigOption("test", "policy", str, "Delay", "deletion policy",
                                 choices=("Direct", "Delay", "Never"))
        yield GlobalConfigOption("test", "enabled", bool, True)
        yield GlobalConfigOption("test", "ratio", float, 1.5)


async def stored(node: Node, name: str) -> GlobalConfigVO:
    return await node.db.run(lambda s: s.scalars(select(GlobalConfigVO).where(
        GlobalConfigVO.category == "test", GlobalConfigVO.name == name)).one())


async def test_declared_options_are_stored_with_their_defaults(make_node: MakeNode) -> None:
    node = await make_node(("opts", Options()))
    row = await stored(node, "workers")
    assert (row.value, row.defaultValue, row.description) == ("4", "4", "workers")
    assert node.global_config.get("test", "workers") == 4
    assert node.global_config.get("test", "enabled") is True
    assert node.global_config.get("test", "ratio") == 1.5
    inventories = {(i["category"], i["name"]): i for i in
                   await node.global_config.inventories()}
    assert inventories["test", "policy"] == {
        "id": inventories["test", "policy"]["id"], "category": "test", "name": "policy",
        "value": "Delay", "defaultValue": "Delay", "description": "deletion policy"}


@pytest.mark.parametrize(("name", "value", "message"), [
    ("workers", "three", "'three' is not an integer"),
    ("workers", 3, "3 is not valid: must be even"),
    ("workers", 1, "below the minimum 2"),
    ("workers", 66, "above the maximum 64"),
    ("workers", True, "is not an integer"),
    ("policy", "Sometimes", "is not one of Direct, Delay, Never"),
    ("enabled", "perhaps", "is not a boolean"),
    ("ratio", "fast", "is not a number"),
])
async def test_bad_values_are_refused_and_nothing_changes(make_node: MakeNode, name: str,
                                                          value: Any, message: str) -> None:
    node = await make_node(("opts", Options()))
    before = (await stored(node, name)).value
    with pytest.raises(ZError) as caught:
        await node.global_config.update("test", name, value)
    assert caught.value.code == "SYS.1007"
    assert f"test.{name}: " in caught.value.details and message in caught.value.details
    assert (await stored(node, name)).value == before


async def test_an_update_is_stored_typed_and_announced(make_node: MakeNode) -> None:
    node = await make_node(("opts", Options()))
    seen: list[tuple[Any, Any]] = []

    async def watcher(old: Any, new: Any) -> None:
        seen.append((old, new))

    node.global_config.watch("test", "enabled", watcher)
    inventory = await node.global_config.update("test", "enabled", "false")
    assert inventory["value"] == "false"
    assert node.global_config.get("test", "enabled") is False
    assert (await stored(node, "enabled")).value == "false"
    assert seen == [(True, False)]
    await node.global_config.update("test", "enabled", False)
    assert seen == [(True, False)], "an unchanged value does not call watchers"


async def test_reset_goes_back_to_the_default(make_node: MakeNode) -> None:
    node = await make_node(("opts", Options()))
    await node.global_config.update("test", "workers", 8)
    await node.global_config.reset("test", "workers")
    assert node.global_config.get("test", "workers") == 4
    assert (await stored(node, "workers")).value == "4"


async def test_an_unknown_option_is_not_found(make_node: MakeNode) -> None:
    node = await make_node(("opts", Options()))
    with pytest.raises(ZError) as caught:
        await node.global_config.update("test", "nope", 1)
    assert caught.value.code == "SYS.1003"
    assert "no global config test.nope" in caught.value.details


async def test_values_survive_a_restart_and_new_defaults_are_recorded(
        make_node: MakeNode) -> None:
    first = await make_node(("opts", Options()))
    await first.global_config.update("test", "workers", 16)
    await first.stop()
    second = await make_node(("opts", Options(default=6, description="worker threads")))
    assert second.global_config.get("test", "workers") == 16
    row = await stored(second, "workers")
    assert (row.value, row.defaultValue, row.description) == ("16", "6", "worker threads")


async def test_a_stored_value_no_longer_valid_is_reset_with_a_warning(
        make_node: MakeNode, caplog: pytest.LogCaptureFixture) -> None:
    first = await make_node(("opts", Options()))
    await first.db.run(lambda s: s.execute(update(GlobalConfigVO).where(
        GlobalConfigVO.name == "policy").values(value="Sometimes")))
    await first.stop()
    second = await make_node(("opts", Options()))
    assert second.global_config.get("test", "policy") == "Delay"
    assert (await stored(second, "policy")).value == "Delay"
    assert "test.policy held 'Sometimes', which is no longer valid" in caplog.text


async def test_an_invalid_default_stops_start_up(make_node: MakeNode) -> None:
    from zcore.errors import StartupError

    with pytest.raises(StartupError, match=r"plugin 'opts' \(unknown version\): default of "
                                           "test.workers: 3 is not valid: must be even"):
        await make_node(("opts", Options(default=3)))
