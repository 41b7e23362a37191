"""Interrupted agent steps: the retry policy, and a job's steps tried again under new
attempt ids that the job row keeps (so a resumed job re-attaches to the newest)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import Job, JobState
from controller.jobs.engine import JobContext, JobEngine
from controller.jobs.retry import RetryPolicy, attempt_task_id
from shared.errors import Interrupted, NotFound
from shared.protocol.host import SLEEP, SleepPayload, SleepResult
from shared.protocol.libvirt import LIVE_SNAPSHOT
from tests.unit.controller.fakes import SECRETS, RecordingAgent, host

CUT = Interrupted("agent shutting down after 30s grace; the task was cut short")


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(attempts=5, delay=2, max_delay=5)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [2, 4, 5, 5]
    assert [attempt_task_id("j.copy", n) for n in (1, 2, 3)] == [
        "j.copy", "j.copy.a2", "j.copy.a3"]


def test_only_interrupted_idempotent_steps_are_tried_again_and_only_so_often() -> None:
    policy = RetryPolicy(attempts=3, delay=1)
    assert policy.next_delay(SLEEP, "nap", "j.nap", 1, CUT) == 1
    assert policy.next_delay(SLEEP, "nap", "j.nap", 2, CUT) == 2
    with pytest.raises(Interrupted) as exhausted:
        policy.next_delay(SLEEP, "nap", "j.nap", 3, CUT)
    assert exhausted.value.message == (
        "step nap (sleep) was interrupted on each of its 3 attempts (tasks j.nap, "
        "j.nap.a2, j.nap.a3); the last: " + CUT.message)
    with pytest.raises(Interrupted, match=r"live_snapshot is not idempotent\. agent shut"):
        policy.next_delay(LIVE_SNAPSHOT, "take", "j.take", 1, CUT)
    other = NotFound("no such file")
    with pytest.raises(NotFound) as passed:
        policy.next_delay(SLEEP, "nap", "j.nap", 1, other)
    assert passed.value is other


async def nap(ctx: JobContext) -> dict[str, Any]:
    slept = await ctx.call(host(), SLEEP, SleepPayload(seconds=1), step="nap")
    return {"slept": slept.slept}


def interrupting(times: int) -> Any:
    """An agent answer that is interrupted `times` times, then succeeds."""
    seen: list[object] = []

    def answer(payload: SleepPayload) -> SleepResult:
        seen.append(payload)
        if len(seen) <= times:
            raise CUT
        return SleepResult(slept=payload.seconds)
    return answer


async def run(db: async_sessionmaker[AsyncSession], agent: RecordingAgent,
              attempts: dict[str, int] | None = None) -> Job:
    jobs = JobEngine(db, agent, SECRETS, retry=RetryPolicy(attempts=3, delay=0))
    jobs.register("test.nap", nap)
    async with db.begin() as session:
        job = jobs.new_job(session, nap)
        job.attempts = attempts
    jobs.start(job)
    await jobs.get(job.id, wait=10)
    await jobs.shutdown()
    async with db() as session:
        row = await session.get(Job, job.id)
    assert row is not None
    return row


async def test_an_interrupted_step_succeeds_on_its_next_attempt_which_the_row_keeps(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    agent.answers["sleep"] = interrupting(1)
    row = await run(db, agent)
    assert row.state == JobState.SUCCEEDED and row.result == {"slept": 1}
    assert row.attempts == {"nap": 2}
    assert [c.task_id for c in agent.calls] == [f"{row.id}.nap", f"{row.id}.nap.a2"]


async def test_a_resumed_job_re_attaches_to_the_newest_attempt(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    agent.answers["sleep"] = interrupting(0)
    row = await run(db, agent, attempts={"nap": 2})
    assert row.state == JobState.SUCCEEDED
    assert [c.task_id for c in agent.calls] == [f"{row.id}.nap.a2"]


async def test_a_step_interrupted_on_every_attempt_fails_the_job_naming_them(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    agent.answers["sleep"] = interrupting(3)
    row = await run(db, agent)
    assert row.state == JobState.FAILED and row.error_code == "interrupted"
    tasks = [f"{row.id}.nap", f"{row.id}.nap.a2", f"{row.id}.nap.a3"]
    assert [c.task_id for c in agent.calls] == tasks
    assert f"interrupted on each of its 3 attempts (tasks {', '.join(tasks)})" in (
        row.error_message or "")
    assert row.attempts == {"nap": 3}
