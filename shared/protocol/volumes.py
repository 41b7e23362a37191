"""Volumes of file-based primary storages: qcow2 files, empty or linked clones."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.protocol.command import Command
from shared.protocol.files import BackingFile
from shared.protocol.types import FileName, FsCapacity, ImageFormat, Model, StorePath


class CreateVolumePayload(Model):
    """A qcow2 volume: a linked clone of `backing`, or empty of `size` bytes."""

    dest_dir: StorePath
    file_name: FileName
    size: int | None = Field(default=None, gt=0)
    backing: BackingFile | None = None


class VolumeFacts(Model):
    path: str
    virtual_size: int
    capacity: FsCapacity


CREATE_VOLUME = Command("create_volume", CreateVolumePayload, VolumeFacts, timeout=600,
                        idempotent=True)


# Snapshots of qcow2 volumes: external overlays in the volume directory `dir`, the chain
# shape libvirt makes live. Files are named by the controller; the agent joins each name
# to `dir`, so nothing outside it is ever written or removed.


class TakeSnapshotPayload(Model):
    """`active`, the volume's active layer, becomes the snapshot's frozen file; a new
    empty overlay `overlay` on top of it becomes the active layer."""

    dir: StorePath
    active: FileName
    overlay: FileName


class SnapshotFacts(Model):
    """`path`: the new active layer; `snapshot_path`: the frozen file."""

    path: str
    snapshot_path: str
    actual_size: int
    virtual_size: int
    capacity: FsCapacity


class ResizeVolumePayload(Model):
    """Grow the qcow2 volume `dir/file_name` (its active layer) to `size` bytes; never
    shrink it."""

    dir: StorePath
    file_name: FileName
    size: int = Field(gt=0)


class VolumeResized(Model):
    """`virtual_size`: what the guest sees now; equal to the request after a growth."""

    path: str
    virtual_size: int
    capacity: FsCapacity


class RevertSnapshotPayload(Model):
    """A new empty overlay `overlay` on the frozen file `snapshot`: the volume's next
    active layer. The old one is dropped by the controller once the row points here.
    `size`: the volume's size now, so a volume grown since the snapshot stays as large
    (past the snapshot's end it reads zeroes)."""

    dir: StorePath
    snapshot: FileName
    overlay: FileName
    size: int | None = Field(default=None, gt=0)


class DeleteSnapshotPayload(Model):
    """Each of `children` (files in `dir` sitting on `snapshot`) is rebased onto the
    snapshot's own backing file, which must lie in `dir` or `cache_dir`; then the
    snapshot's file goes."""

    dir: StorePath
    cache_dir: StorePath
    snapshot: FileName
    children: list[FileName] = Field(default_factory=list, max_length=64)


class CloneLayerPayload(Model):
    """A new volume file `file_name` in `dir` that reads as the layer `source` (a file of
    `dir`, on its chain) does: an overlay on `source`, rebased (safe mode) onto `backing`
    (an image cache file), or onto nothing, when it then holds all its data. The new
    file shares no layer of `source`'s volume. `drop_source`: `source` is a restored
    backup, only a step on the way, removed whatever happens."""

    dir: StorePath
    source: FileName
    file_name: FileName
    backing: BackingFile | None = None
    drop_source: bool = False


class SnapshotDeleted(Model):
    existed: bool
    capacity: FsCapacity


class CopyVolumePayload(Model):
    """Copy the volume `source` (its whole chain, as a guest reads it) into the file
    `dest_dir/file_name` of `format`. With `backing` (the destination's image cache, the
    same image as the bottom of the source's chain, or the copy of the layer under
    `source`) a qcow2 copy sits on it and holds only what `source` holds above its own
    backing file; a raw copy holds everything and sits on nothing. The copy is compared
    with the source before it is published."""

    source: BackingFile
    dest_dir: StorePath
    file_name: FileName
    backing: BackingFile | None = None
    format: ImageFormat = "qcow2"

    @model_validator(mode="after")
    def _raw_sits_on_nothing(self) -> CopyVolumePayload:
        if self.format == "raw" and self.backing is not None:
            raise ValueError("a raw copy has no backing file")
        return self


class CompareVolumesPayload(Model):
    """Whether `first` and `second` read the same to a guest."""

    first: BackingFile
    second: BackingFile


class VolumesCompared(Model):
    same: bool


TAKE_SNAPSHOT = Command("take_snapshot", TakeSnapshotPayload, SnapshotFacts, timeout=600,
                        idempotent=True)
REVERT_SNAPSHOT = Command("revert_snapshot", RevertSnapshotPayload, VolumeFacts, timeout=600,
                          idempotent=True)
DELETE_SNAPSHOT = Command("delete_snapshot", DeleteSnapshotPayload, SnapshotDeleted,
                          idempotent=True)
CLONE_LAYER = Command("clone_layer", CloneLayerPayload, VolumeFacts, idempotent=True)
RESIZE_VOLUME = Command("resize_volume", ResizeVolumePayload, VolumeResized, timeout=300,
                        idempotent=True)
COPY_VOLUME = Command("copy_volume", CopyVolumePayload, VolumeFacts, timeout=7200,
                      idempotent=True)
COMPARE_VOLUMES = Command("compare_volumes", CompareVolumesPayload, VolumesCompared,
                          timeout=7200, idempotent=True)
