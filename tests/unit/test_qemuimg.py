"""The qemuimg tool module and the image checks: real qemu-img in temporary directories,
plus a fake executor where only the argv matters (as VDSM's storage tests do)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.executor import Executor
from agent.files import FileStores
from agent.images import check
from agent.tools.qemuimg import QemuImg, QemuImgFailed, parse_progress
from shared.errors import OperationFailed, Timeout, UnsafeImage
from tests.support import badimages
from tests.support.fakeexec import FakeExecutor, contains

MiB = 1 << 20


@pytest.fixture
def qemu() -> QemuImg:
    return QemuImg(Executor())


async def test_create_info_and_linked_clone(qemu: QemuImg, tmp_path: Path) -> None:
    base = str(tmp_path / "base.qcow2")
    await qemu.create(base, size=32 * MiB)
    info = await qemu.info(base)
    assert info.format == "qcow2" and info.virtual_size == 32 * MiB
    clone = str(tmp_path / "clone.qcow2")
    await qemu.create(clone, backing=base, backing_fmt="qcow2")
    chain = await qemu.chain(clone)
    assert [c.filename for c in chain] == [clone, base]
    assert chain[0].backing_format == "qcow2"


async def test_convert_reports_progress(qemu: QemuImg, tmp_path: Path) -> None:
    src = str(tmp_path / "src.qcow2")
    await qemu.create(src, size=8 * MiB)
    seen: list[float] = []
    await qemu.convert(src, str(tmp_path / "out.raw"), src_fmt="qcow2", dest_fmt="raw",
                       progress=seen.append)
    assert seen and seen[-1] == 100.0
    assert (await qemu.info(str(tmp_path / "out.raw"))).format == "raw"


async def test_rebase_commit_resize_measure(qemu: QemuImg, tmp_path: Path) -> None:
    a, b, top = (str(tmp_path / n) for n in ("a.qcow2", "b.qcow2", "top.qcow2"))
    await qemu.create(a, size=4 * MiB)
    await qemu.create(b, size=4 * MiB)
    await qemu.create(top, backing=a, backing_fmt="qcow2")
    await qemu.rebase(top, backing=b, backing_fmt="qcow2")
    assert (await qemu.info(top)).backing_filename == b
    await qemu.commit(top)
    await qemu.resize(top, 8 * MiB)
    assert (await qemu.info(top)).virtual_size == 8 * MiB
    measured = await qemu.measure(top, src_fmt="qcow2")
    assert measured.required > 0 and measured.fully_allocated >= 8 * MiB


async def test_failure_and_missing_file_are_clear(qemu: QemuImg, tmp_path: Path) -> None:
    with pytest.raises(OperationFailed) as info:
        await qemu.info(str(tmp_path / "absent.qcow2"))
    assert "absent.qcow2" in info.value.message
    assert isinstance(info.value, QemuImgFailed) and info.value.code == "operation_failed"
    with pytest.raises(ValueError):
        await qemu.create(str(tmp_path / "x"), backing="/b")


async def test_argv_lists_and_progress_flag() -> None:
    fake = FakeExecutor()
    fake.on(["qemu-img", "convert"], stdout="    (25.00/100%)\r    (50.00/100%)\r")
    qemu = QemuImg(fake, binary="qemu-img")
    seen: list[float] = []
    await qemu.convert("/a b", "/c;rm -rf /", src_fmt="qcow2", dest_fmt="raw", sparse=False,
                       progress=seen.append)
    assert fake.calls == [["qemu-img", "convert", "-p", "-f", "qcow2", "-O", "raw", "-S", "0",
                           "/a b", "/c;rm -rf /"]]
    assert seen == [50.0]
    layer = '{"filename": "/img", "format": "raw", "virtual-size": 4096}'
    fake.on(["qemu-img", "info"], stdout=layer)
    await qemu.info("/img", fmt="raw")
    assert fake.calls[-1] == ["qemu-img", "info", "--output=json", "--force-share", "-f", "raw",
                              "/img"]
    fake.on(contains("--backing-chain"), stdout=f"[{layer}]")
    await qemu.chain("/img")
    assert fake.calls[-1] == ["qemu-img", "info", "--output=json", "--force-share",
                              "--backing-chain", "/img"]


def test_parse_progress() -> None:
    assert parse_progress("    (0.00/100%)\r    (12.50/100%)\r") == 12.5
    assert parse_progress("no progress here") is None


def _running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 0


async def test_executor_timeout_kills_the_child() -> None:
    with pytest.raises(Timeout):
        await Executor().run(["sleep", "31.4159"], timeout=0.3)
    assert not _running("31.4159")


async def test_executor_cancel_kills_the_child() -> None:
    task = asyncio.create_task(Executor().run(["sleep", "32.7182"], timeout=60))
    await asyncio.sleep(0.3)
    assert _running("32.7182")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _running("32.7182")


def inspector(qemu: QemuImg, max_virtual_size: int = 1 << 40,
              max_file_size: int = 1 << 30) -> check.Inspector:
    return check.Inspector(qemu, FileStores(nfs_timeout=5), max_virtual_size, max_file_size)


async def test_inspect_refuses_unsafe_images(qemu: QemuImg, tmp_path: Path) -> None:
    inspect = inspector(qemu).inspect
    base = str(tmp_path / "base.qcow2")
    await qemu.create(base, size=4 * MiB)
    info = await inspect(base, "qcow2")
    assert info.virtual_size == 4 * MiB and info.format == "qcow2"
    with pytest.raises(UnsafeImage, match="not raw"):
        await inspect(base, "raw")
    child = str(tmp_path / "child.qcow2")
    await qemu.create(child, backing=base, backing_fmt="qcow2")
    with pytest.raises(UnsafeImage, match="backing file"):
        await inspect(child, None)
    data_file = str(tmp_path / "ext.qcow2")
    await Executor().run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                          f"data_file={tmp_path / 'ext.data'}", data_file, "4M"], timeout=30)
    with pytest.raises(UnsafeImage, match="data file"):
        await inspect(data_file, None)
    vmdk = str(tmp_path / "x.vmdk")
    await Executor().run(["qemu-img", "create", "-q", "-f", "vmdk", vmdk, "4M"], timeout=30)
    with pytest.raises(UnsafeImage, match="only qcow2 and raw"):
        await inspect(vmdk, None)


@pytest.mark.parametrize(("build", "reason"), [
    (badimages.huge, "virtual size"),
    (badimages.truncated, "corrupt"),
    (badimages.corrupt, "corrupt"),
    (badimages.polyglot, "more than one format"),
])
async def test_inspect_refuses_hostile_images(qemu: QemuImg, tmp_path: Path,
                                              build: Callable[[Path], Path],
                                              reason: str) -> None:
    path = str(build(tmp_path))
    with pytest.raises(UnsafeImage, match=reason) as refused:
        await inspector(qemu).inspect(path, None)
    assert str(tmp_path) not in refused.value.message


async def test_inspect_caps_sizes(qemu: QemuImg, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * MiB)
    with pytest.raises(UnsafeImage, match="image file is"):
        await inspector(qemu, max_file_size=MiB - 1).inspect(str(raw), None)
    with pytest.raises(UnsafeImage, match="virtual size"):
        await inspector(qemu, max_virtual_size=MiB - 1).inspect(str(raw), None)
    assert (await inspector(qemu).inspect(str(raw), "raw")).virtual_size == MiB


async def test_qemu_img_failures_are_refusals_that_name_no_path(tmp_path: Path) -> None:
    raw = tmp_path / ".strata-tmp-disk"
    raw.write_bytes(b"\0" * MiB)
    fake = FakeExecutor()
    fake.on(["qemu-img", "info"], rc=1,
            stderr=f"qemu-img: Could not open '{raw}': Permission denied")
    with pytest.raises(UnsafeImage, match="cannot read the image: qemu-img: Could not open "
                                          "'the image': Permission denied") as refused:
        await inspector(QemuImg(fake)).inspect(str(raw), None)
    assert refused.value.code == "unsafe_image" and "strata-tmp" not in refused.value.message


async def test_check_is_typed_by_exit_code() -> None:
    fake = FakeExecutor()
    fake.on(["qemu-img", "check"], rc=3, stdout='{"leaks": 2, "check-errors": 0}')
    leaky = await QemuImg(fake).check("/img", fmt="qcow2")
    assert not leaky.corrupt and leaky.leaks == 2
    fake.on(["qemu-img", "check"], rc=2, stdout='{"corruptions": 3}')
    assert (await QemuImg(fake).check("/img", fmt="qcow2")).corrupt
    for rc in (1, 63):
        fake.on(["qemu-img", "check"], rc=rc, stderr="cannot check")
        with pytest.raises(QemuImgFailed, match="cannot check"):
            await QemuImg(fake).check("/img", fmt="qcow2")


async def test_info_is_typed_and_unreadable_output_is_named() -> None:
    fake = FakeExecutor()
    fake.on(["qemu-img", "info"], stdout="""{
        "filename": "/img", "format": "qcow2", "virtual-size": 1073741824,
        "actual-size": 200704, "encrypted": true, "dirty-flag": false,
        "format-specific": {"type": "qcow2", "data": {"compat": "1.1",
                                                      "data-file": "/ext.data"}}}""")
    info = await QemuImg(fake).info("/img")
    assert (info.format, info.virtual_size, info.actual_size) == ("qcow2", 1 << 30, 200704)
    assert info.encrypted and info.data_file == "/ext.data" and info.backing_filename is None
    fake.on(["qemu-img", "info"], stdout="not json")
    with pytest.raises(QemuImgFailed, match="unreadable output for /img"):
        await QemuImg(fake).info("/img")
    fake.on(["qemu-img", "measure"], stdout='{"required": 1}')
    with pytest.raises(QemuImgFailed, match="measure gave unreadable output"):
        await QemuImg(fake).measure("/img", src_fmt="raw")


async def test_convert_onto_a_backing_file_and_compare_argv() -> None:
    fake = FakeExecutor()
    qemu = QemuImg(fake, binary="qemu-img")
    await qemu.convert("/v.qcow2", "/d/t", src_fmt="qcow2", dest_fmt="qcow2",
                       backing="/d/cache", backing_fmt="qcow2")
    assert fake.calls[-1] == ["qemu-img", "convert", "-p", "-f", "qcow2", "-O", "qcow2",
                              "-B", "/d/cache", "-F", "qcow2", "/v.qcow2", "/d/t"]
    with pytest.raises(ValueError):
        await qemu.convert("/v", "/d", src_fmt="qcow2", dest_fmt="qcow2", backing="/c")
    assert await qemu.compare("/a", "/b", first_fmt="raw", second_fmt="qcow2")
    assert fake.calls[-1] == ["qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", "/a",
                              "/b"]
    fake.on(["qemu-img", "compare"], rc=1)
    assert not await qemu.compare("/a", "/b", first_fmt="raw", second_fmt="raw")
    fake.on(["qemu-img", "compare"], rc=2, stderr="cannot open /a")
    with pytest.raises(QemuImgFailed):
        await qemu.compare("/a", "/b", first_fmt="raw", second_fmt="raw")
