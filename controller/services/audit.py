"""The audit log of mutating API calls, written with group commit.

Each call waits until its event is committed before it answers, as a transaction of its
own would; events that arrive while one batch is being written go together in the
next, so concurrent calls share one transaction (and on PostgreSQL one WAL flush).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import AuditEvent, new_id

AUDIT: Any = AuditEvent.__table__


class AuditLog:
    def __init__(self, db: async_sessionmaker[AsyncSession]) -> None:
        self._db = db
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, **values: Any) -> None:
        """Returns once the event (the columns of `AuditEvent`) is committed."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append(({"id": new_id(), "at": time.time(), **values}, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await asyncio.shield(done)

    async def _write(self) -> None:
        # One turn of the loop first, so calls answered in the same turn join the batch.
        await asyncio.sleep(0)
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self._db.begin() as session:
                    await session.execute(insert(AUDIT), [row for row, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
