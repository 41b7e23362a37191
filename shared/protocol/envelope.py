"""The envelope of every command and the record of the task that runs it."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import Field, field_validator

from shared.protocol.types import TASK_ID_RE, Model


class ErrorBody(Model):
    code: str
    message: str


class TaskState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self is not TaskState.RUNNING


class CommandEnvelope(Model):
    task_id: str
    deadline: float | None = Field(
        default=None, description="Unix time after which the agent gives up the task."
    )
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("task_id")
    @classmethod
    def _task_id(cls, v: str) -> str:
        if not TASK_ID_RE.fullmatch(v):
            raise ValueError("task_id must be 1-128 characters of [A-Za-z0-9._:-]")
        return v


class TaskInfo(Model):
    task_id: str
    command: str
    state: TaskState
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None
    created_at: float
    updated_at: float
