"""iSCSI: a storage server exports volumes as LUNs and grants initiators access; a
hypervisor connects to the LUNs it was granted."""

from __future__ import annotations

import posixpath
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from shared.protocol.command import Command
from shared.protocol.files import BackingFile, DeleteFileResult
from shared.protocol.types import (
    AbsPath,
    EmptyPayload,
    FileName,
    FsCapacity,
    Iqn,
    IscsiPortal,
    Model,
    VolumeGroup,
)


class ChapCredentials(Model):
    user: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    password: str = Field(min_length=12, max_length=16, pattern=r"^[A-Za-z0-9._-]+$",
                          description="RFC 3720 secrets are 12 to 16 octets.")


class IscsiTarget(Model):
    """Where a LUN is served: the portal, the target name, the LUN number."""

    portal: IscsiPortal
    target: Iqn
    lun: int = Field(default=1, ge=0, le=255)
    chap: ChapCredentials | None = None


class ExportLunPayload(Model):
    """Create the LUN's backing store (empty of `size`, or a copy of `source`) and serve it
    as the single LUN of its own target: a sparse file `dir/file_name`, or, with
    `volume_group`, a logical volume named after the file."""

    dir: AbsPath
    file_name: FileName
    size: int = Field(gt=0)
    source: BackingFile | None = None
    target: Iqn
    chap: ChapCredentials | None = None
    volume_group: VolumeGroup | None = None


class ExportLunResult(Model):
    path: str
    target: IscsiTarget
    capacity: FsCapacity


class UnexportLunPayload(Model):
    """Remove the target (and so every grant), then the backing file or volume."""

    dir: AbsPath
    file_name: FileName
    target: Iqn
    volume_group: VolumeGroup | None = None


class LunAccessPayload(Model):
    target: Iqn
    initiator: Iqn


class LunAccessResult(Model):
    target: Iqn
    initiators: list[str]


class ConnectVolumePayload(Model):
    target: IscsiTarget


class ConnectVolumeResult(Model):
    """How this host's QEMU opens the volume: a device path (kernel mode) or a QEMU
    block-driver spec (qemu mode)."""

    mode: Literal["kernel", "qemu"]
    device: str | None = None
    qemu_spec: dict[str, Any] | None = None
    size: int


EXPORT_LUN = Command("export_lun", ExportLunPayload, ExportLunResult)
UNEXPORT_LUN = Command("unexport_lun", UnexportLunPayload, DeleteFileResult, timeout=300,
                       idempotent=True)
GRANT_LUN = Command("grant_lun", LunAccessPayload, LunAccessResult, timeout=60,
                    idempotent=True)
REVOKE_LUN = Command("revoke_lun", LunAccessPayload, LunAccessResult, timeout=60,
                     idempotent=True)
CONNECT_VOLUME = Command("connect_volume", ConnectVolumePayload, ConnectVolumeResult,
                         timeout=300)
DISCONNECT_VOLUME = Command("disconnect_volume", ConnectVolumePayload, EmptyPayload,
                            timeout=300)


# ---- growing a LUN ----------------------------------------------------------------------


class ResizeLunPayload(Model):
    """Grow the LUN's backing store to `size` bytes (a sparse truncate of the file, or
    `lvextend`), then make its target serve the new size."""

    dir: AbsPath
    file_name: FileName
    target: Iqn
    size: int = Field(gt=0)
    volume_group: VolumeGroup | None = None


class LunResized(Model):
    """`size`: the backing store's size now (LVM rounds up to whole extents)."""

    path: str
    size: int
    capacity: FsCapacity


RESIZE_LUN = Command("resize_lun", ResizeLunPayload, LunResized, timeout=300,
                     idempotent=True)


# ---- snapshots of a LUN's backing store ----------------------------------------------------


class _SnapshotPlace(Model):
    """`snapshot_dir` is a sibling of the LUNs' directory `dir` (both in the storage's
    directory), so snapshots stay in the storage, on the LUNs' filesystem."""

    dir: AbsPath
    snapshot_dir: AbsPath

    @model_validator(mode="after")
    def _confined(self) -> Self:
        if (self.snapshot_dir == self.dir
                or posixpath.dirname(self.snapshot_dir) != posixpath.dirname(self.dir)):
            raise ValueError("snapshot_dir must be a sibling of dir, in the same storage")
        return self


class LunSnapshotPayload(_SnapshotPlace):
    """The LUN `dir/file_name` (or its logical volume) and its snapshot `snapshot_name`:
    a file in `snapshot_dir`, or, with `volume_group`, a logical volume named after it."""

    file_name: FileName
    snapshot_name: FileName
    volume_group: VolumeGroup | None = None


class RevertLunPayload(LunSnapshotPayload):
    """The LUN's target is kept (with every grant); its LUN is taken down while the
    backing store is replaced, and served again after."""

    target: Iqn


class DeleteLunSnapshotPayload(_SnapshotPlace):
    """`dir`: the LUNs' directory, whose filesystem's capacity is reported."""

    snapshot_name: FileName
    volume_group: VolumeGroup | None = None


class LunSnapshotFacts(Model):
    """`method`: reflink (shares blocks with the LUN until either is written), copy (a
    sparse copy), lvm (a thick snapshot), lvm-thin (a thin snapshot). A file snapshot
    found made already (a repeated command) says copy: how it was made is not kept."""

    path: str
    size: int
    method: Literal["reflink", "copy", "lvm", "lvm-thin"]
    capacity: FsCapacity


class LunReverted(Model):
    """`size`: the LUN's size now, the snapshot's (a LUN grown after it shrinks back)."""

    path: str
    size: int
    capacity: FsCapacity


SNAPSHOT_LUN = Command("snapshot_lun", LunSnapshotPayload, LunSnapshotFacts,
                       idempotent=True)
REVERT_LUN = Command("revert_lun", RevertLunPayload, LunReverted, idempotent=True)
DELETE_LUN_SNAPSHOT = Command("delete_lun_snapshot", DeleteLunSnapshotPayload,
                              DeleteFileResult, timeout=300, idempotent=True)
