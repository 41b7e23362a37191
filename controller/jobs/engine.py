"""The job engine. Every mutating API call writes a job row in the same transaction as the
resource it concerns, then the engine runs it. Jobs found running with no live owner (the
controller that ran them died) are run again: handlers are idempotent and their agent
steps use task ids derived from the job id, so a resumed job re-attaches to the same
agent task instead of starting a second one.

Several controllers share one database: each job row names its owner (a controller
instance) and a lease the owner renews every `lease_renew` seconds. A job whose lease
lapsed is taken over by the first peer to swap itself in as owner (compare-and-swap on
the row), so no two controllers run one job; a controller that finds a job it runs owned
by another stops its copy. A cancel request is a mark on the row that the owner acts on:
it cancels the job's own agent tasks, and the job fails with `cancelled` after its
resource is rolled back (the kind's `on_cancel`, else its `on_failure`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.agentchannel import AgentTarget
from controller.agentclient import AgentClient
from controller.db.models import Host, ImageCache, Job, JobState, ObjectState
from controller.jobs.retry import RetryPolicy, attempt_task_id
from controller.leader import new_instance_id
from controller.metrics import Metrics
from controller.secrets import SecretBox
from shared.errors import Conflict, Interrupted, NotFound, StrataError
from shared.logs import REQUEST_ID
from shared.protocol.command import Command
from shared.protocol.types import Model

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Model)
R = TypeVar("R", bound=Model)

JOBS: Any = Job.__table__
PROGRESS_INTERVAL = 1.0
FINISHED_KEPT = 10_000
CANCELLED = "cancelled"
# The columns a job's end sets.
ENDING = ("state", "progress", "result", "error_code", "error_message", "updated_at")


async def in_flight(session: AsyncSession) -> list[str]:
    """What may be writing temporary files on a storage now, from any host: the jobs
    running on any controller (their tasks are named after them) and the image caches
    being filled (each by a task the jobs waiting on it share)."""
    jobs = (await session.scalars(select(Job.id).where(Job.state == JobState.RUNNING))).all()
    caches = (await session.scalars(
        select(ImageCache).where(ImageCache.state == ObjectState.CREATING))).all()
    return [*jobs, *(cache.task_id for cache in caches)]


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
    # The job's own agent tasks in flight (id -> agent): what a cancel stops.
    _calls: dict[str, AgentTarget] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    def task_id(self, step: str) -> str:
        return f"{self.job.id}.{step}"

    async def in_flight(self) -> list[str]:
        """See `in_flight`: a storage prepared again spares their temporaries."""
        async with self.db() as session:
            return await in_flight(session)

    async def call(
        self, host: Host, command: Command[P, R], payload: P, *, step: str | None = None,
        task_id: str | None = None, timeout: float | None = None,
        span: tuple[float, float] = (0.0, 100.0),
    ) -> R:
        """Runs one agent command as this job's `step` (or as the agent task `task_id`,
        which other jobs may share); its progress fills `span` of the job's progress.
        A step of the job's own that the agent interrupted (it restarted or shut down
        meanwhile) runs again as a new attempt when its command is idempotent (see
        `controller.jobs.retry`)."""
        if (step is None) == (task_id is None):
            raise ValueError("give exactly one of step and task_id")
        lo, hi = span

        def on_progress(pct: float) -> None:
            self.progress(lo + (hi - lo) * pct / 100.0)

        target, base = AgentTarget.of(host), task_id or self.task_id(step or "")
        prefix = self.task_id("")
        if not base.startswith(prefix):
            # A task other jobs may share (an image cache's fill) is never cancelled or
            # retried for one: its owner does both.
            shared = await self.agents.call(target, command, base, payload, timeout=timeout,
                                            progress=on_progress, notice=self.notice)
            self.progress(hi)
            return shared
        key = base[len(prefix):]
        retry = self.engine.retry
        attempt = (self.job.attempts or {}).get(key, 1)
        while True:
            task = attempt_task_id(base, attempt)
            # Kept until the task has answered, so a cancel of the job still finds it.
            self._calls[task] = target
            try:
                result = await self.agents.call(target, command, task, payload,
                                                timeout=timeout, progress=on_progress,
                                                notice=self.notice)
            except Interrupted as exc:
                self._calls.pop(task, None)
                delay = retry.next_delay(command, key, base, attempt, exc)
                self.notice(f"step {key}: attempt {attempt} of {retry.attempts} was "
                            f"interrupted ({exc.message}); trying again in {delay:g}s")
                log.info("job %s: step %s attempt %d interrupted: %s", self.job.id, key,
                         attempt, exc.message)
                await asyncio.sleep(delay)
                attempt += 1
                await self.engine.record_attempt(self.job, key, attempt)
                continue
            self._calls.pop(task, None)
            if attempt > 1:
                self.notice(None)
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
# failed (a cancel included): the reason is the job's error message.
FailureHandler = Callable[[JobContext, str], Awaitable[None]]


def finished_values(state: JobState, **values: Any) -> dict[str, Any]:
    return {"state": state, "updated_at": time.time(), **values}


class JobEngine:
    """Runs jobs and answers for them. The jobs this process runs are also kept in memory
    (with recently finished ones), so long-polls on them cost no database reads."""

    def __init__(self, db: async_sessionmaker[AsyncSession], agents: AgentClient,
                 secrets: SecretBox, *, owner: str | None = None, lease_ttl: float = 15,
                 lease_renew: float = 5, retry: RetryPolicy | None = None) -> None:
        """`owner`: this controller's instance id (see `controller.leader`); `retry`:
        how interrupted agent steps are tried again."""
        self.owner = owner or new_instance_id()
        self.retry = retry or RetryPolicy()
        self._lease_ttl = lease_ttl
        self._lease_renew = lease_renew
        self._renewed_at = time.monotonic()
        self._cancelling: set[str] = set()
        self._db = db
        self._agents = agents
        self._secrets = secrets
        self._handlers: dict[str, JobHandler] = {}
        self._kinds: dict[JobHandler, str] = {}
        self._on_failure: dict[str, FailureHandler] = {}
        self._on_cancel: dict[str, FailureHandler] = {}
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
                 on_failure: FailureHandler | None = None,
                 on_cancel: FailureHandler | None = None) -> None:
        """Binds `handler` to `kind`, the name job rows keep: a job resumed after a restart
        finds its handler by it. `on_failure` runs whenever such a job fails, a bug
        included, so that no resource stays in a transitional state; `on_cancel`, when
        given, runs instead when the job was cancelled (e.g. to remove what it made)."""
        self._handlers[kind] = handler
        self._kinds[handler] = kind
        if on_failure is not None:
            self._on_failure[kind] = on_failure
        if on_cancel is not None:
            self._on_cancel[kind] = on_cancel

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
        now = time.time()
        job = Job(kind=self.kind_of(handler), params=params or {}, resource_type=resource_type,
                  resource_id=resource_id, state=JobState.RUNNING, progress=0.0,
                  request_id=REQUEST_ID.get(), created_at=now, updated_at=now,
                  owner=self.owner, lease_expires_at=now + self._lease_ttl)
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

    async def adopt(self, predecessor: str | None = None) -> int:
        """Takes over the running jobs no live controller holds (no owner, or a lapsed
        lease), each by compare-and-swap on its row; returns how many. Run at start and
        after each lease renewal. `predecessor`: the instance this process replaces (the
        same state directory's last one), known dead, whose jobs need not wait for their
        leases to lapse."""
        now = time.time()
        orphaned = or_(Job.owner.is_(None), Job.lease_expires_at.is_(None),
                       Job.lease_expires_at < now,
                       Job.owner == (predecessor or self.owner))
        async with self._db() as session:
            found = (await session.execute(
                select(Job.id, Job.owner).where(Job.state == JobState.RUNNING, orphaned)
                .order_by(Job.created_at))).all()
        adopted = 0
        for job_id, previous in found:
            if job_id in self._tasks:
                continue
            async with self._db.begin() as session:
                taken: Any = await session.execute(
                    update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING,
                                      orphaned)
                    .values(owner=self.owner, lease_expires_at=now + self._lease_ttl,
                            updated_at=Job.updated_at)
                    .execution_options(synchronize_session=False))
                if taken.rowcount != 1:
                    continue  # a peer took it first
                job = await session.get(Job, job_id, populate_existing=True)
            assert job is not None
            log.info("resuming job %s (%s), held before by %s", job.id, job.kind,
                     previous or "no controller")
            adopted += 1
            self.start(job)
        return adopted

    async def keep_leases(self) -> None:
        """Until cancelled: renews this controller's leases, acts on cancel requests and
        on jobs a peer took over, and adopts jobs whose owner died."""
        while True:
            await asyncio.sleep(self._lease_renew)
            try:
                await self._renew_leases()
                await self.adopt()
            except Exception:
                log.exception("renewing job leases failed")
                if time.monotonic() - self._renewed_at >= self._lease_ttl:
                    # Peers may take these jobs over now: stop running them here.
                    for job_id in list(self._tasks):
                        self._stop_local(job_id)

    async def cancel(self, job_id: str) -> Job:
        """Asks the job's owner to cancel it (this controller at once, a peer at its next
        lease renewal); a finished job is a 409."""
        async with self._db.begin() as session:
            marked: Any = await session.execute(
                update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING)
                .values(cancel_requested_at=func.coalesce(Job.cancel_requested_at,
                                                          time.time()),
                        updated_at=Job.updated_at)
                .execution_options(synchronize_session=False))
            job = await session.get(Job, job_id, populate_existing=True)
        if job is None:
            raise NotFound(f"no job {job_id}")
        if marked.rowcount != 1:
            raise Conflict(f"job {job_id} has already {job.state}", code="job_finished")
        log.info("job %s (%s): cancel requested", job.id, job.kind)
        if job_id in self._tasks:
            self._cancelling.add(job_id)
            self._tasks[job_id].cancel()
        return self._live.get(job_id) or job

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

    async def record_attempt(self, job: Job, step: str, attempt: int) -> None:
        """Notes that `step` moves on to `attempt`, before its task is sent: a job resumed
        after a restart then re-attaches to that task, not to an interrupted one."""
        job.attempts = {**(job.attempts or {}), step: attempt}
        await self._update(job.id, attempts=job.attempts)

    def schedule_progress(self, job_id: str, **values: Any) -> None:
        task = asyncio.create_task(self._update(job_id, **values))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def shutdown(self) -> None:
        """Stops the jobs here and lets go of their leases, so a peer resumes them at its
        next check instead of waiting for the leases to lapse."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._background, return_exceptions=True)
        try:
            async with self._db.begin() as session:
                await session.execute(
                    update(Job).where(Job.owner == self.owner, Job.state == JobState.RUNNING)
                    .values(owner=None, lease_expires_at=None, updated_at=Job.updated_at)
                    .execution_options(synchronize_session=False))
        except Exception as exc:
            log.warning("could not hand back job leases (they lapse on their own): %s", exc)

    async def _renew_leases(self) -> None:
        now = time.time()
        async with self._db.begin() as session:
            await session.execute(
                update(Job).where(Job.owner == self.owner, Job.state == JobState.RUNNING)
                .values(lease_expires_at=now + self._lease_ttl, updated_at=Job.updated_at)
                .execution_options(synchronize_session=False))
            rows = (await session.execute(
                select(Job.id, Job.owner, Job.state, Job.cancel_requested_at)
                .where(Job.id.in_(list(self._tasks))))).all() if self._tasks else []
        self._renewed_at = time.monotonic()
        for job_id, owner, state, cancel_requested in rows:
            if job_id not in self._tasks or state != JobState.RUNNING:
                continue
            if owner != self.owner:
                log.warning("job %s is held by %s now; stopping it here", job_id, owner)
                self._stop_local(job_id)
            elif cancel_requested is not None and job_id not in self._cancelling:
                self._cancelling.add(job_id)
                self._tasks[job_id].cancel()

    def _stop_local(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()

    async def _update(self, job_id: str, **values: Any) -> None:
        async with self._db.begin() as session:
            await session.execute(
                update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING)
                .values(updated_at=time.time(), **values)
                .execution_options(synchronize_session=False))

    async def _finish(self, job: Job, state: JobState, **values: Any) -> None:
        """Writes the job's end until the database takes it: a job whose end was lost
        would stay `running` with its lease renewed, never resumed, while this controller
        lives. If the row had ended already (a final transaction that committed although
        its commit raised), pollers are shown the row's end."""
        values = finished_values(state, **values)
        delay = 0.05
        while True:
            try:
                async with self._db.begin() as session:
                    ended: Any = await session.execute(
                        update(Job).where(Job.id == job.id, Job.state == JobState.RUNNING)
                        .values(**values)
                        .execution_options(synchronize_session=False))
                    row = None if ended.rowcount == 1 else await session.get(
                        Job, job.id, populate_existing=True)
                break
            except (SQLAlchemyError, OSError) as exc:
                log.warning("writing the end of job %s failed (trying again): %s",
                            job.id, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self._lease_renew)
        if row is not None and JobState(row.state).finished:
            values = {key: getattr(row, key) for key in ENDING}
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
        settle = ((code == CANCELLED and self._on_cancel.get(ctx.job.kind))
                  or self._on_failure.get(ctx.job.kind))
        delay = 0.05
        while settle is not None:
            try:
                await settle(ctx, message)
                break
            except (SQLAlchemyError, OSError) as exc:
                # The database failed, not the rule: settling again is a compare-and-swap
                # that finds done what was done, so the resource is not left transitional.
                log.warning("settling the resource of failed job %s failed (trying "
                            "again): %s", ctx.job.id, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self._lease_renew)
            except Exception:
                log.exception("settling the resource of failed job %s failed", ctx.job.id)
                break
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
            if job.id not in self._cancelling:
                log.info("job %s stopped here; the controller that holds it next resumes "
                         "it", job.id)
                self._let_go(job)
                raise
            await self._cancelled(ctx)
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

    def _let_go(self, job: Job) -> None:
        """Forgets a job this controller stopped running: pollers read the row again."""
        self._live.pop(job.id, None)
        done = self._done.pop(job.id, None)
        if done is not None:
            done.set()

    async def _cancelled(self, ctx: JobContext) -> None:
        """Stops the job's own agent tasks (each has removed its partial output when it
        ends), then rolls the resource back, unless the handler ended the job in the
        moment it was cancelled."""
        job = ctx.job
        self._cancelling.discard(job.id)
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        for task_id, target in list(ctx._calls.items()):
            try:
                await self._agents.cancel(target, task_id)
            except (StrataError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("cancelling agent task %s failed: %s", task_id, exc)
        async with self._db() as session:
            row = await session.get(Job, job.id, populate_existing=True)
        if row is not None and JobState(row.state).finished:
            self._finished_in_memory(job, {key: getattr(row, key) for key in ENDING})
            return
        log.info("job %s (%s) cancelled", job.id, job.kind)
        await self._fail(ctx, CANCELLED, "cancelled on request")
