"""Durable task log and the manager that runs commands as tasks.

The controller picks each task id; the same id again returns the same task, never a second
execution. Every task is written to a small SQLite file before it starts and again when it
ends, so a restarted agent can still say what became of it.

A task that cannot finish because the agent stops ends `failed` with the code
`interrupted`: on SIGTERM (`TaskManager.drain`) once the shutdown grace ran out, with the
grace in its reason; after a kill, when the next agent process opens the log. The
controller retries such a step under a new task id if its command is idempotent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from agent.metrics import TaskMetrics
from shared.errors import (
    AgentShuttingDown,
    Cancelled,
    Conflict,
    Interrupted,
    NotFound,
    StrataError,
    Timeout,
)
from shared.protocol.envelope import ErrorBody, TaskInfo, TaskState

log = logging.getLogger(__name__)

# The task whose body runs in this context: temporary files are named after it.
current_task_id: ContextVar[str | None] = ContextVar("current_task_id", default=None)

ProgressCallback = Callable[[float], None]
TaskBody = Callable[[ProgressCallback], Awaitable[dict[str, object]]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    result TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""


class TaskStore:
    """The on-disk task log (one SQLite file in the agent's state directory)."""

    def __init__(self, path: str) -> None:
        # Readable by the agent only: results name paths, targets and hosts.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def get(self, task_id: str) -> TaskInfo | None:
        row = self._db.execute(
            "SELECT task_id, command, state, progress, result, error_code, error_message,"
            " created_at, updated_at FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        return _row_to_info(row) if row else None

    def insert(self, info: TaskInfo) -> None:
        self._db.execute(
            "INSERT INTO tasks (task_id, command, state, progress, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (info.task_id, info.command, info.state.value, info.progress,
             info.created_at, info.updated_at),
        )

    def finish(self, info: TaskInfo) -> None:
        self._db.execute(
            "UPDATE tasks SET state = ?, progress = ?, result = ?, error_code = ?,"
            " error_message = ?, updated_at = ? WHERE task_id = ?",
            (info.state.value, info.progress,
             json.dumps(info.result) if info.result is not None else None,
             info.error.code if info.error else None,
             info.error.message if info.error else None,
             info.updated_at, info.task_id),
        )

    def list_recent(self, limit: int = 100) -> list[TaskInfo]:
        rows = self._db.execute(
            "SELECT task_id, command, state, progress, result, error_code, error_message,"
            " created_at, updated_at FROM tasks ORDER BY created_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_row_to_info(r) for r in rows]

    def fail_interrupted(self) -> int:
        """Tasks left running by a previous agent process cannot finish any more."""
        cur = self._db.execute(
            "UPDATE tasks SET state = ?, error_code = 'interrupted',"
            " error_message = 'the agent restarted while the task was running', updated_at = ?"
            " WHERE state = ?",
            (TaskState.FAILED.value, time.time(), TaskState.RUNNING.value),
        )
        return cur.rowcount

    def prune(self, older_than: float) -> None:
        self._db.execute(
            "DELETE FROM tasks WHERE state != ? AND updated_at < ?",
            (TaskState.RUNNING.value, older_than),
        )


def _row_to_info(row: tuple[Any, ...]) -> TaskInfo:
    task_id, command, state, progress, result, code, message, created, updated = row
    return TaskInfo(
        task_id=str(task_id), command=str(command), state=TaskState(state),
        progress=float(progress),
        result=json.loads(str(result)) if result is not None else None,
        error=ErrorBody(code=str(code), message=str(message)) if code is not None else None,
        created_at=float(created), updated_at=float(updated),
    )


# How long a task cancelled at shutdown may take to remove its temporaries before it is
# recorded interrupted all the same (a call blocked in a thread ends with the process).
CANCEL_WAIT = 5.0


@dataclass
class _Running:
    info: TaskInfo
    job: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the agent stops it: it ends interrupted with this reason, not cancelled.
    interrupted: str | None = None


class TaskManager:
    """Starts tasks, lets callers wait on them, cancels them, keeps the log."""

    RETENTION_SECONDS = 7 * 24 * 3600

    def __init__(self, store: TaskStore,
                 public_message: Callable[[str], str] = lambda text: text) -> None:
        """`public_message` rewrites an error message before the controller sees it (the
        agent keeps its internal paths to itself)."""
        self._store = store
        self._public_message = public_message
        self._running: dict[str, _Running] = {}
        self._closing = False
        self.metrics = TaskMetrics()
        # This start of the agent: tasks of any earlier one were cut short.
        self.instance = secrets.token_hex(8)
        interrupted = store.fail_interrupted()
        if interrupted:
            log.warning("marked %d interrupted task(s) as failed", interrupted)
        store.prune(time.time() - self.RETENTION_SECONDS)

    def submit(self, task_id: str, command: str, deadline: float | None,
               body: TaskBody) -> TaskInfo:
        existing = self.get(task_id)
        if existing is not None:
            if existing.command != command:
                raise Conflict(
                    f"task {task_id} already exists for command {existing.command!r}",
                    code="task_id_reused",
                )
            return existing
        if self._closing:
            raise AgentShuttingDown(f"the agent is shutting down and starts no new task; "
                                    f"send task {task_id} again once it is back")
        now = time.time()
        info = TaskInfo(task_id=task_id, command=command, state=TaskState.RUNNING,
                        created_at=now, updated_at=now)
        self._store.insert(info)
        running = _Running(info)
        self._running[task_id] = running
        running.job = asyncio.create_task(self._run(running, deadline, body), name=task_id)
        return info

    def get(self, task_id: str) -> TaskInfo | None:
        running = self._running.get(task_id)
        if running is not None:
            return running.info
        return self._store.get(task_id)

    async def wait(self, task_id: str, timeout: float) -> TaskInfo:
        running = self._running.get(task_id)
        if running is not None and timeout > 0:
            try:
                await asyncio.wait_for(asyncio.shield(running.done.wait()), timeout)
            except TimeoutError:
                pass
        info = self.get(task_id)
        if info is None:
            raise NotFound(f"no task {task_id}")
        return info

    def cancel(self, task_id: str) -> TaskInfo:
        running = self._running.get(task_id)
        if running is not None and running.job is not None:
            running.job.cancel()
            return running.info
        info = self._store.get(task_id)
        if info is None:
            raise NotFound(f"no task {task_id}")
        return info

    def ended(self, task_id: str) -> bool:
        """This agent ran the task (and still remembers it), and it has ended."""
        info = self.get(task_id)
        return info is not None and info.state.finished

    def running(self) -> list[TaskInfo]:
        return [r.info for r in self._running.values()]

    def recent(self) -> list[TaskInfo]:
        return self._store.list_recent()

    @property
    def closing(self) -> bool:
        return self._closing

    async def drain(self, grace: float) -> int:
        """The SIGTERM path: takes no new task, gives the running ones `grace` seconds to
        finish, then interrupts the rest; returns how many it interrupted."""
        self._closing = True
        jobs = [r.job for r in self._running.values() if r.job is not None]
        if jobs and grace > 0:
            log.info("shutting down: %d running task(s) get %gs to finish", len(jobs), grace)
            await asyncio.wait(jobs, timeout=grace)
        return await self._interrupt(f"agent shutting down after {grace:g}s grace; the "
                                     "task was cut short")

    async def shutdown(self) -> None:
        """Interrupts whatever still runs (after `drain`, nothing)."""
        self._closing = True
        await self._interrupt("the agent stopped while the task was running")

    async def _interrupt(self, reason: str) -> int:
        """Cancels every running task (each removes its temporaries as it ends) and
        records it interrupted with `reason`; one that does not end within CANCEL_WAIT
        is recorded so all the same."""
        running = list(self._running.values())
        for entry in running:
            entry.interrupted = reason
            if entry.job is not None:
                entry.job.cancel()
        jobs = [r.job for r in running if r.job is not None]
        if jobs:
            await asyncio.wait(jobs, timeout=CANCEL_WAIT)
        for entry in running:
            if not entry.done.is_set():
                log.warning("task %s did not end within %gs of its cancel",
                            entry.info.task_id, CANCEL_WAIT)
                entry.info.state = TaskState.FAILED
                entry.info.error = ErrorBody(code=Interrupted.default_code, message=reason)
                entry.info.updated_at = time.time()
                self._store.finish(entry.info)
        if running:
            log.warning("interrupted %d task(s): %s", len(running), reason)
        return len(running)

    async def _run(self, running: _Running, deadline: float | None, body: TaskBody) -> None:
        info = running.info

        def progress(pct: float) -> None:
            info.progress = round(max(info.progress, min(pct, 100.0)), 2)
            info.updated_at = time.time()

        def fail(state: TaskState, err: StrataError) -> None:
            if state is TaskState.FAILED:
                log.info("task %s (%s) failed: %s", info.task_id, info.command, err.message)
            info.state = state
            info.error = ErrorBody(code=err.code,
                                   message=self._public_message(err.message))

        current_task_id.set(info.task_id)
        self.metrics.started(info.command)
        try:
            budget = None if deadline is None else max(0.0, deadline - time.time())
            async with asyncio.timeout(budget):
                info.result = await body(progress)
            info.state, info.progress = TaskState.SUCCEEDED, 100.0
        except TimeoutError:
            fail(TaskState.FAILED, Timeout(f"task {info.task_id} passed its deadline"))
        except asyncio.CancelledError:
            if running.interrupted is not None:
                fail(TaskState.FAILED, Interrupted(running.interrupted))
            else:
                fail(TaskState.CANCELLED, Cancelled(f"task {info.task_id} was cancelled"))
        except StrataError as exc:
            fail(TaskState.FAILED, exc)
        except Exception as exc:
            log.exception("task %s (%s) crashed", info.task_id, info.command)
            fail(TaskState.FAILED, StrataError(f"{type(exc).__name__}: {exc}"))
        finally:
            info.updated_at = time.time()
            seconds = info.updated_at - info.created_at
            self.metrics.finished(info.command, info.state, seconds)
            log.info("task %s (%s) %s after %.3f s", info.task_id, info.command, info.state,
                     seconds)
            self._store.finish(info)
            running.done.set()
            self._running.pop(info.task_id, None)
