"""iSCSI pieces with fakes: tgtadm output parsing, the `lio` driver against a fake
rtslib-fb, and the `kernel` access mode against a fake iscsiadm. This kernel has no
configfs, LIO or iSCSI initiator, so `lio` and `kernel` run for real only in the
real-kernel tier; `tgt` and `qemu` run for real in tests/integration/test_iscsi_agent.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.iscsi import tgt_exports
from agent.iscsi.initiator import read_initiator_name
from agent.iscsi.kernel import KernelInitiator, iface_name
from agent.iscsi.lio import LioDriver
from agent.tools.iscsiadm import IscsiAuthFailed
from agent.tools.tgtadm import parse_show
from shared.errors import OperationFailed, Timeout
from shared.protocol.iscsi import ChapCredentials, IscsiTarget
from tests.support.fakeexec import FakeExecutor, contains

SHOW = """Target 1: iqn.2026-11.org.strata:vol-a
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
        LUN: 1
            Type: disk
            Backing store path: /srv/luns/a.raw
    Account information:
        strata-a
    ACL information:
        iqn.2026-11.org.strata:host-a
        iqn.2026-11.org.strata:host-b
Target 3: iqn.2026-11.org.strata:vol-b
    System information:
        Driver: iscsi
    LUN information:
        LUN: 0
            Type: controller
    Account information:
    ACL information:
"""


def test_tgt_exports_are_saved_for_the_agent_only(tmp_path: Path) -> None:
    path = str(tmp_path / "tgt-exports.json")
    assert tgt_exports.load(path) == {}
    exports = {"iqn.2026-11.org.strata:vol-a": tgt_exports.Export(
        "/srv/luns/a.raw", {"user": "strata-a", "password": "s3cretPassw0rd"}, ["iqn.x:h"])}
    tgt_exports.save(path, exports)
    assert tgt_exports.load(path) == exports
    assert (tmp_path / "tgt-exports.json").stat().st_mode & 0o777 == 0o600


def test_parse_tgtadm_show() -> None:
    targets = parse_show(SHOW)
    a, b = targets["iqn.2026-11.org.strata:vol-a"], targets["iqn.2026-11.org.strata:vol-b"]
    assert (a.tid, a.luns, a.accounts) == (1, {0, 1}, ["strata-a"])
    assert a.acls == ["iqn.2026-11.org.strata:host-a", "iqn.2026-11.org.strata:host-b"]
    assert (b.tid, b.luns, b.acls, b.accounts) == (3, {0}, [], [])
    assert parse_show("") == {}


# ---- a fake rtslib-fb: the object model LIO exposes in configfs -------------------------

class FakeRts:
    def __init__(self) -> None:
        self.targets: list[Any] = []
        self.storage: list[Any] = []
        self.saved: list[str] = []
        self.restored: list[Any] = []
        rts = self

        class Root:
            @property
            def targets(self) -> list[Any]:
                return rts.targets

            def save_to_file(self, path: str) -> None:
                rts.saved.append(path)

            @property
            def storage_objects(self) -> list[Any]:
                return [so for so in rts.storage if not so.deleted]

            def restore(self, config: dict[str, Any], clear_existing: bool) -> list[str]:
                assert not clear_existing, "a restore never clears the live configuration"
                rts.restored.append(config)
                return []

        class Target:
            def __init__(self, fabric: Any, wwn: str) -> None:
                self.wwn, self.tpgs = wwn, []
                rts.targets.append(self)

            def delete(self) -> None:
                rts.targets.remove(self)

        class TPG:
            def __init__(self, target: Any, tag: int) -> None:
                self.tag, self.attributes, self.enable = tag, {}, False
                self.network_portals, self.luns, self.node_acls = [], [], []
                self.chap_userid = self.chap_password = ""
                target.tpgs.append(self)

            def set_attribute(self, name: str, value: str) -> None:
                self.attributes[name] = value

        class NetworkPortal:
            def __init__(self, tpg: Any, ip: str, port: int) -> None:
                tpg.network_portals.append((ip, port))

        class BlockStorageObject:
            plugin = "block"

            def __init__(self, name: str, dev: str) -> None:
                if "missing" in dev:
                    raise RuntimeError(f"{dev}: no such device")
                self.name, self.dev, self.deleted = name, dev, False
                rts.storage.append(self)

            def delete(self) -> None:
                self.deleted = True

        class FileIOStorageObject(BlockStorageObject):
            plugin = "fileio"

            def __init__(self, name: str, dev: str, size: int) -> None:
                super().__init__(name, dev)
                self.size = size

        class LUN:
            def __init__(self, tpg: Any, lun: int, so: Any) -> None:
                self.lun, self.storage_object, self.tpg = lun, so, tpg
                tpg.luns.append(self)

            def delete(self) -> None:
                """As the kernel does: the ACLs' mapped LUNs go with the LUN."""
                self.tpg.luns.remove(self)
                for acl in self.tpg.node_acls:
                    acl.mapped = [(m, lun) for m, lun in acl.mapped if lun is not self]

        class NodeACL:
            def __init__(self, tpg: Any, wwn: str) -> None:
                self.node_wwn, self.tpg, self.mapped = wwn, tpg, []
                self.chap_userid = self.chap_password = ""
                tpg.node_acls.append(self)

            def delete(self) -> None:
                self.tpg.node_acls.remove(self)

            @property
            def mapped_luns(self) -> list[Any]:
                return [SimpleNamespace(mapped_lun=m) for m, _ in self.mapped]

        class MappedLUN:
            def __init__(self, acl: Any, mapped: int, lun: Any) -> None:
                acl.mapped.append((mapped, lun))

        self.module = SimpleNamespace(
            RTSRoot=Root, Target=Target, TPG=TPG, NetworkPortal=NetworkPortal,
            FileIOStorageObject=FileIOStorageObject, BlockStorageObject=BlockStorageObject,
            LUN=LUN, NodeACL=NodeACL,
            MappedLUN=MappedLUN, FabricModule=lambda name: name)


async def test_lio_export_grant_revoke_unexport(tmp_path: Path) -> None:
    fake = FakeRts()
    save = str(tmp_path / "saveconfig.json")
    lio = LioDriver(save, ("192.0.2.10", 3260), rtslib=fake.module,
                    dbroot=str(tmp_path / "target"))
    target = "iqn.2026-11.org.strata:vol-1"
    lun = tmp_path / "1.raw"
    lun.write_bytes(b"\0" * 4096)
    chap = ChapCredentials(user="strata-1", password="s3cretPassw0rd")
    await lio.export(target, str(lun), chap)
    await lio.export(target, str(lun), chap)  # idempotent
    assert (tmp_path / "target").is_dir(), "rtslib-fb's dbroot is made"
    (tgt,) = fake.targets
    (tpg,) = tgt.tpgs
    assert tpg.enable and tpg.network_portals == [("192.0.2.10", 3260)]
    assert tpg.attributes == {"generate_node_acls": "0", "demo_mode_write_protect": "1",
                              "authentication": "1"}
    assert [(lun.lun, lun.storage_object.dev, lun.storage_object.size)
            for lun in tpg.luns] == [(1, str(lun), 4096)]

    assert await lio.grant(target, "iqn.2026-11.org.strata:host-a") == [
        "iqn.2026-11.org.strata:host-a"]
    await lio.grant(target, "iqn.2026-11.org.strata:host-a")
    assert await lio.grant(target, "iqn.2026-11.org.strata:host-b") == [
        "iqn.2026-11.org.strata:host-a", "iqn.2026-11.org.strata:host-b"]
    acl = tpg.node_acls[0]
    assert acl.mapped == [(1, tpg.luns[0])] and acl.chap_userid == "strata-1"
    assert await lio.revoke(target, "iqn.2026-11.org.strata:host-a") == [
        "iqn.2026-11.org.strata:host-b"]

    so = tpg.luns[0].storage_object
    await lio.unexport(target)
    await lio.unexport(target)
    assert fake.targets == [] and so.deleted
    assert len(fake.saved) == 7 and set(fake.saved) == {save}, "saved after every change"
    with pytest.raises(OperationFailed):
        await lio.grant(target, "iqn.2026-11.org.strata:host-a")
    await lio.restore()
    assert fake.restored == [], "no saved file here: nothing to restore"


async def test_lio_restore_brings_back_only_what_the_kernel_lacks(tmp_path: Path) -> None:
    fake = FakeRts()
    save = tmp_path / "save.json"
    live = "iqn.2026-11.org.strata:vol-live"
    save.write_text(json.dumps({
        "storage_objects": [{"plugin": "fileio", "name": "strata-vol-live"},
                            {"plugin": "fileio", "name": "strata-vol-gone"}],
        "targets": [{"wwn": live}, {"wwn": "iqn.2026-11.org.strata:vol-gone"}]}))
    lio = LioDriver(str(save), ("192.0.2.10", 3260), rtslib=fake.module,
                    dbroot=str(tmp_path / "target"))
    fake.module.Target("iscsi", live)
    fake.module.FileIOStorageObject("strata-vol-live", "/srv/live.raw", 4096)
    await lio.restore()
    assert fake.restored == [{
        "storage_objects": [{"plugin": "fileio", "name": "strata-vol-gone"}],
        "targets": [{"wwn": "iqn.2026-11.org.strata:vol-gone"}]}]
    fake.module.Target("iscsi", "iqn.2026-11.org.strata:vol-gone")
    fake.module.FileIOStorageObject("strata-vol-gone", "/srv/gone.raw", 4096)
    await lio.restore()
    assert len(fake.restored) == 1, "all live: nothing restored"


async def test_lio_serves_logical_volumes_as_block_backstores(tmp_path: Path) -> None:
    fake = FakeRts()
    lio = LioDriver(str(tmp_path / "save.json"), ("192.0.2.10", 3260), rtslib=fake.module,
                    dbroot=str(tmp_path / "target"))
    (tmp_path / "vol-3.raw").write_bytes(b"\0" * 512)
    await lio.export("iqn.2026-11.org.strata:vol-2", "/dev/vg-san/strata-vol-2", None)
    await lio.export("iqn.2026-11.org.strata:vol-3", str(tmp_path / "vol-3.raw"), None)
    kinds = {type(so).__name__: so.dev for so in fake.storage}
    assert kinds == {"BlockStorageObject": "/dev/vg-san/strata-vol-2",
                     "FileIOStorageObject": str(tmp_path / "vol-3.raw")}
    assert fake.targets[0].tpgs[0].attributes["authentication"] == "0"


async def test_lio_failed_export_is_rolled_back_and_grant_says_why(tmp_path: Path) -> None:
    fake = FakeRts()
    lio = LioDriver(str(tmp_path / "save.json"), ("192.0.2.10", 3260), rtslib=fake.module,
                    dbroot=str(tmp_path / "target"))
    target = "iqn.2026-11.org.strata:vol-4"
    with pytest.raises(OperationFailed) as info:
        await lio.export(target, "/dev/vg-san/missing", None)
    assert info.value.code == "lio_export_failed" and "no such device" in info.value.message
    assert fake.targets == []
    fake.module.TPG(fake.module.Target("iscsi", target), 1)  # an export without its LUN
    with pytest.raises(OperationFailed) as info:
        await lio.grant(target, "iqn.2026-11.org.strata:host-a")
    assert info.value.code == "export_incomplete"
    assert fake.targets[0].tpgs[0].node_acls == []


# ---- kernel access mode with a fake iscsiadm --------------------------------------------

def iscsiadm(fail: dict[str, int] | None = None) -> FakeExecutor:
    """Every call succeeds, but those holding a word of `fail`: they exit with its code."""
    fake = FakeExecutor()
    for word, rc in (fail or {}).items():
        fake.on(contains(word), rc=rc, stderr="iscsiadm: error")
    return fake


TARGET = IscsiTarget(portal="192.0.2.10:3260", target="iqn.2026-11.org.strata:vol-1", lun=1,
                     chap=ChapCredentials(user="strata-1", password="s3cretPassw0rd"))


async def test_kernel_login_waits_for_device_and_counts_sessions() -> None:
    fake = iscsiadm(fail={"--login": 15})  # 15: session already exists, which is fine
    seen: list[str] = []
    appear_after = iter([False, False, True, True])
    kernel = KernelInitiator("iqn.2026-11.org.strata:host-a", fake,
                             device_exists=lambda p: seen.append(p) or next(appear_after),
                             device_size=lambda p: 64 << 20, poll=0.01)
    result = await kernel.connect(TARGET)
    assert result.mode == "kernel" and result.size == 64 << 20
    assert result.device == ("/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-"
                             "iqn.2026-11.org.strata:vol-1-lun-1")
    iface = iface_name("iqn.2026-11.org.strata:host-a")
    node = ["iscsiadm", "-m", "node", "-T", TARGET.target, "-p", TARGET.portal, "-I", iface]
    assert fake.calls == [
        ["iscsiadm", "-m", "iface", "-I", iface],
        ["iscsiadm", "-m", "iface", "-I", iface, "-o", "update", "-n", "iface.initiatorname",
         "-v", "iqn.2026-11.org.strata:host-a"],
        ["iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", TARGET.portal,
         "-I", iface],
        [*node, "-o", "update", "-n", "node.session.auth.authmethod", "-v", "CHAP"],
        [*node, "-o", "update", "-n", "node.session.auth.username", "-v", "strata-1"],
        [*node, "-o", "update", "-n", "node.session.auth.password", "-v", "s3cretPassw0rd"],
        [*node, "--login"],
    ]
    assert fake.redacted == {"s3cretPassw0rd"}, "the CHAP secret is kept out of the log"
    await kernel.connect(TARGET)
    assert len(fake.calls) == 7 and kernel.session_count(TARGET) == 2, "one login"
    await kernel.disconnect(TARGET)
    assert fake.calls[-1] == [*node, "--login"], "still in use: no logout"
    await kernel.disconnect(TARGET)
    assert fake.calls[-1] == [*node, "--logout"] and kernel.session_count(TARGET) == 0


async def test_kernel_login_failures_are_clear() -> None:
    kernel = KernelInitiator("iqn.2026-11.org.strata:host-a",
                             iscsiadm(fail={"--login": 24}), device_exists=lambda p: False)
    with pytest.raises(OperationFailed) as info:
        await kernel.connect(TARGET)
    assert info.value.code == "iscsi_login_failed"
    assert isinstance(info.value, IscsiAuthFailed) and kernel.session_count(TARGET) == 0
    fake = iscsiadm()
    slow = KernelInitiator("iqn.2026-11.org.strata:host-a", fake,
                           device_exists=lambda p: False, device_timeout=0.05, poll=0.01)
    with pytest.raises(Timeout):
        await slow.connect(TARGET)
    assert fake.calls[-1][-1] == "--logout" and slow.session_count(TARGET) == 0


def test_initiator_name_file(tmp_path: Path) -> None:
    f = tmp_path / "initiatorname.iscsi"
    f.write_text("## generated\nInitiatorName=iqn.1993-08.org.debian:01:abc\n")
    assert read_initiator_name(str(f)) == "iqn.1993-08.org.debian:01:abc"
    assert read_initiator_name(str(tmp_path / "missing")) is None
