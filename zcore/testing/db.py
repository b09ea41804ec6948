"""Database fixtures: a fresh, empty database per test on every backend chosen with ``--db``.

``--db`` takes a comma-separated list of ``sqlite``, ``postgresql``, ``mariadb``, or
``all`` (default ``sqlite``). Every test that uses :func:`database_url` or :func:`database`
runs once per chosen backend (test ids ``[sqlite]``, ``[postgresql]``, ``[mariadb]``) and is
marked ``db``, so ``pytest -m db`` selects them. The servers' URLs come from
``ZSTACK_TEST_POSTGRESQL_URL`` and ``ZSTACK_TEST_MARIADB_URL``; a chosen server that cannot
be reached makes its tests error with a message saying so, never skip.

Each test gets its own database: a file under ``tmp_path`` for SQLite, a new schema
(``t_<hex>``, selected with ``search_path``) for PostgreSQL, a new database for MariaDB;
the schema or database is dropped afterwards. A plugin author's test::

    async def test_zone(database):          # migrated with the core's revisions
        zone = await database.run(create_zone, "z1")

To migrate a plugin's branch as well, override :func:`database_migrations` in a
``conftest.py``::

    @pytest.fixture
    def database_migrations():
        return [Migrations("myplugin", Path(myplugin.__file__).parent / "migrations")]

Migrating is most of what a fresh database costs, so the fixtures clone instead: the first
time a backend needs a given set of migration scripts (the core's and those of the enabled
plugins' branches, compared by content, so a new or edited revision makes a new template),
a template is migrated once, for real, with :meth:`~zcore.db.Database.upgrade`; then each
test's database that :func:`database` or ``make_node`` is about to migrate, while it is
still empty, becomes a copy of it, and the migration that follows finds it at head. The
copy is exact, rows included: a file copy on SQLite; on PostgreSQL the template's migration
statements replayed into a new schema; on MariaDB ``SHOW CREATE TABLE`` and ``INSERT ...
SELECT``. On the servers a background thread prepares the next copy and drops the
databases of finished tests. Only the fixtures clone: :class:`~zcore.db.Database` and the
node are unchanged. A test of migrations themselves opts out with the marker
``@pytest.mark.no_db_template``; ``--no-db-templates`` turns cloning off for a whole run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import sqlite3
import threading
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

import zcore.db
from zcore.db import CORE_BRANCH, Database, create_database, new_uuid
from zcore.records import Migrations

# The hooks carry unique names (pytest finds them by ``specname``) so that the other
# modules star-imported into ``zcore.testing`` can implement the same hooks.
__all__ = [
    "BACKENDS",
    "DatabaseTemplate",
    "database",
    "database_backend",
    "database_migrations",
    "database_template",
    "database_url",
    "pytest_zcore_db_addoption",
    "pytest_zcore_db_configure",
    "pytest_zcore_db_generate_tests",
    "zcore_db_servers",
    "zcore_db_templates",
]

#: The backends ``--db`` accepts, in the order their tests run.
BACKENDS = ("sqlite", "postgresql", "mariadb")

_DEFAULT_URLS = {
    "postgresql": ("ZSTACK_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": ("ZSTACK_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
_FIXTURES = ("database_url", "database")
_CONNECT_TIMEOUT = 5
_NO_TEMPLATE = "no_db_template"
_CORE_MIGRATIONS = Path(zcore.db.__file__).resolve().parent / "migrations"
# utf8mb4_bin: compare and enforce uniqueness case-sensitively, as the other backends.
_CREATE = {
    "postgresql": "CREATE SCHEMA {name}",
    "mariadb": "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
}
_DROP = {
    "postgresql": "DROP SCHEMA IF EXISTS {name} CASCADE",
    "mariadb": "DROP DATABASE IF EXISTS {name}",
}

log = logging.getLogger("zcore.testing.db")


@pytest.hookimpl(specname="pytest_addoption")
def pytest_zcore_db_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("zcore").addoption(
        "--db",
        action="store",
        default="sqlite",
        metavar="BACKENDS",
        help="database backends for tests using the database fixtures: comma-separated "
        f"{', '.join(BACKENDS)}, or all (default: sqlite). Server URLs from "
        "ZSTACK_TEST_POSTGRESQL_URL and ZSTACK_TEST_MARIADB_URL.",
    )
    parser.getgroup("zcore").addoption(
        "--db-everywhere",
        action="store_true",
        default=False,
        help="run every database test on every backend --db selects; without it, tests "
        "outside the paths of the zcore_db_everywhere ini option run on the first one only",
    )
    parser.getgroup("zcore").addoption(
        "--no-db-templates",
        action="store_true",
        default=False,
        help="migrate every test's database instead of cloning a migrated template",
    )
    parser.addini(
        "zcore_db_everywhere",
        type="linelist",
        default=[],
        help="paths (relative to the root) whose database tests run on every backend --db "
        "selects; other tests run on the first selected backend unless --db-everywhere "
        "(empty: every test on every backend)",
    )


@pytest.hookimpl(specname="pytest_configure")
def pytest_zcore_db_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "db: touches the database; runs once per backend selected with --db")
    config.addinivalue_line(
        "markers", f"{_NO_TEMPLATE}: migrate the test's database for real, never clone it "
        "from a migrated template (for tests of migrations themselves)")
    _selected_backends(config)  # a bad --db stops the run before collection


@pytest.hookimpl(specname="pytest_generate_tests")
def pytest_zcore_db_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not any(name in metafunc.fixturenames for name in _FIXTURES):
        return
    if "database_backend" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if "database_backend" in names:
            return  # the test chose its backends itself
    backends = _selected_backends(metafunc.config)
    if not _everywhere(metafunc.config, metafunc.definition.path):
        backends = backends[:1]
    metafunc.parametrize(
        "database_backend",
        [pytest.param(b, id=b, marks=pytest.mark.db) for b in backends],
        indirect=True,
    )


def _everywhere(config: pytest.Config, path: Path) -> bool:
    """Whether the database tests of ``path`` run on every selected backend."""
    paths = config.getini("zcore_db_everywhere")
    if config.getoption("--db-everywhere") or not paths:
        return True
    root = Path(config.rootpath)
    return any(path.resolve().is_relative_to((root / entry).resolve()) for entry in paths)


def _selected_backends(config: pytest.Config) -> list[str]:
    raw = str(config.getoption("--db", default="sqlite") or "sqlite")
    chosen: list[str] = []
    for name in (part.strip().lower() for part in raw.split(",")):
        if not name:
            continue
        if name == "all":
            chosen.extend(BACKENDS)
        elif name in BACKENDS:
            chosen.append(name)
        else:
            raise pytest.UsageError(
                f"--db {raw}: unknown backend {name!r}; choose from {', '.join(BACKENDS)} or all")
    return [b for b in BACKENDS if b in chosen] or ["sqlite"]


class _Servers:
    """Admin connections to the database servers, opened once per test session."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}
        self._broken: dict[str, str] = {}

    def base_url(self, backend: str) -> URL:
        env, default = _DEFAULT_URLS[backend]
        return make_url(os.environ.get(env) or default)

    def engine(self, backend: str) -> Engine:
        if backend in self._broken:
            pytest.fail(self._broken[backend], pytrace=False)
        engine = self._engines.get(backend)
        if engine is None:
            engine = create_engine(
                self.base_url(backend),
                isolation_level="AUTOCOMMIT",
                pool_size=1,
                connect_args={"connect_timeout": _CONNECT_TIMEOUT},
            )
            self._engines[backend] = engine
        return engine

    @contextmanager
    def connect(self, backend: str) -> Iterator[Connection]:
        """An autocommit connection to ``backend``'s server; the test fails if unreachable."""
        try:
            conn = self.engine(backend).connect()
        except DBAPIError as exc:
            env, _ = _DEFAULT_URLS[backend]
            masked = self.base_url(backend).render_as_string(hide_password=True)
            self._broken[backend] = (
                f"--db {backend}: cannot reach the test server {masked}: "
                f"{str(exc.orig).strip()}\nStart it, point {env} at one, or leave {backend} "
                "out of --db."
            )
        if backend in self._broken:  # outside the except block: no chained traceback
            pytest.fail(self._broken[backend], pytrace=False)
        with conn:
            yield conn

    def execute(self, backend: str, sql: str, *params: object) -> Any:
        """Run one statement (``%s`` placeholders); the first value it returns, if any."""
        with self.connect(backend) as conn:
            result = conn.exec_driver_sql(sql, params) if params else conn.exec_driver_sql(sql)
            return result.scalar() if result.returns_rows else None

    def close(self) -> None:
        for engine in self._engines.values():
            engine.dispose()


@dataclass(frozen=True, slots=True)
class _TestDatabase:
    """A test's database as :func:`database_url` made it."""

    backend: str
    url: str
    #: The schema (PostgreSQL) or database (MariaDB); the file (SQLite).
    name: str


def _schema_url(base: URL, schema: str) -> str:
    options = base.query.get("options")
    option = f"-csearch_path={schema}"
    return base.update_query_dict(
        {"options": f"{options} {option}" if isinstance(options, str) else option}
    ).render_as_string(hide_password=False)


def _database_url(backend: str, base: URL, name: str) -> str:
    if backend == "postgresql":
        return _schema_url(base, name)
    return base.set(database=name).render_as_string(hide_password=False)


def _scripts_key(sources: Sequence[Migrations]) -> str | None:
    """What a migration with ``sources`` depends on: every branch's scripts, by content.

    ``None`` when a directory cannot be read: the migration itself reports that.
    """
    digest = hashlib.sha256()
    locations = [("", _CORE_MIGRATIONS), (CORE_BRANCH, _CORE_MIGRATIONS / "versions"),
                 *((source.branch, Path(source.path)) for source in sources)]
    try:
        for branch, directory in locations:
            scripts = sorted(p for p in directory.iterdir() if p.suffix == ".py")
            digest.update(f"[{branch}:{len(scripts)}]".encode())
            for script in scripts:
                content = script.read_bytes()
                digest.update(f"{script.name}:{len(content)}:".encode())
                digest.update(content)
    except OSError:
        return None
    return digest.hexdigest()


class _SqliteTemplate:
    """A migrated template file; a clone is a copy of it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def build(cls, path: Path, sources: list[Migrations]) -> _SqliteTemplate:
        db = create_database(f"sqlite:///{path}")
        try:
            db.upgrade(sources)
        finally:
            db.close_sync()
        # Checkpoint the WAL into the file, so that it is whole; the node's connections
        # switch the copy back to WAL as they would a new file.
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")
        return cls(path)

    def clone(self, target: _TestDatabase) -> bool:
        path = Path(target.name)
        if any(Path(f"{path}{suffix}").exists() for suffix in ("", "-wal", "-shm", "-journal")):
            return False  # the test has used it already
        shutil.copyfile(self.path, path)
        return True


# How the DBAPI was called ("execute", "executemany" or "plain"), the SQL and its parameters.
_Statement = tuple[str, str, Any]


class _PostgresTemplate:
    """The statements that migrated a template schema, replayed into a new schema per clone.

    The very SQL of the migration, run again with another ``search_path``, makes the same
    tables, indexes, constraints, sequences and rows under the same names; the statements
    name no schema (checked when the template is built).
    """

    def __init__(self, statements: list[_Statement]) -> None:
        self.statements = statements

    @classmethod
    def build(cls, servers: _Servers, sources: list[Migrations]) -> _PostgresTemplate | None:
        schema = f"t_tmpl_{new_uuid()[:16]}"
        servers.execute("postgresql", _CREATE["postgresql"].format(name=schema))
        statements: list[_Statement] = []
        try:
            db = create_database(_schema_url(servers.base_url("postgresql"), schema))
            _record(db.engine, statements)
            try:
                db.upgrade(sources)
            finally:
                db.close_sync()
        finally:
            servers.execute("postgresql", _DROP["postgresql"].format(name=schema))
        if any(schema in f"{sql} {params!r}" for _, sql, params in statements):
            log.info("migrations %s name their schema: no template", _describe(sources))
            return None
        return cls(statements)

    def stage(self, conn: Any) -> str:
        """Build a new schema like the template on the (autocommit) DBAPI ``conn``."""
        name = f"t_{new_uuid()[:16]}"
        cursor = conn.cursor()
        cursor.execute("BEGIN")  # all or nothing: no half-built schema is ever left
        try:
            cursor.execute(_CREATE["postgresql"].format(name=name))
            cursor.execute(f"SET LOCAL search_path TO {name}")
            for how, sql, params in self.statements:
                if how == "executemany":
                    cursor.executemany(sql, params)
                elif how == "execute":
                    cursor.execute(sql, params)
                else:
                    cursor.execute(sql)
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        return name

    def swap(self, servers: _Servers, staged: str, target: _TestDatabase) -> str | None:
        """Put ``staged`` in place of the empty ``target``; what is left to drop."""
        # One implicit transaction; DROP SCHEMA without CASCADE refuses a schema in use.
        servers.execute("postgresql",
                        f"DROP SCHEMA {target.name}; ALTER SCHEMA {staged} RENAME TO {target.name}")
        return None


def _record(engine: Engine, statements: list[_Statement]) -> None:
    """Append every statement ``engine`` runs to ``statements``, as the DBAPI got it."""

    def execute(cursor: Any, sql: str, params: Any, context: Any) -> None:
        statements.append(("execute", sql, params))

    def executemany(cursor: Any, sql: str, params: Any, context: Any) -> None:
        statements.append(("executemany", sql, list(params)))

    def plain(cursor: Any, sql: str, context: Any) -> None:
        statements.append(("plain", sql, None))

    event.listen(engine, "do_execute", execute)
    event.listen(engine, "do_executemany", executemany)
    event.listen(engine, "do_execute_no_params", plain)


class _MariadbTemplate:
    """A migrated template database; a clone gets its tables as ``SHOW CREATE TABLE`` shows
    them (indexes, foreign keys and the auto-increment counter included), then its rows."""

    def __init__(self, database: str, tables: list[tuple[str, str, bool]]) -> None:
        self.database = database
        #: (name, CREATE TABLE statement, whether it has rows), every table of the template.
        self.tables = tables

    @classmethod
    def build(cls, servers: _Servers, sources: list[Migrations]) -> _MariadbTemplate | None:
        name = f"t_tmpl_{new_uuid()[:16]}"
        servers.execute("mariadb", _CREATE["mariadb"].format(name=name))
        try:
            db = create_database(_database_url("mariadb", servers.base_url("mariadb"), name))
            try:
                db.upgrade(sources)
            finally:
                db.close_sync()
            with servers.connect("mariadb") as conn:
                kinds = conn.exec_driver_sql(
                    "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME", (name,)).all()
                others = conn.exec_driver_sql(
                    "SELECT (SELECT COUNT(*) FROM information_schema.ROUTINES "
                    "WHERE ROUTINE_SCHEMA = %s) + (SELECT COUNT(*) FROM "
                    "information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s) + (SELECT COUNT(*) "
                    "FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s)",
                    (name, name, name)).scalar()
                if others or not kinds or any(kind != "BASE TABLE" for _, kind in kinds):
                    log.info("migrations %s make more than tables: no template",
                             _describe(sources))
                    servers.execute("mariadb", _DROP["mariadb"].format(name=name))
                    return None
                tables = []
                for table, _ in kinds:
                    create = conn.exec_driver_sql(
                        f"SHOW CREATE TABLE `{name}`.`{table}`").one()[1]
                    rows = conn.exec_driver_sql(
                        f"SELECT EXISTS (SELECT 1 FROM `{name}`.`{table}`)").scalar()
                    tables.append((str(table), str(create), bool(rows)))
        except BaseException:
            servers.execute("mariadb", _DROP["mariadb"].format(name=name))
            raise
        return cls(name, tables)

    def stage(self, conn: Any) -> str:
        """Build a new database like the template on the (autocommit) DBAPI ``conn``."""
        name = f"t_{new_uuid()[:16]}"
        cursor = conn.cursor()
        cursor.execute(_CREATE["mariadb"].format(name=name))
        try:
            cursor.execute(f"USE `{name}`")
            # Tables in name order, whatever they refer to; the rows are the template's.
            cursor.execute("SET SESSION foreign_key_checks = 0")
            for _, create, _ in self.tables:
                cursor.execute(create)
            for table, _, rows in self.tables:
                if rows:
                    cursor.execute(
                        f"INSERT INTO `{table}` SELECT * FROM `{self.database}`.`{table}`")
            cursor.execute("SET SESSION foreign_key_checks = 1")
        except BaseException:
            cursor.execute(_DROP["mariadb"].format(name=name))
            raise
        return name

    def swap(self, servers: _Servers, staged: str, target: _TestDatabase) -> str | None:
        """Move the tables of ``staged`` into the empty ``target``; what is left to drop."""
        servers.execute("mariadb", "RENAME TABLE " + ", ".join(
            f"`{staged}`.`{table}` TO `{target.name}`.`{table}`" for table, _, _ in self.tables))
        return staged


def _describe(sources: Sequence[Migrations]) -> str:
    return ", ".join([CORE_BRANCH, *(source.branch for source in sources)])


_ServerTemplate = _PostgresTemplate | _MariadbTemplate
_Template = _SqliteTemplate | _ServerTemplate


class _Templates:
    """The test databases of a session and the migrated templates they are cloned from.

    One template per backend and :func:`_scripts_key`, built on first use. On the servers a
    worker thread per backend stages the next copy of the template used last while a test
    runs, and drops the databases tests are done with.
    """

    def __init__(self, servers: _Servers, directory: Path, *, enabled: bool) -> None:
        self.servers = servers
        self.enabled = enabled
        self._directory = directory
        self._lock = threading.RLock()
        self._databases: dict[str, _TestDatabase] = {}
        self._attempted: set[str] = set()
        self._templates: dict[tuple[str, str], _Template | None] = {}
        self._uses: Counter[tuple[str, str]] = Counter()
        self._staged: dict[tuple[str, str], Future[str]] = {}
        self._workers: dict[str, ThreadPoolExecutor] = {}
        self._engines: dict[str, Engine] = {}
        self._problems: list[str] = []

    # ------------------------------------------------------------- test databases

    def create(self, backend: str, directory: Path) -> _TestDatabase:
        """A new, empty database on ``backend`` (SQLite: a file in ``directory``)."""
        if backend == "sqlite":
            path = directory / "zstack.db"
            database = _TestDatabase(backend, f"sqlite:///{path}", str(path))
        else:
            name = f"t_{new_uuid()[:16]}"
            self.servers.execute(backend, _CREATE[backend].format(name=name))
            database = _TestDatabase(
                backend, _database_url(backend, self.servers.base_url(backend), name), name)
        with self._lock:
            self._databases[database.url] = database
        return database

    def lookup(self, url: str) -> _TestDatabase | None:
        with self._lock:
            return self._databases.get(url)

    def drop(self, database: _TestDatabase) -> None:
        """Drop a test's database (in the background on a server)."""
        with self._lock:
            self._databases.pop(database.url, None)
            self._attempted.discard(database.url)
        if database.backend != "sqlite":
            self._background(database.backend, _DROP[database.backend].format(name=database.name))

    # ------------------------------------------------------------- cloning

    def clone(self, database: _TestDatabase, sources: list[Migrations]) -> bool:
        """Make ``database`` a copy of the template migrated with ``sources``.

        Only on the first call for ``database`` and only while it is empty; ``False`` when
        nothing was copied, and then migrating does all the work as it would have.
        """
        with self._lock:
            if not self.enabled or database.url in self._attempted:
                return False
            self._attempted.add(database.url)
            key = _scripts_key(sources)
            if key is None:
                return False
            slot = (database.backend, key)
            template = self._template(slot, sources)
            if template is None:
                return False
            if isinstance(template, _SqliteTemplate):
                return template.clone(database)
            # On PostgreSQL the swap itself refuses a schema in use, and a query would cost more.
            if database.backend == "mariadb" and not self._is_empty(database):
                return False
            future = self._staged.pop(slot, None) or self._stage(database.backend, template)
            try:
                staged = future.result()
            except Exception:
                log.warning("copying the %s template of %s failed; migrating instead",
                            database.backend, _describe(sources), exc_info=True)
                self._templates[slot] = None
                return False
            try:
                leftover = template.swap(self.servers, staged, database)
            except Exception:
                # Either swap is all or nothing: the copy is whole, keep it for the next test.
                self._staged[slot] = future
                if self._is_empty(database):
                    log.warning("moving a copy of the %s template into %s failed; migrating "
                                "instead", database.backend, database.name, exc_info=True)
                return False
            if leftover is not None:
                self._background(database.backend,
                                 _DROP[database.backend].format(name=leftover))
            self._uses[slot] += 1
            if self._uses[slot] > 1:  # used again: the next test will likely want it too
                self._staged[slot] = self._stage(database.backend, template)
            return True

    def _template(self, slot: tuple[str, str], sources: list[Migrations]) -> _Template | None:
        if slot in self._templates:
            return self._templates[slot]
        backend, key = slot
        template: _Template | None = None
        try:
            if backend == "sqlite":
                template = _SqliteTemplate.build(self._directory / f"{key[:32]}.db", sources)
            elif backend == "postgresql":
                template = _PostgresTemplate.build(self.servers, sources)
            else:
                template = _MariadbTemplate.build(self.servers, sources)
        except Exception:
            # A migration that fails fails again in the test, where it is reported.
            log.info("no %s template for %s: migrating it failed", backend, _describe(sources),
                     exc_info=True)
        self._templates[slot] = template
        return template

    def _is_empty(self, database: _TestDatabase) -> bool:
        if database.backend == "postgresql":
            used = self.servers.execute(
                "postgresql",
                "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = to_regnamespace(%s))"
                " OR EXISTS (SELECT 1 FROM pg_type WHERE typnamespace = to_regnamespace(%s))"
                " OR EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = to_regnamespace(%s))",
                database.name, database.name, database.name)
        else:
            used = self.servers.execute(
                "mariadb", "SELECT COUNT(*) FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = %s", database.name)
        return not used

    # ------------------------------------------------------------- the workers

    def _worker(self, backend: str) -> ThreadPoolExecutor:
        worker = self._workers.get(backend)
        if worker is None:
            worker = self._workers[backend] = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"zcore-db-templates-{backend}")
        return worker

    def _engine(self, backend: str) -> Engine:
        # The worker's own connection: the admin one serves the tests meanwhile.
        engine = self._engines.get(backend)
        if engine is None:
            connect_args: dict[str, Any] = {"connect_timeout": _CONNECT_TIMEOUT}
            if backend == "postgresql":
                connect_args["prepare_threshold"] = None  # statements run in many schemas
            engine = self._engines[backend] = create_engine(
                self.servers.base_url(backend), isolation_level="AUTOCOMMIT", pool_size=1,
                connect_args=connect_args)
        return engine

    def _stage(self, backend: str, template: _ServerTemplate) -> Future[str]:
        def stage() -> str:
            conn = self._engine(backend).raw_connection()
            try:
                return template.stage(conn)
            finally:
                conn.close()

        return self._worker(backend).submit(stage)

    def _background(self, backend: str, sql: str) -> None:
        def run() -> None:
            try:
                with self._engine(backend).connect() as conn:
                    conn.exec_driver_sql(sql)
            except SQLAlchemyError as exc:
                # Not under self._lock: clone() may hold it while waiting for this worker.
                self._problems.append(f"{sql}: {type(exc).__name__}: {exc}")

        self._worker(backend).submit(run)

    def close(self) -> None:
        """Drop the staged copies and the templates; wait for the workers."""
        with self._lock:
            for (backend, _), future in self._staged.items():
                if future.exception() is None:  # else it failed: nothing to drop
                    self._background(backend, _DROP[backend].format(name=future.result()))
            self._staged.clear()
            for (backend, _), template in self._templates.items():
                if isinstance(template, _MariadbTemplate):
                    self._background(backend, _DROP[backend].format(name=template.database))
        for worker in self._workers.values():
            worker.shutdown(wait=True)
        for engine in self._engines.values():
            engine.dispose()
        if self._problems:
            warnings.warn("dropping test databases failed (drop them by hand):\n"
                          + "\n".join(self._problems), pytest.PytestWarning, stacklevel=1)


class DatabaseTemplate:
    """This test's use of the template cache: the :func:`database_template` fixture."""

    def __init__(self, templates: _Templates, database: _TestDatabase | None) -> None:
        self._templates = templates
        self._database = database

    async def apply(self, sources: Iterable[Migrations]) -> bool:
        """Make the test's database a copy of a template migrated with ``sources``.

        Call it just before migrating the test's database with the same ``sources`` (the
        core's branch is always included). It copies only the first time and only into a
        still empty database; ``False`` when it copied nothing, and then the migration does
        the work. Never copies under ``@pytest.mark.no_db_template`` or ``--no-db-templates``.
        """
        if self._database is None:
            return False
        return await asyncio.to_thread(self._templates.clone, self._database, list(sources))


@pytest.fixture(scope="session")
def zcore_db_servers() -> Iterator[_Servers]:
    """Admin connections to the PostgreSQL and MariaDB test servers (opened on first use)."""
    servers = _Servers()
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def zcore_db_templates(
    request: pytest.FixtureRequest, zcore_db_servers: _Servers,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[_Templates]:
    """The session's test databases and the migrated templates they are cloned from."""
    templates = _Templates(zcore_db_servers, tmp_path_factory.mktemp("db-templates"),
                           enabled=not request.config.getoption("--no-db-templates"))
    yield templates
    templates.close()


@pytest.fixture
def database_backend(request: pytest.FixtureRequest) -> str:
    """The backend of this test run: ``sqlite``, ``postgresql`` or ``mariadb``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def database_url(
    database_backend: str, tmp_path: Path, zcore_db_templates: _Templates
) -> Iterator[str]:
    """The URL of a fresh, empty database on this run's backend, dropped after the test."""
    database = zcore_db_templates.create(database_backend, tmp_path)
    try:
        yield database.url
    finally:
        zcore_db_templates.drop(database)


@pytest.fixture
def database_template(
    request: pytest.FixtureRequest, database_url: str, zcore_db_templates: _Templates
) -> DatabaseTemplate:
    """Clones a migrated template into this test's database: see :class:`DatabaseTemplate`."""
    if request.node.get_closest_marker(_NO_TEMPLATE) is not None:
        return DatabaseTemplate(zcore_db_templates, None)
    return DatabaseTemplate(zcore_db_templates, zcore_db_templates.lookup(database_url))


@pytest.fixture
def database_migrations() -> list[Migrations]:
    """The plugin branches :func:`database` migrates besides the core's; override it."""
    return []


@pytest_asyncio.fixture
async def database(
    database_url: str, database_migrations: list[Migrations],
    database_template: DatabaseTemplate,
) -> AsyncIterator[Database]:
    """A :class:`~zcore.db.Database` on a fresh database, migrated, closed after the test."""
    await database_template.apply(database_migrations)
    db = create_database(database_url)
    try:
        await db.migrate(database_migrations)
        yield db
    finally:
        await db.close()
