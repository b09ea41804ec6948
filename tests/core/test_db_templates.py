"""zcore.testing.db: test databases cloned from a migrated template are the migrated database.

Each test runs on every backend chosen with --db.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, create_engine, inspect, select
from sqlalchemy.exc import IntegrityError

from zcore.db import create_database
from zcore.node import Node
from zcore.plugins import PluginSet
from zcore.records import Migrations

MakeNode = Callable[..., Awaitable[Node]]

# A throwaway plugin branch with what a copy could get wrong: an auto-increment key, a
# unique constraint, a check, a server default, an index, a foreign key and seed rows.
SEEDS = '''
import sqlalchemy as sa
from alembic import op

revision = "ztpl_0001"
down_revision = None
branch_labels = ("ztpl",)
depends_on = "zcore_0001"


def upgrade():
    seeds = op.create_table(
        "ZTplSeedVO",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), server_default="7", nullable=False),
        sa.Column("resourceUuid", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ZTplSeedVO")),
        sa.UniqueConstraint("name", name=op.f("uq_ZTplSeedVO_name")),
        sa.CheckConstraint("size > 0", name=op.f("ck_ZTplSeedVO_size_positive")),
        sa.ForeignKeyConstraint(["resourceUuid"], ["ResourceVO.uuid"], ondelete="SET NULL",
                                name=op.f("fk_ZTplSeedVO_resourceUuid_ResourceVO")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_ZTplSeedVO_size"), "ZTplSeedVO", ["size"])
    op.bulk_insert(seeds, [{"name": "first", "size": 1}, {"name": "second", "size": 2}])
'''

MORE = '''
import sqlalchemy as sa
from alembic import op

revision = "ztpl_0002"
down_revision = "ztpl_0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("ZTplMoreVO", sa.Column("id", sa.Integer(), primary_key=True))
'''


@pytest.fixture
def templates(zcore_db_templates: Any) -> Any:
    if not zcore_db_templates.enabled:
        pytest.skip("--no-db-templates: nothing is cloned")
    return zcore_db_templates


@pytest.fixture
def seeds(tmp_path: Path) -> Migrations:
    directory = tmp_path / "ztpl"
    directory.mkdir()
    (directory / "ztpl_0001_seeds.py").write_text(SEEDS)
    return Migrations("ztpl", directory)


@pytest.fixture
def new_database(templates: Any, database_backend: str, database_url: str,
                 tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    """More fresh databases on this run's backend, each as ``database_url``'s (which makes
    the test run on every backend)."""
    made: list[Any] = []

    def make(label: str) -> Any:
        (tmp_path / label).mkdir()
        made.append(templates.create(database_backend, tmp_path / label))
        return made[-1]

    yield make
    for database in made:
        templates.drop(database)


async def migrate(url: str, sources: list[Migrations]) -> list[str]:
    db = create_database(url)
    try:
        return await db.migrate(sources)
    finally:
        await db.close()


async def clone(templates: Any, database: Any, sources: list[Migrations]) -> bool:
    return bool(await asyncio.to_thread(templates.clone, database, sources))


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def dump(url: str) -> dict[str, Any]:
    """Everything about a database a migration makes: the schema, as the backend tells it, and
    the rows. Names of its own schema or database are replaced by ``S``."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            dialect = conn.dialect.name
            own = str(conn.exec_driver_sql(
                "SELECT current_schema()" if dialect == "postgresql" else
                "SELECT DATABASE()" if dialect in ("mysql", "mariadb") else "SELECT 'main'"
            ).scalar())
            found = inspect(conn)
            result: dict[str, Any] = {}
            for table in sorted(found.get_table_names()):
                rows = conn.execute(select(Table(table, MetaData(), autoload_with=conn))).all()
                result[table] = {
                    "columns": [{k: str(v) for k, v in column.items()}
                                for column in found.get_columns(table)],
                    "primary key": found.get_pk_constraint(table),
                    "foreign keys": sorted(map(str, found.get_foreign_keys(table))),
                    "indexes": sorted(map(str, found.get_indexes(table))),
                    "unique": sorted(map(str, found.get_unique_constraints(table))),
                    "checks": sorted(map(str, found.get_check_constraints(table))),
                    "rows": sorted(map(repr, rows)),
                }
                if dialect in ("mysql", "mariadb"):
                    result[table]["ddl"] = conn.exec_driver_sql(
                        f"SHOW CREATE TABLE `{table}`").one()[1]
            if dialect == "postgresql":
                for name, query in {
                    "indexes": "SELECT indexname, indexdef FROM pg_indexes "
                               "WHERE schemaname = current_schema()",
                    "constraints": "SELECT conrelid::regclass::text, conname, "
                                   "pg_get_constraintdef(oid) FROM pg_constraint "
                                   "WHERE connamespace = current_schema()::regnamespace",
                    "sequences": "SELECT * FROM pg_sequences WHERE schemaname = current_schema()",
                    "owned sequences": "SELECT s.relname, t.relname, d.deptype FROM pg_depend d "
                                       "JOIN pg_class s ON s.oid = d.objid "
                                       "JOIN pg_class t ON t.oid = d.refobjid "
                                       "WHERE s.relkind = 'S' "
                                       "AND s.relnamespace = current_schema()::regnamespace",
                }.items():
                    result[name] = sorted(map(repr, conn.exec_driver_sql(query).all()))
            elif dialect == "sqlite":
                result["sqlite_master"] = conn.exec_driver_sql(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").all()
    finally:
        engine.dispose()
    return _anonymous(result, own)


def _anonymous(value: Any, own: str) -> Any:
    if isinstance(value, dict):
        return {k: _anonymous(v, own) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_anonymous(v, own) for v in value]
    return value.replace(own, "S") if isinstance(value, str) else value


def add_seed(url: str) -> list[tuple[Any, ...]]:
    """Add a seed row as a user would; then every row, as (id, name, size)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            table = Table("ZTplSeedVO", MetaData(), autoload_with=conn)
            conn.execute(table.insert().values(name="third"))
            return [tuple(row) for row in conn.execute(
                select(table.c.id, table.c.name, table.c.size).order_by(table.c.id))]
    finally:
        engine.dispose()


async def test_a_clone_is_exactly_the_migrated_database(
    templates: Any, new_database: Callable[[str], Any], make_plugins: Callable[..., PluginSet],
    seeds: Migrations,
) -> None:
    sources = [*make_plugins().registry.records("db_migrations"), seeds]
    migrated, cloned = new_database("migrated"), new_database("cloned")
    assert "ztpl_0001" in await migrate(migrated.url, sources)
    assert await clone(templates, cloned, sources)
    assert await migrate(cloned.url, sources) == []  # at head already

    assert dump(cloned.url) == dump(migrated.url)
    # The auto-increment goes on from the seeds alike; the unique constraint holds alike.
    assert add_seed(cloned.url) == add_seed(migrated.url) == [
        (1, "first", 1), (2, "second", 2), (3, "third", 7)]
    for url in (cloned.url, migrated.url):
        with pytest.raises(IntegrityError):
            add_seed(url)


async def test_a_new_revision_makes_a_new_template(
    templates: Any, new_database: Callable[[str], Any], seeds: Migrations,
) -> None:
    first = new_database("first")
    assert await clone(templates, first, [seeds])
    assert "ZTplSeedVO" in table_names(first.url)

    (Path(seeds.path) / "ztpl_0002_more.py").write_text(MORE)
    second = new_database("second")
    assert await clone(templates, second, [seeds])
    assert {"ZTplSeedVO", "ZTplMoreVO"} <= table_names(second.url)
    assert "ZTplMoreVO" not in table_names(first.url)
    assert await migrate(second.url, [seeds]) == []


async def test_a_database_in_use_is_left_alone(
    templates: Any, database_url: str, database_template: Any,
) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE mine (id INTEGER PRIMARY KEY)")
    finally:
        engine.dispose()
    assert await database_template.apply([]) is False
    assert table_names(database_url) == {"mine"}


async def test_the_first_node_finds_its_database_migrated(
    templates: Any, make_node: MakeNode, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="zcore.node"):
        node = await make_node()
    assert "migrated" not in caplog.text
    assert node.db.current_revisions() >= {"mgmtnode_0001"}


@pytest.mark.no_db_template
async def test_a_marked_test_migrates_for_real(
    make_node: MakeNode, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="zcore.node"):
        await make_node()
    assert "migrated: zcore_0001" in caplog.text
