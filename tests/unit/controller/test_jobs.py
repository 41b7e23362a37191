"""Jobs are created by their handler's reference and keep its registered kind."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import Job, JobState
from controller.jobs.engine import JobContext, JobEngine
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
