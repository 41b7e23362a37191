"""The controller's periodic work, in one place: each task runs every `interval` seconds,
one run at a time, and only while `may_run()` says this controller should (with several
controllers on one database, only the elected leader's does)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    interval: float
    run: Callable[[], Awaitable[None]]


def always() -> bool:
    return True


class PeriodicRunner:
    def __init__(self, may_run: Callable[[], bool] = always) -> None:
        self._may_run = may_run
        self._tasks: list[PeriodicTask] = []
        self._running: list[asyncio.Task[None]] = []

    def add(self, name: str, interval: float, run: Callable[[], Awaitable[None]]) -> None:
        """`interval` 0 (or less) leaves the task out: the setting that turns it off."""
        if interval > 0:
            self._tasks.append(PeriodicTask(name, interval, run))

    def start(self) -> None:
        self._running = [asyncio.create_task(self._loop(t), name=f"periodic-{t.name}")
                         for t in self._tasks]

    async def stop(self) -> None:
        for task in self._running:
            task.cancel()
        for task in self._running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._running = []

    async def _loop(self, task: PeriodicTask) -> None:
        """A failed run is logged and the next one comes at its time: periodic work never
        stops for one error."""
        while True:
            await asyncio.sleep(task.interval)
            if not self._may_run():
                continue
            try:
                await task.run()
            except Exception:
                log.exception("periodic task %s failed", task.name)
