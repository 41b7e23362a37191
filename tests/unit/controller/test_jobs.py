"""Jobs are created by their handler's reference and keep its registered kind."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from controller.db.models import Job, JobState
from controller.jobs.engine import JobContext, JobEngine
from shared.errors import OperationFailed
from tests.unit.controller.fakes import SECRETS, RecordingAgent


class Greeter:
    async def run_greet(self, ctx: JobContext) -> dict[str, Any]:
        return {"hello": ctx.params["name"]}

    async def run_unregistered(self, ctx: JobContext) -> None:
        return None


async def test_a_job_runs_the_handler_it_was_made_with(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    jobs, greeter = JobEngine(db, agent, SECRETS), Greeter()
    jobs.register("greeter.greet", greeter.run_greet)
    async with db.begin() as session:
        job = jobs.new_job(session, greeter.run_greet, resource_type="greeting",
                           params={"name": "world"})
    assert job.kind == "greeter.greet"
    jobs.start(job)
    done = await jobs.get(job.id, wait=5)
    assert done.state == JobState.SUCCEEDED and done.result == {"hello": "world"}
    async with db() as session:
        row = await session.get(Job, job.id)
    assert row is not None and row.kind == "greeter.greet"
    await jobs.shutdown()


async def test_an_unregistered_handler_makes_no_job(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    jobs = JobEngine(db, agent, SECRETS)
    async with db() as session:
        with pytest.raises(ValueError, match="not a registered job handler"):
            jobs.new_job(session, Greeter().run_unregistered)


class FlakyCommits:
    """Makes the next `n` commits of `db`'s sessions fail, as a database that drops its
    connection does."""

    def __init__(self, db: async_sessionmaker[AsyncSession]) -> None:
        self.db, self.left = db, 0

    def fail(self, n: int) -> None:
        self.left = n
        event.listen(Session, "before_commit", self._hook)

    def _hook(self, session: Session) -> None:
        if self.left > 0:
            self.left -= 1
            raise OperationalError("injected", None, Exception("connection lost"))

    def remove(self) -> None:
        event.remove(Session, "before_commit", self._hook)


async def test_a_job_end_the_database_refused_is_written_again(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    """Else the job stays `running`, its lease renewed by this live controller, forever."""
    jobs, greeter = JobEngine(db, agent, SECRETS), Greeter()
    jobs.register("greeter.greet", greeter.run_greet)
    async with db.begin() as session:
        job = jobs.new_job(session, greeter.run_greet, params={"name": "world"})
    flaky = FlakyCommits(db)
    flaky.fail(2)
    try:
        jobs.start(job)
        done = await jobs.get(job.id, wait=5)
    finally:
        flaky.remove()
    assert flaky.left == 0 and done.state == JobState.SUCCEEDED
    async with db() as session:
        row = await session.get(Job, job.id)
    assert row is not None and row.state == JobState.SUCCEEDED
    await jobs.shutdown()


async def test_a_failed_job_settles_its_resource_despite_a_refused_commit(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    settled: list[str] = []
    flaky = FlakyCommits(db)

    async def run_fail(ctx: JobContext) -> None:
        flaky.fail(1)  # the settle's commit is refused once
        raise OperationFailed("the agent said no")

    async def settle(ctx: JobContext, reason: str) -> None:
        async with ctx.db.begin():
            settled.append(reason)

    jobs = JobEngine(db, agent, SECRETS)
    jobs.register("test.fail", run_fail, on_failure=settle)
    async with db.begin() as session:
        job = jobs.new_job(session, run_fail)
    try:
        jobs.start(job)
        done = await jobs.get(job.id, wait=5)
    finally:
        flaky.remove()
    assert done.state == JobState.FAILED and done.error_message == "the agent said no"
    assert settled == ["the agent said no"] * 2, "settled again after the refused commit"
    await jobs.shutdown()
