"""qemu-img, the one program that reads and writes image files.

JSON output (`--output=json`) is parsed into typed results, never human text; `info`
always uses `--force-share` so that an image in use by a VM can be inspected without a
lock error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agent.executor import CommandFailed, Executor, Limits, Result

T = TypeVar("T")
ProgressCallback = Callable[[float], None]

_PROGRESS_RE = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")


def parse_progress(text: str) -> float | None:
    """The last percentage in a piece of `qemu-img -p` output, if any."""
    found = _PROGRESS_RE.findall(text)
    return float(found[-1]) if found else None


class QemuImgFailed(CommandFailed):
    """qemu-img exited non-zero, or answered something unreadable."""


class _QemuJson(BaseModel):
    """qemu-img spells its JSON field names with dashes."""

    model_config = ConfigDict(frozen=True, extra="ignore",
                              alias_generator=lambda name: name.replace("_", "-"))


class _FormatData(_QemuJson):
    data_file: str | None = None


class _FormatSpecific(_QemuJson):
    data: _FormatData = Field(default_factory=_FormatData)


class ImageInfo(_QemuJson):
    """`qemu-img info` of one image, or of one layer of a backing chain."""

    filename: str
    format: str
    virtual_size: int
    actual_size: int | None = None
    backing_filename: str | None = None
    full_backing_filename: str | None = None
    backing_format: str | None = Field(default=None, alias="backing-filename-format")
    encrypted: bool = False
    format_specific: _FormatSpecific | None = None

    @property
    def data_file(self) -> str | None:
        """An external data file (qcow2's `data_file`), where the guest's bytes live."""
        return self.format_specific.data.data_file if self.format_specific else None


class Measure(_QemuJson):
    """`qemu-img measure`: what a converted copy needs, in bytes."""

    required: int
    fully_allocated: int


class _CheckOutput(_QemuJson):
    corruptions: int = 0
    leaks: int = 0
    check_errors: int = 0


@dataclass(frozen=True)
class ImageCheck:
    """`qemu-img check` of a qcow2 image. Leaked clusters only waste space; corruption
    (exit code 2) means the metadata cannot be trusted."""

    corrupt: bool
    corruptions: int
    leaks: int


# qemu-img check's exit codes: 0 clean, 2 corruptions found, 3 leaked clusters only.
CHECK_CORRUPT, CHECK_LEAKS = 2, 3

_INFO = TypeAdapter(ImageInfo)
_CHAIN = TypeAdapter(list[ImageInfo])
_MEASURE = TypeAdapter(Measure)
_CHECK = TypeAdapter(_CheckOutput)


class QemuImg:
    def __init__(self, executor: Executor, binary: str = "qemu-img", timeout: float = 60) -> None:
        self._exec = executor
        self._bin = binary
        self.timeout = timeout

    async def _run(self, *args: str, timeout: float | None = None, limits: Limits | None = None,
                   progress: ProgressCallback | None = None,
                   ok_codes: Collection[int] = (0,)) -> Result:
        result = await self._exec.run([self._bin, *args],
                                      timeout=self.timeout if timeout is None else timeout,
                                      limits=limits, on_output=_progress_sink(progress),
                                      check=False)
        if result.returncode not in ok_codes:
            raise QemuImgFailed(result)
        return result

    async def version(self) -> str:
        res = await self._run("--version")
        return res.stdout.splitlines()[0] if res.stdout else "unknown"

    async def info(self, path: str, *, fmt: str | None = None, limits: Limits | None = None,
                   objects: Sequence[str] = ()) -> ImageInfo:
        """`objects` are `--object` definitions (e.g. a secret an image spec refers to)."""
        res = await self._run(*_info_options(fmt, objects), path, limits=limits)
        return _parse(_INFO, res, path)

    async def check(self, path: str, *, fmt: str, limits: Limits | None = None) -> ImageCheck:
        """Corruption is a result, not an error; a check that could not run (exit 1, or 63:
        the format has no checks) raises QemuImgFailed."""
        res = await self._run("check", "--output=json", "-f", fmt, path, limits=limits,
                              ok_codes=(0, CHECK_CORRUPT, CHECK_LEAKS))
        found = _parse(_CHECK, res, path)
        return ImageCheck(corrupt=res.returncode == CHECK_CORRUPT or found.corruptions > 0
                          or found.check_errors > 0,
                          corruptions=found.corruptions, leaks=found.leaks)

    async def chain(self, path: str, *, fmt: str | None = None) -> list[ImageInfo]:
        """The image and its backing files, top first (`--backing-chain`)."""
        res = await self._run(*_info_options(fmt, ()), "--backing-chain", path)
        return _parse(_CHAIN, res, path)

    async def create(
        self, path: str, *, fmt: str = "qcow2", size: int | None = None,
        backing: str | None = None, backing_fmt: str | None = None,
    ) -> None:
        args = ["create", "-q", "-f", fmt]
        if backing:
            if not backing_fmt:
                raise ValueError("backing_fmt is required with a backing file")
            args += ["-b", backing, "-F", backing_fmt]
        args.append(path)
        if size is not None:
            args.append(str(size))
        await self._run(*args)

    async def convert(
        self, src: str, dest: str, *, src_fmt: str, dest_fmt: str,
        sparse: bool = True, existing_target: bool = False,
        backing: str | None = None, backing_fmt: str | None = None,
        progress: ProgressCallback | None = None, timeout: float = 3600,
    ) -> None:
        """`existing_target` writes into `dest` as it is (a block device) with `-n`;
        `backing` makes `dest` sit on it (`-B`), holding only what differs from it."""
        args = ["convert", "-p", "-f", src_fmt, "-O", dest_fmt]
        if not sparse:
            args += ["-S", "0"]
        if backing:
            if not backing_fmt:
                raise ValueError("backing_fmt is required with a backing file")
            args += ["-B", backing, "-F", backing_fmt]
        if existing_target:
            args.append("-n")
        await self._run(*args, src, dest, timeout=timeout, progress=progress)

    async def compare(self, first: str, second: str, *, first_fmt: str, second_fmt: str,
                      timeout: float = 3600) -> bool:
        """Whether the two images read the same to a guest (`qemu-img compare`, exit 0
        same, 1 different); past the shorter one's end the longer must read zeroes."""
        res = await self._run("compare", "-q", "-f", first_fmt, "-F", second_fmt, first,
                              second, timeout=timeout, ok_codes=(0, 1))
        return res.returncode == 0

    async def rebase(
        self, path: str, *, backing: str | None, backing_fmt: str | None = None,
        unsafe: bool = False, progress: ProgressCallback | None = None, timeout: float = 3600,
    ) -> None:
        """Onto `backing`, or with None onto nothing: the image then holds all its data."""
        args = ["rebase", "-p", "-f", "qcow2", "-b", backing or ""]
        if backing:
            if not backing_fmt:
                raise ValueError("backing_fmt is required with a backing file")
            args += ["-F", backing_fmt]
        if unsafe:
            args.append("-u")
        await self._run(*args, path, timeout=timeout, progress=progress)

    async def commit(
        self, path: str, *, progress: ProgressCallback | None = None, timeout: float = 3600
    ) -> None:
        await self._run("commit", "-p", "-f", "qcow2", path, timeout=timeout, progress=progress)

    async def resize(self, path: str, size: int, *, fmt: str = "qcow2") -> None:
        await self._run("resize", "-q", "-f", fmt, path, str(size))

    async def measure(self, path: str, *, src_fmt: str, out_fmt: str = "qcow2") -> Measure:
        res = await self._run("measure", "--output=json", "-f", src_fmt, "-O", out_fmt, path)
        return _parse(_MEASURE, res, path)


def _info_options(fmt: str | None, objects: Sequence[str]) -> list[str]:
    args = ["info", "--output=json", "--force-share"]
    for obj in objects:
        args += ["--object", obj]
    if fmt:
        args += ["-f", fmt]
    return args


def _parse(adapter: TypeAdapter[T], res: Result, path: str) -> T:
    try:
        return adapter.validate_json(res.stdout)
    except ValidationError:
        raise QemuImgFailed(res, f"qemu-img {res.argv[1]} gave unreadable output for "
                                 f"{path}") from None


def _progress_sink(progress: ProgressCallback | None) -> Callable[[str], None] | None:
    if progress is None:
        return None

    def sink(text: str) -> None:
        pct = parse_progress(text)
        if pct is not None:
            progress(pct)

    return sink
