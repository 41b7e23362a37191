"""qemu-img, the one tool that reads and writes image files.

JSON output is parsed (`--output=json`), never human text; `info` always uses
`--force-share` so that an image in use by a VM can be inspected without a lock error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from agent.executor import Executor, Limits
from shared.errors import OperationFailed

ProgressCallback = Callable[[float], None]

_PROGRESS_RE = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")

# Untrusted images are inspected with these limits: a crafted header must not be able to
# make qemu-img eat the host's memory or CPU.
INSPECT_LIMITS = Limits(cpu_seconds=30, address_space=1 << 30)


def parse_progress(text: str) -> float | None:
    """The last percentage in a piece of `qemu-img -p` output, if any."""
    found = _PROGRESS_RE.findall(text)
    return float(found[-1]) if found else None


class QemuImg:
    def __init__(self, executor: Executor, binary: str = "qemu-img", timeout: float = 60) -> None:
        self._exec = executor
        self._bin = binary
        self.timeout = timeout

    async def version(self) -> str:
        res = await self._exec.run([self._bin, "--version"], timeout=self.timeout)
        return res.stdout.splitlines()[0] if res.stdout else "unknown"

    async def info(
        self, path: str, *, fmt: str | None = None, backing_chain: bool = False,
        limits: Limits | None = None, objects: Sequence[str] = (),
    ) -> Any:
        """`objects` are `--object` definitions (e.g. a secret an image spec refers to)."""
        argv = [self._bin, "info", "--output=json", "--force-share"]
        for obj in objects:
            argv += ["--object", obj]
        if fmt:
            argv += ["-f", fmt]
        if backing_chain:
            argv.append("--backing-chain")
        argv.append(path)
        res = await self._exec.run(argv, timeout=self.timeout, limits=limits)
        try:
            return json.loads(res.stdout)
        except json.JSONDecodeError as exc:
            raise OperationFailed(f"qemu-img info gave unreadable output for {path}") from exc

    async def create(
        self, path: str, *, fmt: str = "qcow2", size: int | None = None,
        backing: str | None = None, backing_fmt: str | None = None,
    ) -> None:
        argv = [self._bin, "create", "-q", "-f", fmt]
        if backing:
            if not backing_fmt:
                raise ValueError("backing_fmt is required with a backing file")
            argv += ["-b", backing, "-F", backing_fmt]
        argv.append(path)
        if size is not None:
            argv.append(str(size))
        await self._exec.run(argv, timeout=self.timeout)

    async def convert(
        self, src: str, dest: str, *, src_fmt: str, dest_fmt: str,
        sparse: bool = True, existing_target: bool = False,
        progress: ProgressCallback | None = None, timeout: float = 3600,
    ) -> None:
        """`existing_target` writes into `dest` as it is (a block device) with `-n`."""
        argv = [self._bin, "convert", "-p", "-f", src_fmt, "-O", dest_fmt]
        if not sparse:
            argv += ["-S", "0"]
        if existing_target:
            argv.append("-n")
        argv += [src, dest]
        await self._exec.run(argv, timeout=timeout, on_output=_progress_sink(progress))

    async def rebase(
        self, path: str, *, backing: str, backing_fmt: str, unsafe: bool = False,
        progress: ProgressCallback | None = None, timeout: float = 3600,
    ) -> None:
        argv = [self._bin, "rebase", "-p", "-f", "qcow2", "-b", backing, "-F", backing_fmt]
        if unsafe:
            argv.append("-u")
        argv.append(path)
        await self._exec.run(argv, timeout=timeout, on_output=_progress_sink(progress))

    async def commit(
        self, path: str, *, progress: ProgressCallback | None = None, timeout: float = 3600
    ) -> None:
        argv = [self._bin, "commit", "-p", "-f", "qcow2", path]
        await self._exec.run(argv, timeout=timeout, on_output=_progress_sink(progress))

    async def resize(self, path: str, size: int, *, fmt: str = "qcow2") -> None:
        await self._exec.run([self._bin, "resize", "-q", "-f", fmt, path, str(size)],
                             timeout=self.timeout)

    async def measure(self, path: str, *, src_fmt: str, out_fmt: str = "qcow2") -> Any:
        argv = [self._bin, "measure", "--output=json", "-f", src_fmt, "-O", out_fmt, path]
        res = await self._exec.run(argv, timeout=self.timeout)
        return json.loads(res.stdout)


def _progress_sink(progress: ProgressCallback | None) -> Callable[[str], None] | None:
    if progress is None:
        return None

    def sink(text: str) -> None:
        pct = parse_progress(text)
        if pct is not None:
            progress(pct)

    return sink
