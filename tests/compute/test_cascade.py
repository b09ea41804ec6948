"""Deleting zones and clusters that still have dependants, with and without the cascade plugin."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from zcore import CascadeEdge, Migrations, ResourceType, hookimpl
from zcore.api import Caller
from zcore.db import Base, ResourceMixin, add_resource
from zcore.errors import ZError
from zcore.node import Node

from .helpers import NOTHING, MakeNode, call, cluster, compute_tags, counts, fails, zone

pytestmark = pytest.mark.db


async def test_without_cascade_a_zone_with_clusters_is_not_deleted(make_node: MakeNode) -> None:
    node = await make_node(disable=("cascade",))
    z = await zone(node)
    c1, c2 = await cluster(node, z["uuid"], "c1"), await cluster(node, z["uuid"], "c2")
    before = await counts(node)
    for mode in ("Permissive", "Enforcing"):
        error = await fails(call(node, "DeleteZone", uuid=z["uuid"], deleteMode=mode),
                            "SYS.1004")
        assert z["uuid"] in error.description
        assert f"ClusterVO {c1['uuid']}" in error.details
        assert f"ClusterVO {c2['uuid']}" in error.details
        assert "cascade plugin" in error.details
    assert await counts(node) == before
    # Once its clusters are gone, the zone goes.
    await call(node, "DeleteCluster", uuid=c1["uuid"])
    await call(node, "DeleteCluster", uuid=c2["uuid"])
    await call(node, "DeleteZone", uuid=z["uuid"])
    assert await counts(node) == NOTHING


@pytest.mark.parametrize("mode", ["Permissive", "Enforcing"])
async def test_with_cascade_the_clusters_and_their_tags_go_first(make_node: MakeNode,
                                                                 mode: str) -> None:
    node = await make_node(("compute_tags", compute_tags))
    z = await zone(node, systemTags=["owner::ops"], userTags=["web"])
    await cluster(node, z["uuid"], "c1", systemTags=["rack::r1"], userTags=["fast"])
    await cluster(node, z["uuid"], "c2", userTags=["slow"])
    other = await zone(node, "z2", userTags=["other"])
    await cluster(node, other["uuid"], "c3", userTags=["stays"])
    await call(node, "DeleteZone", uuid=z["uuid"], deleteMode=mode)
    assert await counts(node) == {**NOTHING, "zones": 1, "clusters": 1, "resources": 2,
                                  "user_tags": 2}
    found = await call(node, "QueryCluster")
    assert [c["name"] for c in found["inventories"]] == ["c3"]


# --------------------------------------------------------------------------- failing dependants


class GadgetVO(ResourceMixin, Base):
    """A resource of a test plugin that belongs to a cluster and may refuse to be deleted."""

    __tablename__ = "ZTestGadgetVO"

    clusterUuid: Mapped[str] = mapped_column(String(32), ForeignKey("ClusterVO.uuid"),
                                             index=True)


GADGET_REVISION = '''
import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "ztestgadget_0001"
down_revision = None
branch_labels = ("ztestgadget",)
depends_on = ("zcore_0001", "compute")


def upgrade():
    op.create_table(
        "ZTestGadgetVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("clusterUuid", sa.String(32), nullable=False),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["clusterUuid"], ["ClusterVO.uuid"]),
    )


def downgrade():
    op.drop_table("ZTestGadgetVO")
'''


class Gadgets:
    """The test plugin: gadgets whose deletion fails while ``refuse`` is set."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ztestgadget_0001.py").write_text(GADGET_REVISION)
        self.directory = directory
        self.refuse = True
        self.veto: str | None = None
        self.deleted: list[str] = []

    @hookimpl
    def zcore_resource_types(self) -> Any:
        yield ResourceType("ZTestGadgetVO", model=GadgetVO, delete=self.delete,
                           check_delete=self.check_delete)

    @hookimpl
    def zcore_cascade_edges(self) -> Any:
        yield CascadeEdge("ZTestGadgetVO", "ClusterVO", field="clusterUuid")

    @hookimpl
    def zcore_db_migrations(self) -> Any:
        yield Migrations("ztestgadget", self.directory)

    async def check_delete(self, node: Node, caller: Caller, uuid: str,
                           deleting: frozenset[str]) -> None:
        if self.veto is not None:
            raise ZError("TEST.1001", "the gadget says no", f"gadget {uuid}: {self.veto}")

    async def delete(self, node: Node, caller: Caller, uuid: str, mode: str) -> None:
        if self.refuse:
            raise ZError("TEST.1000", "the gadget is busy", f"gadget {uuid} is in use")

        def rows(session: Session) -> None:
            row = session.get(GadgetVO, uuid)
            if row is not None:
                session.delete(row)

        await node.db.run(rows)
        self.deleted.append(uuid)


async def add_gadget(node: Node, cluster_uuid: str, name: str) -> str:
    def add(session: Session) -> str:
        return add_resource(session, GadgetVO(name=name, clusterUuid=cluster_uuid),
                            "ZTestGadgetVO").uuid

    return await node.db.run(add)


async def gadgets(node: Node) -> int:
    def count(session: Session) -> int:
        return session.scalar(select(func.count()).select_from(GadgetVO)) or 0

    return await node.db.run(count)


async def test_permissive_stops_at_a_dependant_that_fails(make_node: MakeNode,
                                                          tmp_path: Path) -> None:
    plugin = Gadgets(tmp_path / "gadgets")
    node = await make_node(("gadgets", plugin))
    z = await zone(node)
    c = await cluster(node, z["uuid"])
    gadget = await add_gadget(node, c["uuid"], "g1")
    before = await counts(node)
    error = await fails(call(node, "DeleteZone", uuid=z["uuid"]), "SYS.1004")
    assert f"ZTestGadgetVO {gadget}" in error.details and "deleteMode=Enforcing" in error.details
    assert error.cause is not None and error.cause.code == "TEST.1000"
    assert await counts(node) == before and await gadgets(node) == 1
    # The cluster alone is refused the same way.
    await fails(call(node, "DeleteCluster", uuid=c["uuid"]), "SYS.1004")
    assert await counts(node) == before
    plugin.refuse = False
    await call(node, "DeleteZone", uuid=z["uuid"])
    assert plugin.deleted == [gadget]
    assert await counts(node) == NOTHING and await gadgets(node) == 0


async def test_enforcing_deletes_anyway_and_logs_the_failure(
        make_node: MakeNode, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugin = Gadgets(tmp_path / "gadgets")
    node = await make_node(("gadgets", plugin))
    z = await zone(node)
    c1, c2 = await cluster(node, z["uuid"], "c1"), await cluster(node, z["uuid"], "c2")
    g1 = await add_gadget(node, c1["uuid"], "g1")
    await add_gadget(node, c2["uuid"], "g2")
    with caplog.at_level(logging.WARNING, logger="zplugins.cascade"):
        await call(node, "DeleteZone", uuid=z["uuid"], deleteMode="Enforcing")
    assert await counts(node) == NOTHING and await gadgets(node) == 0
    failures = [r for r in caplog.records if r.name == "zplugins.cascade"]
    assert len(failures) == 2
    assert any(f"ZTestGadgetVO {g1}" in r.getMessage() for r in failures)  # in any order
    assert all("Enforcing" in r.getMessage() for r in failures)
    assert plugin.deleted == []


async def test_the_dependants_are_deleted_children_first(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = Gadgets(tmp_path / "gadgets")
    plugin.refuse = False
    node = await make_node(("gadgets", plugin))
    z = await zone(node)
    c = await cluster(node, z["uuid"])
    g = await add_gadget(node, c["uuid"], "g1")
    seen: list[tuple[str, str]] = []
    original = node.api.remove

    async def remove(caller: Caller, kind: str, uuid: str, mode: str) -> None:
        seen.append((kind, uuid))
        await original(caller, kind, uuid, mode)

    monkeypatch.setattr(node.api, "remove", remove)
    await call(node, "DeleteZone", uuid=z["uuid"])
    assert seen == [("ZTestGadgetVO", g), ("ClusterVO", c["uuid"])]
    assert await counts(node) == NOTHING


async def test_a_veto_stops_a_permissive_deletion_before_anything_goes(
        make_node: MakeNode, tmp_path: Path) -> None:
    plugin = Gadgets(tmp_path / "gadgets")
    plugin.refuse = False
    plugin.veto = "it is still recording"
    node = await make_node(("gadgets", plugin))
    z = await zone(node)
    await cluster(node, z["uuid"], "c1")
    c2 = await cluster(node, z["uuid"], "c2")
    gadget = await add_gadget(node, c2["uuid"], "g1")
    before = await counts(node)
    error = await fails(call(node, "DeleteZone", uuid=z["uuid"]), "SYS.1004")
    assert f"ZTestGadgetVO {gadget}" in error.details and "still recording" in error.details
    assert await counts(node) == before and await gadgets(node) == 1  # c1 was not deleted
    await call(node, "DeleteZone", uuid=z["uuid"], deleteMode="Enforcing")  # does not ask
    assert await counts(node) == NOTHING and plugin.deleted == [gadget]
