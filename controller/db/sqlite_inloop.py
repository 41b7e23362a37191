"""An asyncio dialect for embedded SQLite that runs statements on the event loop's thread.

SQLite on a local file answers in microseconds; the aiosqlite driver's hop to a worker
thread (and back, with the GIL) per statement costs twenty times more than the statement.
This dialect is the standard pysqlite one, marked usable from SQLAlchemy's asyncio layer:
each call then runs synchronously inside the greenlet bridge. It suits a database that
one controller process owns; a shared database should be PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util.concurrency import await_, in_greenlet

DRIVER = "sqlite+strata_inloop"


class _Cursor(sqlite3.Cursor):
    async def _async_soft_close(self) -> None:
        """Nothing to do: the rows are read later on this same thread."""


class _Connection(sqlite3.Connection):
    def cursor(self, factory: Any = _Cursor) -> Any:
        return super().cursor(factory)


class SQLiteDialect_inloop(SQLiteDialect_pysqlite):
    driver = "strata_inloop"
    is_async = True
    supports_statement_cache = True

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        cparams["factory"] = _Connection
        return super().connect(*cargs, **cparams)

    @classmethod
    def get_pool_class(cls, url: Any) -> type[AsyncAdaptedQueuePool]:
        return AsyncAdaptedQueuePool

    def do_execute(self, cursor: Any, statement: Any, parameters: Any,
                   context: Any = None) -> None:
        super().do_execute(  # type: ignore[no-untyped-call]  # the pysqlite dialect is untyped
            cursor, statement, parameters, context)
        _settled()

    def do_execute_no_params(self, cursor: Any, statement: Any, context: Any = None) -> None:
        super().do_execute_no_params(  # type: ignore[no-untyped-call]  # the pysqlite dialect is untyped
            cursor, statement, context)
        _settled()

    def do_executemany(self, cursor: Any, statement: Any, parameters: Any,
                       context: Any = None) -> None:
        super().do_executemany(  # type: ignore[no-untyped-call]  # the pysqlite dialect is untyped
            cursor, statement, parameters, context)
        _settled()


async def _done() -> None:
    return None


def _settled() -> None:
    """SQLAlchemy's asyncio layer checks that a statement awaited something; awaiting a
    finished coroutine satisfies it with two greenlet switches and no event-loop turn."""
    if in_greenlet():
        await_(_done())


registry.register("sqlite.strata_inloop", __name__, "SQLiteDialect_inloop")
