"""Snapshots of LUNs that are logical volumes, with the fake executor (exact argv: this
kernel has no device-mapper), and the `list_objects` view of a volume group. File-backed
LUN snapshots run for real in tests/integration/test_lun_snapshots.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.commands.iscsi import delete_lun_snapshot, revert_lun, snapshot_lun
from agent.commands.objects import list_objects
from agent.executor import Result
from shared.errors import Conflict, InsufficientCapacity, NotFound
from shared.protocol.iscsi import (
    DeleteLunSnapshotPayload,
    LunSnapshotPayload,
    RevertLunPayload,
)
from shared.protocol.objects import ListObjectsPayload
from tests.support.fakeexec import FakeExecutor, reply
from tests.unit.test_grow import RecordingTarget
from tests.unit.test_lvm_luns import TARGET, VG, LvmTools, services

GiB = 1 << 30
LVS = ["lvs", "-o", "lv_name,lv_size,origin,pool_lv", VG, "--reportformat", "json",
       "--units", "b", "--nosuffix"]
VGS = ["vgs", "-o", "vg_size,vg_free", VG, "--reportformat", "json", "--units", "b",
       "--nosuffix"]


class Vg:
    """A volume group in a dict: lvcreate -s, lvconvert --merge and lvremove change it,
    lvs and vgs report it."""

    def __init__(self, *, thin: bool = False, free: int = 10 * GiB) -> None:
        self.lvs: dict[str, dict[str, str]] = {
            "strata-vol-1": {"lv_name": "strata-vol-1", "lv_size": str(GiB), "origin": "",
                             "pool_lv": "pool0" if thin else ""},
            "strata-foreign": {"lv_name": "strata-foreign", "lv_size": str(GiB), "origin": "",
                               "pool_lv": ""},
            "other": {"lv_name": "other", "lv_size": str(GiB), "origin": "", "pool_lv": ""}}
        self.free = free
        self.exec = FakeExecutor(strict=True)
        self.exec.on(["lvs"], lambda argv: reply(argv, stdout=json.dumps(
            {"report": [{"lv": list(self.lvs.values())}]})))
        self.exec.on(["vgs"], lambda argv: reply(argv, stdout=json.dumps(
            {"report": [{"vg": [{"vg_size": str(100 * GiB), "vg_free": str(self.free)}]}]})))
        self.exec.on(["lvcreate"], self._lvcreate)
        self.exec.on(["lvconvert"], self._merge)
        self.exec.on(["lvremove"], self._remove)

    def _lvcreate(self, argv: list[str]) -> Result:
        origin = self.lvs[argv[-1].split("/")[1]]
        name = argv[argv.index("-n") + 1]
        self.lvs[name] = {**origin, "lv_name": name, "origin": origin["lv_name"]}
        return reply(argv)

    def _merge(self, argv: list[str]) -> Result:
        del self.lvs[argv[-1].split("/")[1]]
        return reply(argv)

    def _remove(self, argv: list[str]) -> Result:
        del self.lvs[argv[-1].split("/")[1]]
        return reply(argv)


def payload(tmp_path: Path, name: str = "vol-1.s1.snap") -> LunSnapshotPayload:
    return LunSnapshotPayload(dir=str(tmp_path / "luns"), file_name="vol-1.raw",
                              snapshot_dir=str(tmp_path / "snapshots"), snapshot_name=name,
                              volume_group=VG)


async def test_thick_snapshot_gets_room_for_every_block(tmp_path: Path) -> None:
    vg = Vg()
    svc = services(tmp_path, LvmTools(), RecordingTarget())
    svc.executor = vg.exec
    facts = await snapshot_lun(svc, payload(tmp_path), lambda p: None)
    assert (facts.path, facts.size, facts.method) == ("/dev/vg-san/strata-vol-1.s1", GiB, "lvm")
    assert vg.exec.calls == [
        LVS, LVS, VGS,
        ["lvcreate", "--yes", "-s", "-n", "strata-vol-1.s1", "-L", f"{GiB}b",
         f"{VG}/strata-vol-1"],
        VGS,
    ]
    vg.exec.calls.clear()
    again = await snapshot_lun(svc, payload(tmp_path), lambda p: None)
    assert again.path == facts.path and [c[0] for c in vg.exec.calls] == ["lvs", "lvs", "vgs"]


async def test_thin_snapshot_and_refusals(tmp_path: Path) -> None:
    vg = Vg(thin=True, free=0)
    svc = services(tmp_path, LvmTools(), RecordingTarget())
    svc.executor = vg.exec
    facts = await snapshot_lun(svc, payload(tmp_path), lambda p: None)
    assert facts.method == "lvm-thin"
    assert ["lvcreate", "--yes", "-s", "-n", "strata-vol-1.s1", "--setactivationskip", "n",
            f"{VG}/strata-vol-1"] in vg.exec.calls

    full = Vg(free=GiB // 2)
    svc.executor = full.exec
    with pytest.raises(InsufficientCapacity):
        await snapshot_lun(svc, payload(tmp_path), lambda p: None)
    assert not any(c[0] == "lvcreate" for c in full.exec.calls)
    with pytest.raises(Conflict) as err:
        await snapshot_lun(svc, payload(tmp_path, "foreign.raw"), lambda p: None)
    assert err.value.code == "not_a_snapshot"
    with pytest.raises(NotFound):
        await snapshot_lun(svc, payload(tmp_path).model_copy(update={"file_name": "v9.raw"}),
                           lambda p: None)


async def test_revert_merges_with_the_lun_down_and_keeps_the_snapshot(tmp_path: Path) -> None:
    vg = Vg()
    target = RecordingTarget()
    svc = services(tmp_path, LvmTools(), target)
    svc.executor = vg.exec
    await snapshot_lun(svc, payload(tmp_path), lambda p: None)
    vg.exec.calls.clear()
    revert = RevertLunPayload(**payload(tmp_path).model_dump(), target=TARGET)
    result = await revert_lun(svc, revert, lambda p: None)
    assert result.size == GiB and result.path == "/dev/vg-san/strata-vol-1"
    assert vg.exec.calls == [
        LVS, LVS,
        ["lvconvert", "--yes", "--interval", "1", "--merge", f"{VG}/strata-vol-1.s1"],
        LVS, VGS,
        ["lvcreate", "--yes", "-s", "-n", "strata-vol-1.s1", "-L", f"{GiB}b",
         f"{VG}/strata-vol-1"],
        VGS,
    ]
    assert target.detached == [TARGET], "the merge needs the volume closed"
    assert target.refreshed == [(TARGET, "/dev/vg-san/strata-vol-1")]
    assert vg.lvs["strata-vol-1.s1"]["origin"] == "strata-vol-1", "taken again"

    target.detached.clear()
    target.refreshed.clear()
    with pytest.raises(NotFound):
        await revert_lun(svc, revert.model_copy(update={"snapshot_name": "vol-1.s9.snap"}),
                         lambda p: None)
    assert target.detached == [] and target.refreshed == [], "nothing taken down"


async def test_delete_lv_snapshot_is_idempotent(tmp_path: Path) -> None:
    vg = Vg()
    svc = services(tmp_path, LvmTools(), RecordingTarget())
    svc.executor = vg.exec
    await snapshot_lun(svc, payload(tmp_path), lambda p: None)
    delete = DeleteLunSnapshotPayload(dir=str(tmp_path / "luns"),
                                      snapshot_dir=str(tmp_path / "snapshots"),
                                      snapshot_name="vol-1.s1.snap", volume_group=VG)
    vg.exec.calls.clear()
    assert (await delete_lun_snapshot(svc, delete, lambda p: None)).existed
    assert ["lvremove", "--yes", f"{VG}/strata-vol-1.s1"] in vg.exec.calls
    assert not (await delete_lun_snapshot(svc, delete, lambda p: None)).existed


async def test_volume_group_objects(tmp_path: Path) -> None:
    vg = Vg()
    svc = services(tmp_path, LvmTools(), RecordingTarget())
    svc.executor = vg.exec
    await snapshot_lun(svc, payload(tmp_path), lambda p: None)
    (tmp_path / "imagecache").mkdir()
    (tmp_path / "imagecache" / "img-1").write_bytes(b"\0" * 4096)
    listed = await list_objects(svc, ListObjectsPayload.model_validate({
        "root": str(tmp_path), "volume_group": VG,
        "dirs": [{"subdir": "luns", "kind": "volume"}, {"subdir": "imagecache",
                                                        "kind": "cache"}]}), lambda p: None)
    assert [(o.path, o.place, o.kind, o.size) for o in listed.objects] == [
        ("imagecache/img-1", "file", "cache", 4096),
        ("strata-vol-1", "lv", "volume", GiB),
        ("strata-foreign", "lv", "volume", GiB),
        ("strata-vol-1.s1", "lv", "snapshot", GiB),
    ], "only strata's logical volumes; a missing directory holds nothing"
    assert listed.capacity is not None and listed.capacity.total == 100 * GiB
