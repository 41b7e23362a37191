"""Kernel NFS mounts (`mount` mode, `agent/nfs/mounts.py`) against nfs-ganesha in the
guest (guest only)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.executor import Executor
from agent.files import FileStores
from agent.nfs.mounts import MountTable
from agent.tools import mount

SERVER = "127.0.0.1"
EXPORT = "/strata"  # ganesha's NFSv4 pseudo path of its export
OPTIONS = ["vers=4.1"]


@pytest.fixture
def table(tmp_path: Path) -> Any:
    stores = FileStores(10)
    yield MountTable(Executor(), stores, str(tmp_path / "mounts.json"), timeout=30)
    stores.close()


def mounted_at(mount_point: Path) -> list[str]:
    """Every mount on `mount_point`, from the kernel (not from findmnt)."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if line.split()[4] == str(mount_point)]


def mount_helpers() -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "mount.nfs":
            pids.append(int(pid))
    return pids


async def test_mount_mode_round_trip(ganesha: Any, table: MountTable, tmp_path: Path) -> None:
    mount_point = tmp_path / "mnt"
    assert await table.mount(SERVER, EXPORT, str(mount_point), OPTIONS, "ps-1") == ["ps-1"]
    assert await table.mount(SERVER, EXPORT, str(mount_point), OPTIONS, "ps-2") == [
        "ps-1", "ps-2"]
    found = await table.find(str(mount_point))
    assert found is not None and found.source == f"{SERVER}:{EXPORT}"
    assert found.fstype == "nfs4" and "soft" in found.options
    (mount_point / "volume").write_bytes(b"x" * 4096)
    assert (ganesha.export / "volume").read_bytes() == b"x" * 4096
    assert await table.unmount(str(mount_point), "ps-1") == ["ps-2"]
    assert len(mounted_at(mount_point)) == 1
    assert await table.unmount(str(mount_point), "ps-2") == []
    assert mounted_at(mount_point) == []


async def test_unmount_removes_stacked_mounts(ganesha: Any, table: MountTable,
                                              tmp_path: Path) -> None:
    """Defect 1: a helper that mounted late stacked a second mount on the first; the
    last user's unmount leaves none, whatever findmnt showed first."""
    mount_point = tmp_path / "stacked"
    mount_point.mkdir()
    for _ in range(2):
        subprocess.run(["mount", "-t", "nfs", "-o", "vers=4.1,nosharecache",
                        f"{SERVER}:{EXPORT}", str(mount_point)], check=True)
    assert len(mounted_at(mount_point)) == 2
    await table.mount(SERVER, EXPORT, str(mount_point), OPTIONS, "ps-1")
    await table.unmount(str(mount_point), "ps-1")
    assert mounted_at(mount_point) == []


async def test_a_mount_timeout_kills_the_mount_helper(tmp_path: Path) -> None:
    """Defect 1: on a timeout `mount` and its `mount.nfs`, which keeps retrying, are
    killed together (the executor kills the child's whole process group)."""
    mount_point = tmp_path / "unreachable"
    mount_point.mkdir()
    with pytest.raises(mount.MountTimeout):
        # Nothing listens on this port: mount.nfs retries for minutes.
        await mount.mount_nfs(Executor(), f"{SERVER}:{EXPORT}", str(mount_point),
                              ["vers=4.1", "port=20490"], timeout=3)
    assert mount_helpers() == []
    assert mounted_at(mount_point) == []
