"""Runs external programs: argv lists only, a timeout on every call, output streamed.

Injectable (as in os-brick): the tool modules under `agent/tools/` take an executor, and
unit tests pass a fake one that records argv and returns canned output.

Each child starts in a session (and process group) of its own, and a timeout or a
cancellation kills the whole group: `mount` leaves a `mount.nfs` behind when only it is
killed, and `ssh` may have helpers of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import signal
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass

from shared.errors import OperationFailed, Timeout

log = logging.getLogger(__name__)

OutputCallback = Callable[[str], None]

# Streaming reads: CHUNK bytes per read, in a worker thread, from a pipe enlarged to
# PIPE_SIZE. The event loop's 64 KiB reads wake it up far too often at disk speed.
CHUNK = 4 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


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

    def check(self, error: type[CommandFailed] | None = None) -> Result:
        """This result if the program succeeded; else `error` (a tool's own), raised."""
        if self.returncode != 0:
            raise (error or CommandFailed)(self)
        return self


class CommandFailed(OperationFailed):
    """A program exited non-zero. Tool modules subclass it to name their failures."""

    def __init__(self, result: Result, message: str | None = None,
                 code: str | None = None) -> None:
        if message is None:
            argv, rc = result.argv, result.returncode
            detail = result.stderr.strip() or result.stdout.strip() or f"exit code {rc}"
            message = f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed: {detail}"
        super().__init__(message, code)
        self.result = result


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
        proc = await _start(argv, asyncio.subprocess.PIPE, limits, redact)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(timeout):
                out, err = await asyncio.gather(
                    _read_stream(proc.stdout, on_output), proc.stderr.read()
                )
                rc = await proc.wait()
        except TimeoutError:
            await _kill(proc)
            raise _timeout(argv, timeout) from None
        except asyncio.CancelledError:
            await _kill(proc)
            raise
        result = Result(tuple(argv), rc, out, err.decode(errors="replace"))
        return result.check() if check else result

    @contextlib.asynccontextmanager
    async def stream(
        self, argv: Sequence[str], *, timeout: float, redact: Collection[str] = ()
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The program's stdout, CHUNK bytes at a time, for bulk transfers. `timeout`
        bounds each read (and the exit after the last), so a transfer takes as long as it
        keeps moving. The end of the data raises CommandFailed (with stderr) if the
        program failed; leaving the block kills it if it still runs."""
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(read_fd, F_SETPIPE_SZ, PIPE_SIZE)
        try:
            proc = await _start(argv, write_fd, None, redact)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        pipe = os.fdopen(read_fd, "rb")
        assert proc.stderr is not None
        stderr = asyncio.ensure_future(proc.stderr.read())

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                try:
                    chunk = await asyncio.wait_for(asyncio.to_thread(pipe.read, CHUNK), timeout)
                except TimeoutError:
                    raise _timeout(argv, timeout, "stalled: a read did not complete") from None
                if not chunk:
                    break
                yield chunk
            try:
                async with asyncio.timeout(timeout):
                    rc = await proc.wait()
                    err = await stderr
            except TimeoutError:
                raise _timeout(argv, timeout) from None
            Result(tuple(argv), rc, "", err.decode(errors="replace")).check()

        try:
            yield chunks()
        finally:
            if proc.returncode is None:
                await _kill(proc)
            stderr.cancel()
            await asyncio.gather(stderr, return_exceptions=True)
            await asyncio.to_thread(pipe.close)


async def _start(argv: Sequence[str], stdout: int, limits: Limits | None,
                 redact: Collection[str]) -> asyncio.subprocess.Process:
    log.debug("exec %s", ["***" if a in redact else a for a in argv])
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=limits.apply if limits else None,
        start_new_session=True,
    )


def _timeout(argv: Sequence[str], timeout: float, what: str = "did not finish") -> Timeout:
    return Timeout(f"{argv[0]} {what} within {timeout:g}s")


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
    """The child and everything it started: the group its session leads."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), 5)
