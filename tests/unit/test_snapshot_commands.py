"""The agent's snapshot commands on real qemu-img and qemu-io in a temporary directory:
idempotent runs, merges cut short and finished by a second run, and chains that never
end outside the storage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.clones import OverlayTemplates
from agent.commands.images import copy_image
from agent.commands.snapshots import (
    clone_layer,
    delete_snapshot,
    revert_snapshot,
    take_snapshot,
)
from agent.config import AgentConfig
from agent.executor import Executor
from agent.files import FileStores
from agent.images.check import Inspector
from agent.images.urlpolicy import UrlPolicy
from agent.nfs.mounts import MountTable
from agent.services import AgentServices
from agent.tools.qemuimg import QemuImg
from shared.errors import Conflict, NotFound, OperationFailed
from shared.protocol.files import BackingFile, CopyImagePayload
from shared.protocol.volumes import (
    CloneLayerPayload,
    DeleteSnapshotPayload,
    RevertSnapshotPayload,
    TakeSnapshotPayload,
)


def services(tmp_path: Path) -> AgentServices:
    config = AgentConfig(state_dir=str(tmp_path / "state"))
    files = FileStores(nfs_timeout=5)
    executor = Executor()
    qemu_img = QemuImg(executor)
    return AgentServices(config=config, agent_id="agent-1", instance="i-1", executor=executor,
                         qemu_img=qemu_img, files=files, clones=OverlayTemplates(qemu_img),
                         mounts=MountTable(executor, files, str(tmp_path / "mounts.json")),
                         running_tasks=set, task_ended=lambda _: False, url_policy=UrlPolicy(),
                         inspector=Inspector(qemu_img, files, config.max_virtual_size,
                                             config.max_image_size),
                         http=None)  # type: ignore[arg-type]  # no HTTP here


def qemu_io(path: Path, *commands: str) -> None:
    argv = ["qemu-io"]
    for cmd in commands:
        argv += ["-c", cmd]
    out = subprocess.run([*argv, str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out


def backing_of(path: Path) -> str | None:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)],
                         check=True, capture_output=True, text=True).stdout
    backing = json.loads(out).get("backing-filename")
    return None if backing is None else str(backing)


def no_progress(pct: float) -> None:
    return None


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path]:
    """A volume directory with a volume `vol.qcow2`, a linked clone of the cache file
    `img` (pattern 0x5a at 1M)."""
    volumes, cache = tmp_path / "volumes", tmp_path / "imagecache"
    volumes.mkdir()
    cache.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(cache / "img"), "8M"],
                   check=True)
    qemu_io(cache / "img", "write -P 0x5a 1M 64k")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(cache / "img"),
                    "-F", "qcow2", str(volumes / "vol.qcow2")], check=True)
    return volumes, cache


async def test_take_is_idempotent_and_never_overwrites(tmp_path: Path,
                                                       store: tuple[Path, Path]) -> None:
    volumes, _ = store
    svc = services(tmp_path)
    qemu_io(volumes / "vol.qcow2", "write -P 1 0 64k")
    payload = TakeSnapshotPayload(dir=str(volumes), active="vol.qcow2", overlay="vol.a.qcow2")
    first = await take_snapshot(svc, payload, no_progress)
    assert first.path == str(volumes / "vol.a.qcow2")
    assert first.snapshot_path == str(volumes / "vol.qcow2") and first.virtual_size == 8 << 20
    assert backing_of(volumes / "vol.a.qcow2") == str(volumes / "vol.qcow2")
    qemu_io(volumes / "vol.a.qcow2", "write -P 2 0 64k")
    again = await take_snapshot(svc, payload, no_progress)
    assert again.path == first.path
    qemu_io(volumes / "vol.a.qcow2", "read -P 2 0 64k", "read -P 0x5a 1M 64k")

    # A file of that name on another backing file is never replaced.
    with pytest.raises(Conflict):
        await take_snapshot(svc, TakeSnapshotPayload(dir=str(volumes), active="vol.a.qcow2",
                                                     overlay="vol.qcow2"), no_progress)
    with pytest.raises(NotFound):
        await take_snapshot(svc, TakeSnapshotPayload(dir=str(volumes), active="gone.qcow2",
                                                     overlay="vol.b.qcow2"), no_progress)
    assert sorted(p.name for p in volumes.iterdir()) == ["vol.a.qcow2", "vol.qcow2"]


async def test_revert_makes_a_new_layer_on_the_snapshot(tmp_path: Path,
                                                        store: tuple[Path, Path]) -> None:
    volumes, _ = store
    svc = services(tmp_path)
    qemu_io(volumes / "vol.qcow2", "write -P 1 0 64k")
    await take_snapshot(svc, TakeSnapshotPayload(dir=str(volumes), active="vol.qcow2",
                                                 overlay="vol.a.qcow2"), no_progress)
    qemu_io(volumes / "vol.a.qcow2", "write -P 2 0 64k")
    payload = RevertSnapshotPayload(dir=str(volumes), snapshot="vol.qcow2",
                                    overlay="vol.b.qcow2")
    facts = await revert_snapshot(svc, payload, no_progress)
    again = await revert_snapshot(svc, payload, no_progress)
    # The free space beside it is other tests' too: only the layer must be the same.
    assert (again.path, again.virtual_size) == (facts.path, facts.virtual_size)
    qemu_io(volumes / "vol.b.qcow2", "read -P 1 0 64k", "read -P 0x5a 1M 64k")
    qemu_io(volumes / "vol.a.qcow2", "read -P 2 0 64k")


async def test_revert_of_a_grown_volume_keeps_its_size(tmp_path: Path,
                                                       store: tuple[Path, Path]) -> None:
    """A volume grown since the snapshot stays as large: the guest's disk never shrinks
    under it, and the ledger's figure stays true."""
    volumes, _ = store
    svc = services(tmp_path)
    qemu_io(volumes / "vol.qcow2", "write -P 1 0 64k")
    small = await take_snapshot(svc, TakeSnapshotPayload(
        dir=str(volumes), active="vol.qcow2", overlay="vol.a.qcow2"), no_progress)
    grown = 4 * small.virtual_size
    facts = await revert_snapshot(svc, RevertSnapshotPayload(
        dir=str(volumes), snapshot="vol.qcow2", overlay="vol.b.qcow2", size=grown),
        no_progress)
    assert facts.virtual_size == grown
    qemu_io(volumes / "vol.b.qcow2", "read -P 1 0 64k",
            f"read -P 0 {small.virtual_size} 64k")


async def test_merge_cut_short_is_finished_by_a_second_run(tmp_path: Path,
                                                           store: tuple[Path, Path]) -> None:
    """s (vol.qcow2) with two children; one was rebased by a run that stopped there."""
    volumes, cache = store
    svc = services(tmp_path)
    qemu_io(volumes / "vol.qcow2", "write -P 1 0 64k", "write -P 1 2M 64k")
    for child in ("a", "b"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                        str(volumes / "vol.qcow2"), "-F", "qcow2",
                        str(volumes / f"{child}.qcow2")], check=True)
    qemu_io(volumes / "b.qcow2", "write -P 3 0 64k")
    subprocess.run(["qemu-img", "rebase", "-q", "-f", "qcow2", "-b", str(cache / "img"),
                    "-F", "qcow2", str(volumes / "a.qcow2")], check=True)
    payload = DeleteSnapshotPayload(dir=str(volumes), cache_dir=str(cache),
                                    snapshot="vol.qcow2", children=["a.qcow2", "b.qcow2"])
    done = await delete_snapshot(svc, payload, no_progress)
    assert done.existed
    assert sorted(p.name for p in volumes.iterdir()) == ["a.qcow2", "b.qcow2"]
    for child in ("a", "b"):
        assert backing_of(volumes / f"{child}.qcow2") == str(cache / "img")
    qemu_io(volumes / "a.qcow2", "read -P 1 0 64k", "read -P 1 2M 64k", "read -P 0x5a 1M 64k")
    qemu_io(volumes / "b.qcow2", "read -P 3 0 64k", "read -P 1 2M 64k", "read -P 0x5a 1M 64k")
    assert not (await delete_snapshot(svc, payload, no_progress)).existed


async def test_root_snapshot_without_cache_merges_into_standalone_children(
        tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    svc = services(tmp_path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(volumes / "s.qcow2"), "4M"],
                   check=True)
    qemu_io(volumes / "s.qcow2", "write -P 9 0 64k")
    await take_snapshot(svc, TakeSnapshotPayload(dir=str(volumes), active="s.qcow2",
                                                 overlay="v.qcow2"), no_progress)
    await delete_snapshot(svc, DeleteSnapshotPayload(
        dir=str(volumes), cache_dir=str(tmp_path / "imagecache"), snapshot="s.qcow2",
        children=["v.qcow2"]), no_progress)
    assert backing_of(volumes / "v.qcow2") is None
    qemu_io(volumes / "v.qcow2", "read -P 9 0 64k")


async def test_merge_never_makes_a_chain_end_outside_the_storage(
        tmp_path: Path, store: tuple[Path, Path]) -> None:
    volumes, cache = store
    svc = services(tmp_path)
    outside = tmp_path / "elsewhere.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(outside), "8M"], check=True)
    subprocess.run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-b", str(outside),
                    "-F", "qcow2", str(volumes / "vol.qcow2")], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                    str(volumes / "vol.qcow2"), "-F", "qcow2", str(volumes / "top.qcow2")],
                   check=True)
    with pytest.raises(OperationFailed) as refused:
        await delete_snapshot(svc, DeleteSnapshotPayload(
            dir=str(volumes), cache_dir=str(cache), snapshot="vol.qcow2",
            children=["top.qcow2"]), no_progress)
    assert refused.value.code == "chain_outside_storage"
    assert backing_of(volumes / "top.qcow2") == str(volumes / "vol.qcow2")
    assert (volumes / "vol.qcow2").exists()


async def test_a_child_on_something_else_is_refused(tmp_path: Path,
                                                    store: tuple[Path, Path]) -> None:
    volumes, cache = store
    svc = services(tmp_path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(volumes / "other.qcow2"),
                    "8M"], check=True)
    with pytest.raises(Conflict):
        await delete_snapshot(svc, DeleteSnapshotPayload(
            dir=str(volumes), cache_dir=str(cache), snapshot="vol.qcow2",
            children=["other.qcow2"]), no_progress)
    assert (volumes / "vol.qcow2").exists()


async def test_clone_layer_copies_onto_the_cache_and_shares_no_file(
        tmp_path: Path, store: tuple[Path, Path]) -> None:
    volumes, cache = store
    svc = services(tmp_path)
    qemu_io(volumes / "vol.qcow2", "write -P 0x11 0 64k")
    backing = BackingFile(path=str(cache / "img"), format="qcow2")
    payload = CloneLayerPayload(dir=str(volumes), source="vol.qcow2", file_name="copy.qcow2",
                                backing=backing)
    facts = await clone_layer(svc, payload, no_progress)
    assert facts.path == str(volumes / "copy.qcow2") and facts.virtual_size == 8 << 20
    assert backing_of(volumes / "copy.qcow2") == str(cache / "img")
    qemu_io(volumes / "copy.qcow2", "read -P 0x11 0 64k", "read -P 0x5a 1M 64k")
    # Written to the copy, the source does not see it; a second run is the first's answer.
    qemu_io(volumes / "copy.qcow2", "write -P 0x22 0 64k")
    qemu_io(volumes / "vol.qcow2", "read -P 0x11 0 64k")
    assert (await clone_layer(svc, payload, no_progress)).path == facts.path
    qemu_io(volumes / "copy.qcow2", "read -P 0x22 0 64k")
    # Onto nothing: flat, with the image's data in it.
    flat = await clone_layer(svc, payload.model_copy(update={"file_name": "flat.qcow2",
                                                             "backing": None}), no_progress)
    assert backing_of(Path(flat.path)) is None
    qemu_io(Path(flat.path), "read -P 0x11 0 64k", "read -P 0x5a 1M 64k")
    with pytest.raises(Conflict):
        await clone_layer(svc, payload.model_copy(update={"file_name": "flat.qcow2"}),
                          no_progress)
    assert sorted(p.name for p in volumes.iterdir()) == ["copy.qcow2", "flat.qcow2",
                                                         "vol.qcow2"]


async def test_clone_layer_drops_a_restored_source_whatever_happens(
        tmp_path: Path, store: tuple[Path, Path]) -> None:
    volumes, cache = store
    svc = services(tmp_path)
    backing = BackingFile(path=str(cache / "missing"), format="qcow2")
    payload = CloneLayerPayload(dir=str(volumes), source="vol.qcow2", file_name="new.qcow2",
                                backing=backing, drop_source=True)
    with pytest.raises(OperationFailed):
        await clone_layer(svc, payload, no_progress)
    assert list(volumes.iterdir()) == [], "neither the source nor a temporary is left"


async def test_a_flattened_copy_holds_its_whole_chain(tmp_path: Path,
                                                     store: tuple[Path, Path]) -> None:
    volumes, _ = store
    svc = services(tmp_path)
    qemu_io(volumes / "vol.qcow2", "write -P 0x33 0 64k")
    out = tmp_path / "out"
    facts = await copy_image(svc, CopyImagePayload(
        src_path=str(volumes / "vol.qcow2"), dest_dir=str(out), file_name="flat",
        flatten=True), no_progress)
    assert backing_of(out / "flat") is None and facts.format == "qcow2"
    qemu_io(out / "flat", "read -P 0x33 0 64k", "read -P 0x5a 1M 64k")
    assert [p.name for p in (tmp_path / "state" / "staging").iterdir()] == []
