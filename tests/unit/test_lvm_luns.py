"""iSCSI volumes as logical volumes, with a fake executor for the LVM tools and a fake
target driver: this kernel has no device-mapper, so LVM runs for real only in the
real-kernel tier. File-backed LUNs run for real in tests/integration/test_iscsi*.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.clones import OverlayTemplates
from agent.commands.iscsi import export_lun, unexport_lun
from agent.config import AgentConfig
from agent.executor import Result
from agent.files import FileStores
from agent.images.check import Inspector
from agent.images.urlpolicy import UrlPolicy
from agent.iscsi.backing import LV_PATH, is_lun_device
from agent.iscsi.target import TargetDriver
from agent.nfs.mounts import MountTable
from agent.services import AgentServices
from agent.tools.lvm import size_arg
from agent.tools.qemuimg import QemuImg
from shared.errors import Conflict, NotFound, OperationFailed
from shared.protocol.iscsi import ChapCredentials, ExportLunPayload, UnexportLunPayload
from tests.support.fakeexec import FakeExecutor, reply

VG = "vg-san"
TARGET = "iqn.2026-11.org.strata:vol-1"


class LvmTools:
    """lvcreate/lvremove change a list of LVs that lvs/vgs report as JSON; `fail` names
    a program that fails."""

    def __init__(self, fail: str | None = None) -> None:
        self.lvs: list[str] = []
        self.exec = FakeExecutor()
        self.calls = self.exec.calls
        self.exec.on(["lvs"], lambda argv: reply(argv, stdout=json.dumps(
            {"report": [{"lv": [{"lv_name": n} for n in self.lvs]}]})))
        self.exec.on(["vgs"], self._vgs)
        self.exec.on(["lvcreate"], self._lvcreate)
        self.exec.on(["lvremove"], self._lvremove)
        if fail is not None:
            self.exec.on([fail], rc=5, stderr=f"{fail} failed")

    def _vgs(self, argv: list[str]) -> Result:
        vg = [{"vg_size": "107374182400", "vg_free": "1000"}] if VG in argv else []
        return reply(argv, stdout=json.dumps({"report": [{"vg": vg}]}))

    def _lvcreate(self, argv: list[str]) -> Result:
        self.lvs.append(argv[argv.index("-n") + 1])
        return reply(argv)

    def _lvremove(self, argv: list[str]) -> Result:
        self.lvs.remove(argv[-1].split("/")[1])
        return reply(argv)


class FakeTarget(TargetDriver):
    def __init__(self, fail: bool = False) -> None:
        self.exports: dict[str, str] = {}
        self.fail = fail

    async def export(self, target: str, path: str, chap: ChapCredentials | None) -> None:
        if self.fail:
            raise OperationFailed("target refused")
        self.exports[target] = path

    async def unexport(self, target: str) -> None:
        self.exports.pop(target, None)

    async def grant(self, target: str, initiator: str) -> list[str]:
        return [initiator]

    async def revoke(self, target: str, initiator: str) -> list[str]:
        return []

    async def restore(self) -> None:
        return None


def services(tmp_path: Path, tools: LvmTools, target: TargetDriver) -> AgentServices:
    config = AgentConfig(state_dir=str(tmp_path), iscsi_target="tgt")
    files = FileStores(nfs_timeout=5)
    mounts = MountTable(tools.exec, files, str(tmp_path / "mounts.json"))
    qemu_img = QemuImg(tools.exec)
    return AgentServices(config=config, agent_id="agent-1", instance="i-1", executor=tools.exec,
                         qemu_img=qemu_img, files=files, mounts=mounts,
                         clones=OverlayTemplates(qemu_img),
                         running_tasks=set, task_ended=lambda _: False, target_driver=target,
                         url_policy=UrlPolicy(),
                         inspector=Inspector(qemu_img, files, config.max_virtual_size,
                                             config.max_image_size),
                         http=None)  # type: ignore[arg-type]  # these tests make no HTTP calls


def payload(tmp_path: Path, **extra: object) -> ExportLunPayload:
    return ExportLunPayload.model_validate({
        "dir": str(tmp_path / "luns"), "file_name": "vol-1.raw", "size": 1 << 30,
        "target": TARGET, "volume_group": VG, **extra})


async def test_empty_volume_is_a_zeroed_logical_volume(tmp_path: Path) -> None:
    tools, target = LvmTools(), FakeTarget()
    svc = services(tmp_path, tools, target)
    result = await export_lun(svc, payload(tmp_path), lambda p: None)
    assert result.path == "/dev/vg-san/strata-vol-1"
    assert target.exports == {TARGET: "/dev/vg-san/strata-vol-1"}
    assert result.capacity.total == 107374182400
    kinds = [c[0] for c in tools.calls]
    assert kinds == ["vgs", "lvs", "lvcreate", "blkdiscard", "vgs"]
    assert tools.calls[2] == ["lvcreate", "--yes", "--wipesignatures", "y", "-n",
                              "strata-vol-1", "-L", f"{1 << 30}b", VG]
    assert tools.calls[3] == ["blkdiscard", "--zeroout", "/dev/vg-san/strata-vol-1"]
    with pytest.raises(Conflict):
        await export_lun(svc, payload(tmp_path), lambda p: None)

    gone = await unexport_lun(svc, UnexportLunPayload(
        dir=str(tmp_path / "luns"), file_name="vol-1.raw", target=TARGET, volume_group=VG),
        lambda p: None)
    assert gone.existed and tools.lvs == [] and target.exports == {}
    again = await unexport_lun(svc, UnexportLunPayload(
        dir=str(tmp_path / "luns"), file_name="vol-1.raw", target=TARGET, volume_group=VG),
        lambda p: None)
    assert again.existed is False


async def test_root_volume_is_converted_into_the_lv(tmp_path: Path) -> None:
    tools = LvmTools()
    svc = services(tmp_path, tools, FakeTarget())
    await export_lun(svc, payload(tmp_path, source={"path": "/cache/img", "format": "qcow2"}),
                     lambda p: None)
    convert = next(c for c in tools.calls if c[:2] == ["qemu-img", "convert"])
    assert convert == ["qemu-img", "convert", "-p", "-f", "qcow2", "-O", "raw", "-n",
                       "/cache/img", "/dev/vg-san/strata-vol-1"]


async def test_failures_leave_no_logical_volume(tmp_path: Path) -> None:
    tools = LvmTools(fail="qemu-img")
    svc = services(tmp_path, tools, FakeTarget())
    with pytest.raises(OperationFailed):
        await export_lun(svc, payload(tmp_path, source={"path": "/c", "format": "raw"}),
                         lambda p: None)
    assert tools.lvs == []
    tools = LvmTools(fail="blkdiscard")
    with pytest.raises(OperationFailed):
        await export_lun(services(tmp_path, tools, FakeTarget()), payload(tmp_path),
                         lambda p: None)
    assert tools.lvs == []
    tools = LvmTools()
    with pytest.raises(OperationFailed):
        await export_lun(services(tmp_path, tools, FakeTarget(fail=True)), payload(tmp_path),
                         lambda p: None)
    assert tools.lvs == [], "a target that refuses the LUN leaves no volume behind"
    tools = LvmTools()
    with pytest.raises(NotFound, match="vg-other"):
        await export_lun(services(tmp_path, tools, FakeTarget()),
                         payload(tmp_path, volume_group="vg-other"), lambda p: None)
    assert [c[0] for c in tools.calls] == ["vgs"], "nothing is created in a missing VG"


def test_byte_sizes_are_whole_sectors() -> None:
    """LVM refuses `-L` sizes that are not whole 512-byte sectors (proven against real
    LVM in tests/kernel/guest_lvm.py)."""
    assert [size_arg(n) for n in (512, 513, 1_200_001, 1 << 30)] == [
        "512b", "1024b", "1200128b", f"{1 << 30}b"]


def test_only_a_luns_logical_volume_is_read_as_a_device(tmp_path: Path) -> None:
    """A copy reads a block device only when it is named as LUN volumes are and is one."""
    assert not is_lun_device("/dev/null"), "a device, not a LUN's logical volume"
    assert not LV_PATH.fullmatch("/dev/../strata-x") and not LV_PATH.fullmatch(
        "/dev/vg0/strata-x/../../sda")
    assert LV_PATH.fullmatch("/dev/vg0/strata-1f2e.3c4d")
    assert not is_lun_device("/dev/vg0/strata-missing.raw"), "named so, but not there"
    lookalike = tmp_path / "strata-vol"
    lookalike.write_bytes(b"")
    assert not is_lun_device(str(lookalike)), "not under /dev"
