"""Volumes copied from a proven template are byte for byte what `qemu-img create` makes
(real qemu-img in a temporary directory), and a key whose runs differ is never copied."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest

from agent.clones import CloneKey, OverlayTemplates, qcow2_virtual_size
from agent.executor import Executor, Limits, OutputCallback, Result
from agent.files import FileStores
from agent.tools.qemuimg import QemuImg
from tests.support.fakeexec import FakeExecutor, reply

GiB = 1 << 30


class CountingExecutor(Executor):
    """The real executor, counting the `qemu-img create` runs."""

    def __init__(self) -> None:
        self.creates = 0

    async def run(self, argv: Sequence[str], *, timeout: float,
                  on_output: OutputCallback | None = None, limits: Limits | None = None,
                  check: bool = True, redact: Collection[str] = ()) -> Result:
        self.creates += "create" in argv
        return await super().run(argv, timeout=timeout, on_output=on_output, limits=limits,
                                 check=check, redact=redact)


def qemu_img_create(out: Path, key: CloneKey) -> bytes:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if key.backing:
        argv += ["-b", key.backing, "-F", str(key.backing_fmt)]
    argv.append(str(out))
    if key.size is not None:
        argv.append(str(key.size))
    subprocess.run(argv, check=True)
    return out.read_bytes()


@pytest.fixture
def files() -> FileStores:
    stores = FileStores(nfs_timeout=5)
    yield stores  # type: ignore[misc]
    stores.close()


def base_image(tmp_path: Path, fmt: str, size: int) -> Path:
    path = tmp_path / f"cache.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)], check=True)
    return path


@pytest.mark.parametrize(("fmt", "size"), [
    ("qcow2", None),        # a root volume the size of its image
    ("raw", None),          # a raw image cache
    ("qcow2", 20 * GiB),    # a root volume larger than its image
    (None, 5 * GiB),        # an empty volume
])
async def test_copies_are_what_qemu_img_makes(tmp_path: Path, files: FileStores,
                                              fmt: str | None, size: int | None) -> None:
    backing = str(base_image(tmp_path, fmt, GiB)) if fmt else None
    key = CloneKey(backing=backing, backing_fmt=fmt, size=size)
    executor = CountingExecutor()
    templates = OverlayTemplates(QemuImg(executor))
    store = files.for_path(str(tmp_path))

    first = await templates.create(store, str(tmp_path / "v1.qcow2"), key)
    proved = executor.creates
    second = await templates.create(store, str(tmp_path / "v2.qcow2"), key)
    third = await templates.create(store, str(tmp_path / "v3.qcow2"), key)

    assert proved == 2, "the first volume of a key runs qemu-img twice, to prove it"
    assert executor.creates == proved, "later volumes of a proven key run no qemu-img"
    expected = qemu_img_create(tmp_path / "reference.qcow2", key)
    for name in ("v1", "v2", "v3"):
        assert (tmp_path / f"{name}.qcow2").read_bytes() == expected, name
    assert first == second == third == (size or GiB)
    info = subprocess.run(["qemu-img", "check", "-q", str(tmp_path / "v3.qcow2")])
    assert info.returncode == 0
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["v1.qcow2", "v2.qcow2", "v3.qcow2", "reference.qcow2"]
        + ([Path(backing).name] if backing else []))


async def test_concurrent_creations_of_a_new_key(tmp_path: Path, files: FileStores) -> None:
    """While a key is being proven, other creations run qemu-img and all are right."""
    backing = str(base_image(tmp_path, "qcow2", GiB))
    key = CloneKey(backing=backing, backing_fmt="qcow2", size=None)
    templates = OverlayTemplates(QemuImg(Executor()))
    store = files.for_path(str(tmp_path))
    await asyncio.gather(*(templates.create(store, str(tmp_path / f"c{i}.qcow2"), key)
                           for i in range(8)))
    expected = qemu_img_create(tmp_path / "reference.qcow2", key)
    assert all((tmp_path / f"c{i}.qcow2").read_bytes() == expected for i in range(8))


async def test_a_key_whose_runs_differ_is_never_copied(tmp_path: Path,
                                                      files: FileStores) -> None:
    runs = 0

    def create(argv: list[str]) -> Result:
        nonlocal runs
        runs += 1
        Path(argv[-2]).write_bytes(b"QFI\xfb" + bytes(20) + runs.to_bytes(8, "big"))
        return reply(argv)

    executor = FakeExecutor(strict=True)
    executor.on(["qemu-img", "create"], create)
    templates = OverlayTemplates(QemuImg(executor))
    store = files.for_path(str(tmp_path))
    key = CloneKey(backing=None, backing_fmt=None, size=1)
    for name in ("a", "b", "c"):
        assert await templates.create(store, str(tmp_path / name), key) is None
    assert runs == 2 + 2 + 2, "each creation ran qemu-img itself, and tried the proof again"


def test_virtual_size_needs_a_qcow2_header() -> None:
    with pytest.raises(ValueError):
        qcow2_virtual_size(b"not a qcow2 file at all, no magic here")
