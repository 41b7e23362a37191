"""Job leases, takeover, cancel and leadership among several job engines on one database
(the logic; `tests/integration/test_controllers.py` runs two real controllers)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.engine import create_engine, migrate
from controller.db.models import Job, JobState
from controller.jobs.engine import JobContext, JobEngine
from controller.leader import Leadership
from controller.metrics import Metrics
from shared.errors import Conflict
from tests.unit.controller.fakes import SECRETS, RecordingAgent


class Work:
    """A job kind that runs until released, and records how it ended."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.settled: list[tuple[str, str]] = []

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        self.started.append(ctx.job.id)
        await self.release.wait()
        return {"done": True}

    async def on_failure(self, ctx: JobContext, reason: str) -> None:
        self.settled.append(("failure", reason))

    async def on_cancel(self, ctx: JobContext, reason: str) -> None:
        self.settled.append(("cancel", reason))


def engine(db: async_sessionmaker[AsyncSession], agent: RecordingAgent, work: Work,
           owner: str) -> JobEngine:
    jobs = JobEngine(db, agent, SECRETS, owner=owner, lease_ttl=5, lease_renew=1)
    jobs.register("work", work.run, on_failure=work.on_failure, on_cancel=work.on_cancel)
    return jobs


async def add_job(db: async_sessionmaker[AsyncSession], jobs: JobEngine, work: Work,
                  **values: Any) -> Job:
    async with db.begin() as session:
        job = jobs.new_job(session, work.run)
    if values:
        async with db.begin() as session:
            await session.execute(update(Job).where(Job.id == job.id).values(**values))
    return job


async def test_a_lapsed_lease_goes_to_exactly_one_peer(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    work = Work()
    dead = engine(db, agent, work, "dead")
    live = await add_job(db, dead, work)
    lapsed = await add_job(db, dead, work, lease_expires_at=time.time() - 1)
    peers = [engine(db, agent, work, f"peer-{n}") for n in range(3)]
    assert sum(await asyncio.gather(*(p.adopt() for p in peers))) == 1
    await asyncio.sleep(0.05)
    assert work.started == [lapsed.id], "the live lease is left alone"
    async with db() as session:
        row = await session.get(Job, lapsed.id)
        untouched = await session.get(Job, live.id)
    assert row is not None and row.owner in {"peer-0", "peer-1", "peer-2"}
    assert untouched is not None and untouched.owner == "dead"
    work.release.set()
    winner = next(p for p in peers if p.owner == row.owner)
    assert (await winner.get(lapsed.id, wait=5)).state == JobState.SUCCEEDED
    for p in peers:
        await p.shutdown()


async def test_a_job_taken_over_elsewhere_stops_here(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    work = Work()
    here = engine(db, agent, work, "here")
    job = await add_job(db, here, work)
    here.start(job)
    await asyncio.sleep(0.05)
    async with db.begin() as session:
        await session.execute(update(Job).where(Job.id == job.id).values(owner="peer"))
    await here._renew_leases()
    await asyncio.sleep(0.05)
    assert job.id not in here._tasks and work.settled == []
    async with db() as session:
        row = await session.get(Job, job.id)
    assert row is not None and row.state == JobState.RUNNING and row.owner == "peer"
    await here.shutdown()


async def test_cancel_rolls_back_once_and_a_finished_job_is_a_conflict(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    work = Work()
    owner, peer = engine(db, agent, work, "owner"), engine(db, agent, work, "peer")
    job = await add_job(db, owner, work)
    owner.start(job)
    await asyncio.sleep(0.05)
    await peer.cancel(job.id)  # through the controller that does not run it
    assert (await owner.get(job.id)).state == JobState.RUNNING
    await owner._renew_leases()
    done = await owner.get(job.id, wait=5)
    assert done.state == JobState.FAILED and done.error_code == "cancelled"
    assert work.settled == [("cancel", "cancelled on request")]
    with pytest.raises(Conflict) as finished:
        await peer.cancel(job.id)
    assert finished.value.code == "job_finished"
    await owner.shutdown()
    await peer.shutdown()


async def test_leadership_moves_when_the_leader_stops(tmp_path: Path) -> None:
    """On SQLite, through the lease row (a file: each connection sees the same table)."""
    engine_ = create_engine(f"sqlite:///{tmp_path / 'strata.sqlite'}")
    await migrate(engine_)
    ran: list[str] = []
    leaders = [Leadership(engine_, name, ttl=2, renew=0.2, metrics=Metrics())
               for name in ("one", "two")]
    for leader in leaders:
        leader.periodic("probe", 0.01, lambda name=leader.owner: _note(ran, name))
    first = asyncio.create_task(leaders[0].run())
    await asyncio.sleep(0.3)
    second = asyncio.create_task(leaders[1].run())
    await asyncio.sleep(0.3)
    assert [leader.is_leader() for leader in leaders] == [True, False]
    assert set(ran) == {"one"}
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    deadline = time.monotonic() + 2
    while not leaders[1].is_leader():
        assert time.monotonic() < deadline, "the survivor never led"
        await asyncio.sleep(0.02)
    ran.clear()
    await asyncio.sleep(0.1)
    assert set(ran) == {"two"}
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    await engine_.dispose()


async def _note(ran: list[str], name: str) -> None:
    ran.append(name)
