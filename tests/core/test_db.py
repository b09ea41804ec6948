"""zcore.db: models, migrations, transactions off the loop; on every backend chosen with --db."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import BigInteger, String, func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from zcore.db import (
    CORE_REVISION,
    Base,
    Database,
    GlobalConfigVO,
    ResourceMixin,
    ResourceVO,
    SystemTagVO,
    UserTagVO,
    add_resource,
    create_database,
    delete_resource,
    insert_checked,
    insert_unless_taken,
    is_uuid,
    lock_for_update,
    new_uuid,
    sent_together,
    table_of,
    write_checked,
)
from zcore.errors import INVALID_ARGUMENT, StartupError, ZError
from zcore.records import Migrations

# These tests are of migrating itself: never a copy of a migrated template.
pytestmark = pytest.mark.no_db_template

CORE_TABLES = {"ResourceVO", "GlobalConfigVO", "SystemTagVO", "UserTagVO",
               "GarbageCollectorVO"}
#: The core branch's revisions in order; plugin branches depend on the first one only.
CORE_REVISIONS = [CORE_REVISION, "zcore_0002"]
APPLIED = {"zcore": CORE_REVISIONS, "ztest": ["ztest_0001", "ztest_0002"]}


def by_branch(applied: list[str]) -> dict[str, list[str]]:
    """Revisions applied, per branch in the order applied; branches may interleave."""
    branches: dict[str, list[str]] = {}
    for revision in applied:
        branches.setdefault(revision.rsplit("_", 1)[0], []).append(revision)
    return branches


class ZTestThingVO(ResourceMixin, Base):
    """A resource of a throwaway plugin, created by the plugin migrations below."""

    __tablename__ = "ZTestThingVO"

    size: Mapped[int] = mapped_column(BigInteger(), index=True, default=0)


PLUGIN_REVISIONS = {
    "ztest_0001_things.py": '''
import sqlalchemy as sa
from alembic import op

from zcore.db import UTCDateTime

revision = "ztest_0001"
down_revision = None
branch_labels = ("ztest",)
depends_on = "zcore_0001"


def upgrade():
    op.create_table(
        "ZTestThingVO",
        sa.Column("uuid", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(2048), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("createDate", UTCDateTime(), nullable=False),
        sa.Column("lastOpDate", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_ZTestThingVO")),
        sa.ForeignKeyConstraint(["uuid"], ["ResourceVO.uuid"], ondelete="CASCADE",
                                name=op.f("fk_ZTestThingVO_uuid_ResourceVO")),
    )


def downgrade():
    op.drop_table("ZTestThingVO")
''',
    "ztest_0002_size_index.py": '''
from alembic import op

revision = "ztest_0002"
down_revision = "ztest_0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(op.f("ix_ZTestThingVO_size"), "ZTestThingVO", ["size"])


def downgrade():
    op.drop_index(op.f("ix_ZTestThingVO_size"), table_name="ZTestThingVO")
''',
}


def write_plugin(directory: Path, revisions: dict[str, str]) -> Path:
    directory.mkdir(parents=True)
    for name, body in revisions.items():
        (directory / name).write_text(body)
    return directory


@pytest.fixture
def plugin_migrations(tmp_path: Path) -> Migrations:
    return Migrations("ztest", write_plugin(tmp_path / "ztest_migrations", PLUGIN_REVISIONS))


@pytest.fixture
def database_migrations(plugin_migrations: Migrations) -> list[Migrations]:
    # The `database` fixture migrates this module's throwaway plugin branch too.
    return [plugin_migrations]


@pytest_asyncio.fixture
async def fresh_db(database_url: str) -> AsyncIterator[Database]:
    """A database that has never been migrated."""
    db = create_database(database_url)
    yield db
    await db.close()


def thing(name: str = "thing", **fields: object) -> ZTestThingVO:
    return ZTestThingVO(name=name, **fields)


def add_twice(session: Session) -> None:
    """Two resources with one new uuid, both pending in one transaction."""
    fresh = new_uuid()
    add_resource(session, thing(uuid=fresh), "ZTestThingVO")
    add_resource(session, thing(uuid=fresh), "ZTestThingVO")


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


# --------------------------------------------------------------------------- helpers


def test_uuids() -> None:
    uuid = new_uuid()
    assert is_uuid(uuid) and len(uuid) == 32
    assert new_uuid() != uuid
    for bad in (uuid.upper(), uuid[:-1], uuid + "0", f"{uuid[:8]}-{uuid[8:]}", "g" * 32, None, 7):
        assert not is_uuid(bad)


# --------------------------------------------------------------------------- migrations


async def test_migrations_create_the_core_tables(database: Database) -> None:
    tables = set(inspect(database.engine).get_table_names())
    assert CORE_TABLES | {"alembic_version", "ZTestThingVO"} <= tables
    # zcore_0001 is the plugin's dependency; the core's branch has its own head.
    assert database.current_revisions() == {"ztest_0002", CORE_REVISIONS[-1]}
    columns = {c["name"] for c in inspect(database.engine).get_columns("SystemTagVO")}
    assert columns == {"uuid", "resourceUuid", "resourceType", "tag", "type", "inherent",
                       "createDate", "lastOpDate"}


async def test_migrations_match_the_models(database: Database) -> None:
    ours = CORE_TABLES | {"ZTestThingVO"}

    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in ours

    def diff(session: Session) -> list[object]:
        context = MigrationContext.configure(
            session.connection(), opts={"compare_type": True, "include_object": include})
        return compare_metadata(context, Base.metadata)

    assert await database.run(diff) == []


async def test_plugin_branch_is_applied_once(
    fresh_db: Database, plugin_migrations: Migrations
) -> None:
    assert fresh_db.current_revisions() == set()
    applied = await fresh_db.migrate([plugin_migrations])
    assert applied[0] == CORE_REVISION and by_branch(applied) == APPLIED
    assert fresh_db.current_revisions() == {"ztest_0002", CORE_REVISIONS[-1]}
    assert "ZTestThingVO" in inspect(fresh_db.engine).get_table_names()

    assert await fresh_db.migrate([plugin_migrations]) == []
    assert fresh_db.current_revisions() == {"ztest_0002", CORE_REVISIONS[-1]}


async def test_nodes_starting_together_migrate_once(
    database_url: str, plugin_migrations: Migrations
) -> None:
    first, second = create_database(database_url), create_database(database_url)
    try:
        results = await asyncio.gather(first.migrate([plugin_migrations]),
                                       second.migrate([plugin_migrations]))
    finally:
        await first.close()
        await second.close()
    first_result, second_result = sorted(results, key=len)
    assert first_result == [] and by_branch(second_result) == APPLIED


async def test_missing_plugin_branch_is_a_startup_error(
    fresh_db: Database, plugin_migrations: Migrations
) -> None:
    await fresh_db.migrate([plugin_migrations])

    with pytest.raises(StartupError) as info:
        await fresh_db.migrate([])
    message = str(info.value)
    assert "'ztest_0002'" in message and "'ztest'" in message
    assert fresh_db.masked_url in message
    assert "enable it again" in message

    for path in Path(plugin_migrations.path).iterdir():  # the plugin is uninstalled
        path.unlink()
    Path(plugin_migrations.path).rmdir()
    with pytest.raises(StartupError, match="migrations of branch 'ztest' are missing"):
        await fresh_db.migrate([plugin_migrations])


async def test_failing_migration_names_its_revision(fresh_db: Database, tmp_path: Path) -> None:
    bad = write_plugin(tmp_path / "zbad", {"zbad_0001.py": '''
from alembic import op

revision = "zbad_0001"
down_revision = None
branch_labels = ("zbad",)
depends_on = "zcore_0001"


def upgrade():
    op.execute("SELECT noSuchColumn FROM ResourceVO")
'''})
    with pytest.raises(StartupError) as info:
        await fresh_db.migrate([Migrations("zbad", bad)])
    assert "while applying revision 'zbad_0001'" in str(info.value)
    assert "noSuchColumn" in str(info.value)


async def test_source_without_its_branch_label_is_a_startup_error(
    fresh_db: Database, tmp_path: Path
) -> None:
    source = Migrations("other", write_plugin(tmp_path / "other", PLUGIN_REVISIONS))
    with pytest.raises(StartupError, match="declare no branch 'other'"):
        await fresh_db.migrate([source])


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://zstack:s3cret@127.0.0.1:1/zstack",
    "mysql+pymysql://zstack:s3cret@127.0.0.1:1/zstack",
], ids=["postgresql", "mariadb"])
def test_unreachable_server_is_a_startup_error(url: str) -> None:
    db = create_database(url)
    try:
        with pytest.raises(StartupError) as info:
            db.upgrade()
    finally:
        db.close_sync()
    message = str(info.value)
    assert "cannot connect to the database" in message
    assert "zstack:***@127.0.0.1:1/zstack" in message
    assert "s3cret" not in message


@pytest.mark.parametrize("driver", ["pymysql", "mysqldb"])
async def test_mariadb_through_either_driver(
        driver: str, database_url: str, database_migrations: list[Migrations]) -> None:
    url = sa.make_url(database_url)
    if url.get_backend_name() != "mysql":
        pytest.skip("a MariaDB driver")
    pytest.importorskip("MySQLdb" if driver == "mysqldb" else "pymysql")
    db = create_database(url.set(drivername=f"mysql+{driver}")
                         .render_as_string(hide_password=False))
    try:
        await db.migrate(database_migrations)
        made = await db.run(lambda s: add_resource(s, thing("m", size=3), "ZTestThingVO").uuid)
        assert await db.read(lambda s: s.get_one(ZTestThingVO, made).size) == 3

        # The driver's duplicate key error, told as ours; nothing of it stays.
        with pytest.raises(ZError, match="resource uuid already exists"):
            await db.run(add_twice)
        assert await db.read(count, ResourceVO) == 1

        # Writes sent together (CLIENT_MULTI_STATEMENTS, the driver's own binding) arrive
        # before the read that follows them, their values intact.
        uuid = new_uuid()

        def together(session: Session) -> int:
            with sent_together(session) as connection:
                connection.execute(sa.insert(table_of(ResourceVO)), {
                    "uuid": uuid, "resourceName": _TRICKY_NAME,
                    "resourceType": "ZTestThingVO", "createDate": datetime.now(UTC)})
                return count(session, ResourceVO)

        assert await db.run(together) == 2
        assert await db.read(lambda s: s.get_one(ResourceVO, uuid).resourceName) == \
            _TRICKY_NAME
    finally:
        await db.close()


# --------------------------------------------------------------------------- SQLite


async def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "zstack.db"
    db = create_database(f"sqlite:///{path}")
    try:
        assert db.threads == 1
        await db.migrate()

        def pragmas(session: Session) -> tuple[object, ...]:
            return tuple(session.execute(text(f"PRAGMA {name}")).scalar()
                         for name in ("journal_mode", "synchronous", "foreign_keys"))

        assert await db.run(pragmas) == ("wal", 1, 1)
        assert path.exists()
    finally:
        await db.close()


async def test_sqlite_in_memory_is_shared_between_threads() -> None:
    db = create_database("sqlite://")
    try:
        await db.migrate()
        await db.run(lambda s: s.add(GlobalConfigVO(category="c", name="n", value="1")))
        assert db.run_sync(lambda s: s.scalar(select(GlobalConfigVO.value))) == "1"
    finally:
        await db.close()


# --------------------------------------------------------------------------- transactions


async def test_run_commits(database: Database) -> None:
    created = await database.run(lambda s: add_resource(s, thing("a"), "ZTestThingVO"))
    assert created.name == "a"  # readable after the commit

    def read(session: Session) -> tuple[str, str]:
        row = session.get_one(ZTestThingVO, created.uuid)
        resource = session.get_one(ResourceVO, created.uuid)
        return row.name, resource.resourceType

    assert await database.run(read) == ("a", "ZTestThingVO")
    assert database.run_sync(read) == ("a", "ZTestThingVO")


async def test_run_rolls_back_and_reraises(database: Database) -> None:
    boom = ValueError("boom")

    def fail(session: Session) -> None:
        add_resource(session, thing(), "ZTestThingVO")
        session.add(GlobalConfigVO(category="c", name="n"))
        session.flush()
        raise boom

    with pytest.raises(ValueError) as info:
        await database.run(fail)
    assert info.value is boom
    with pytest.raises(ValueError):
        database.run_sync(fail)

    def counts(session: Session) -> list[int]:
        return [count(session, m) for m in (ZTestThingVO, ResourceVO, GlobalConfigVO)]

    assert await database.run(counts) == [0, 0, 0]


async def test_transactions_at_once_each_keep_or_lose_only_their_own_writes(
        database: Database) -> None:
    begun = []

    def began(connection: object) -> None:
        begun.append(connection)

    sa.event.listen(database.engine, "begin", began)

    def write(session: Session, i: int) -> str:
        row = add_resource(session, thing(f"t{i}"), "ZTestThingVO")
        session.flush()
        if i % 3 == 0:
            raise ValueError(f"no {i}")
        # What the transactions before this one wrote is there, as if they ran one by one.
        return f"{row.name}:{count(session, ZTestThingVO) > 0}"

    outcomes = await asyncio.gather(*(database.run(write, i) for i in range(60)),
                                    return_exceptions=True)
    sa.event.remove(database.engine, "begin", began)

    for i, outcome in enumerate(outcomes):
        if i % 3 == 0:
            assert isinstance(outcome, ValueError) and str(outcome) == f"no {i}"
        else:
            assert outcome == f"t{i}:True"
    names = await database.run(lambda s: sorted(s.scalars(select(ZTestThingVO.name))))
    assert names == sorted(f"t{i}" for i in range(60) if i % 3)
    assert await database.run(lambda s: count(s, ResourceVO)) == 40
    assert len(begun) < 60  # one writer: queued transactions commit together


async def test_transactions_at_once_that_all_succeed_commit_without_savepoints(
        database: Database) -> None:
    statements: list[str] = []

    def executed(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement.split()[0].upper())

    sa.event.listen(database.engine, "before_cursor_execute", executed)

    def write(session: Session, i: int) -> tuple[str, int]:
        row = add_resource(session, thing(f"s{i}"), "ZTestThingVO")
        session.flush()
        return row.name, count(session, ZTestThingVO)

    outcomes = await asyncio.gather(*(database.run(write, i) for i in range(40)))
    sa.event.remove(database.engine, "before_cursor_execute", executed)

    assert [name for name, _ in outcomes] == [f"s{i}" for i in range(40)]
    assert await database.run(lambda s: count(s, ZTestThingVO)) == 40
    # One writer: queued in order, committed together; each saw the writes of those
    # before it, as if they ran one by one.
    assert [n for _, n in outcomes] == list(range(1, 41))
    assert "SAVEPOINT" not in statements


class _Deadlock(Exception):
    """What a driver raises for a deadlock's victim: PostgreSQL's SQLSTATE 40P01."""

    sqlstate = "40P01"


async def test_a_group_picked_as_a_deadlock_victim_runs_again_alone(
        database: Database) -> None:
    # The server may roll back a whole group, savepoints and all, to break a deadlock
    # with another node's transaction: each transaction then runs again on its own.
    victims = {3: 2}  # the function for 3 is picked twice, then gets through
    lock = threading.Lock()

    def write(session: Session, i: int) -> str:
        row = add_resource(session, thing(f"d{i}"), "ZTestThingVO")
        session.flush()
        with lock:
            if victims.get(i):
                victims[i] -= 1
                raise sa.exc.OperationalError("UPDATE ...", {}, _Deadlock("deadlock detected"))
        return row.name

    outcomes = await asyncio.gather(*(database.run(write, i) for i in range(8)))
    assert outcomes == [f"d{i}" for i in range(8)]
    names = await database.run(lambda s: sorted(s.scalars(select(ZTestThingVO.name))))
    assert names == [f"d{i}" for i in range(8)]


async def test_with_more_writer_threads_each_transaction_runs_alone(
        database_url: str, database_migrations: list[Migrations]) -> None:
    db = create_database(database_url, threads=4)
    begun: list[object] = []
    try:
        await db.migrate(database_migrations)

        def write(session: Session, i: int) -> str:
            row = add_resource(session, thing(f"w{i}"), "ZTestThingVO")
            session.flush()
            if i % 4 == 0:
                raise ValueError(f"no {i}")
            return row.name

        def began(connection: object) -> None:
            begun.append(connection)

        sa.event.listen(db.engine, "begin", began)
        outcomes = await asyncio.gather(*(db.run(write, i) for i in range(20)),
                                        return_exceptions=True)
        sa.event.remove(db.engine, "begin", began)
        assert len(begun) == 20  # a transaction each, none grouped
        assert [o if isinstance(o, str) else str(o) for o in outcomes] == \
            [f"no {i}" if i % 4 == 0 else f"w{i}" for i in range(20)]
        names = await db.read(lambda s: sorted(s.scalars(select(ZTestThingVO.name))))
        assert names == sorted(f"w{i}" for i in range(20) if i % 4)
    finally:
        await db.close()


async def test_run_refuses_a_coroutine_function(database: Database) -> None:
    async def work(session: Session) -> None:
        pass

    with pytest.raises(TypeError, match="plain function"):
        await database.run(work)  # type: ignore[arg-type,unused-coroutine]


async def test_concurrent_runs_all_land(database: Database) -> None:
    def create(session: Session, i: int) -> str:
        return add_resource(session, thing(f"t{i}", size=i), "ZTestThingVO").uuid

    results = await asyncio.gather(*(database.run(create, i) for i in range(200)))
    assert len(set(results)) == 200
    assert await database.run(count, ZTestThingVO) == 200
    assert await database.run(count, ResourceVO) == 200


async def test_run_does_not_block_the_event_loop(database: Database) -> None:
    # The transaction waits for the ticker; were the loop blocked, it would never tick.
    ticked = threading.Event()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0)
            ticked.set()

    def slow(session: Session) -> bool:
        session.execute(select(1))
        return ticked.wait(timeout=10)

    task = asyncio.create_task(ticker())
    try:
        assert await database.run(slow) is True
    finally:
        task.cancel()


async def test_closed_database_refuses_work(database_url: str) -> None:
    db = create_database(database_url)
    await db.close()
    await db.close()
    with pytest.raises(RuntimeError, match="is closed"):
        await db.run(count, ResourceVO)


# --------------------------------------------------------------------------- resources


async def test_add_resource_with_a_chosen_uuid(database: Database) -> None:
    chosen = new_uuid()
    owner = new_uuid()
    await database.run(lambda s: add_resource(
        s, thing("mine", uuid=chosen), "ZTestThingVO", owner_account_uuid=owner))

    resource = await database.run(lambda s: s.get_one(ResourceVO, chosen))
    assert (resource.resourceType, resource.resourceName, resource.ownerAccountUuid) == (
        "ZTestThingVO", "mine", owner)


async def test_add_resource_rejects_a_bad_uuid(database: Database) -> None:
    with pytest.raises(ZError) as info:
        await database.run(lambda s: add_resource(s, thing(uuid="NOT-A-UUID"), "ZTestThingVO"))
    assert info.value.code == INVALID_ARGUMENT
    assert "'NOT-A-UUID'" in info.value.details and "ZTestThingVO" in info.value.details
    assert await database.run(count, ResourceVO) == 0


async def test_add_resource_rejects_a_duplicate_uuid(database: Database) -> None:
    chosen = new_uuid()
    await database.run(lambda s: add_resource(s, thing(uuid=chosen), "ZTestThingVO"))

    with pytest.raises(ZError, match="resource uuid already exists") as info:
        await database.run(lambda s: add_resource(s, thing(uuid=chosen), "ZTestThingVO"))
    assert info.value.code == INVALID_ARGUMENT and chosen in info.value.details

    with pytest.raises(ZError, match="resource uuid already exists"):
        await database.run(add_twice)
    assert await database.run(count, ResourceVO) == 1


async def test_delete_resource_takes_its_row_and_tags(database: Database) -> None:
    def create(session: Session) -> str:
        obj = add_resource(session, thing(), "ZTestThingVO")
        session.add(SystemTagVO(resourceUuid=obj.uuid, resourceType="ZTestThingVO", tag="a::b"))
        session.add(UserTagVO(resourceUuid=obj.uuid, resourceType="ZTestThingVO", tag="web"))
        return obj.uuid

    uuid = await database.run(create)
    await database.run(lambda s: delete_resource(s, s.get_one(ZTestThingVO, uuid)))

    def counts(session: Session) -> list[int]:
        return [count(session, m) for m in (ZTestThingVO, ResourceVO, SystemTagVO, UserTagVO)]

    assert await database.run(counts) == [0, 0, 0, 0]


async def test_tags_need_an_existing_resource(database: Database) -> None:
    with pytest.raises(IntegrityError):
        await database.run(lambda s: s.add(
            UserTagVO(resourceUuid=new_uuid(), resourceType="ZTestThingVO", tag="x")))


# --------------------------------------------------------------------------- columns


async def test_timestamps_are_utc_with_microseconds(database: Database) -> None:
    created = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=8)))
    obj = await database.run(
        lambda s: add_resource(s, thing(createDate=created), "ZTestThingVO"))

    stored = await database.run(lambda s: s.get_one(ZTestThingVO, obj.uuid))
    assert stored.createDate == created
    assert stored.createDate.tzinfo == UTC
    assert stored.createDate.microsecond == 123456
    assert stored.lastOpDate == stored.createDate  # set by add_resource when absent

    def rename(session: Session) -> None:
        session.get_one(ZTestThingVO, obj.uuid).name = "renamed"

    await database.run(rename)
    renamed = await database.run(lambda s: s.get_one(ZTestThingVO, obj.uuid))
    assert renamed.lastOpDate > stored.lastOpDate  # moved by the UPDATE
    assert renamed.lastOpDate.tzinfo == UTC
    assert renamed.createDate == created
    resource = await database.run(lambda s: s.get_one(ResourceVO, obj.uuid))
    assert resource.resourceName == "renamed"
    assert resource.createDate == created


async def test_global_config_category_and_name_are_unique(database: Database) -> None:
    await database.run(lambda s: s.add(
        GlobalConfigVO(category="vm", name="deletionPolicy", value="Delay", defaultValue="Delay")))
    await database.run(lambda s: s.add(GlobalConfigVO(category="host", name="deletionPolicy")))
    await database.run(lambda s: s.add(GlobalConfigVO(category="vm", name="DeletionPolicy")))

    with pytest.raises(IntegrityError):
        await database.run(lambda s: s.add(GlobalConfigVO(category="vm", name="deletionPolicy")))
    rows = await database.run(lambda s: s.scalars(select(GlobalConfigVO.id)).all())
    assert len(rows) == 3 and all(isinstance(i, int) for i in rows)


async def test_long_tags_round_trip(database: Database) -> None:
    tag = "staticIp::" + "é" * 2000

    def create(session: Session) -> str:
        obj = add_resource(session, thing(), "ZTestThingVO")
        session.add(SystemTagVO(resourceUuid=obj.uuid, resourceType="ZTestThingVO", tag=tag,
                                inherent=True))
        return obj.uuid

    uuid = await database.run(create)
    stored = await database.run(
        lambda s: s.scalars(select(SystemTagVO).where(SystemTagVO.resourceUuid == uuid)).one())
    assert (stored.tag, stored.type, stored.inherent) == (tag, "System", True)
    assert is_uuid(stored.uuid)


def test_string_columns_have_lengths() -> None:
    # MariaDB has no unbounded VARCHAR; every String in the core's models needs a length.
    for table in CORE_TABLES:
        for column in Base.metadata.tables[table].columns:
            if isinstance(column.type, String) and type(column.type).__name__ != "Text":
                assert column.type.length, f"{table}.{column.name}"


async def test_insert_unless_taken_says_taken_and_the_transaction_goes_on(
        database: Database) -> None:
    resources, tags = table_of(ResourceVO), table_of(UserTagVO)
    first, second = new_uuid(), new_uuid()
    now = datetime.now(UTC)

    def resource(uuid: str) -> dict[str, object]:
        return {"uuid": uuid, "resourceName": "r", "resourceType": "ZTestThingVO",
                "createDate": now}

    def insert_twice(session: Session) -> list[bool]:
        done = [insert_unless_taken(session, resources, resource(first)),
                insert_unless_taken(session, resources, resource(first))]
        # On PostgreSQL a failed statement would have ended the transaction: it goes on.
        done.append(insert_unless_taken(session, resources, resource(second)))
        return done

    assert await database.run(insert_twice) == [True, False, True]
    names = await database.run(lambda s: sorted(s.scalars(
        select(ResourceVO.uuid).where(ResourceVO.resourceType == "ZTestThingVO"))))
    assert names == sorted([first, second])

    def tag_of_nothing(session: Session) -> bool:
        return insert_unless_taken(session, tags, {
            "uuid": new_uuid(), "resourceUuid": new_uuid(), "resourceType": "ZTestThingVO",
            "tag": "t", "createDate": now, "lastOpDate": now})

    # Only a unique key taken means taken: a missing parent is an error.
    with pytest.raises(IntegrityError):
        await database.run(tag_of_nothing)
    assert await database.run(lambda s: s.scalar(select(func.count()).select_from(
        UserTagVO))) == 0


# --------------------------------------------------------------------------- sent_together

def _resource_row(uuid: str, name: str = "r") -> dict[str, object]:
    return {"uuid": uuid, "resourceName": name, "resourceType": "ZTestThingVO",
            "createDate": datetime.now(UTC)}


def _tag_row(resource_uuid: str, tag: str) -> dict[str, object]:
    now = datetime.now(UTC)
    return {"uuid": new_uuid(), "resourceUuid": resource_uuid, "resourceType": "ZTestThingVO",
            "tag": tag, "createDate": now, "lastOpDate": now}


_TRICKY_NAME = "it's \"quoted\"; DROP TABLE ResourceVO; -- \\ % %s ü"


async def test_sent_together_writes_in_order_with_values_intact(database: Database) -> None:
    resources, tags = table_of(ResourceVO), table_of(UserTagVO)
    uuid, tag_uuid = new_uuid(), new_uuid()
    when = datetime(2026, 12, 7, 16, 5, 4, 321000, tzinfo=UTC)

    def write(session: Session) -> None:
        with sent_together(session) as connection:
            connection.execute(sa.insert(resources), {
                "uuid": uuid, "resourceName": _TRICKY_NAME, "resourceType": "ZTestThingVO",
                "ownerAccountUuid": None, "createDate": when})
            # Its parent is the row just before: the order holds.
            connection.execute(sa.insert(tags), {
                "uuid": tag_uuid, "resourceUuid": uuid, "resourceType": "ZTestThingVO",
                "tag": "colour::blue", "createDate": when, "lastOpDate": when})
            connection.execute(sa.update(resources).where(resources.c.uuid == uuid)
                               .values(resourceName=resources.c.resourceName + "!"))

    await database.run(write)

    def read(session: Session) -> tuple[object, ...]:
        row = session.get_one(ResourceVO, uuid)
        tag = session.get_one(UserTagVO, tag_uuid)
        return row.resourceName, row.ownerAccountUuid, row.createDate, tag.tag

    assert await database.run(read) == (_TRICKY_NAME + "!", None, when, "colour::blue")


async def test_sent_together_failure_raises_and_keeps_nothing(database: Database) -> None:
    resources, tags = table_of(ResourceVO), table_of(UserTagVO)
    uuid = new_uuid()

    def write(session: Session) -> None:
        with sent_together(session) as connection:
            connection.execute(sa.insert(resources), _resource_row(uuid, "kept?"))
            # No such resource: refused.
            connection.execute(sa.insert(tags), _tag_row(new_uuid(), "t"))

    with pytest.raises(IntegrityError):
        await database.run(write)
    assert await database.run(lambda s: s.get(ResourceVO, uuid)) is None
    assert await database.run(lambda s: count(s, UserTagVO)) == 0


async def test_sent_together_goes_before_a_later_statement(database: Database) -> None:
    resources, tags = table_of(ResourceVO), table_of(UserTagVO)
    uuid = new_uuid()

    def write(session: Session) -> int:
        with sent_together(session) as connection:
            connection.execute(sa.insert(resources), _resource_row(uuid, "a"))
            # Several rows at once (executemany), whose parent is the held row: it goes
            # first, or they would be refused.
            connection.execute(sa.insert(tags), [_tag_row(uuid, f"t{i}") for i in range(2)])
        # After the block, a read sees every row written in it.
        return count(session, ResourceVO) + count(session, UserTagVO)

    assert await database.run(write) == 3


async def test_sent_together_read_and_claim_see_the_writes_before_them(
        database: Database) -> None:
    resources = table_of(ResourceVO)
    first, second = new_uuid(), new_uuid()

    def write(session: Session) -> tuple[int, bool, bool]:
        with sent_together(session) as connection:
            connection.execute(sa.insert(resources), _resource_row(first))
            seen = count(session, ResourceVO)  # a read goes after the held write
            connection.execute(sa.insert(resources), _resource_row(second))
            # A claim of a key taken by a held write: taken, and the transaction goes on.
            again = insert_unless_taken(session, resources, _resource_row(second))
            other = insert_unless_taken(session, resources, _resource_row(new_uuid()))
        return seen, again, other

    assert await database.run(write) == (1, False, True)
    assert await database.run(lambda s: count(s, ResourceVO)) == 3


def _counts_unless(session: Session, error: type[Exception]) -> str:
    """A function of a writer group that reads after other functions' held writes: whether
    it caught ``error`` (which is never its own) or counted."""
    try:
        count(session, ResourceVO)
    except error:
        return "caught"
    return "counted"


async def test_a_group_keeps_what_blocks_held_back_until_a_later_statement_or_commit(
        database: Database) -> None:
    # Queued at once, these run as one group; on a server the writes each block holds
    # back go with a later function's statement, or with the COMMIT.
    resources, tags = table_of(ResourceVO), table_of(UserTagVO)
    uuids = [new_uuid() for _ in range(30)]

    def write(session: Session, i: int) -> int | None:
        with sent_together(session) as connection:
            connection.execute(sa.insert(resources), _resource_row(uuids[i], f"g{i}"))
            connection.execute(sa.insert(tags), _tag_row(uuids[i], f"n::{i}"))
        if i % 3 == 2:  # every third reads: it sees all the writes before it
            return count(session, ResourceVO) + count(session, UserTagVO)
        return None

    outcomes = await asyncio.gather(*(database.run(write, i) for i in range(30)))
    assert outcomes == [2 * (i + 1) if i % 3 == 2 else None for i in range(30)]

    other = sa.create_engine(database.url)
    try:
        with other.connect() as connection:  # committed, the last ones too
            names = connection.execute(select(resources.c.resourceName)).scalars().all()
            assert sorted(names) == sorted(f"g{i}" for i in range(30))
            assert connection.execute(select(func.count()).select_from(tags)).scalar() == 30
    finally:
        other.dispose()


async def test_a_held_write_that_fails_later_in_the_group_fails_its_own_function(
        database: Database) -> None:
    # The failing write goes to the server with the next function's statement, and that
    # function takes such errors for its own: it must never see this one, nor may the
    # group commit what got through.
    resources, tags = table_of(ResourceVO), table_of(UserTagVO)
    good = [new_uuid() for _ in range(6)]
    bad = new_uuid()

    def write(session: Session, uuid: str) -> str:
        with sent_together(session) as connection:
            connection.execute(sa.insert(resources), _resource_row(uuid))
            parent = new_uuid() if uuid == bad else uuid  # no such resource: refused
            connection.execute(sa.insert(tags), _tag_row(parent, "t"))
        return "written"

    calls = [database.run(write, good[0]), database.run(write, bad),
             database.run(_counts_unless, IntegrityError),
             *(database.run(write, u) for u in good[1:])]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[0] == "written" and outcomes[2] == "counted"
    assert isinstance(outcomes[1], IntegrityError)
    assert outcomes[3:] == ["written"] * 5

    def present(session: Session) -> set[str]:
        return set(session.scalars(select(ResourceVO.uuid)))

    assert await database.run(present) == set(good)
    assert await database.run(lambda s: count(s, UserTagVO)) == 6


async def test_a_held_write_that_fails_with_the_commit_fails_its_own_function(
        database: Database) -> None:
    resources, tags = table_of(ResourceVO), table_of(UserTagVO)
    uuids = [new_uuid() for _ in range(5)]

    def write(session: Session, i: int) -> int:
        with sent_together(session) as connection:
            connection.execute(sa.insert(resources), _resource_row(uuids[i]))
            # The last function's tag has no resource: it fails with the group's COMMIT.
            connection.execute(sa.insert(tags), _tag_row(new_uuid() if i == 4 else uuids[i],
                                                         "t"))
        return i

    outcomes = await asyncio.gather(*(database.run(write, i) for i in range(5)),
                                    return_exceptions=True)
    assert outcomes[:4] == [0, 1, 2, 3] and isinstance(outcomes[4], IntegrityError)
    assert await database.run(lambda s: set(s.scalars(select(ResourceVO.uuid)))) == \
        set(uuids[:4])


_RENAME = sa.update(table_of(ResourceVO)).where(
    table_of(ResourceVO).c.uuid == sa.bindparam("u")).values(resourceName=sa.bindparam("n"))


def _gone(uuid: str) -> ZError:
    return ZError(INVALID_ARGUMENT, "gone", f"{uuid} is gone")


@pytest.mark.parametrize("held", [False, True], ids=["alone", "held"])
async def test_a_checked_write_that_changes_no_row_raises_and_keeps_nothing(
        database: Database, held: bool) -> None:
    resources = table_of(ResourceVO)
    kept, missing = new_uuid(), new_uuid()

    def write(session: Session, target: str) -> str:
        session.connection().execute(sa.insert(resources), _resource_row(kept, "before"))
        if held:
            with sent_together(session):
                write_checked(session, _RENAME, {"u": target, "n": "after"},
                              lambda: _gone(target))
        else:
            write_checked(session, _RENAME, {"u": target, "n": "after"}, lambda: _gone(target))
        return "renamed"

    with pytest.raises(ZError, match=f"{missing} is gone"):
        await database.run(write, missing)
    assert await database.run(lambda s: s.get(ResourceVO, kept)) is None
    assert await database.run(write, kept) == "renamed"
    assert (await database.run(lambda s: s.get_one(ResourceVO, kept))).resourceName == "after"


async def test_a_checked_write_carried_in_a_group_fails_only_its_own_function(
        database: Database) -> None:
    # The failing check is made when the write goes to the server, with the next
    # function's statement, or before the COMMIT when it is the group's last.
    resources = table_of(ResourceVO)
    uuids = [new_uuid() for _ in range(6)]

    def write(session: Session, i: int, target: str) -> int:
        with sent_together(session) as connection:
            connection.execute(sa.insert(resources), _resource_row(uuids[i], "new"))
            write_checked(session, _RENAME, {"u": target, "n": f"renamed{i}"},
                          lambda: _gone(target))
        return i

    missing = [new_uuid(), new_uuid()]
    calls = [database.run(write, 0, uuids[0]), database.run(write, 1, missing[0]),
             database.run(_counts_unless, ZError), database.run(write, 2, uuids[2]),
             database.run(write, 3, uuids[3]), database.run(write, 4, missing[1])]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[0] == 0 and outcomes[2] == "counted" and outcomes[3:5] == [2, 3]
    for failed, uuid in ((outcomes[1], missing[0]), (outcomes[5], missing[1])):
        assert isinstance(failed, ZError) and f"{uuid} is gone" in str(failed)

    def names(session: Session) -> dict[str, str]:
        return {r.uuid: r.resourceName for r in session.scalars(select(ResourceVO))}

    assert await database.run(names) == {uuids[0]: "renamed0", uuids[2]: "renamed2",
                                         uuids[3]: "renamed3"}


async def test_a_checked_write_last_in_a_group_is_checked_before_the_commit(
        database: Database) -> None:
    resources = table_of(ResourceVO)
    uuids = [new_uuid() for _ in range(5)]
    missing = new_uuid()

    def write(session: Session, i: int) -> int:
        with sent_together(session) as connection:
            connection.execute(sa.insert(resources), _resource_row(uuids[i], "new"))
            target = missing if i == 4 else uuids[i]
            write_checked(session, _RENAME, {"u": target, "n": f"renamed{i}"},
                          lambda: _gone(target))
        return i

    outcomes = await asyncio.gather(*(database.run(write, i) for i in range(5)),
                                    return_exceptions=True)
    assert outcomes[:4] == [0, 1, 2, 3]
    assert isinstance(outcomes[4], ZError) and f"{missing} is gone" in str(outcomes[4])
    assert await database.run(lambda s: set(s.scalars(select(ResourceVO.uuid)))) == \
        set(uuids[:4])


class _Taken(Exception):
    pass


async def test_an_insert_checked_that_finds_its_key_taken_lets_its_function_draw_again(
        database: Database) -> None:
    # Each function claims the first uuid of its draws that is free. On a server the claim
    # is checked once sent: at the block's end, or with a later function's statement in
    # the writer's group, which then runs again with each function on its own.
    resources, tags = table_of(ResourceVO), table_of(UserTagVO)
    taken = [new_uuid() for _ in range(3)]

    def setup(session: Session) -> None:
        session.connection().execute(sa.insert(resources), [_resource_row(u) for u in taken])

    await database.run(setup)
    fresh = [new_uuid() for _ in range(4)]
    draws = [[taken[0], fresh[0]], [fresh[1]], [taken[1], taken[2], fresh[2]], [fresh[3]]]

    def claim(session: Session, mine: list[str]) -> str:
        tag = new_uuid()
        for attempt, uuid in enumerate(mine):
            try:
                with sent_together(session) as connection:
                    if attempt == 0:  # a write that goes in once, whatever the claims
                        connection.execute(sa.insert(tags), {
                            **_tag_row(taken[0], "claims"), "uuid": tag})
                    insert_checked(session, resources, _resource_row(uuid, "claimed"), _Taken)
            except _Taken:
                continue
            return uuid
        raise AssertionError(f"every draw of {mine} was taken")

    calls = [database.run(claim, draws[0]), database.run(claim, draws[1]),
             database.run(_counts_unless, _Taken), database.run(claim, draws[2]),
             database.run(claim, draws[3])]
    outcomes = await asyncio.gather(*calls)
    assert outcomes == [fresh[0], fresh[1], "counted", fresh[2], fresh[3]]

    def claimed(session: Session) -> set[str]:
        return set(session.scalars(select(ResourceVO.uuid).where(
            ResourceVO.resourceName == "claimed")))

    assert await database.run(claimed) == set(fresh)
    assert await database.run(lambda s: count(s, UserTagVO)) == 4  # one each


async def test_a_row_lock_holds_until_the_transaction_ends(
        database: Database, database_backend: str) -> None:
    if database_backend != "mariadb":
        pytest.skip("lock_for_update locks on MySQL and MariaDB only")
    resources = table_of(ResourceVO)
    uuid = new_uuid()
    await database.run(lambda s: s.connection().execute(sa.insert(resources),
                                                        _resource_row(uuid)))
    other = sa.create_engine(database.url)

    def locked_elsewhere() -> bool:
        with other.connect() as connection:
            try:
                connection.execute(text("SELECT uuid FROM ResourceVO WHERE uuid = :u "
                                        "FOR UPDATE NOWAIT"), {"u": uuid})
            except sa.exc.OperationalError:
                return True
            return False

    def lock(session: Session) -> bool:
        lock_for_update(session, ResourceVO, uuid)
        count(session, ResourceVO)  # the lock went to the server with this, at the latest
        return locked_elsewhere()

    try:
        # Queued at once: one group, whose functions' locks are held back and carried.
        assert await asyncio.gather(*(database.run(lock) for _ in range(3))) == [True] * 3
        assert not locked_elsewhere()
    finally:
        other.dispose()


async def test_a_connection_back_in_the_pool_is_rolled_back_only_when_needed(
        database: Database, database_backend: str) -> None:
    if database_backend == "sqlite":
        pytest.skip("the servers' writer engine")
    uuid = new_uuid()
    raw = database.engine.raw_connection()  # used outside SQLAlchemy: left in a transaction
    cursor = raw.cursor()
    if database_backend == "postgresql":
        cursor.execute("BEGIN")  # the writer's psycopg connections are in autocommit mode
    insert = sa.insert(table_of(ResourceVO)).values(
        uuid=uuid, resourceType="ZTestThingVO", createDate=datetime(2026, 12, 7, tzinfo=UTC))
    cursor.execute(str(insert.compile(dialect=database.engine.dialect,
                                      compile_kwargs={"literal_binds": True})))
    cursor.close()
    raw.close()  # back to the pool: rolled back
    assert await database.run(lambda s: s.get(ResourceVO, uuid)) is None

    if database_backend == "mariadb":  # psycopg skips a ROLLBACK with nothing to end
        def rollbacks(session: Session) -> int:
            return int(session.execute(text("SHOW SESSION STATUS LIKE 'Com_rollback'"))
                       .one()[1])

        before = await database.run(rollbacks)
        for _ in range(3):
            await database.run(lambda s: s.connection().execute(
                sa.insert(table_of(ResourceVO)), _resource_row(new_uuid())))
        assert await database.run(rollbacks) == before  # committed: nothing to roll back


async def test_writes_are_seen_by_others_only_once_committed(database: Database) -> None:
    # On PostgreSQL the BEGIN goes with a transaction's first statement: it still begins.
    resources = table_of(ResourceVO)
    kept, dropped = new_uuid(), new_uuid()
    other = sa.create_engine(database.url)

    def others_see(uuid: str) -> bool:
        with other.connect() as connection:
            return connection.execute(select(func.count()).select_from(resources)
                                      .where(resources.c.uuid == uuid)).scalar() == 1

    def write(session: Session, uuid: str, fail: bool) -> bool:
        session.execute(sa.insert(resources), {
            "uuid": uuid, "resourceName": "r", "resourceType": "ZTestThingVO",
            "createDate": datetime.now(UTC)})
        seen = others_see(uuid)
        if fail:
            raise ZError(INVALID_ARGUMENT, "no", "changed its mind")
        return seen

    try:
        assert await database.run(write, kept, False) is False
        assert others_see(kept)
        with pytest.raises(ZError):
            await database.run(write, dropped, True)
        assert not others_see(dropped)
    finally:
        other.dispose()
