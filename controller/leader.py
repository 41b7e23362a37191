"""One controller among those on a database leads: it alone runs the host monitor and
the other periodic work, which registers here (`while_leader`, `periodic`) or asks
`is_leader()` before acting.

On PostgreSQL the leader holds a session-level advisory lock on a connection of its own:
the server frees it the moment that session ends, so a leader killed outright hands over
within one `renew` interval. On SQLite it holds the `leader_leases` row, renewed every
`renew` seconds and taken by another controller once it has lapsed (`ttl`). A leader that
cannot confirm its hold within `renew` seconds stops its work at once, before a peer can
take over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy import delete, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controller.db.models import LeaderLease
from controller.metrics import Metrics

log = logging.getLogger(__name__)

# The advisory lock's key: "StrataLd" as a (positive) bigint.
LOCK_KEY = int.from_bytes(b"StrataLd", "big")
LEASE_NAME = "leader"

Work = Callable[[], Coroutine[Any, Any, None]]


def new_instance_id() -> str:
    """This controller process's name as owner of jobs and leadership: readable (host
    and pid) and never reused (a random suffix)."""
    return f"{socket.gethostname()[:64]}-{os.getpid()}-{secrets.token_hex(4)}"


def replace_instance(path: str, owner: str) -> str | None:
    """Records `owner` as the instance on this state directory; returns the one before
    it, which is dead (one controller per state directory), so a restarted controller
    resumes its jobs at once."""
    try:
        with open(path) as f:
            previous: str | None = f.read().strip() or None
    except FileNotFoundError:
        previous = None
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(owner + "\n")
    os.replace(tmp, path)
    return previous


class Leadership:
    """`owner`: this controller's instance id (also the jobs' owner)."""

    def __init__(self, engine: AsyncEngine, owner: str, ttl: float, renew: float,
                 metrics: Metrics) -> None:
        self._engine = engine
        self.owner = owner
        self._ttl = ttl
        self._renew = renew
        self._metrics = metrics
        self._advisory = engine.dialect.name == "postgresql"
        self._conn: AsyncConnection | None = None
        self._leader = False
        self._work: dict[str, Work] = {}
        self._running: dict[str, asyncio.Task[None]] = {}

    def is_leader(self) -> bool:
        """Whether this controller leads now (as of the last check, at most `renew`
        seconds ago)."""
        return self._leader

    def while_leader(self, name: str, work: Work) -> None:
        """Runs `work()` from the moment this controller leads, and cancels it when it
        stops leading; it starts again on the next term."""
        self._work[name] = work
        if self._leader:
            self._start(name, work)

    def periodic(self, name: str, interval: float, step: Work) -> None:
        """`step()` every `interval` seconds while this controller leads; a step that
        fails is logged, and the next one runs on time. An `interval` of 0 (or less) is
        the setting that turns the work off."""
        if interval <= 0:
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await step()
                except Exception:
                    log.exception("%s failed", name)

        self.while_leader(name, loop)

    async def run(self) -> None:
        """The election, until cancelled: every `renew` seconds, take or confirm the
        hold. On the way out the work stops and the hold is given up, so a peer leads
        at its next check."""
        try:
            while True:
                try:
                    async with asyncio.timeout(self._renew):
                        held = await (self._hold_lock() if self._advisory
                                      else self._hold_lease())
                except Exception as exc:
                    log.warning("could not confirm leadership: %s",
                                str(exc) or type(exc).__name__)
                    held = False
                    await self._drop_connection()
                self._set(held)
                await asyncio.sleep(self._renew)
        finally:
            self._set(False)
            await asyncio.gather(*self._running.values(), return_exceptions=True)
            await self._give_up()

    async def _hold_lock(self) -> bool:
        if self._conn is None:
            conn = await self._engine.connect()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if self._leader:
            await self._conn.execute(text("SELECT 1"))
            return True
        return bool(await self._conn.scalar(text("SELECT pg_try_advisory_lock(:key)"),
                                            {"key": LOCK_KEY}))

    async def _hold_lease(self) -> bool:
        now = time.time()
        async with self._engine.begin() as conn:
            renewed = await conn.execute(
                update(LeaderLease)
                .where(LeaderLease.name == LEASE_NAME,
                       or_(LeaderLease.owner == self.owner, LeaderLease.expires_at < now))
                .values(owner=self.owner, expires_at=now + self._ttl))
            if renewed.rowcount:
                return True
            if await conn.scalar(select(LeaderLease.owner)
                                 .where(LeaderLease.name == LEASE_NAME)) is not None:
                return False
            await conn.execute(insert(LeaderLease).values(
                name=LEASE_NAME, owner=self.owner, expires_at=now + self._ttl))
            return True

    async def _give_up(self) -> None:
        if self._advisory:
            await self._drop_connection()
            return
        try:
            async with self._engine.begin() as conn:
                await conn.execute(delete(LeaderLease).where(
                    LeaderLease.name == LEASE_NAME, LeaderLease.owner == self.owner))
        except Exception as exc:
            log.warning("could not give up the leader lease: %s", exc)

    async def _drop_connection(self) -> None:
        """Invalidated, never returned to the pool: a pooled session would keep the lock."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.invalidate()
                await conn.close()
            except Exception as exc:
                log.warning("closing the leader connection failed: %s", exc)

    def _set(self, held: bool) -> None:
        if held == self._leader:
            return
        self._leader = held
        self._metrics.leader(held)
        if held:
            log.info("controller %s leads now", self.owner)
            for name, work in self._work.items():
                self._start(name, work)
        else:
            log.info("controller %s no longer leads", self.owner)
            for task in self._running.values():
                task.cancel()

    def _start(self, name: str, work: Work) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work(), name=f"leader-{name}")
        self._running[name] = task
        task.add_done_callback(lambda done: self._forget(name, done))

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._running.get(name) is task:
            del self._running[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped: %s", name, task.exception())
