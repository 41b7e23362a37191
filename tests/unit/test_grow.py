"""Growing volumes on the agent: qcow2 files with the real qemu-img, sparse LUN files for
real, logical volumes with the fake executor (exact argv: this kernel has no
device-mapper), and the LIO driver serving a grown LUN, with a fake rtslib."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.commands.iscsi import resize_lun
from agent.commands.volumes import resize_volume
from agent.executor import Executor
from agent.iscsi.backing import FileBacking, LvBacking
from agent.iscsi.lio import LioDriver
from agent.tools.lvm import Lvm
from agent.tools.qemuimg import QemuImg
from agent.tools.tgtadm import Tgtadm
from shared.errors import Conflict, InsufficientCapacity, InvalidInput, NotFound
from shared.protocol.iscsi import ResizeLunPayload
from shared.protocol.volumes import ResizeVolumePayload
from tests.support.fakeexec import FakeExecutor
from tests.unit.test_iscsi import FakeRts
from tests.unit.test_lvm_luns import TARGET, VG, FakeTarget, LvmTools, services

MiB = 1 << 20


def qemu_img(*args: str) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout) if "--output=json" in args else {}


def virtual_size(path: Path) -> int:
    return int(qemu_img("info", "--output=json", str(path))["virtual-size"])


class RecordingTarget(FakeTarget):
    """A target that records the LUNs it was asked to serve again."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshed: list[tuple[str, str]] = []
        self.detached: list[str] = []

    async def detach_lun(self, target: str) -> None:
        self.detached.append(target)

    async def attach_lun(self, target: str, path: str) -> None:
        self.refreshed.append((target, path))


async def test_qcow2_volume_grows_and_never_shrinks(tmp_path: Path) -> None:
    svc = services(tmp_path, LvmTools(), FakeTarget())
    svc.qemu_img = QemuImg(Executor())
    vols = tmp_path / "volumes"
    vols.mkdir()
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "16M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
             str(vols / "clone.qcow2"), "16M")
    qemu_img("create", "-q", "-f", "qcow2", str(vols / "empty.qcow2"), "8M")
    for name in ("clone.qcow2", "empty.qcow2"):
        payload = ResizeVolumePayload(dir=str(vols), file_name=name, size=64 * MiB)
        result = await resize_volume(svc, payload, lambda p: None)
        assert result.virtual_size == 64 * MiB == virtual_size(vols / name)
        again = await resize_volume(svc, payload, lambda p: None)
        assert again.virtual_size == 64 * MiB, "growing to the size it has is done"
        with pytest.raises(InvalidInput) as err:
            await resize_volume(svc, payload.model_copy(update={"size": 32 * MiB}),
                                lambda p: None)
        assert err.value.code == "volume_shrink"
        assert virtual_size(vols / name) == 64 * MiB
    chain = qemu_img("info", "--output=json", "--backing-chain", str(vols / "clone.qcow2"))
    assert chain, "the clone keeps its backing file"
    with pytest.raises(NotFound):
        await resize_volume(svc, ResizeVolumePayload(dir=str(vols), file_name="gone.qcow2",
                                                     size=MiB), lambda p: None)


async def test_file_lun_grows_sparse_and_is_served_again(tmp_path: Path) -> None:
    luns = tmp_path / "luns"
    luns.mkdir()
    lun = luns / "vol-1.raw"
    lun.write_bytes(b"\x5a" * MiB)
    target = RecordingTarget()
    svc = services(tmp_path, LvmTools(), target)
    payload = ResizeLunPayload(dir=str(luns), file_name="vol-1.raw", target=TARGET,
                               size=64 * MiB)
    blocks = lun.stat().st_blocks
    result = await resize_lun(svc, payload, lambda p: None)
    assert result.size == 64 * MiB == lun.stat().st_size and result.path == str(lun)
    assert lun.stat().st_blocks == blocks, "the new tail takes no blocks"
    assert lun.read_bytes()[:MiB] == b"\x5a" * MiB
    assert target.detached == [TARGET] and target.refreshed == [(TARGET, str(lun))]
    with pytest.raises(InvalidInput, match="never shrunk"):
        await FileBacking(str(luns), FakeExecutor(), QemuImg(FakeExecutor())).resize(
            "vol-1.raw", MiB)
    with pytest.raises(NotFound):
        await resize_lun(svc, payload.model_copy(update={"file_name": "vol-2.raw"}),
                         lambda p: None)


def lvm(lvs: list[dict[str, str]], vg_free: int = 10 << 30) -> FakeExecutor:
    fake = FakeExecutor(strict=True)
    fake.on(["lvs"], stdout=json.dumps({"report": [{"lv": lvs}]}))
    fake.on(["vgs"], stdout=json.dumps({"report": [{"vg": [
        {"vg_size": str(100 << 30), "vg_free": str(vg_free)}]}]}))
    fake.on(["lvextend"])
    return fake


def lv(name: str, size: int, **extra: str) -> dict[str, str]:
    return {"lv_name": name, "lv_size": str(size), "origin": "", "pool_lv": "", **extra}


async def test_thick_lv_is_extended_after_a_capacity_check() -> None:
    fake = lvm([lv("strata-vol-1", 1 << 30)])
    backing = LvBacking(VG, Lvm(fake), QemuImg(fake))
    await backing.resize("vol-1.raw", 2 << 30)
    assert fake.calls == [
        ["lvs", "-o", "lv_name,lv_size,origin,pool_lv", VG, "--reportformat", "json",
         "--units", "b", "--nosuffix"],
        ["vgs", "-o", "vg_size,vg_free", VG, "--reportformat", "json", "--units", "b",
         "--nosuffix"],
        ["lvextend", "--yes", "-L", f"{2 << 30}b", f"{VG}/strata-vol-1"],
        ["lvs", "-o", "lv_name,lv_size,origin,pool_lv", VG, "--reportformat", "json",
         "--units", "b", "--nosuffix"],
    ]


async def test_a_thick_lv_with_snapshots_is_not_grown() -> None:
    """LVM resizes a thick origin only while inactive (tests/kernel/guest_lvm.py shows
    its refusal): the agent says so before trying."""
    fake = lvm([lv("strata-vol-1", 1 << 30), lv("strata-vol-1.s1", 1 << 30,
                                                origin="strata-vol-1")])
    with pytest.raises(Conflict) as refused:
        await LvBacking(VG, Lvm(fake), QemuImg(fake)).resize("vol-1.raw", 2 << 30)
    assert refused.value.code == "origin_has_snapshots"
    assert [c[0] for c in fake.calls] == ["lvs"]


async def test_lv_growth_refusals_and_no_ops() -> None:
    fake = lvm([lv("strata-vol-1", 1 << 30)], vg_free=512 * MiB)
    backing = LvBacking(VG, Lvm(fake), QemuImg(fake))
    with pytest.raises(InsufficientCapacity, match=VG):
        await backing.resize("vol-1.raw", 2 << 30)
    assert not any(c[0] == "lvextend" for c in fake.calls), "nothing changed"

    thin = lvm([lv("strata-vol-1", 1 << 30, pool_lv="pool0")], vg_free=0)
    await LvBacking(VG, Lvm(thin), QemuImg(thin)).resize("vol-1.raw", 2 << 30)
    assert [c[0] for c in thin.calls] == ["lvs", "lvextend", "lvs"], \
        "a thin volume takes its pool's blocks when written: no free extents needed"

    rounded = lvm([lv("strata-vol-1", (2 << 30) + 4 * MiB)])
    size = await LvBacking(VG, Lvm(rounded), QemuImg(rounded)).resize("vol-1.raw", 2 << 30)
    assert size == (2 << 30) + 4 * MiB and [c[0] for c in rounded.calls] == ["lvs"], \
        "a volume LVM rounded up is grown already"

    with pytest.raises(NotFound):
        await LvBacking(VG, Lvm(lvm([])), QemuImg(FakeExecutor())).resize("vol-1.raw", 1)


async def test_tgt_serves_a_grown_lun_by_making_it_again() -> None:
    fake = FakeExecutor()
    await Tgtadm(fake, control_port=4000).delete_lun(3, 1)
    assert fake.calls == [["tgtadm", "-C", "4000", "--lld", "iscsi", "--op", "delete",
                           "--mode", "logicalunit", "--tid", "3", "--lun", "1"]]


def _lio(tmp_path: Path) -> tuple[FakeRts, LioDriver]:
    fake = FakeRts()
    return fake, LioDriver(str(tmp_path / "save.json"), ("192.0.2.10", 3260),
                           rtslib=fake.module, dbroot=str(tmp_path / "target"))


async def test_lio_fileio_lun_is_made_again_with_its_grants(tmp_path: Path) -> None:
    fake, lio = _lio(tmp_path)
    lun_file = tmp_path / "vol-1.raw"
    lun_file.write_bytes(b"\0" * 4096)
    await lio.export(TARGET, str(lun_file), None)
    await lio.grant(TARGET, "iqn.2026-11.org.strata:host-a")
    (tpg,) = fake.targets[0].tpgs
    old = tpg.luns[0]
    os.truncate(lun_file, 8192)
    await lio.refresh_lun(TARGET, str(lun_file))
    (new,) = tpg.luns
    assert new is not old and old.storage_object.deleted
    assert new.storage_object.dev == str(lun_file)
    assert new.storage_object.size == 8192, "served at its new size"
    assert [(m, lun) for m, lun in tpg.node_acls[0].mapped] == [(1, new)], \
        "the granted initiator sees the LUN again"


async def test_lio_block_lun_needs_nothing(tmp_path: Path) -> None:
    fake, lio = _lio(tmp_path)
    await lio.export(TARGET, "/dev/vg-san/strata-vol-1", None)
    lun = fake.targets[0].tpgs[0].luns[0]
    await lio.refresh_lun(TARGET, "/dev/vg-san/strata-vol-1")
    assert fake.targets[0].tpgs[0].luns == [lun], "the kernel reads a block device's size"

