"""Storage directories and the files in them: preparing a storage, bringing image files
in (from a URL or another place the agent reaches), deleting a file."""

from __future__ import annotations

from pydantic import Field

from shared.protocol.command import Command
from shared.protocol.types import (
    FileName,
    FsCapacity,
    HttpUrl,
    ImageFormat,
    Model,
    Sha256,
    StorePath,
    TaskId,
    VolumeGroup,
)


class PrepareStoragePayload(Model):
    """`volume_group`: volumes live there, so it is its capacity that counts.
    `in_flight`: what may be writing here from any host (a task's id, or its job's id for
    every step of the job); their temporaries are not leftovers."""

    path: StorePath
    subdirs: list[FileName] = Field(default_factory=list)
    volume_group: VolumeGroup | None = None
    in_flight: list[TaskId] = Field(default_factory=list, max_length=100_000)


class PrepareStorageResult(Model):
    path: str
    capacity: FsCapacity


# A manifest has at most this many chunks, so it stays small (under 70 KB of hex).
MAX_CHUNKS = 1024


class ChunkManifest(Model):
    """The sha256 of each `chunk_size` bytes of an image file, in order (the last chunk may
    be shorter; an empty file has none). Made beside the whole-file sha256 as an image is
    registered: a copy checked against it hashes several chunks at once, where one
    sha256 of the whole file is a single stream no core count speeds up."""

    chunk_size: int = Field(ge=1 << 20)
    chunks: list[Sha256] = Field(max_length=MAX_CHUNKS)


class ImageFacts(Model):
    """What was verified of an image file that now sits at `path`. `manifest`: its chunk
    digests, when known (None for a download of unannounced length past `MAX_CHUNKS`
    base-size chunks)."""

    path: str
    size: int
    sha256: str
    format: ImageFormat
    virtual_size: int
    capacity: FsCapacity
    manifest: ChunkManifest | None = None


class DownloadImagePayload(Model):
    url: HttpUrl
    dest_dir: StorePath
    file_name: FileName
    expected_sha256: Sha256 | None = None
    expected_format: ImageFormat | None = None


class CopyImagePayload(Model):
    """Copy an image file (or a volume becoming one) between two places the agent reaches,
    verifying as it goes; without expectations, the result says what was copied.
    `flatten`: the source is a layer on a chain (or a raw file, `src_format`), copied as
    one qcow2 file that holds all it reads (`qemu-img convert` in the agent's staging
    directory first). `manifest` (with `expected_sha256`): the copy is checked chunk by
    chunk against it rather than by one whole-file sha256."""

    src_path: StorePath
    dest_dir: StorePath
    file_name: FileName
    expected_sha256: Sha256 | None = None
    expected_format: ImageFormat | None = None
    manifest: ChunkManifest | None = None
    flatten: bool = False
    src_format: ImageFormat = "qcow2"


class BackingFile(Model):
    path: StorePath
    format: ImageFormat


class UploadResult(Model):
    """What a backup storage holds after an upload, verified there, with the chunk
    manifest made as it was sent."""

    path: str
    size: int
    sha256: str
    capacity: FsCapacity
    manifest: ChunkManifest | None = None


class DeleteFilePayload(Model):
    dir: StorePath
    file_name: FileName


class DeleteFileResult(Model):
    existed: bool
    capacity: FsCapacity


PREPARE_STORAGE = Command("prepare_storage", PrepareStoragePayload, PrepareStorageResult,
                          timeout=120, idempotent=True)
DOWNLOAD_IMAGE = Command("download_image", DownloadImagePayload, ImageFacts,
                         idempotent=True)
COPY_IMAGE = Command("copy_image", CopyImagePayload, ImageFacts, idempotent=True)
DELETE_FILE = Command("delete_file", DeleteFilePayload, DeleteFileResult, timeout=300,
                      idempotent=True)
