"""The snapshot operations of each primary storage type's KVM backend: the exact
commands, tasks and payloads, the order of a revert's steps, and the refusals."""

from __future__ import annotations

from typing import Any

import pytest

from controller.db.models import ObjectState, Snapshot
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.backend import SnapshotTaken, VolumeCreated
from controller.plugins.interfaces.stores import Primary
from controller.plugins.iscsi.kvm import ISCSI_KVM
from controller.plugins.iscsi.provider import ISCSI
from controller.plugins.local.kvm import Qcow2FileBackend
from controller.services.snapshots import chain_of
from shared.errors import Conflict
from shared.protocol.files import DELETE_FILE, DeleteFilePayload, DeleteFileResult
from shared.protocol.iscsi import (
    DELETE_LUN_SNAPSHOT,
    RESIZE_LUN,
    REVERT_LUN,
    SNAPSHOT_LUN,
    DeleteLunSnapshotPayload,
    LunResized,
    LunReverted,
    LunSnapshotFacts,
    LunSnapshotPayload,
    ResizeLunPayload,
    RevertLunPayload,
)
from shared.protocol.volumes import (
    DELETE_SNAPSHOT,
    REVERT_SNAPSHOT,
    TAKE_SNAPSHOT,
    DeleteSnapshotPayload,
    RevertSnapshotPayload,
    TakeSnapshotPayload,
)
from tests.unit.controller.fakes import CAPACITY, Call, RecordingAgent, primary, volume
from tests.unit.controller.test_backends import FILE_STORES, HOST, ISCSI_CONFIG


def file_store(kind: str) -> tuple[Qcow2FileBackend[Any], Primary[Any], str, str]:
    """FILE_STORES[kind], typed: (backend, store, volume dir, cache dir)."""
    backend, store, volumes, caches = FILE_STORES[kind]
    assert isinstance(backend, Qcow2FileBackend)
    return backend, store, str(volumes), str(caches)


def snapshot(path: str | None, **values: object) -> Snapshot:
    return Snapshot(**{"id": "snap-1", "name": "s1", "volume_id": "vol-1",
                       "primary_storage_id": "ps-1", "path": path, "size": 1 << 30,
                       "virtual_size": 1 << 30, "state": ObjectState.READY, **values})


@pytest.mark.parametrize("kind", FILE_STORES)
async def test_take_freezes_the_active_layer(kind: str, ctx: JobContext,
                                             agent: RecordingAgent) -> None:
    backend, store, volumes, _ = file_store(kind)
    vol = volume(path=f"{volumes}/vol-1.qcow2")
    taken = await backend.take_snapshot(ctx, store, vol, snapshot(vol.path), "vol-1.x.qcow2",
                                        HOST)
    assert agent.calls == [Call(HOST.address, TAKE_SNAPSHOT, "job-1.take-snap-1",
                                TakeSnapshotPayload(dir=volumes, active="vol-1.qcow2",
                                                    overlay="vol-1.x.qcow2"))]
    assert taken == SnapshotTaken(f"{volumes}/vol-1.x.qcow2", f"{volumes}/vol-1.qcow2",
                                  4 << 20, CAPACITY)


@pytest.mark.parametrize("kind", FILE_STORES)
async def test_revert_records_the_new_layer_before_dropping_the_old(
        kind: str, ctx: JobContext, agent: RecordingAgent) -> None:
    backend, store, volumes, _ = file_store(kind)
    vol = volume(path=f"{volumes}/vol-1.a.qcow2")
    switched: list[tuple[VolumeCreated, int]] = []

    async def switch(created: VolumeCreated) -> None:
        switched.append((created, len(agent.calls)))

    await backend.revert_snapshot(ctx, store, vol, snapshot(f"{volumes}/vol-1.qcow2"),
                                  "vol-1.b.qcow2", HOST, switch)
    assert agent.calls == [
        Call(HOST.address, REVERT_SNAPSHOT, "job-1.revert-vol-1.b.qcow2",
             RevertSnapshotPayload(dir=volumes, snapshot="vol-1.qcow2",
                                   overlay="vol-1.b.qcow2", size=1 << 30)),
        Call(HOST.address, DELETE_FILE, "job-1.drop-vol-1.a.qcow2",
             DeleteFilePayload(dir=volumes, file_name="vol-1.a.qcow2")),
    ]
    assert switched == [(VolumeCreated(f"{volumes}/vol-1.b.qcow2", 1 << 30, CAPACITY), 1)]


@pytest.mark.parametrize("kind", FILE_STORES)
async def test_delete_merges_into_every_child(kind: str, ctx: JobContext,
                                              agent: RecordingAgent) -> None:
    backend, store, volumes, caches = file_store(kind)
    await backend.delete_snapshot(ctx, store, snapshot(f"{volumes}/vol-1.qcow2"),
                                  [f"{volumes}/vol-1.a.qcow2", f"{volumes}/vol-1.b.qcow2"],
                                  HOST)
    assert agent.calls == [Call(HOST.address, DELETE_SNAPSHOT, "job-1.merge-snap-1",
                                DeleteSnapshotPayload(
                                    dir=volumes, cache_dir=caches, snapshot="vol-1.qcow2",
                                    children=["vol-1.a.qcow2", "vol-1.b.qcow2"]))]


@pytest.mark.parametrize("kind", FILE_STORES)
async def test_no_command_names_a_file_outside_the_volume_directory(
        kind: str, ctx: JobContext, agent: RecordingAgent) -> None:
    backend, store, _, caches = file_store(kind)
    with pytest.raises(Conflict):
        await backend.delete_snapshot(ctx, store, snapshot(f"{caches}/img-1"), [], HOST)
    with pytest.raises(Conflict):
        await backend.take_snapshot(ctx, store, volume(path="/etc/passwd"),
                                    snapshot("/etc/passwd"), "x.qcow2", HOST)
    assert agent.calls == []


@pytest.mark.parametrize("kind", FILE_STORES)
async def test_delete_volume_removes_its_active_layer(kind: str, ctx: JobContext,
                                                      agent: RecordingAgent) -> None:
    backend, store, volumes, _ = file_store(kind)
    await backend.delete_volume(ctx, store, volume(path=f"{volumes}/vol-1.b.qcow2"), HOST)
    assert agent.calls == [Call(HOST.address, DELETE_FILE, "job-1.delete-vol-1",
                                DeleteFilePayload(dir=volumes, file_name="vol-1.b.qcow2"))]


LUNS, SNAPS = "/srv/iscsi/luns", "/srv/iscsi/snapshots"
ISCSI_SNAP = "vol-1.snap-1.raw"


def lun_answers(agent: RecordingAgent, reverted_size: int) -> None:
    agent.answers.update({
        "snapshot_lun": lambda p: LunSnapshotFacts(
            path=f"{p.snapshot_dir}/{p.snapshot_name}", size=1 << 30, method="reflink",
            capacity=CAPACITY),
        "revert_lun": lambda p: LunReverted(path=f"{p.dir}/{p.file_name}",
                                            size=reverted_size, capacity=CAPACITY),
        "resize_lun": lambda p: LunResized(path=f"{p.dir}/{p.file_name}", size=p.size,
                                           capacity=CAPACITY),
        "delete_lun_snapshot": lambda p: DeleteFileResult(existed=True, capacity=CAPACITY),
    })


@pytest.mark.parametrize("volume_group", [None, "vg-san"])
async def test_iscsi_snapshots_are_made_on_the_storage_server(
        volume_group: str | None, ctx: JobContext, agent: RecordingAgent) -> None:
    """Take, revert and delete each send one command to the server's agent; the volume
    keeps its path and its target."""
    store = primary(ISCSI, {**ISCSI_CONFIG, "volume_group": volume_group})
    ISCSI_KVM.check_snapshots(store)
    lun_answers(agent, 1 << 30)
    vol = volume(path=f"{LUNS}/vol-1.raw", format="raw")
    place = {"dir": LUNS, "snapshot_dir": SNAPS, "volume_group": volume_group}
    taken = await ISCSI_KVM.take_snapshot(ctx, store, vol, snapshot(vol.path), "x", HOST)
    assert taken == SnapshotTaken(f"{LUNS}/vol-1.raw", f"{SNAPS}/{ISCSI_SNAP}", 1 << 30,
                                  CAPACITY)
    switched: list[VolumeCreated] = []

    async def switch(created: VolumeCreated) -> None:
        switched.append(created)

    await ISCSI_KVM.revert_snapshot(ctx, store, vol, snapshot(taken.snapshot_path), "x",
                                    HOST, switch)
    assert switched == [VolumeCreated(f"{LUNS}/vol-1.raw", 1 << 30, CAPACITY, "raw")]
    await ISCSI_KVM.delete_snapshot(ctx, store, snapshot(taken.snapshot_path),
                                    [f"{LUNS}/vol-1.raw"], HOST)
    assert agent.calls == [
        Call(HOST.address, SNAPSHOT_LUN, "job-1.take-snap-1", LunSnapshotPayload(
            **place, file_name="vol-1.raw", snapshot_name=ISCSI_SNAP)),
        Call(HOST.address, REVERT_LUN, "job-1.revert-snap-1", RevertLunPayload(
            **place, file_name="vol-1.raw", snapshot_name=ISCSI_SNAP,
            target="iqn.2026-11.org.strata:vol-1")),
        Call(HOST.address, DELETE_LUN_SNAPSHOT, "job-1.delete-snap-1",
             DeleteLunSnapshotPayload(**place, snapshot_name=ISCSI_SNAP)),
    ]


async def test_an_iscsi_revert_keeps_the_volumes_size(ctx: JobContext,
                                                      agent: RecordingAgent) -> None:
    """A snapshot taken before the volume grew brings its smaller size back with its
    data: the LUN is grown again to the size the volume's row records."""
    store = primary(ISCSI, ISCSI_CONFIG)
    lun_answers(agent, 1 << 29)
    vol = volume(path=f"{LUNS}/vol-1.raw", format="raw")
    switched: list[VolumeCreated] = []

    async def switch(created: VolumeCreated) -> None:
        switched.append(created)

    await ISCSI_KVM.revert_snapshot(ctx, store, vol, snapshot(f"{SNAPS}/{ISCSI_SNAP}"), "x",
                                    HOST, switch)
    assert [c.command for c in agent.calls] == [REVERT_LUN, RESIZE_LUN]
    assert agent.calls[1].payload == ResizeLunPayload(
        dir=LUNS, file_name="vol-1.raw", target="iqn.2026-11.org.strata:vol-1",
        size=1 << 30)
    assert switched == [VolumeCreated(f"{LUNS}/vol-1.raw", 1 << 30, CAPACITY, "raw")]


def test_chain_of_walks_to_the_root() -> None:
    tree = [snapshot("/v/a", id="a"), snapshot("/v/b", id="b", parent_id="a"),
            snapshot("/v/c", id="c", parent_id="b"), snapshot("/v/d", id="d", parent_id="a")]
    assert [s.id for s in chain_of(tree, "c")] == ["c", "b", "a"]
    assert [s.id for s in chain_of(tree, "d")] == ["d", "a"]
    assert chain_of(tree, None) == []
