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
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from zcore.db import Database, create_database, new_uuid
from zcore.records import Migrations

# The hooks carry unique names (pytest finds them by ``specname``) so that the other
# modules star-imported into ``zcore.testing`` can implement the same hooks.
__all__ = [
    "BACKENDS",
    "database",
    "database_backend",
    "database_migrations",
    "database_url",
    "pytest_zcore_db_addoption",
    "pytest_zcore_db_configure",
    "pytest_zcore_db_generate_tests",
    "zcore_db_servers",
]

#: The backends ``--db`` accepts, in the order their tests run.
BACKENDS = ("sqlite", "postgresql", "mariadb")

_DEFAULT_URLS = {
    "postgresql": ("ZSTACK_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": ("ZSTACK_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
_FIXTURES = ("database_url", "database")
_CONNECT_TIMEOUT = 5


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

    def execute(self, backend: str, sql: str) -> None:
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
            conn.exec_driver_sql(sql)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.dispose()


@pytest.fixture(scope="session")
def zcore_db_servers() -> Iterator[_Servers]:
    """Admin connections to the PostgreSQL and MariaDB test servers (opened on first use)."""
    servers = _Servers()
    yield servers
    servers.close()


@pytest.fixture
def database_backend(request: pytest.FixtureRequest) -> str:
    """The backend of this test run: ``sqlite``, ``postgresql`` or ``mariadb``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def database_url(
    database_backend: str, tmp_path: Path, zcore_db_servers: _Servers
) -> Iterator[str]:
    """The URL of a fresh, empty database on this run's backend, dropped after the test."""
    if database_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'zstack.db'}"
        return
    name = f"t_{new_uuid()[:16]}"
    base = zcore_db_servers.base_url(database_backend)
    if database_backend == "postgresql":
        zcore_db_servers.execute(database_backend, f"CREATE SCHEMA {name}")
        options = base.query.get("options")
        option = f"-csearch_path={name}"
        url = base.update_query_dict(
            {"options": f"{options} {option}" if isinstance(options, str) else option})
        drop = f"DROP SCHEMA IF EXISTS {name} CASCADE"
    else:
        # utf8mb4_bin: compare and enforce uniqueness case-sensitively, as the other backends.
        zcore_db_servers.execute(
            database_backend,
            f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = base.set(database=name)
        drop = f"DROP DATABASE IF EXISTS {name}"
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        zcore_db_servers.execute(database_backend, drop)


@pytest.fixture
def database_migrations() -> list[Migrations]:
    """The plugin branches :func:`database` migrates besides the core's; override it."""
    return []


@pytest_asyncio.fixture
async def database(
    database_url: str, database_migrations: list[Migrations]
) -> AsyncIterator[Database]:
    """A :class:`~zcore.db.Database` on a fresh database, migrated, closed after the test."""
    db = create_database(database_url)
    try:
        await db.migrate(database_migrations)
        yield db
    finally:
        await db.close()
