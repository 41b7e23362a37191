"""The one fake executor of the agent's unit tests: it records every argv (and the secrets
it was asked to keep out of the log) and answers from rules, as VDSM's storage tests
stand in for the tools where only the argv matters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence

from agent.executor import Executor, Limits, OutputCallback, Result

Matcher = Callable[[Sequence[str]], bool]
Responder = Callable[[list[str]], Result]


def contains(word: str) -> Matcher:
    """Matches an argv holding `word` anywhere."""
    return lambda argv: word in argv


def reply(argv: Sequence[str], rc: int = 0, stdout: str = "", stderr: str = "") -> Result:
    return Result(tuple(argv), rc, stdout, stderr)


def _matcher(match: Sequence[str] | Matcher) -> Matcher:
    if callable(match):
        return match
    prefix = list(match)

    def starts_with(argv: Sequence[str]) -> bool:
        return list(argv[:len(prefix)]) == prefix

    return starts_with


class FakeExecutor(Executor):
    """The latest rule that matches an argv answers it. An argv no rule matches succeeds
    with no output, or fails the test when `strict`."""

    def __init__(self, *, strict: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.redacted: set[str] = set()
        self._rules: list[tuple[Matcher, Responder]] = []
        self._strict = strict

    def on(self, match: Sequence[str] | Matcher, respond: Responder | None = None, *,
           rc: int = 0, stdout: str = "", stderr: str = "",
           raises: BaseException | None = None) -> None:
        """`match`: an argv prefix, or a predicate. `respond` computes the answer from
        the argv; else the answer is `raises`, or a result with rc, stdout and stderr."""
        def canned(argv: list[str]) -> Result:
            if raises is not None:
                raise raises
            return reply(argv, rc, stdout, stderr)

        self._rules.append((_matcher(match), respond or canned))

    def _answer(self, argv: Sequence[str], redact: Collection[str]) -> Result:
        call = list(argv)
        self.calls.append(call)
        self.redacted.update(redact)
        for matcher, respond in reversed(self._rules):
            if matcher(call):
                return respond(call)
        if self._strict:
            raise AssertionError(f"unexpected command {call}")
        return reply(call)

    async def run(self, argv: Sequence[str], *, timeout: float,
                  on_output: OutputCallback | None = None, limits: Limits | None = None,
                  check: bool = True, redact: Collection[str] = ()) -> Result:
        result = self._answer(argv, redact)
        if on_output is not None and result.stdout:
            on_output(result.stdout)
        return result.check() if check else result

    @contextlib.asynccontextmanager
    async def stream(self, argv: Sequence[str], *, timeout: float,
                     redact: Collection[str] = ()) -> AsyncIterator[AsyncIterator[bytes]]:
        result = self._answer(argv, redact)

        async def chunks() -> AsyncIterator[bytes]:
            if result.stdout:
                yield result.stdout.encode()
            result.check()

        yield chunks()

    def count(self, program: str) -> int:
        return sum(1 for call in self.calls if call[0] == program)
