"""Binding handlers to protocol commands: `@handles(CREATE_VOLUME)` over the function that
carries the command out. The agent serves exactly the commands that have a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agent.services import AgentServices
from shared.protocol.command import Command
from shared.protocol.types import Model

P = TypeVar("P", bound=Model)
R = TypeVar("R", bound=Model)

Progress = Callable[[float], None]
HandlerFn = Callable[[AgentServices, P, Progress], Awaitable[R]]


@dataclass(frozen=True)
class Handler(Generic[P, R]):
    command: Command[P, R]
    run: HandlerFn[P, R]


HANDLERS: dict[str, Handler[Any, Any]] = {}


def handles(command: Command[P, R]) -> Callable[[HandlerFn[P, R]], HandlerFn[P, R]]:
    def bind(fn: HandlerFn[P, R]) -> HandlerFn[P, R]:
        if command.name in HANDLERS:
            raise ValueError(f"agent command {command.name!r} has two handlers")
        HANDLERS[command.name] = Handler(command, fn)
        return fn

    return bind
