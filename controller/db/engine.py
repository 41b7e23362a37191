"""Database engine: embedded SQLite by default, PostgreSQL when given a URL.
The schema is managed by Alembic and upgraded at start."""

from __future__ import annotations

import glob
import os
import re
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from controller.db import sqlite_inloop
from shared.errors import InvalidInput

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
# An advisory lock's key: "StrataMg" as a (positive) bigint.
MIGRATION_LOCK_KEY = int.from_bytes(b"StrataMg", "big")


def normalize_url(url: str) -> str:
    """Accepts plain `postgresql://` and `sqlite:///` URLs and picks the async driver.
    Plain SQLite runs on the event loop's thread (`sqlite_inloop`); naming
    `sqlite+aiosqlite://` selects the thread-based driver instead."""
    for plain, driver in (("postgresql://", "postgresql+asyncpg://"),
                          ("postgres://", "postgresql+asyncpg://"),
                          ("sqlite://", f"{sqlite_inloop.DRIVER}://")):
        if url.startswith(plain):
            return driver + url[len(plain):]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://",
                       f"{sqlite_inloop.DRIVER}://")):
        return url
    raise InvalidInput(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


def create_engine(url: str) -> AsyncEngine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer anyway, and waiting in the asyncio pool
        # wakes at once where SQLite's busy handler sleeps with growing back-off. The busy
        # timeout only matters if another process opens the file.
        engine = create_async_engine(url, connect_args={"timeout": 10}, pool_size=1,
                                     max_overflow=0, pool_timeout=600)
        _serialize_sqlite_writers(engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _serialize_sqlite_writers(engine: AsyncEngine) -> None:
    """SQLite upgrades a read transaction to a write one by failing, not waiting, when
    another writer got in first (another process on the same file). BEGIN IMMEDIATE takes
    the write lock up front, so such transactions wait on the busy timeout instead."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def head_revision() -> str | None:
    """The newest revision among the migration files, read from their `revision` and
    `down_revision` lines; None unless there is exactly one."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in glob.glob(os.path.join(MIGRATIONS, "versions", "*.py")):
        with open(path) as f:
            source = f.read()
        revision = re.search(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", source, re.M)
        down = re.search(r"^down_revision\s*=\s*(.*)$", source, re.M)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


async def _revisions(engine: AsyncEngine) -> list[str] | None:
    """The revisions the database is at; None before its first migration."""
    async with engine.connect() as conn:
        try:
            return list((await conn.execute(
                text("SELECT version_num FROM alembic_version"))).scalars())
        except DBAPIError:
            return None


async def migrate(engine: AsyncEngine) -> None:
    """Upgrades the schema to the newest revision. A database at it already costs one
    read: Alembic, a good part of a second to import, is loaded only when there is work."""
    head = head_revision()
    if head is not None and await _revisions(engine) == [head]:
        return
    from alembic import command
    from alembic.config import Config

    def upgrade(conn: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", MIGRATIONS)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Controllers starting together on one database upgrade it one at a time.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
        await conn.run_sync(upgrade)
