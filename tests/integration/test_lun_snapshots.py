"""Snapshots of file-backed LUNs on a real storage-server agent with tgtd, the LUN read
and written by QEMU's libiscsi from a hypervisor agent: a distinct byte pattern before
each snapshot, then the patterns after each revert. (Logical volumes: real LVM in
tests/kernel/guest_lvm.py, argv with the fake executor in tests/unit/test_lun_snapshots.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.test_iscsi_agent import IQN_A, Site, export, qemu_io, site  # noqa: F401


def lun_io(spec: dict[str, Any], *commands: str) -> None:
    out = qemu_io(spec, *commands)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out


def snapshot_dir(on: Site) -> Path:
    return on.luns.parent / "snapshots"


def snap(on: Site, name: str, **extra: object) -> tuple[str, dict[str, Any]]:
    return on.server.call("snapshot_lun", {
        "dir": str(on.luns), "file_name": "vol1.raw", "snapshot_dir": str(snapshot_dir(on)),
        "snapshot_name": name, **extra})


def revert(on: Site, name: str, target: str) -> tuple[str, dict[str, Any]]:
    return on.server.call("revert_lun", {
        "dir": str(on.luns), "file_name": "vol1.raw", "snapshot_dir": str(snapshot_dir(on)),
        "snapshot_name": name, "target": target})


def no_leftovers(*dirs: Path) -> None:
    for d in dirs:
        assert not [n for n in d.iterdir() if n.name.startswith(".strata-tmp-")], d


def test_snapshot_revert_delete(site: Site) -> None:  # noqa: F811
    lun = export(site, "vol1")
    target = lun["target"]
    site.server.call("grant_lun", {"target": target["target"], "initiator": IQN_A})
    state, conn = site.host_a.call("connect_volume", {"target": target})
    assert state == "succeeded", conn
    spec = conn["qemu_spec"]

    lun_io(spec, "write -P 0xa1 0 1M")
    state, s1 = snap(site, "vol1.s1.snap")
    assert state == "succeeded", s1
    assert s1["method"] in ("reflink", "copy") and s1["size"] == 64 << 20
    assert s1["path"] == str(snapshot_dir(site) / "vol1.s1.snap")
    state, again = snap(site, "vol1.s1.snap")
    assert state == "succeeded" and again["path"] == s1["path"], "made once"
    lun_io(spec, "write -P 0xb2 0 1M", "write -P 0xb2 32M 1M")
    state, s2 = snap(site, "vol1.s2.snap")
    assert state == "succeeded", s2
    assert Path(s2["path"]).stat().st_blocks * 512 < 8 << 20, "the copy stays sparse"
    lun_io(spec, "write -P 0xc3 0 1M")

    state, back = revert(site, "vol1.s1.snap", target["target"])
    assert state == "succeeded", back
    assert back["size"] == 64 << 20 and back["path"] == lun["path"]
    # The target (and its grant) stayed; the LUN serves the snapshot's data.
    lun_io(spec, "read -P 0xa1 0 1M", "read -P 0 32M 1M")
    state, back = revert(site, "vol1.s2.snap", target["target"])
    assert state == "succeeded", back
    lun_io(spec, "read -P 0xb2 0 1M", "read -P 0xb2 32M 1M")
    state, back = revert(site, "vol1.s1.snap", target["target"])
    assert state == "succeeded", back
    lun_io(spec, "read -P 0xa1 0 1M")
    assert {p.name for p in snapshot_dir(site).iterdir()} == {"vol1.s1.snap", "vol1.s2.snap"}, \
        "reverting keeps every snapshot"

    state, err = revert(site, "vol1.none.snap", target["target"])
    assert state == "failed" and err["code"] == "not_found"
    lun_io(spec, "read -P 0xa1 0 1M", "write -P 0xd4 1M 1M")

    payload = {"dir": str(site.luns), "snapshot_dir": str(snapshot_dir(site)),
               "snapshot_name": "vol1.s1.snap"}
    state, gone = site.server.call("delete_lun_snapshot", payload)
    assert state == "succeeded" and gone["existed"] is True
    state, gone = site.server.call("delete_lun_snapshot", payload)
    assert state == "succeeded" and gone["existed"] is False
    assert not (snapshot_dir(site) / "vol1.s1.snap").exists()
    no_leftovers(site.luns, snapshot_dir(site))

    state, err = site.server.call("delete_lun_snapshot", {**payload, "snapshot_dir": "/etc"})
    assert state == "rejected" and err["code"] == "invalid_input", "snapshots stay in the storage"
    state, err = snap(site, "../x")
    assert state == "rejected" and err["code"] == "invalid_input"
