"""Cold migration end to end: real controller and agents, qemu-img and qemu-io, local
storages, NFS in libnfs mode (nfs-ganesha; the only mode this kernel can run) and a
dir backup storage to stage through. A distinct byte pattern is written with qemu-io
before each migration and every pattern is checked after; the storage directories are
listed for leftovers."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli.client import ApiError
from tests.conftest import Stack, make_image
from tests.integration.test_cli import strata
from tests.integration.test_iscsi import Cloud, cloud, spec
from tests.integration.test_iscsi_agent import IQN_A
from tests.integration.test_iscsi_agent import qemu_io as iscsi_io
from tests.integration.test_nfs import chain, nfs_storage, register, volume
from tests.integration.test_snapshots import IMAGE_PATTERN, qemu_io, revert, take
from tests.support.enrol import enrol_host
from tests.support.fileserver import FileServer
from tests.support.nfsserver import NfsServer
from tests.support.postgres import PostgresServer
from tests.support.procs import debug_tasks, start_agent

MIB = 1 << 20


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite; PostgreSQL too for the one test that asks for it (CI time)."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.new_database()
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


def local_storage(stack: Stack, name: str, path: Path, host: str) -> str:
    job = stack.wait(stack.api.post("/v1/primary-storages", {
        "name": name, "type": "local", "config": {"path": str(path)}, "hosts": [host],
        "overprovision_factor": 4.0}))
    return str(job["resource_id"])


def migrate(stack: Stack, vol: dict[str, Any], dest: str) -> dict[str, Any]:
    job = stack.wait(stack.api.post(f"/v1/volumes/{vol['id']}/migrate",
                                    {"primary_storage_id": dest}))
    moved = dict(stack.api.get(f"/v1/volumes/{vol['id']}"))
    assert moved["state"] == "ready" and moved["primary_storage_id"] == dest
    assert job["result"]["path"] == moved["path"]
    return moved


__all__ = ["cloud"]  # the iSCSI fixture, used below


def read_shared(path: str, *commands: str) -> None:
    argv = ["qemu-io", "-r", "-U"]
    for cmd in commands:
        argv += ["-c", cmd]
    out = subprocess.run([*argv, path], capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out


def allocated(stack: Stack, primary: str) -> int:
    return int(stack.api.get(f"/v1/primary-storages/{primary}")["capacity"]["allocated"])


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def await_task(stack: Stack, command: str, what: str, task: str = "",
               timeout: float = 30) -> None:
    """Waits until the agent runs a `command` task (whose id holds `task`): the moment
    a test kills the controller in."""
    deadline = time.monotonic() + timeout
    while not any(t["command"] == command and task in str(t["task_id"])
                  for t in debug_tasks(stack.agent_debug)["running"]):
        assert time.monotonic() < deadline, f"{what} never started"
        time.sleep(0.05)


def raw_spec(path: str) -> str:
    """A raw file as qemu-io opens it without probing its format."""
    return (f"json:{{\"driver\": \"raw\", \"file\": {{\"driver\": \"file\", "
            f"\"filename\": \"{path}\"}}}}")


def second_san(cloud: Cloud) -> str:
    """Another iSCSI storage of the same server, under its own target prefix."""
    portal = cloud.api.get(f"/v1/primary-storages/{cloud.primary}")["config"]["portal"]
    return str(cloud.wait(cloud.api.post("/v1/primary-storages", {
        "name": "san-2", "type": "iscsi", "overprovision_factor": 4.0,
        "config": {"server_host_id": cloud.server, "path": str(cloud.state / "iscsi-2"),
                   "portal": portal, "target_prefix": "iqn.2026-11.org.strata.second"},
        "hosts": [cloud.host_a]}))["resource_id"])


class Patterns:
    """One 64 KiB region per write, each with its own pattern, all checked every time."""

    def __init__(self) -> None:
        self.written: list[int] = []

    def write(self, path: str) -> None:
        pattern = 0x21 + len(self.written)
        qemu_io(path, f"write -P {pattern} {2 + len(self.written)}M 64k")
        self.written.append(pattern)

    def check(self, path: str, image: bool = True) -> None:
        reads = [f"read -P {p} {2 + i}M 64k" for i, p in enumerate(self.written)]
        qemu_io(path, *reads, *(IMAGE_PATTERN if image else ()))


def test_root_volume_between_local_and_nfs_every_way(
        stack: Stack, nfs: NfsServer, file_server: FileServer, image_dir: Path,
        tmp_path: Path) -> None:
    """local -> local -> nfs -> nfs -> local, one host reaching every storage: each copy
    sits on the destination's image cache (fetched there when missing), the source goes,
    and the capacity moves with the volume."""
    share_a, share_b = nfs.share("mig-a"), nfs.share("mig-b")
    local_b = local_storage(stack, "local-b", tmp_path / "primary-b", stack.host_id)
    nfs_a = nfs_storage(stack, nfs, share_a, [stack.host_id])
    nfs_b = nfs_storage(stack, nfs, share_b, [stack.host_id])
    image = register(stack, file_server, image_dir, stack.backup_id, "base")
    vol = volume(stack, stack.primary_id, name="root", image_id=image["id"], size=64 * MIB)
    patterns = Patterns()
    patterns.write(vol["path"])
    dirs = {stack.primary_id: stack.primary_path, local_b: tmp_path / "primary-b",
            nfs_a: share_a, nfs_b: share_b}
    caches = {stack.primary_id: str(stack.primary_path / "imagecache" / image["id"]),
              local_b: str(tmp_path / "primary-b" / "imagecache" / image["id"]),
              nfs_a: nfs.url(share_a / "imagecache" / image["id"]),
              nfs_b: nfs.url(share_b / "imagecache" / image["id"])}
    where, cached = stack.primary_id, {stack.primary_id}
    for dest in (local_b, nfs_a, nfs_b, stack.primary_id):
        before_src, before_dest = allocated(stack, where), allocated(stack, dest)
        vol = migrate(stack, vol, dest)
        assert chain(vol["path"]) == [vol["path"], caches[dest]], "rebased, not flattened"
        patterns.check(vol["path"])
        assert names(dirs[where] / "volumes") == [], "the source is removed"
        assert names(dirs[dest] / "volumes") == [f"{vol['id']}.qcow2"]
        assert allocated(stack, where) == before_src - 64 * MIB
        cache_size = 0 if dest in cached else int(image["size"])
        assert allocated(stack, dest) == before_dest + 64 * MIB + cache_size
        cached.add(dest)
        patterns.write(vol["path"])
        where = dest
    patterns.check(vol["path"])
    # The CLI moves it too.
    strata(stack, "volumes", "migrate", vol["id"], local_b, "--wait")
    patterns.check(stack.api.get(f"/v1/volumes/{vol['id']}")["path"])
    strata(stack, "volumes", "migrate", vol["id"], nfs_a, "--wait")
    # A second storage row over the same export is the same directory: refused, and the
    # volume's file is untouched.
    again = stack.wait(stack.api.post("/v1/primary-storages", {
        "name": "nfs-again", "type": "nfs", "hosts": [stack.host_id],
        "config": {"server": nfs.server, "export": str(share_a), "mode": "libnfs"}}))
    with pytest.raises(ApiError) as refused:
        stack.api.post(f"/v1/volumes/{vol['id']}/migrate",
                       {"primary_storage_id": again["resource_id"]})
    assert refused.value.status == 409 and refused.value.code == "same_directory"
    patterns.check(stack.api.get(f"/v1/volumes/{vol['id']}")["path"])


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_volume_with_snapshots_carries_its_tree(
        stack: Stack, nfs: NfsServer, file_server: FileServer, image_dir: Path) -> None:
    """local -> NFS -> local with two snapshots: every layer is copied onto its parent's
    copy (the oldest onto the destination's image cache), each snapshot row follows with
    its capacity, the source chain goes; revert and merge work on the moved chain. A copy
    that fails part way leaves the source whole and no layer on the destination."""
    share = nfs.share("mig-snap")
    nfs_a = nfs_storage(stack, nfs, share, [stack.host_id])
    image = register(stack, file_server, image_dir, stack.backup_id, "base")
    vol = volume(stack, stack.primary_id, name="snapped", image_id=image["id"],
                 size=16 * MIB)
    qemu_io(vol["path"], "write -P 0x31 2M 64k")
    s1 = take(stack, vol["id"], "s1")
    qemu_io(stack.api.get(f"/v1/volumes/{vol['id']}")["path"], "write -P 0x32 3M 64k")
    s2 = take(stack, vol["id"], "s2")
    qemu_io(stack.api.get(f"/v1/volumes/{vol['id']}")["path"], "write -P 0x33 4M 64k")
    views = {s1["id"]: ("read -P 0x31 2M 64k", "read -P 0 3M 64k", *IMAGE_PATTERN),
             s2["id"]: ("read -P 0x31 2M 64k", "read -P 0x32 3M 64k", "read -P 0 4M 64k"),
             "active": ("read -P 0x31 2M 64k", "read -P 0x32 3M 64k",
                        "read -P 0x33 4M 64k", *IMAGE_PATTERN)}
    dirs = {stack.primary_id: stack.primary_path, nfs_a: share}
    caches = {stack.primary_id: str(stack.primary_path / "imagecache" / image["id"]),
              nfs_a: nfs.url(share / "imagecache" / image["id"])}
    held = 3 * 16 * MIB
    where = stack.primary_id
    for dest in (nfs_a, stack.primary_id):
        before_src, before_dest = allocated(stack, where), allocated(stack, dest)
        files = names(dirs[where] / "volumes")
        vol = migrate(stack, vol, dest)
        snaps = {s["id"]: stack.api.get(f"/v1/snapshots/{s['id']}") for s in (s1, s2)}
        assert {s["primary_storage_id"] for s in snaps.values()} == {dest}
        paths = [vol["path"], snaps[s2["id"]]["path"], snaps[s1["id"]]["path"]]
        assert chain(vol["path"]) == [*paths, caches[dest]], "the chain, rebased"
        for key, path in ((s1["id"], paths[2]), (s2["id"], paths[1]), ("active", paths[0])):
            read_shared(path, *views[key])
        assert names(dirs[dest] / "volumes") == files, "each layer keeps its name"
        assert names(dirs[where] / "volumes") == [], "the source chain is removed"
        assert allocated(stack, where) == before_src - held
        cache_size = 0 if dest == stack.primary_id else int(image["size"])
        assert allocated(stack, dest) == before_dest + held + cache_size
        where = dest
    vol = revert(stack, vol["id"], s1["id"])
    qemu_io(vol["path"], "read -P 0x31 2M 64k", "read -P 0 3M 64k", "read -P 0 4M 64k")
    stack.wait(stack.api.delete(f"/v1/snapshots/{s1['id']}"))
    read_shared(stack.api.get(f"/v1/snapshots/{s2['id']}")["path"], *views[s2["id"]])
    qemu_io(vol["path"], "read -P 0x31 2M 64k", "read -P 0 3M 64k", *IMAGE_PATTERN)

    # The destination already has a file of the active layer's name: the snapshots are
    # copied, the active layer is not, and the job's clean-up removes every layer it
    # named there; the volume is ready where it was, its chain whole, the ledger as it was.
    src_files = names(stack.primary_path / "volumes")
    (share / "volumes").mkdir(exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    str(share / "volumes" / Path(vol["path"]).name), "1M"], check=True)
    before = allocated(stack, stack.primary_id), allocated(stack, nfs_a)
    failed = stack.wait(stack.api.post(f"/v1/volumes/{vol['id']}/migrate",
                                       {"primary_storage_id": nfs_a}), ok=False)
    assert failed["state"] == "failed" and "already exists" in failed["error"]["message"]
    shown = stack.api.get(f"/v1/volumes/{vol['id']}")
    assert shown["state"] == "ready" and shown["primary_storage_id"] == stack.primary_id
    assert names(share / "volumes") == []
    assert names(stack.primary_path / "volumes") == src_files
    assert (allocated(stack, stack.primary_id), allocated(stack, nfs_a)) == before
    qemu_io(vol["path"], "read -P 0x31 2M 64k", "read -P 0 3M 64k", *IMAGE_PATTERN)


def test_staged_through_backup_storage_when_no_host_reaches_both(
        stack: Stack, file_server: FileServer, image_dir: Path, tmp_path: Path) -> None:
    """Two hosts, a local storage each: the volume goes up to the dir backup storage from
    host A and comes down on host B (sha256-checked both ways), where it is rebased onto
    the image cache fetched there; nothing is left staged on either side or in the
    backup storage. Then a staged migration whose controller is killed while host A
    stages, and whose job fails after the restart (host B gone meanwhile): the volume is
    ready where it was and the staged copy is removed."""
    agent_b, debug_b = start_agent(tmp_path / "agent-b")
    try:
        host_b = enrol_host(stack.api, "host-b", agent_b)
        local_b = local_storage(stack, "local-b", tmp_path / "primary-b", host_b)
        image = register(stack, file_server, image_dir, stack.backup_id, "base")
        vol = volume(stack, stack.primary_id, name="root", image_id=image["id"])
        patterns = Patterns()
        patterns.write(vol["path"])
        images_before = names(stack.backup_path / "images")
        vol = migrate(stack, vol, local_b)
        cache_b = str(tmp_path / "primary-b" / "imagecache" / image["id"])
        assert chain(vol["path"]) == [vol["path"], cache_b], "rebased onto the cache"
        patterns.check(vol["path"])
        assert names(tmp_path / "primary-b" / "volumes") == [f"{vol['id']}.qcow2"]
        assert names(stack.primary_path / "volumes") == []
        assert names(stack.backup_path / "images") == images_before
        commands = {t["command"] for t in debug_tasks(debug_b)["recent"]}
        assert {"copy_image", "clone_layer"} <= commands and "copy_volume" not in commands

        big = volume(stack, stack.primary_id, name="big", size=1024 * MIB)
        qemu_io(big["path"], "write -P 0x3c 0 1000M")
        before_b = allocated(stack, local_b)
        accepted = stack.api.post(f"/v1/volumes/{big['id']}/migrate",
                                  {"primary_storage_id": local_b})
        await_task(stack, "copy_volume", "the staging")
        stack.controller.stop(signal.SIGKILL)
        deadline = time.monotonic() + 60
        while any(t["command"] == "copy_volume" for t in
                  debug_tasks(stack.agent_debug)["running"]):
            assert time.monotonic() < deadline, "the staging never ended"
            time.sleep(0.05)
        staged = f"{big['id']}.staged.qcow2"
        assert staged in names(stack.primary_path / "volumes")
        agent_b.stop()
        db = sqlite3.connect(stack.db_url.removeprefix("sqlite:///"))
        with db:
            db.execute("UPDATE hosts SET state = 'disconnected' WHERE id = ?", (host_b,))
        db.close()
        stack.restart_controller()
        failed = stack.wait(accepted, ok=False)
        assert failed["error"]["code"] == "no_connected_host", failed
        shown = stack.api.get(f"/v1/volumes/{big['id']}")
        assert shown["state"] == "ready" and shown["primary_storage_id"] == stack.primary_id
        assert names(stack.primary_path / "volumes") == [f"{big['id']}.qcow2"]
        assert names(stack.backup_path / "images") == images_before
        qemu_io(big["path"], "read -P 0x3c 0 1M", "read -P 0x3c 999M 1M")
        assert allocated(stack, local_b) == before_b
    finally:
        agent_b.stop()


def test_controller_killed_mid_migration(stack: Stack, tmp_path: Path) -> None:
    """kill -9 of the controller while the agent copies: the restarted controller resumes
    the job, which re-attaches to the same agent task; all data arrives, the source is
    removed, and no temporary is left on either storage."""
    local_b = local_storage(stack, "local-b", tmp_path / "primary-b", stack.host_id)
    vol = volume(stack, stack.primary_id, name="big", size=1024 * MIB)
    qemu_io(vol["path"], "write -P 0x3c 0 1000M")
    patterns = Patterns()
    patterns.write(vol["path"])
    accepted = stack.api.post(f"/v1/volumes/{vol['id']}/migrate",
                              {"primary_storage_id": local_b})
    await_task(stack, "copy_volume", "the copy")
    assert stack.api.get(f"/v1/volumes/{vol['id']}")["state"] == "migrating"
    stack.controller.stop(signal.SIGKILL)
    # While no controller runs, the source is the volume, whole (read beside the copy's
    # shared lock).
    read_shared(vol["path"], "read -P 0x3c 0 1M", "read -P 0x3c 999M 1M")
    stack.restart_controller()
    stack.wait(accepted)
    moved = stack.api.get(f"/v1/volumes/{vol['id']}")
    assert moved["primary_storage_id"] == local_b and moved["state"] == "ready"
    copies = [t for t in debug_tasks(stack.agent_debug)["recent"]
              if t["command"] == "copy_volume"]
    assert len(copies) == 1, "the resumed job re-attaches, it does not copy again"
    qemu_io(moved["path"], "read -P 0x3c 0 1M", "read -P 0x3c 999M 1M")
    patterns.check(moved["path"], image=False)
    assert names(stack.primary_path / "volumes") == []
    assert names(tmp_path / "primary-b" / "volumes") == [f"{vol['id']}.qcow2"]
    assert allocated(stack, stack.primary_id) == 0
    assert allocated(stack, local_b) == 1024 * MIB


def test_controller_killed_mid_snapshot_merge(stack: Stack) -> None:
    """kill -9 of the controller while a snapshot delete merges a large snapshot into the
    active layer: after restart the delete completes, every pattern reads as before, and
    the volume directory holds the active layer and nothing else."""
    vol = volume(stack, stack.primary_id, name="merge", size=1024 * MIB)
    qemu_io(vol["path"], "write -P 0x4d 0 1000M")
    snap = take(stack, vol["id"], "s1")
    vol = stack.api.get(f"/v1/volumes/{vol['id']}")
    qemu_io(vol["path"], "write -P 0x2e 0 64k")
    accepted = stack.api.delete(f"/v1/snapshots/{snap['id']}")
    await_task(stack, "delete_snapshot", "the merge")
    stack.controller.stop(signal.SIGKILL)
    stack.restart_controller()
    stack.wait(accepted)
    vol = stack.api.get(f"/v1/volumes/{vol['id']}")
    assert vol["snapshot_id"] is None and chain(vol["path"]) == [vol["path"]]
    qemu_io(vol["path"], "read -P 0x2e 0 64k", "read -P 0x4d 64k 1M",
            "read -P 0x4d 999M 1M")
    assert names(stack.primary_path / "volumes") == [Path(vol["path"]).name]
    assert stack.api.get(f"/v1/snapshots/{snap['id']}")["state"] == "destroyed"


LAYER = 256 * MIB


@pytest.mark.parametrize("outcome", ["completes", "fails"])
def test_controller_killed_mid_chain_migration(
        stack: Stack, file_server: FileServer, image_dir: Path, tmp_path: Path,
        outcome: str) -> None:
    """kill -9 of the controller while the agent copies the second of a linked clone's
    three snapshot layers (the first one's copy done, the rest not begun). The restarted
    controller resumes the job, which re-attaches to the layer copies already made or
    under way and copies the rest: the chain lands on the destination, every snapshot
    and the active layer read as before, the source chain goes. Or ("fails") a file of
    the active layer's name waits on the destination meanwhile, so the resumed job fails
    at the last copy: the volume is ready on the source, its chain untouched, and every
    layer the job copied is removed from the destination. Either way the volume
    directories hold one chain, on one side, and no temporary."""
    local_b = local_storage(stack, "local-b", tmp_path / "primary-b", stack.host_id)
    image = register(stack, file_server, image_dir, stack.backup_id, "base")
    vol = volume(stack, stack.primary_id, name="chain", image_id=image["id"],
                 size=1024 * MIB)
    # Before each snapshot a layer of its own (`LAYER` bytes past the last one's) and a
    # 64 KiB write over the start of the first; then one more into the active layer.
    patterns = [0x41, 0x42, 0x43]
    snaps: list[dict[str, Any]] = []
    for i, pattern in enumerate(patterns):
        qemu_io(vol["path"], f"write -P {pattern} {8 * MIB + i * LAYER} {LAYER}",
                f"write -P {pattern} 8M 64k")
        snaps.append(take(stack, vol["id"], f"s{i + 1}"))
        vol = stack.api.get(f"/v1/volumes/{vol['id']}")
    qemu_io(vol["path"], "write -P 0x44 8M 64k", "write -P 0x44 1000M 64k")

    def view(layers: int, top: int) -> list[str]:
        """What a file holding the first `layers` layers reads; `top`: the last pattern
        written over the start of the first layer."""
        reads = [*IMAGE_PATTERN, f"read -P {top} 8M 64k"]
        for i, pattern in enumerate(patterns[:layers]):
            start = 8 * MIB + i * LAYER
            reads += [f"read -P {pattern} {start + MIB} 1M",
                      f"read -P {pattern} {start + LAYER - MIB} 1M"]
        return [*reads, f"read -P 0 {8 * MIB + layers * LAYER} 1M"]

    views = {s["id"]: view(i + 1, patterns[i]) for i, s in enumerate(snaps)}
    active = [*view(3, 0x44), "read -P 0x44 1000M 64k"]

    def check_chain(shown: dict[str, Any], cache: str) -> None:
        """`read_chain` of the volume's row `shown`, its snapshot rows on its storage."""
        layers = {s["id"]: dict(stack.api.get(f"/v1/snapshots/{s['id']}")) for s in snaps}
        assert {s["primary_storage_id"] for s in layers.values()} == {
            shown["primary_storage_id"]}
        read_chain(shown["path"], [layers[s["id"]]["path"] for s in snaps], cache)

    def read_chain(top: str, frozen: list[str], cache: str) -> None:
        """The chain of the active layer `top` over the snapshots' files `frozen` (oldest
        first) on `cache`, each reading as written (beside a copy's shared lock)."""
        assert chain(top) == [top, *reversed(frozen), cache]
        for snap, path in zip(snaps, frozen, strict=True):
            read_shared(path, *views[snap["id"]])
        read_shared(top, *active)

    cache_a = str(stack.primary_path / "imagecache" / image["id"])
    cache_b = str(tmp_path / "primary-b" / "imagecache" / image["id"])
    check_chain(vol, cache_a)
    files = names(stack.primary_path / "volumes")
    assert len(files) == 4
    held = 4 * 1024 * MIB
    before = allocated(stack, stack.primary_id), allocated(stack, local_b)
    accepted = stack.api.post(f"/v1/volumes/{vol['id']}/migrate",
                              {"primary_storage_id": local_b})
    first, second = (f".copy-{Path(s['path']).name}" for s in snaps[:2])
    await_task(stack, "copy_volume", "the second layer's copy", second, timeout=60)
    stack.controller.stop(signal.SIGKILL)
    tasks = debug_tasks(stack.agent_debug)
    assert [t["state"] for t in tasks["recent"] if first in str(t["task_id"])] == [
        "succeeded"], "the first layer was copied before the kill"
    assert any(second in str(t["task_id"]) for t in tasks["running"]), (
        "the kill landed while the second layer was being copied")
    assert Path(snaps[0]["path"]).name in names(tmp_path / "primary-b" / "volumes")
    # While no controller runs, the source chain is the volume, whole.
    read_chain(vol["path"], [s["path"] for s in snaps], cache_a)
    if outcome == "fails":
        (tmp_path / "primary-b" / "volumes").mkdir(exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                        str(tmp_path / "primary-b" / "volumes" / Path(vol["path"]).name),
                        "1M"], check=True)
    stack.restart_controller()
    job = stack.wait(accepted, ok=outcome == "completes")
    shown = stack.api.get(f"/v1/volumes/{vol['id']}")
    assert shown["state"] == "ready", shown
    copies = [str(t["task_id"]) for t in debug_tasks(stack.agent_debug)["recent"]
              if t["command"] == "copy_volume"]
    assert len(copies) == 4, "one copy per layer: those under way re-attached"
    if outcome == "completes":
        assert shown["primary_storage_id"] == local_b and job["result"]["path"] == shown["path"]
        check_chain(shown, cache_b)
        assert names(tmp_path / "primary-b" / "volumes") == files, "each layer keeps its name"
        assert names(stack.primary_path / "volumes") == [], "the source chain is removed"
        assert allocated(stack, stack.primary_id) == before[0] - held
        assert allocated(stack, local_b) == before[1] + held + int(image["size"])
    else:
        assert job["state"] == "failed" and "already exists" in job["error"]["message"], job
        assert shown["primary_storage_id"] == stack.primary_id
        check_chain(shown, cache_a)
        assert names(stack.primary_path / "volumes") == files, "the source chain is whole"
        assert names(tmp_path / "primary-b" / "volumes") == [], "no layer left behind"
        assert allocated(stack, stack.primary_id) == before[0]
        assert allocated(stack, local_b) == before[1] + int(image["size"])
    # The image cache is all each side keeps besides the chain.
    for directory in (stack.primary_path, tmp_path / "primary-b"):
        assert names(directory / "imagecache") == [image["id"]]


def test_bad_migration_requests(stack: Stack, tmp_path: Path) -> None:
    api = stack.api
    op = api.get("/v1/openapi.json")["paths"]["/v1/volumes/{id}/migrate"]["post"]
    assert "operator" in op["description"] and "202" in op["responses"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/VolumeMigrate")
    local_b = local_storage(stack, "local-b", tmp_path / "primary-b", stack.host_id)
    # An NFS storage whose server does not answer: its first attach fails, it is in error.
    broken = str(stack.wait(api.post("/v1/primary-storages", {
        "name": "broken", "type": "nfs", "hosts": [stack.host_id],
        "config": {"server": "127.0.0.2", "export": "/nowhere", "mode": "libnfs"}}),
        ok=False)["resource_id"])
    assert api.get(f"/v1/primary-storages/{broken}")["state"] == "error"
    vol = volume(stack, stack.primary_id, name="v", size=MIB)
    calls: list[tuple[Callable[[], object], int, str | None]] = [
        (lambda: api.post(f"/v1/volumes/{vol['id']}/migrate",
                          {"primary_storage_id": stack.primary_id}), 400, "same_storage"),
        (lambda: api.post(f"/v1/volumes/{vol['id']}/migrate",
                          {"primary_storage_id": "nope"}), 404, None),
        (lambda: api.post("/v1/volumes/nope/migrate", {"primary_storage_id": local_b}),
         404, None),
        (lambda: api.post(f"/v1/volumes/{vol['id']}/migrate", {}), 400, None),
        (lambda: api.post(f"/v1/volumes/{vol['id']}/migrate",
                          {"primary_storage_id": broken}), 409, "storage_not_ready"),
    ]
    for call, status, code in calls:
        with pytest.raises(ApiError) as refused:
            call()
        assert refused.value.status == status, refused.value
        if code:
            assert refused.value.code == code, refused.value

    # A volume another job holds: a migration under way refuses a second, a resize, a
    # snapshot, a delete.
    big = volume(stack, stack.primary_id, name="big", size=1024 * MIB)
    qemu_io(big["path"], "write -P 0x3c 0 1000M")
    accepted = api.post(f"/v1/volumes/{big['id']}/migrate", {"primary_storage_id": local_b})
    await_task(stack, "copy_volume", "the copy")
    busy: list[Callable[[], object]] = [
        lambda: api.post(f"/v1/volumes/{big['id']}/migrate",
                         {"primary_storage_id": local_b}),
        lambda: api.post(f"/v1/volumes/{big['id']}/resize", {"size": 2048 * MIB}),
        lambda: api.post(f"/v1/volumes/{big['id']}/snapshots", {"name": "x"}),
        lambda: api.delete(f"/v1/volumes/{big['id']}"),
    ]
    for call in busy:
        with pytest.raises(ApiError) as refused:
            call()
        assert refused.value.status == 409, refused.value
    stack.wait(accepted)
    for v in (vol, big):
        assert api.get(f"/v1/volumes/{v['id']}")["state"] == "ready"


def test_between_local_and_iscsi(cloud: Cloud, nfs: NfsServer, file_server: FileServer,
                                 image_dir: Path) -> None:
    """The iSCSI storage server also serves a local storage, an NFS one (libnfs) and a
    second iSCSI storage: its agent fills a LUN from the local volume's chain (and compares
    them), copies a LUN into a qcow2 file, a volume on NFS into a LUN and back, and a LUN
    into a LUN of the other storage; a granted host reads the migrated LUN through
    libiscsi. A local storage on another host is staged through the dir backup storage
    from iSCSI, and refused towards it (no host reaches both, and a LUN is not filled
    from a backup storage)."""
    api = cloud.api
    server_dir, kvm_dir = cloud.state / "local-server", cloud.state / "local-kvm"
    on_server = str(cloud.wait(api.post("/v1/primary-storages", {
        "name": "local-server", "type": "local", "config": {"path": str(server_dir)},
        "hosts": [cloud.server]}))["resource_id"])
    on_kvm = str(cloud.wait(api.post("/v1/primary-storages", {
        "name": "local-kvm", "type": "local", "config": {"path": str(kvm_dir)},
        "hosts": [cloud.host_a]}))["resource_id"])
    path, _ = make_image(image_dir, "base.qcow2")
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 1M 1M", str(path)], check=True,
                   capture_output=True)
    image = cloud.wait(api.post("/v1/images", {
        "name": "base", "url": file_server.url(path.name), "backup_storage_id": cloud.backup,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    made = cloud.wait(api.post("/v1/volumes", {"name": "root", "primary_storage_id": on_server,
                                               "image_id": image["resource_id"]}))
    vol = api.get(f"/v1/volumes/{made['resource_id']}")
    patterns = Patterns()
    patterns.write(vol["path"])

    def move(dest: str) -> dict[str, Any]:
        cloud.wait(api.post(f"/v1/volumes/{vol['id']}/migrate", {"primary_storage_id": dest}))
        moved = dict(api.get(f"/v1/volumes/{vol['id']}"))
        assert moved["state"] == "ready" and moved["primary_storage_id"] == dest
        return moved

    vol = move(cloud.primary)
    assert vol["format"] == "raw" and vol["path"] == str(cloud.luns / f"{vol['id']}.raw")
    read_shared(raw_spec(vol["path"]),
                *[f"read -P {p} {2 + i}M 64k" for i, p in enumerate(patterns.written)],
                *IMAGE_PATTERN)
    assert names(server_dir / "volumes") == []
    job = cloud.wait(api.post(f"/v1/volumes/{vol['id']}/access", {"host_id": cloud.host_a}))
    out = iscsi_io(spec(job["result"]["uri"], IQN_A), "read -P 0x21 2M 64k",
                   "write -P 0x22 3M 64k")
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out
    patterns.written.append(0x22)
    with pytest.raises(ApiError) as refused:
        api.post(f"/v1/volumes/{vol['id']}/migrate", {"primary_storage_id": on_server})
    assert refused.value.status == 409 and refused.value.code == "volume_in_use"
    cloud.wait(api.delete(f"/v1/volumes/{vol['id']}/access/{cloud.host_a}"))

    vol = move(on_server)
    assert vol["format"] == "qcow2" and chain(vol["path"]) == [vol["path"]]
    patterns.check(vol["path"])
    assert names(cloud.luns) == []

    def read_lun(path: str) -> None:
        read_shared(raw_spec(path),
                    *[f"read -P {p} {2 + i}M 64k" for i, p in enumerate(patterns.written)],
                    *IMAGE_PATTERN)

    share = nfs.share("mig-iscsi")
    on_nfs = nfs_storage(cloud, nfs, share, [cloud.server])  # type: ignore[arg-type]
    san_2 = second_san(cloud)
    vol = move(on_nfs)
    patterns.check(vol["path"])
    vol = move(cloud.primary)
    read_lun(vol["path"])
    assert names(share / "volumes") == []
    vol = move(san_2)
    assert vol["path"] == str(cloud.state / "iscsi-2" / "luns" / f"{vol['id']}.raw")
    assert vol["export"]["target"].startswith("iqn.2026-11.org.strata.second:")
    read_lun(vol["path"])
    assert [n for n in names(cloud.luns) if not n.startswith("lost")] == []
    vol = move(on_nfs)
    patterns.check(vol["path"])
    assert names(cloud.state / "iscsi-2" / "luns") == []
    vol = move(cloud.primary)
    vol = move(on_kvm)
    assert names(kvm_dir / "volumes") == [f"{vol['id']}.qcow2"]
    assert [n for n in names(cloud.luns) if not n.startswith("lost")] == []
    patterns.check(vol["path"])
    with pytest.raises(ApiError) as refused:
        api.post(f"/v1/volumes/{vol['id']}/migrate", {"primary_storage_id": cloud.primary})
    assert refused.value.status == 409 and refused.value.code == "no_migration_path"


def test_a_lun_tree_moves_every_way(cloud: Cloud, nfs: NfsServer) -> None:
    """A LUN with a tree of snapshots (s2 on s1, the volume reverted to s1 and written
    since) moves iSCSI -> local -> second iSCSI -> NFS -> iSCSI on the storage server:
    onto qcow2 storages each snapshot becomes a layer on its parent's copy and the
    active layer sits on s1's; onto iSCSI each is a whole raw copy beside the LUN. Every
    snapshot and the volume read their own patterns at every stop, nothing stays behind,
    and revert and delete work on the tree at the end."""
    api = cloud.api
    server_dir = cloud.state / "local-server"
    on_server = str(cloud.wait(api.post("/v1/primary-storages", {
        "name": "local-server", "type": "local", "config": {"path": str(server_dir)},
        "hosts": [cloud.server]}))["resource_id"])
    share = nfs.share("lun-tree")
    on_nfs = nfs_storage(cloud, nfs, share, [cloud.server])  # type: ignore[arg-type]
    san_2 = second_san(cloud)
    stores = (cloud.primary, on_server, san_2, on_nfs)
    before = {store: int(api.get(f"/v1/primary-storages/{store}")["capacity"]["allocated"])
              for store in stores}
    made = cloud.wait(api.post("/v1/volumes", {"name": "tree", "size": 16 * MIB,
                                               "primary_storage_id": cloud.primary}))
    vol = api.get(f"/v1/volumes/{made['resource_id']}")
    lun = vol["path"]

    def lun_io(*commands: str) -> None:
        out = subprocess.run(["qemu-io", "-f", "raw", *(a for c in commands
                                                        for a in ("-c", c)), lun],
                             capture_output=True, text=True)
        assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out

    def snapshot(name: str) -> str:
        job = cloud.wait(api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": name}))
        return str(job["resource_id"])

    lun_io("write -P 0x31 2M 64k")
    s1 = snapshot("s1")
    lun_io("write -P 0x32 3M 64k")
    s2 = snapshot("s2")
    lun_io("write -P 0x33 4M 64k")
    cloud.wait(api.post(f"/v1/volumes/{vol['id']}/revert", {"snapshot_id": s1}))
    lun_io("read -P 0 4M 64k", "write -P 0x34 5M 64k")
    views = {s1: ("read -P 0x31 2M 64k", "read -P 0 3M 64k", "read -P 0 5M 64k"),
             s2: ("read -P 0x31 2M 64k", "read -P 0x32 3M 64k", "read -P 0 4M 64k"),
             "active": ("read -P 0x31 2M 64k", "read -P 0 3M 64k", "read -P 0 4M 64k",
                        "read -P 0x34 5M 64k")}
    luns = {cloud.primary: cloud.state / "iscsi", san_2: cloud.state / "iscsi-2"}
    files = {on_server: server_dir / "volumes", on_nfs: share / "volumes"}
    for dest in (on_server, san_2, on_nfs, cloud.primary):
        vol = migrate(cloud, vol, dest)  # type: ignore[arg-type]
        snaps = {sid: api.get(f"/v1/snapshots/{sid}") for sid in (s1, s2)}
        assert {s["primary_storage_id"] for s in snaps.values()} == {dest}
        paths = {s1: snaps[s1]["path"], s2: snaps[s2]["path"], "active": vol["path"]}
        if dest in luns:
            assert vol["format"] == "raw"
            assert vol["path"] == str(luns[dest] / "luns" / f"{vol['id']}.raw")
            assert names(luns[dest] / "snapshots") == sorted(
                f"{vol['id']}.{sid}.raw" for sid in (s1, s2))
            for key, path in paths.items():
                read_shared(raw_spec(path), *views[key])
        else:
            assert vol["format"] == "qcow2"
            assert chain(paths[s2])[1:] == chain(paths["active"])[1:] == [paths[s1]]
            assert chain(paths[s1]) == [paths[s1]]
            assert names(files[dest]) == sorted(Path(p).name for p in paths.values())
            for key, path in paths.items():
                read_shared(path, *views[key])
        for store, directory in (*files.items(), *((k, v / "luns") for k, v in luns.items()),
                                 *((k, v / "snapshots") for k, v in luns.items())):
            if store != dest:
                assert names(directory) == [], f"{directory} keeps files"
    lun = vol["path"]
    cloud.wait(api.post(f"/v1/volumes/{vol['id']}/revert", {"snapshot_id": s2}))
    lun_io(*views[s2])
    cloud.wait(api.delete(f"/v1/snapshots/{s1}"))
    read_shared(raw_spec(api.get(f"/v1/snapshots/{s2}")["path"]), *views[s2])
    cloud.wait(api.delete(f"/v1/volumes/{vol['id']}?cascade=true"))
    assert names(luns[cloud.primary] / "snapshots") == []
    assert {store: int(api.get(f"/v1/primary-storages/{store}")["capacity"]["allocated"])
            for store in stores} == before
