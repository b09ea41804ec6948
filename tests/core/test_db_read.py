"""zcore.db: Database.read, read-only transactions beside the writer; on every --db backend."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from zcore.db import Database, GlobalConfigVO, create_database

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def add(session: Session, name: str, value: str = "1") -> None:
    session.add(GlobalConfigVO(category="test", name=name, value=value))


def names(session: Session) -> list[str]:
    return list(session.scalars(select(GlobalConfigVO.name)
                                .where(GlobalConfigVO.category == "test")
                                .order_by(GlobalConfigVO.name)))


def value_of(session: Session, name: str) -> str | None:
    row = session.scalars(select(GlobalConfigVO).where(GlobalConfigVO.name == name)).first()
    return row.value if row is not None else None


async def test_a_read_sees_every_write_committed_before_it(database: Database) -> None:
    assert await database.read(names) == []
    for i in range(5):
        await database.run(add, f"n{i}")
        assert await database.read(names) == [f"n{j}" for j in range(i + 1)]


async def test_reads_at_once_each_get_their_own_outcome(database: Database) -> None:
    await database.run(add, "a", "1")
    await database.run(add, "b", "2")
    boom = ValueError("boom")

    def fail(session: Session) -> None:
        session.execute(select(GlobalConfigVO.id)).all()
        raise boom

    async def one(i: int) -> object:
        if i % 7 == 3:
            with pytest.raises(ValueError) as caught:
                await database.read(fail)
            return caught.value
        return await database.read(value_of, "a" if i % 2 else "b")

    outcomes = await asyncio.gather(*(one(i) for i in range(60)))
    for i, outcome in enumerate(outcomes):
        expected = boom if i % 7 == 3 else ("1" if i % 2 else "2")
        assert outcome is expected if i % 7 == 3 else outcome == expected


async def test_what_a_read_returns_is_detached_and_loaded(database: Database) -> None:
    await database.run(add, "a", "x")

    def row(session: Session) -> GlobalConfigVO:
        return session.scalars(select(GlobalConfigVO).where(GlobalConfigVO.name == "a")).one()

    first, second = await asyncio.gather(database.read(row), database.read(row))
    assert first is not second  # each read has its own objects
    assert (first.value, second.value) == ("x", "x")


async def test_a_read_sees_the_callers_context(database: Database) -> None:
    async def as_(name: str) -> str:
        WHO.set(name)
        return await database.read(lambda session: WHO.get())

    assert await asyncio.gather(as_("a"), as_("b")) == ["a", "b"]


async def test_read_refuses_a_coroutine_function_and_a_closed_database(
        database_url: str) -> None:
    async def work(session: Session) -> None:
        pass

    db = create_database(database_url)
    with pytest.raises(TypeError, match="coroutine function"):
        await db.read(work)  # type: ignore[arg-type,unused-coroutine]
    await db.close()
    with pytest.raises(RuntimeError, match="closed"):
        await db.read(names)


async def test_a_read_on_sqlite_may_not_write(database: Database) -> None:
    if database.dialect != "sqlite":
        pytest.skip("elsewhere read() is run(); the function must not write all the same")
    def sneak(session: Session) -> None:
        add(session, "sneaky")
        session.flush()

    with pytest.raises(OperationalError, match="readonly"):
        await database.read(sneak)
    assert await database.run(names) == []
    assert await database.read(names) == []  # the reader goes on


async def test_a_read_on_sqlite_does_not_wait_for_a_write(database: Database) -> None:
    if database.dialect != "sqlite":
        pytest.skip("on a server, reads and writes run in a pool of threads anyway")
    writing, release = threading.Event(), threading.Event()

    def slow_write(session: Session) -> None:
        add(session, "slow")
        session.flush()  # holds SQLite's write lock until the commit
        writing.set()
        release.wait(10)

    write = asyncio.ensure_future(database.run(slow_write))
    await asyncio.to_thread(writing.wait, 10)
    try:
        # The write is not committed: a read neither waits for it nor sees it.
        counted = await asyncio.wait_for(database.read(
            lambda s: s.scalar(select(func.count()).select_from(GlobalConfigVO)
                               .where(GlobalConfigVO.category == "test"))), 5)
        assert counted == 0
    finally:
        release.set()
        await write
    assert await database.read(names) == ["slow"]
