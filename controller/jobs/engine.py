"""The job engine. Every mutating API call writes a job row in the same transaction as the
resource it concerns, then the engine runs it. Jobs found pending or running at start
(the controller died mid-job) are run again: handlers are idempotent and their agent
steps use task ids derived from the job id, so a resumed job re-attaches to the same
agent task instead of starting a second one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.agentchannel import AgentTarget
from controller.agentclient import AgentClient
from controller.db.models import Host, Job, JobState
from controller.metrics import Metrics
from controller.secrets import SecretBox
from shared.errors import NotFound, StrataError
from shared.logs import REQUEST_ID
from shared.protocol.command import Command
from shared.protocol.types import Model

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Model)
R = TypeVar("R", bound=Model)

JOBS: Any = Job.__table__
PROGRESS_INTERVAL = 1.0
FINISHED_KEPT = 10_000


@dataclass
class JobContext:
    """What a running job handler gets: its job, the database, the agents, progress."""

    job: Job
    engine: JobEngine
    db: async_sessionmaker[AsyncSession]
    agents: AgentClient
    secrets: SecretBox
    _last_write: float = field(default_factory=time.monotonic)
    _success: dict[str, Any] | None = None

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    def task_id(self, step: str) -> str:
        return f"{self.job.id}.{step}"

    async def call(
        self, host: Host, command: Command[P, R], payload: P, *, step: str | None = None,
        task_id: str | None = None, timeout: float | None = None,
        span: tuple[float, float] = (0.0, 100.0),
    ) -> R:
        """Runs one agent command as this job's `step` (or as the agent task `task_id`,
        which other jobs may share); its progress fills `span` of the job's progress."""
        if (step is None) == (task_id is None):
            raise ValueError("give exactly one of step and task_id")
        lo, hi = span

        def on_progress(pct: float) -> None:
            self.progress(lo + (hi - lo) * pct / 100.0)

        result = await self.agents.call(
            AgentTarget.of(host), command, task_id or self.task_id(step or ""), payload,
            timeout=timeout, progress=on_progress, notice=self.notice)
        self.progress(hi)
        return result

    async def succeed(self, session: AsyncSession, result: dict[str, Any] | None) -> None:
        """Marks the job succeeded inside the handler's final transaction, so the resource's
        new state and the job's end commit together (and cost one transaction, not two).
        The handler must return once that transaction has committed."""
        self._success = finished_values(JobState.SUCCEEDED, progress=100.0, result=result)
        await session.execute(update(JOBS).where(JOBS.c.id == self.job.id)
                              .values(**self._success))

    def progress(self, pct: float) -> None:
        """Shown at once to pollers; written to the database at most once a second, so a
        job that ends within a second writes no progress at all."""
        self.job.progress = round(pct, 1)
        now = time.monotonic()
        if now - self._last_write < PROGRESS_INTERVAL:
            return
        self._last_write = now
        self.engine.schedule_progress(self.job.id, progress=self.job.progress)

    def notice(self, message: str | None) -> None:
        """A line for the operator about what the job waits on (None clears it)."""
        if message != self.job.message:
            self.job.message = message
            self.engine.schedule_progress(self.job.id, message=message)


JobHandler = Callable[[JobContext], Awaitable[dict[str, Any] | None]]
# Moves the job's resource out of its transitional state once the job failed, whatever
# failed: the reason is the job's error message.
FailureHandler = Callable[[JobContext, str], Awaitable[None]]


def finished_values(state: JobState, **values: Any) -> dict[str, Any]:
    return {"state": state, "updated_at": time.time(), **values}


class JobEngine:
    """Runs jobs and answers for them. The jobs this process runs are also kept in memory
    (with recently finished ones), so long-polls on them cost no database reads."""

    def __init__(self, db: async_sessionmaker[AsyncSession], agents: AgentClient,
                 secrets: SecretBox) -> None:
        self._db = db
        self._agents = agents
        self._secrets = secrets
        self._handlers: dict[str, JobHandler] = {}
        self._kinds: dict[JobHandler, str] = {}
        self._on_failure: dict[str, FailureHandler] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, Job] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._finished: OrderedDict[str, Job] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self.metrics = Metrics()

    @property
    def agents(self) -> AgentClient:
        """For the few questions to an agent that are no job (its network report)."""
        return self._agents

    def register(self, kind: str, handler: JobHandler,
                 on_failure: FailureHandler | None = None) -> None:
        """Binds `handler` to `kind`, the name job rows keep: a job resumed after a restart
        finds its handler by it. `on_failure` runs whenever such a job fails, a bug
        included, so that no resource stays in a transitional state."""
        self._handlers[kind] = handler
        self._kinds[handler] = kind
        if on_failure is not None:
            self._on_failure[kind] = on_failure

    def kind_of(self, handler: JobHandler) -> str:
        kind = self._kinds.get(handler)
        if kind is None:
            raise ValueError(f"{handler!r} is not a registered job handler")
        return kind

    def new_job(
        self, session: AsyncSession, handler: JobHandler, *, resource_type: str | None = None,
        resource_id: str | None = None, params: dict[str, Any] | None = None,
    ) -> Job:
        """Adds a job row that `handler` will run to the caller's transaction; call `start`
        after commit. It is `running` from the start: a controller that dies before `start`
        resumes it."""
        job = Job(kind=self.kind_of(handler), params=params or {}, resource_type=resource_type,
                  resource_id=resource_id, state=JobState.RUNNING, progress=0.0,
                  request_id=REQUEST_ID.get(), created_at=time.time(), updated_at=time.time())
        session.add(job)
        return job

    def start(self, job: Job) -> None:
        if job.id in self._tasks:
            return
        self._live[job.id] = job
        self._done[job.id] = asyncio.Event()
        task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))

    async def resume_all(self) -> int:
        async with self._db() as session:
            jobs = (await session.scalars(
                select(Job).where(Job.state == JobState.RUNNING)
                .order_by(Job.created_at)
            )).all()
        for job in jobs:
            log.info("resuming job %s (%s)", job.id, job.kind)
            self.start(job)
        return len(jobs)

    async def get(self, job_id: str, wait: float = 0) -> Job:
        """The job, waiting up to `wait` seconds for it to finish."""
        deadline = time.monotonic() + wait
        while True:
            job = self._live.get(job_id) or self._finished.get(job_id)
            if job is None:
                async with self._db() as session:
                    job = await session.get(Job, job_id)
                if job is None:
                    raise NotFound(f"no job {job_id}")
            remaining = deadline - time.monotonic()
            if JobState(job.state).finished or remaining <= 0:
                return job
            done = self._done.get(job_id)
            if done is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), remaining)
            else:
                # Run by another controller process: poll the database.
                await asyncio.sleep(min(remaining, 1.0))

    def schedule_progress(self, job_id: str, **values: Any) -> None:
        task = asyncio.create_task(self._update(job_id, **values))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def shutdown(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._background, return_exceptions=True)

    async def _update(self, job_id: str, **values: Any) -> None:
        async with self._db.begin() as session:
            await session.execute(
                update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING)
                .values(updated_at=time.time(), **values)
                .execution_options(synchronize_session=False))

    async def _finish(self, job: Job, state: JobState, **values: Any) -> None:
        values = finished_values(state, **values)
        async with self._db.begin() as session:
            await session.execute(
                update(Job).where(Job.id == job.id).values(**values)
                .execution_options(synchronize_session=False))
        self._finished_in_memory(job, values)

    def _finished_in_memory(self, job: Job, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(job, key, value)
        seconds = job.updated_at - job.created_at
        self.metrics.job_finished(job.kind, job.state, seconds)
        log.info("job %s (%s) %s after %.3f s", job.id, job.kind, job.state, seconds)
        self._live.pop(job.id, None)
        self._finished[job.id] = job
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)
        done = self._done.pop(job.id, None)
        if done is not None:
            done.set()

    async def _fail(self, ctx: JobContext, code: str, message: str) -> None:
        settle = self._on_failure.get(ctx.job.kind)
        if settle is not None:
            try:
                await settle(ctx, message)
            except Exception:
                log.exception("settling the resource of failed job %s failed", ctx.job.id)
        await self._finish(ctx.job, JobState.FAILED, error_code=code, error_message=message)

    async def _run(self, job: Job) -> None:
        handler = self._handlers.get(job.kind)
        if handler is None:
            await self._finish(job, JobState.FAILED, error_code="unknown_job_kind",
                               error_message=f"no handler for job kind {job.kind!r}")
            return
        # A resumed job runs outside any request: its id comes from the row.
        REQUEST_ID.set(job.request_id)
        ctx = JobContext(job=job, engine=self, db=self._db, agents=self._agents,
                         secrets=self._secrets)
        try:
            result = await handler(ctx)
        except asyncio.CancelledError:
            log.info("job %s interrupted by shutdown; it resumes at next start", job.id)
            raise
        except StrataError as exc:
            log.info("job %s (%s) failed: %s", job.id, job.kind, exc.message)
            await self._fail(ctx, exc.code, exc.message)
        except Exception:
            log.exception("job %s (%s) crashed", job.id, job.kind)
            await self._fail(ctx, "internal_error", "internal error; see the controller log")
        else:
            if ctx._success is not None:
                self._finished_in_memory(job, ctx._success)
            else:
                await self._finish(job, JobState.SUCCEEDED, progress=100.0, result=result)
