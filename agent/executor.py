"""Runs external programs: argv lists only, a timeout on every call, output streamed.

Injectable (as in os-brick): tools such as `qemuimg` take an executor, and unit tests pass
a fake one that records argv and returns canned output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from shared.errors import OperationFailed, Timeout

log = logging.getLogger(__name__)

OutputCallback = Callable[[str], None]


@dataclass(frozen=True)
class Limits:
    """Resource limits for a child process that handles untrusted input."""

    cpu_seconds: int = 30
    address_space: int = 1 << 30

    def apply(self) -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (self.address_space, self.address_space))


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Executor:
    """Runs a program and returns its output; raises on timeout or a non-zero exit."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        limits: Limits | None = None,
        check: bool = True,
        redact: Collection[str] = (),
    ) -> Result:
        """`redact`: secrets among the arguments, shown as *** in the log."""
        log.debug("exec %s", ["***" if a in redact else a for a in argv])
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=limits.apply if limits else None,
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(timeout):
                out, err = await asyncio.gather(
                    _read_stream(proc.stdout, on_output), proc.stderr.read()
                )
                rc = await proc.wait()
        except TimeoutError:
            await _kill(proc)
            raise Timeout(f"{argv[0]} did not finish within {timeout:g}s") from None
        except asyncio.CancelledError:
            await _kill(proc)
            raise
        result = Result(tuple(argv), rc, out, err.decode(errors="replace"))
        if check and rc != 0:
            detail = result.stderr.strip() or result.stdout.strip() or f"exit code {rc}"
            raise OperationFailed(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed: {detail}")
        return result


async def _read_stream(stream: asyncio.StreamReader, on_output: OutputCallback | None) -> str:
    """Reads all output; with a callback, also hands over each piece as it arrives
    (qemu-img -p ends its progress lines with a carriage return, not a newline)."""
    chunks: list[bytes] = []
    while chunk := await stream.read(4096):
        chunks.append(chunk)
        if on_output is not None:
            on_output(chunk.decode(errors="replace"))
    return b"".join(chunks).decode(errors="replace")


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), 5)
