"""Volumes of file-based primary storages: qcow2 files, empty or linked clones."""

from __future__ import annotations

from pydantic import Field

from shared.protocol.command import Command
from shared.protocol.files import BackingFile
from shared.protocol.types import FileName, FsCapacity, Model, StorePath


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


CREATE_VOLUME = Command("create_volume", CreateVolumePayload, VolumeFacts, timeout=600)


class ResizeVolumePayload(Model):
    """Grow the qcow2 volume `dir/file_name` to `size` bytes; never shrink it."""

    dir: StorePath
    file_name: FileName
    size: int = Field(gt=0)


class VolumeResized(Model):
    """`virtual_size`: what the guest sees now; equal to the request after a growth."""

    path: str
    virtual_size: int
    capacity: FsCapacity


RESIZE_VOLUME = Command("resize_volume", ResizeVolumePayload, VolumeResized, timeout=300)
