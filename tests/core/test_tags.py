"""Tags stored with their resource, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from zcore import ResourceType, SystemTagPattern, hookimpl
from zcore.db import Base, ResourceMixin, ResourceVO, SystemTagVO, UserTagVO, add_resource
from zcore.errors import ZError
from zcore.node import Node

MakeNode = Callable[..., Awaitable[Node]]


class TagThingVO(ResourceMixin, Base):
    __tablename__ = "TagThingVO"
    color: Mapped[str] = mapped_column(String(32), default="red")


class Things:
    @hookimpl
    def zcore_resource_types(self) -> Any:
        yield ResourceType("TagThingVO", model=TagThingVO)

    @hookimpl
    def zcore_system_tag_patterns(self) -> Any:
        yield SystemTagPattern("label::{label}", "TagThingVO")
        yield SystemTagPattern("staticIp::{l3NetworkUuid}::{ip}", "TagThingVO")


async def thing_node(make_node: MakeNode) -> tuple[Node, str]:
    node = await make_node(("things", Things()))

    def create(session: Session) -> str:
        TagThingVO.__table__.create(session.connection(), checkfirst=True)
        return add_resource(session, TagThingVO(name="t"), "TagThingVO").uuid

    return node, await node.db.run(create)


async def test_system_tags_are_validated_stored_and_tokenised(make_node: MakeNode) -> None:
    node, uuid = await thing_node(make_node)
    tags = node.tags

    def add(session: Session) -> None:
        tags.add_system_tag(session, uuid, "TagThingVO", "label::web-1")
        tags.add_system_tag(session, uuid, "TagThingVO", "staticIp::" + "b" * 32 + "::10.0.0.9")

    await node.db.run(add)
    assert await node.db.run(tags.system_tags, uuid) == ["label::web-1",
                                                         "staticIp::" + "b" * 32 + "::10.0.0.9"]
    assert await node.db.run(tags.tokens, uuid, "TagThingVO", "label::{label}") == \
        [{"label": "web-1"}]
    row = await node.db.run(lambda s: s.scalars(select(SystemTagVO)).first())
    assert (row.type, row.inherent, row.resourceType) == ("System", False, "TagThingVO")


async def test_a_bad_system_tag_leaves_nothing_behind(make_node: MakeNode) -> None:
    node, uuid = await thing_node(make_node)

    def add(session: Session) -> None:
        node.tags.add_system_tag(session, uuid, "TagThingVO", "label::ok")
        node.tags.add_system_tag(session, uuid, "TagThingVO", "colour::blue")

    with pytest.raises(ZError) as caught:
        await node.db.run(add)
    assert caught.value.code == "SYS.1007"
    assert "'colour::blue' matches no pattern for TagThingVO" in caught.value.details
    assert await node.db.run(node.tags.system_tags, uuid) == []


@pytest.mark.parametrize("tag", ["", "   ", "x" * 2049])
async def test_empty_or_oversized_tags_are_refused(make_node: MakeNode, tag: str) -> None:
    node, uuid = await thing_node(make_node)
    with pytest.raises(ZError, match="SYS.1007"):
        await node.db.run(node.tags.add_user_tag, uuid, "TagThingVO", tag)


async def test_user_tags_are_free_text_and_deletable(make_node: MakeNode) -> None:
    node, uuid = await thing_node(make_node)
    row = await node.db.run(node.tags.add_user_tag, uuid, "TagThingVO", "owner: web team")
    assert await node.db.run(node.tags.user_tags, uuid) == ["owner: web team"]
    assert await node.db.run(node.tags.delete, row.uuid) is True
    assert await node.db.run(node.tags.delete, row.uuid) is False
    assert await node.db.run(node.tags.user_tags, uuid) == []


async def test_tags_go_with_their_resource(make_node: MakeNode) -> None:
    node, uuid = await thing_node(make_node)
    await node.db.run(node.tags.add_user_tag, uuid, "TagThingVO", "x")
    await node.db.run(node.tags.add_system_tag, uuid, "TagThingVO", "label::h")

    def remove(session: Session) -> None:
        session.delete(session.get(ResourceVO, uuid))

    await node.db.run(remove)
    assert await node.db.run(lambda s: s.scalars(select(UserTagVO)).all()) == []
    assert await node.db.run(lambda s: s.scalars(select(SystemTagVO)).all()) == []
