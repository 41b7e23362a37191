"""What a store holds, as the reconcile work compares it with the database: each object's
path relative to the store, its kind, its size on disk and, where cheap, its virtual
size."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from shared.names import validate_object_path
from shared.protocol.command import Command
from shared.protocol.types import FileName, FsCapacity, Model, StorePath, VolumeGroup

# volume, cache, snapshot, image: what the directory (or volume group, or bucket prefix)
# it was found in holds; temporary: a file named as work in progress (`.strata-tmp-...`).
ObjectKind = Literal["volume", "cache", "snapshot", "image", "temporary"]
# file: a file under the store's root; lv: a logical volume of the store's volume group;
# object: an S3 object (or an unfinished multipart upload, kind temporary).
ObjectPlace = Literal["file", "lv", "object"]


class ObjectDir(Model):
    """A directory of the store (`subdir` of its root, or the root itself) and the kind
    of what it holds."""

    subdir: FileName | None = None
    kind: ObjectKind


class StoreObject(Model):
    """`path`: relative to the store's root for files (`volumes/<id>.qcow2`), the name in
    the volume group for a logical volume, the key for an S3 object below the store's
    prefix. `size`: bytes on disk where the store tells them (the blocks of a sparse
    file, a logical volume's extents), else the length (sftp files, s3 objects; an
    unfinished multipart upload counts 0). `virtual_size`: the disk size a guest sees,
    from a qcow2 header or the length of a raw file or volume; None where finding it
    would cost a read per object of a remote store (sftp, s3), and for temporaries."""

    path: str
    place: ObjectPlace = "file"
    kind: ObjectKind
    size: int
    virtual_size: int | None = None
    format: Literal["qcow2", "raw"] | None = None


class ListObjectsPayload(Model):
    """The regular files directly in each of `dirs` under `root`; with `volume_group`,
    also the group's logical volumes named `strata-...` (a snapshot has an origin)."""

    root: StorePath
    dirs: list[ObjectDir] = Field(min_length=1, max_length=16)
    volume_group: VolumeGroup | None = None


class ObjectList(Model):
    objects: list[StoreObject]
    capacity: FsCapacity | None = None


LIST_OBJECTS = Command("list_objects", ListObjectsPayload, ObjectList, timeout=300,
                       idempotent=True)


ObjectPath = Annotated[str, AfterValidator(validate_object_path)]
QUARANTINE_DIR = "quarantine"


class QuarantinePayload(Model):
    """Files of the store at `root` (`<directory>/<file>`, as listed) to move aside into
    `quarantine/<directory>/` there, on the same filesystem: nothing is deleted."""

    root: StorePath
    paths: list[ObjectPath] = Field(min_length=1, max_length=1000)


class QuarantineSkip(Model):
    path: str
    reason: str


class QuarantineResult(Model):
    """`moved`: each file moved, with where it is now (relative to the store's root)."""

    moved: dict[str, str]
    skipped: list[QuarantineSkip]


QUARANTINE_OBJECTS = Command("quarantine_objects", QuarantinePayload, QuarantineResult,
                             timeout=300, idempotent=True)
