"""LVM-backed iSCSI LUNs (`agent/iscsi/backing.py` `LvBacking`, `agent/iscsi/luns.py`)
with real LVM on a loop device, served by LIO's block backstore (guest only): made, grown,
snapshotted, reverted, their snapshots deleted, and removed."""

from __future__ import annotations

import mmap
import os
import subprocess
from pathlib import Path

import pytest

from agent.executor import Executor
from agent.iscsi import luns
from agent.iscsi.backing import LvBacking, backing_for
from agent.iscsi.lio import LioDriver
from agent.tools.lvm import Lvm
from agent.tools.qemuimg import QemuImg
from shared.errors import Conflict
from shared.protocol.files import BackingFile
from shared.protocol.iscsi import ExportLunPayload
from tests.kernel.guest_lio import PORTAL, tpg_dir
from tests.kernel.guestfix import rts

pytestmark = pytest.mark.usefixtures("lio_clean")

MIB = 1 << 20
TARGET = "iqn.2026-11.org.strata:vol-lvm"


def backing(tmp_path: Path, vg: str) -> LvBacking:
    found = backing_for(str(tmp_path / "luns"), vg, Executor(), QemuImg(Executor()))
    assert isinstance(found, LvBacking)
    return found


def lv_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def write(path: str, pattern: bytes, offset: int = MIB) -> None:
    """One page of `pattern`, past every cache (O_DIRECT needs an aligned buffer)."""
    buf = mmap.mmap(-1, 4096)
    buf.write(pattern * 4096)
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        os.pwrite(fd, buf, offset)
    finally:
        os.close(fd)


def read(path: str, offset: int = MIB) -> bytes:
    """One page as the device holds it, whatever a cache remembers."""
    buf = mmap.mmap(-1, 4096)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        os.preadv(fd, [buf], offset)
    finally:
        os.close(fd)
    return bytes(buf)


def lv_names(vg: str) -> set[str]:
    return set(subprocess.run(["lvs", "--noheadings", "-o", "lv_name", vg], check=True,
                              capture_output=True, text=True).stdout.split())


async def test_sizes_that_are_not_whole_sectors(volume_group: str, tmp_path: Path) -> None:
    """Defect 7: LVM takes `-L` in whole 512-byte sectors only. A LUN made from a raw
    image of an odd length (its size is the image's), and grown to an odd size, is
    rounded up instead of failing."""
    image = tmp_path / "odd.raw"
    image.write_bytes(b"strata" * 200_000 + b"!")  # 1 200 001 bytes
    lvs = backing(tmp_path, volume_group)
    path = await lvs.create("vol-odd.raw", 1_200_001,
                            BackingFile(path=str(image), format="raw"), lambda _: None)
    assert lv_size(path) >= 1_200_001
    assert read(path, 0)[:12] == b"stratastrata"
    assert read(path, 1_200_000 - 1_200_000 % 4096)[1_200_000 % 4096] == ord("!")
    grown = await lvs.resize("vol-odd.raw", 9 * MIB + 3)
    assert grown >= 9 * MIB + 3 and lv_size(path) == grown
    snap = await lvs.snapshot("vol-odd.raw", str(tmp_path / "snapshots"), "vol-odd.s1.raw")
    assert snap.method == "lvm" and snap.size == grown
    assert await lvs.remove("vol-odd.raw")


async def test_a_thick_volume_with_snapshots_is_not_grown(volume_group: str,
                                                          tmp_path: Path) -> None:
    """LVM grows a thick origin only while it is inactive, never while its LUN is
    served: refused up front with the reason, and grown once the snapshot is gone."""
    lvs = backing(tmp_path, volume_group)
    snapshots = str(tmp_path / "snapshots")
    path = await lvs.create("vol-grown.raw", 8 * MIB, None, lambda _: None)
    await lvs.snapshot("vol-grown.raw", snapshots, "vol-grown.s1.raw")
    with pytest.raises(Conflict) as refused:
        await lvs.resize("vol-grown.raw", 12 * MIB)
    assert refused.value.code == "origin_has_snapshots"
    assert "strata-vol-grown.s1" in refused.value.message and lv_size(path) == 8 * MIB
    assert await lvs.delete_snapshot(snapshots, "vol-grown.s1.raw")
    assert await lvs.resize("vol-grown.raw", 12 * MIB) == 12 * MIB == lv_size(path)


async def test_lvm_lun_life(volume_group: str, tmp_path: Path) -> None:
    """Export, grow, snapshot twice, revert to each, delete the snapshots, unexport: the
    LIO block backstore serves the logical volume throughout."""
    lvs = backing(tmp_path, volume_group)
    lio = LioDriver(str(tmp_path / "lio.json"), PORTAL)
    snapshots = str(tmp_path / "snapshots")
    payload = ExportLunPayload(dir=str(tmp_path / "luns"), file_name="vol-1.raw",
                               size=16 * MIB, target=TARGET, volume_group=volume_group)
    path, capacity = await luns.export(lio, lvs, payload, lambda _: None)
    assert path == f"/dev/{volume_group}/strata-vol-1"
    (so,) = rts().RTSRoot().storage_objects
    assert so.plugin == "block" and os.path.realpath(so.udev_path) == os.path.realpath(path)
    assert read(path) == bytes(4096), "a new LUN reads zeroes"
    assert capacity.available < capacity.total

    write(path, b"A")
    a = await lvs.snapshot("vol-1.raw", snapshots, "vol-1.s1.raw")
    assert a.method == "lvm" and a.size == 16 * MIB
    assert (await lvs.snapshot("vol-1.raw", snapshots, "vol-1.s1.raw")) == a, "repeatable"
    write(path, b"B")
    await lvs.snapshot("vol-1.raw", snapshots, "vol-1.s2.raw")
    write(path, b"C")

    _, size, _ = await luns.revert(lio, lvs, TARGET, "vol-1.raw", snapshots, "vol-1.s1.raw")
    assert read(path) == b"A" * 4096 and size == 16 * MIB
    assert (tpg_dir(TARGET) / "lun" / "lun_1").is_dir(), "the LUN is served again"
    await luns.revert(lio, lvs, TARGET, "vol-1.raw", snapshots, "vol-1.s2.raw")
    assert read(path) == b"B" * 4096
    assert {"strata-vol-1.s1", "strata-vol-1.s2"} <= lv_names(volume_group), \
        "a revert keeps every snapshot"
    await luns.revert(lio, lvs, TARGET, "vol-1.raw", snapshots, "vol-1.s1.raw")
    assert read(path) == b"A" * 4096

    assert await lvs.delete_snapshot(snapshots, "vol-1.s1.raw")
    assert not await lvs.delete_snapshot(snapshots, "vol-1.s1.raw")
    assert await lvs.delete_snapshot(snapshots, "vol-1.s2.raw")
    assert read(path) == b"A" * 4096

    _, size, _ = await luns.resize(lio, lvs, TARGET, "vol-1.raw", 32 * MIB)
    assert size == 32 * MIB and lv_size(path) == size
    assert (tpg_dir(TARGET) / "lun" / "lun_1").is_dir()
    assert read(path) == b"A" * 4096
    existed, _ = await luns.unexport(lio, lvs, TARGET, "vol-1.raw")
    assert existed and not lv_names(volume_group) & {"strata-vol-1"}
    assert not list(rts().RTSRoot().storage_objects)


async def test_thin_lvm_snapshots(volume_group: str, tmp_path: Path) -> None:
    """A thin volume gets thin snapshots, which take no room up front and merge back."""
    subprocess.run(["lvcreate", "--yes", "-T", f"{volume_group}/pool", "-V", "16m",
                    "-n", "strata-vol-thin"], check=True, capture_output=True)
    lvs = backing(tmp_path, volume_group)
    lio = LioDriver(str(tmp_path / "lio.json"), PORTAL)
    snapshots = str(tmp_path / "snapshots")
    path = Lvm.path(volume_group, "strata-vol-thin")
    await lio.export(TARGET, path, None)
    write(path, b"T")
    snap = await lvs.snapshot("vol-thin.raw", snapshots, "vol-thin.s1.raw")
    assert snap.method == "lvm-thin"
    write(path, b"U")
    assert await lvs.resize("vol-thin.raw", 24 * MIB) == 24 * MIB, "thin: grown, served"
    _, size, _ = await luns.revert(lio, lvs, TARGET, "vol-thin.raw", snapshots,
                                   "vol-thin.s1.raw")
    assert read(path) == b"T" * 4096 and size == lv_size(path)
    assert "strata-vol-thin.s1" in lv_names(volume_group)
    assert await lvs.resize("vol-thin.raw", 24 * MIB) == 24 * MIB == lv_size(path)
    assert await lvs.delete_snapshot(snapshots, "vol-thin.s1.raw")
    assert read(path) == b"T" * 4096
    existed, _ = await luns.unexport(lio, lvs, TARGET, "vol-thin.raw")
    assert existed and "strata-vol-thin" not in lv_names(volume_group)
