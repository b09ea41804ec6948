"""Queries that read rows of columns instead of model instances: the same inventories."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from zcore import ApiMessage, ResourceType, hookimpl
from zcore.api import QueryMessage
from zcore.db import Base, ResourceMixin, add_resource
from zcore.node import Node

MakeNode = Callable[..., Awaitable[Node]]


class RowThingVO(ResourceMixin, Base):
    __tablename__ = "RowThingVO"
    color: Mapped[str] = mapped_column(String(32), default="red")
    # An attribute whose column is named otherwise: the row still calls it ``size``.
    size: Mapped[int] = mapped_column("thing_size", Integer, default=1)
    secret: Mapped[str | None] = mapped_column(String(32), default=None)


class RowCountVO(ResourceMixin, Base):
    """``count`` is also a method of a row, which would hide the column."""

    __tablename__ = "RowCountVO"
    count: Mapped[int] = mapped_column(Integer, default=0)


SEEN: list[type] = []


def thing_inventory(row: Any) -> dict[str, Any]:
    SEEN.append(type(row))
    return {"uuid": row.uuid, "name": row.name, "color": row.color, "size": row.size,
            "createDate": row.createDate}


def count_inventory(row: Any) -> dict[str, Any]:
    SEEN.append(type(row))
    return {"uuid": row.uuid, "name": row.name, "count": row.count}


class QueryRowThing(QueryMessage, path="/row-things", resource="RowThingVO"):
    """Query row things."""


class QueryRowThingPlain(QueryMessage, path="/row-things-plain", resource="RowThingPlainVO"):
    """Query row things, with the inventory of their columns."""


class QueryRowThingModel(QueryMessage, path="/row-things-model", resource="RowThingModelVO"):
    """Query row things, whose inventory function wants model instances."""


class QueryRowCount(QueryMessage, path="/row-counts", resource="RowCountVO"):
    """Query row counts."""


class Things:
    @hookimpl
    def zcore_resource_types(self) -> Any:
        yield ResourceType("RowThingVO", model=RowThingVO, to_inventory=thing_inventory,
                           columns_only=True)
        yield ResourceType("RowThingPlainVO", model=RowThingVO, hidden=("secret",))
        yield ResourceType("RowThingModelVO", model=RowThingVO, to_inventory=thing_inventory)
        yield ResourceType("RowCountVO", model=RowCountVO, to_inventory=count_inventory,
                           columns_only=True)

    @hookimpl
    def zcore_api_messages(self) -> Any:
        for message in (QueryRowThing, QueryRowThingPlain, QueryRowThingModel, QueryRowCount):
            yield ApiMessage(message)


async def things_node(make_node: MakeNode) -> Node:
    node = await make_node(("row-things", Things()))

    def create(session: Session) -> None:
        for model in (RowThingVO, RowCountVO):
            model.__table__.create(session.connection(), checkfirst=True)  # type: ignore[attr-defined]
        for name, color, size in (("a", "red", 3), ("b", "blue", 1), ("c", "red", 2)):
            add_resource(session, RowThingVO(name=name, color=color, size=size,
                                             secret="s3cret"), "RowThingVO")
        add_resource(session, RowCountVO(name="n", count=7), "RowCountVO")

    await node.db.run(create)
    return node


async def test_a_columns_only_inventory_is_made_from_a_row_with_the_same_fields(
        make_node: MakeNode) -> None:
    node = await things_node(make_node)
    asked = {"q": ["color=red"], "sortBy": "size", "sortDirection": "desc"}
    SEEN.clear()
    from_rows = (await node.api.call("QueryRowThing", asked))["inventories"]
    assert SEEN and not any(issubclass(t, RowThingVO) for t in SEEN)
    SEEN.clear()
    from_models = (await node.api.call("QueryRowThingModel", asked))["inventories"]
    assert SEEN and all(issubclass(t, RowThingVO) for t in SEEN)

    assert [dict(i) for i in from_rows] == [dict(i) for i in from_models]
    assert [(i["name"], i["size"]) for i in from_rows] == [("a", 3), ("c", 2)]
    # A column named otherwise than its attribute is found, sorted on, and named right.
    assert (await node.api.call("QueryRowThing", {"q": ["size<2"]}))["inventories"][0][
        "name"] == "b"


async def test_an_inventory_of_columns_leaves_out_hidden_ones(make_node: MakeNode) -> None:
    node = await things_node(make_node)
    found = (await node.api.call("QueryRowThingPlain", {"sortBy": "name", "limit": 2,
                                                        "start": 1}))["inventories"]
    assert [i["name"] for i in found] == ["b", "c"]
    assert all("secret" not in i for i in found)
    assert found[0]["size"] == 1 and found[0]["color"] == "blue"
    assert set(found[0]) == {"uuid", "name", "description", "color", "size", "createDate",
                             "lastOpDate"}


async def test_a_column_named_like_a_row_method_is_read_from_model_instances(
        make_node: MakeNode) -> None:
    node = await things_node(make_node)
    SEEN.clear()
    found = (await node.api.call("QueryRowCount", {}))["inventories"]
    assert found[0]["count"] == 7
    assert SEEN == [RowCountVO]
