"""The kernel NFS `mount` mode, with a fake executor standing in for mount, umount and
findmnt: this kernel has no NFS client, so real kernel mounts belong to a real-kernel
tier. The mount point is a real directory, so the heartbeat write is real. NFS itself
runs for real, through libnfs, in tests/integration/test_nfs.py."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.executor import Result
from agent.files import FileStores
from agent.files.probe import probe
from agent.nfs.mounts import MountTable
from shared.errors import Conflict, OperationFailed, Timeout
from tests.support.fakeexec import FakeExecutor, reply

SOURCE = "nfs-1.example:/exports/primary"


class FakeMountTools(FakeExecutor):
    """A mount table in memory: mount adds, umount removes, findmnt reports."""

    def __init__(self) -> None:
        super().__init__(strict=True)
        self.mounted: dict[str, str] = {}
        self.mount_says_already = False
        self.mount_forgets = False
        self.mount_hangs = False
        self.on(["findmnt"], self._findmnt)
        self.on(["mount"], self._mount)
        self.on(["umount"], self._umount)

    def _findmnt(self, argv: list[str]) -> Result:
        target = argv[-1]
        if target not in self.mounted:
            return reply(argv, rc=1)
        return reply(argv, stdout=json.dumps({"filesystems": [{
            "target": target, "source": self.mounted[target], "fstype": "nfs4",
            "options": "rw,soft"}]}))

    def _mount(self, argv: list[str]) -> Result:
        if self.mount_hangs:
            raise Timeout("mount did not finish within 60s")
        source, target = argv[-2], argv[-1]
        if self.mount_says_already:
            self.mounted[target] = source
            return reply(argv, rc=32, stderr=f"mount.nfs: {source} is busy or already mounted")
        if not self.mount_forgets:
            self.mounted[target] = source
        return reply(argv)

    def _umount(self, argv: list[str]) -> Result:
        self.mounted.pop(argv[-1], None)
        return reply(argv)


@pytest.fixture
def tools() -> FakeMountTools:
    return FakeMountTools()


@pytest.fixture
def stores() -> FileStores:
    return FileStores(nfs_timeout=0.5)


def table(tools: FakeMountTools, stores: FileStores, tmp_path: Path) -> MountTable:
    return MountTable(tools, stores, str(tmp_path / "mounts.json"), timeout=5)


async def test_mounts_are_counted_per_mount_point_and_saved(
        tools: FakeMountTools, stores: FileStores, tmp_path: Path) -> None:
    mp = str(tmp_path / "mnt")
    mounts = table(tools, stores, tmp_path)
    assert await mounts.mount("nfs-1.example", "/exports/primary", mp, ["vers=4.1"], "ps-1") \
        == ["ps-1"]
    assert await mounts.mount("nfs-1.example", "/exports/primary", mp, [], "ps-2") \
        == ["ps-1", "ps-2"]
    # Idempotent: the same user again changes nothing.
    assert await mounts.mount("nfs-1.example", "/exports/primary", mp, [], "ps-2") \
        == ["ps-1", "ps-2"]
    assert tools.count("mount") == 1
    mount_call = next(c for c in tools.calls if c[0] == "mount")
    assert mount_call == ["mount", "-t", "nfs", "-o", "soft,nosharecache,timeo=100,retrans=3,"
                          "vers=4.1", SOURCE, mp]
    # The heartbeat file was written and removed.
    assert os.listdir(mp) == []

    # A restarted agent knows who holds the mount.
    again = table(tools, FileStores(nfs_timeout=0.5), tmp_path)
    assert again.users == {mp: ["ps-1", "ps-2"]}
    assert await again.unmount(mp, "ps-1") == ["ps-2"]
    assert tools.count("umount") == 0 and mp in tools.mounted
    assert await again.unmount(mp, "ps-2") == []
    assert tools.count("umount") == 1 and mp not in tools.mounted
    # Unmounting again is a success that does nothing.
    assert await again.unmount(mp, "ps-2") == []
    assert tools.count("umount") == 1
    assert json.loads((tmp_path / "mounts.json").read_text()) == {}


async def test_unmount_takes_off_stacked_mounts(tools: FakeMountTools, stores: FileStores,
                                                tmp_path: Path) -> None:
    """A late mount helper stacked two more mounts: umount runs until findmnt shows none."""
    mp = str(tmp_path / "mnt")
    mounts = table(tools, stores, tmp_path)
    await mounts.mount("nfs-1.example", "/exports/primary", mp, [], "ps-1")
    layers = [2]

    def umount_one(argv: list[str]) -> Result:
        if layers[0]:
            layers[0] -= 1
        else:
            tools.mounted.pop(argv[-1], None)
        return reply(argv)

    tools.on(["umount"], umount_one)
    assert await mounts.unmount(mp, "ps-1") == []
    assert tools.count("umount") == 3 and mp not in tools.mounted


async def test_already_mounted_is_success(tools: FakeMountTools, stores: FileStores,
                                          tmp_path: Path) -> None:
    mounts = table(tools, stores, tmp_path)
    # findmnt shows the export there already: nothing to run.
    mp = tmp_path / "mnt"
    mp.mkdir()
    tools.mounted[str(mp)] = SOURCE
    assert await mounts.mount("nfs-1.example", "/exports/primary", str(mp), [], "ps-1") \
        == ["ps-1"]
    assert tools.count("mount") == 0

    # Another mounter got there between findmnt and mount(8): "already mounted" is success.
    other = str(tmp_path / "mnt-2")
    tools.mount_says_already = True
    assert await mounts.mount("nfs-1.example", "/exports/primary", other, [], "ps-2") \
        == ["ps-2"]
    assert tools.count("mount") == 1


async def test_mount_refusals_are_clear(tools: FakeMountTools, stores: FileStores,
                                        tmp_path: Path) -> None:
    mp = str(tmp_path / "mnt")
    mounts = table(tools, stores, tmp_path)

    tools.mounted[mp] = "other:/export"
    with pytest.raises(Conflict) as busy:
        await mounts.mount("nfs-1.example", "/exports/primary", mp, [], "ps-1")
    assert busy.value.code == "mount_point_busy" and "other:/export" in busy.value.message

    tools.mounted.clear()
    tools.mount_forgets = True
    with pytest.raises(OperationFailed) as unseen:
        await mounts.mount("nfs-1.example", "/exports/primary", mp, [], "ps-1")
    assert unseen.value.code == "mount_failed" and "findmnt" in unseen.value.message

    tools.mount_hangs = True
    with pytest.raises(Timeout) as hung:
        await mounts.mount("nfs-1.example", "/exports/primary", mp, [], "ps-1")
    assert hung.value.code == "mount_timeout" and SOURCE in hung.value.message
    assert mounts.users == {}


async def test_stale_handle_is_remounted(tools: FakeMountTools, stores: FileStores,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mp = str(tmp_path / "mnt")
    mounts = table(tools, stores, tmp_path)
    await mounts.mount("nfs-1.example", "/exports/primary", mp, [], "ps-1")
    real_stat = os.stat

    def stale_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if path == mp and tools.count("umount") == 0:
            raise OSError(errno.ESTALE, "Stale file handle")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stale_stat)
    # The agent reconnects: attaching again finds the handle stale and remounts.
    await mounts.mount("nfs-1.example", "/exports/primary", mp, [], "ps-1")
    assert [c[:2] for c in tools.calls if c[0] in ("mount", "umount")] == \
        [["mount", "-t"], ["umount", "-l"], ["mount", "-t"]]
    assert tools.mounted[mp] == SOURCE


async def test_hung_mount_stalls_only_its_own_calls(tools: FakeMountTools, stores: FileStores,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls under a dead mount fail within the lane's timeout; the local store, the
    event loop and a stat of the mount point (which then counts as stale) go on."""
    mp = str(tmp_path / "mnt")
    mounts = table(tools, stores, tmp_path)
    await mounts.mount("nfs-1.example", "/exports/primary", mp, [], "ps-1")
    release = threading.Event()
    real_lexists = os.path.lexists

    def hanging_lexists(path: str) -> bool:
        if path.startswith(mp):
            release.wait(10)
        return real_lexists(path)

    monkeypatch.setattr(os.path, "lexists", hanging_lexists)
    try:
        started = time.monotonic()
        with pytest.raises(Timeout) as dead:
            await stores.for_path(mp + "/volumes/v.qcow2").lexists(mp + "/volumes/v.qcow2")
        assert time.monotonic() - started < 2
        assert dead.value.code == "storage_unresponsive" and SOURCE in dead.value.message

        local = tmp_path / "local"
        local.mkdir()
        assert await asyncio.wait_for(stores.for_path(str(local)).lexists(str(local)), 1)
    finally:
        release.set()


async def test_probe_of_an_unmounted_mount_point_is_unhealthy(
        stores: FileStores, tmp_path: Path) -> None:
    """A mount-mode storage whose export went away leaves a bare directory that takes
    writes; the probe must not call that healthy."""
    mount_point = str(tmp_path / "mnt")
    os.makedirs(mount_point)
    stores.add_mount(mount_point, SOURCE)
    outcome = await probe(stores, mount_point, timeout=5)
    assert not outcome.healthy
    assert outcome.reason is not None and "is not mounted" in outcome.reason
    assert os.listdir(mount_point) == []
