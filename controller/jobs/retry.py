"""When a job's agent step is tried again: only after the agent stopped while it ran
(`interrupted`: a restart, or a shutdown whose grace ran out), only for a command declared
idempotent, at most `attempts` times, with a doubling wait between attempts. Each attempt
is a new agent task, `<job>.<step>` first, then `<job>.<step>.a2`, `.a3`...; the job row
keeps the attempt each step is on, so a job resumed by another controller re-attaches to
the newest one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.errors import Interrupted, StrataError
from shared.protocol.command import Command


def attempt_task_id(base: str, attempt: int) -> str:
    """The agent task id of `attempt` of the step whose first task id is `base`."""
    return base if attempt <= 1 else f"{base}.a{attempt}"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    delay: float = 2.0
    max_delay: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Seconds between the end of `attempt` and the start of the next one."""
        return min(self.max_delay, self.delay * 2.0 ** (attempt - 1))

    def next_delay(self, command: Command[Any, Any], step: str, base: str, attempt: int,
                   error: StrataError) -> float:
        """The wait before trying `step` again, whose `attempt` (task id from `base`)
        failed with `error`; raises what the job fails with when it is not tried again."""
        if not isinstance(error, Interrupted):
            raise error
        tasks = ", ".join(attempt_task_id(base, n) for n in range(1, attempt + 1))
        if not command.idempotent:
            raise Interrupted(
                f"step {step} ({command.name}) was interrupted on attempt {attempt} (task "
                f"{tasks}) and is not tried again: {command.name} is not idempotent. "
                f"{error.message}")
        if attempt >= self.attempts:
            raise Interrupted(
                f"step {step} ({command.name}) was interrupted on each of its {attempt} "
                f"attempts (tasks {tasks}); the last: {error.message}")
        return self.backoff(attempt)
