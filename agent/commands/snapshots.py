"""Snapshots of qcow2 volumes as external overlays, in the chain shape libvirt makes live:
the active layer a VM opens sits on the snapshot it was taken or reverted from, each
snapshot's frozen file on its parent's, the oldest on the image cache (or on nothing).

Every command only names files in the volume directory, and each is idempotent: a new
overlay is written under a temporary name and published without overwriting (one that
is already there on the expected backing file is the earlier run's), and a merge only
ever writes data the child already reads through its backing file."""

from __future__ import annotations

import posixpath

from agent import fsops
from agent.commands.registry import Progress, handles
from agent.files import FileStore
from agent.services import AgentServices
from agent.tools.qemuimg import ImageInfo
from shared.errors import Conflict, NotFound, OperationFailed
from shared.names import validate_store_path
from shared.protocol.files import BackingFile
from shared.protocol.volumes import (
    CLONE_LAYER,
    DELETE_SNAPSHOT,
    REVERT_SNAPSHOT,
    TAKE_SNAPSHOT,
    CloneLayerPayload,
    DeleteSnapshotPayload,
    RevertSnapshotPayload,
    SnapshotDeleted,
    SnapshotFacts,
    TakeSnapshotPayload,
    VolumeFacts,
)


@handles(TAKE_SNAPSHOT)
async def take_snapshot(svc: AgentServices, payload: TakeSnapshotPayload,
                        progress: Progress) -> SnapshotFacts:
    files = svc.files.for_path(payload.dir)
    frozen = posixpath.join(payload.dir, payload.active)
    frozen_info = await _qcow2_layer(svc, files, frozen)
    overlay = await _overlay(svc, files, payload.dir, payload.overlay, frozen)
    return SnapshotFacts(path=posixpath.join(payload.dir, payload.overlay),
                         snapshot_path=frozen,
                         actual_size=frozen_info.actual_size or 0,
                         virtual_size=overlay.virtual_size,
                         capacity=await files.capacity(payload.dir))


@handles(REVERT_SNAPSHOT)
async def revert_snapshot(svc: AgentServices, payload: RevertSnapshotPayload,
                          progress: Progress) -> VolumeFacts:
    files = svc.files.for_path(payload.dir)
    snapshot = posixpath.join(payload.dir, payload.snapshot)
    await _qcow2_layer(svc, files, snapshot)
    overlay = await _overlay(svc, files, payload.dir, payload.overlay, snapshot,
                             size=payload.size)
    return VolumeFacts(path=posixpath.join(payload.dir, payload.overlay),
                       virtual_size=overlay.virtual_size,
                       capacity=await files.capacity(payload.dir))


@handles(DELETE_SNAPSHOT)
async def delete_snapshot(svc: AgentServices, payload: DeleteSnapshotPayload,
                          progress: Progress) -> SnapshotDeleted:
    """Merges the snapshot into its children: each is rebased (safe mode, so it copies in
    what it read through the snapshot) onto the snapshot's own backing file, then the
    snapshot's file is removed. A run cut short leaves every child reading the same data,
    through the snapshot or not; a second run rebases only those still on it."""
    files = svc.files.for_path(payload.dir)
    path = posixpath.join(payload.dir, payload.snapshot)
    if not await files.lexists(path):
        # Removed by an earlier run, which had rebased every child first.
        return SnapshotDeleted(existed=False, capacity=await files.capacity(payload.dir))
    info = await _qcow2_layer(svc, files, path)
    backing = _confined_backing(info, payload.dir, payload.cache_dir)
    children = [posixpath.join(payload.dir, name) for name in payload.children]
    if path in children:
        raise Conflict(f"snapshot {path} cannot be its own child")
    for i, child in enumerate(children):
        child_info = await _qcow2_layer(svc, files, child)
        if child_info.backing_filename == path:
            await svc.qemu_img.rebase(child, backing=backing,
                                      backing_fmt=info.backing_format if backing else None,
                                      progress=_share(progress, i, len(children)))
        elif child_info.backing_filename != backing:
            raise Conflict(f"{child} sits on {child_info.backing_filename}, neither on the "
                           f"snapshot {path} nor on its backing file")
    await files.remove(path)
    return SnapshotDeleted(existed=True, capacity=await files.capacity(payload.dir))


@handles(CLONE_LAYER)
async def clone_layer(svc: AgentServices, payload: CloneLayerPayload,
                      progress: Progress) -> VolumeFacts:
    """An overlay on the source layer, made under a temporary name, rebased (safe mode:
    it copies in every cluster where what it reads and the new backing file differ) onto
    the image cache or onto nothing, then published. One already there on `backing` is
    the earlier run's."""
    files = svc.files.for_path(payload.dir)
    source = posixpath.join(payload.dir, payload.source)
    final = posixpath.join(payload.dir, payload.file_name)
    backing = payload.backing.path if payload.backing else None
    if final == source:
        raise Conflict(f"{final} cannot be a copy of itself")
    try:
        info = await _earlier_run(svc, files, final, backing)
        if info is None:
            await _qcow2_layer(svc, files, source)
            info = await _rebased_copy(svc, files, source, final, payload.backing, progress)
    finally:
        if payload.drop_source:
            await files.remove(source)
    return VolumeFacts(path=final, virtual_size=info.virtual_size,
                       capacity=await files.capacity(payload.dir))


async def _rebased_copy(svc: AgentServices, files: FileStore, source: str, final: str,
                        backing: BackingFile | None, progress: Progress) -> ImageInfo:
    tmp = fsops.temp_path(posixpath.dirname(final), posixpath.basename(final))
    try:
        await svc.qemu_img.create(tmp, fmt="qcow2", backing=source, backing_fmt="qcow2")
        await svc.qemu_img.rebase(tmp, backing=backing.path if backing else None,
                                  backing_fmt=backing.format if backing else None,
                                  progress=progress)
        await files.publish(tmp, final)
    finally:
        await files.remove(tmp)
    return await svc.qemu_img.info(final, fmt="qcow2")


async def _qcow2_layer(svc: AgentServices, files: FileStore, path: str) -> ImageInfo:
    """`qemu-img info` of one layer of a volume: a qcow2 file with no data file."""
    if not await files.is_file(path):
        raise NotFound(f"{path} does not exist")
    info = await svc.qemu_img.info(path, fmt="qcow2")
    if info.data_file is not None:
        raise Conflict(f"{path} keeps its data in {info.data_file}; only self-contained "
                       "qcow2 layers are snapshotted")
    return info


async def _earlier_run(svc: AgentServices, files: FileStore, final: str,
                       backing: str | None) -> ImageInfo | None:
    """The layer `final` when an earlier run of the same step made it (it sits on
    `backing`); None when there is none yet. Any other file of that name is a 409."""
    if not await files.lexists(final):
        return None
    info = await svc.qemu_img.info(final, fmt="qcow2")
    if info.backing_filename != backing:
        raise Conflict(f"{final} already exists; a ready object is never overwritten")
    return info


async def _overlay(svc: AgentServices, files: FileStore, directory: str, name: str,
                   backing: str, size: int | None = None) -> ImageInfo:
    """A new empty qcow2 overlay `name` on `backing` (as large as it, or `size`),
    published by rename; one already there on `backing` is the earlier run's and is
    kept."""
    final = posixpath.join(directory, name)
    if final == backing:
        raise Conflict(f"{final} cannot sit on itself")
    info = await _earlier_run(svc, files, final, backing)
    if info is not None:
        return info
    tmp = fsops.temp_path(directory, name)
    try:
        await svc.qemu_img.create(tmp, fmt="qcow2", size=size, backing=backing,
                                  backing_fmt="qcow2")
        await files.publish(tmp, final)
    finally:
        await files.remove(tmp)
    return await svc.qemu_img.info(final, fmt="qcow2")


def _confined_backing(info: ImageInfo, directory: str, cache_dir: str) -> str | None:
    """The snapshot's backing file, refused unless it lies in the volume directory or the
    image cache: a merge never makes a chain end outside the storage."""
    backing = info.backing_filename
    if backing is None:
        return None
    validate_store_path(backing)
    if posixpath.dirname(backing) not in (directory, cache_dir) or not info.backing_format:
        raise OperationFailed(f"{info.filename} sits on {backing}, outside the storage's "
                              "volumes and image cache; refusing to merge into it",
                              code="chain_outside_storage")
    return backing


def _share(progress: Progress, i: int, n: int) -> Progress:
    """The progress of child `i` of `n`, as a share of the whole merge."""
    return lambda pct: progress((i + pct / 100) * 100 / n)
