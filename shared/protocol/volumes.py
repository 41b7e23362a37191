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
