"""VMs on volumes: a hypervisor host hot-plugs a volume into a libvirt domain, and
unplugs it."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from shared.protocol.command import Command
from shared.protocol.iscsi import IscsiTarget
from shared.protocol.types import FileName, FsCapacity, ImageFormat, Model, StorePath
from shared.protocol.volumes import SnapshotFacts, TakeSnapshotPayload

# libvirt allows more in a domain name; Strata names the domains it touches plainly.
DomainName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
# The disk's serial, what the guest sees (/dev/disk/by-id/virtio-<serial>): the volume id.
DiskSerial = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,35}$")]
# A disk's target name in the domain: vdX on virtio-blk, sdX on virtio-scsi.
DiskDevice = Annotated[str, Field(pattern=r"^[vs]d[a-z]{1,2}$")]


class VolumeSource(Model):
    """What the host opens: a file by path (local storage, an NFS mount), an `nfs://` URL
    QEMU opens with libnfs, or an iSCSI LUN (the kernel initiator or QEMU's libiscsi, as
    the agent's `iscsi_access` says)."""

    path: StorePath | None = None
    iscsi: IscsiTarget | None = None
    format: ImageFormat = "qcow2"
    dirs: list[StorePath] = Field(
        default_factory=list, max_length=4,
        description="The directories every image of the file's chain must lie in (the "
                    "volume directory and the image cache); none: the file's own.")

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.path is None) == (self.iscsi is None):
            raise ValueError("give exactly one of path and iscsi")
        if self.iscsi is not None and self.format != "raw":
            raise ValueError("an iSCSI LUN is a raw volume")
        return self


class AttachVolumePayload(Model):
    """Hot-plug the volume into the running domain and its persistent definition, on the
    first free virtio target name. Attaching what is already attached (same serial) is
    the answer again."""

    domain: DomainName
    serial: DiskSerial
    source: VolumeSource


class AttachVolumeResult(Model):
    device: DiskDevice


class DetachVolumePayload(Model):
    """Unplug the disk with this serial (live and persistent), wait until the guest has
    released it, then release the host's access. A disk that is not there is done."""

    domain: DomainName
    serial: DiskSerial
    source: VolumeSource
    timeout: float = Field(default=30, gt=0, le=600,
                           description="Seconds the guest has to release the disk.")


class DetachVolumeResult(Model):
    existed: bool


class DomainPayload(Model):
    domain: DomainName


class DomainFacts(Model):
    state: Literal["running", "paused", "shut off", "other"]
    disks: dict[str, str] = Field(description="target name -> serial, of the live disks")
    tops: dict[str, str] = Field(
        default_factory=dict,
        description="serial -> the image the domain writes for that disk (its chain's top)")


ATTACH_VOLUME = Command("attach_volume", AttachVolumePayload, AttachVolumeResult, timeout=300,
                        idempotent=True)
DETACH_VOLUME = Command("detach_volume", DetachVolumePayload, DetachVolumeResult, timeout=900,
                        idempotent=True)
DOMAIN_INFO = Command("domain_info", DomainPayload, DomainFacts, timeout=60,
                      idempotent=True)


class LiveSnapshotPayload(TakeSnapshotPayload):
    """take_snapshot's freeze, done by the running domain: libvirt makes the overlay
    `dir/overlay` on the disk's current file `dir/active`, and QEMU writes to it from then
    on. Quiesced through the guest agent when the domain has one, else crash-consistent."""

    domain: DomainName
    serial: DiskSerial


class LiveSnapshotFacts(SnapshotFacts):
    quiesced: bool
    seconds: float = Field(description="How long the domain's disk was frozen for it.")


LIVE_SNAPSHOT = Command("live_snapshot", LiveSnapshotPayload, LiveSnapshotFacts, timeout=300)


class LiveCommitPayload(Model):
    """Merge `top` into `base`, the file it sits on (both files of `dir` on the chain of
    the disk with this serial), through the running domain: an intermediate block commit
    when `top` is a backing file, an active commit and a pivot when it is the disk's top.
    Then `top` is removed. Done already when the chain has `base` and no `top`."""

    domain: DomainName
    serial: DiskSerial
    dir: StorePath
    base: FileName
    top: FileName


class LiveCommitFacts(Model):
    path: str = Field(description="The disk's top once merged (`base` if `top` was it).")
    chain: list[str] = Field(description="The disk's images, top first, as the domain has "
                                         "them open.")
    capacity: FsCapacity


LIVE_COMMIT = Command("live_commit", LiveCommitPayload, LiveCommitFacts, timeout=7200)


class LiveCopyPayload(Model):
    """Move the attached disk of volume `serial` onto `dest` while the domain runs (live
    storage migration): a block copy into `dest`, which exists already (only the top
    layer is copied with `shallow`: `dest` then sits on a chain reading the same as the
    one under `source`), a wait until it mirrors every write, then the pivot. A failure
    before the pivot cancels the copy and leaves the domain on `source`, its disk's
    current top; the domain on `dest` already is the answer again."""

    domain: DomainName
    serial: DiskSerial
    source: StorePath
    dest: VolumeSource
    shallow: bool


class LiveCopied(Model):
    copied: int = Field(description="Bytes the block job copied.")
    seconds: float = Field(description="From the copy's start to the pivot.")


LIVE_COPY = Command("live_copy", LiveCopyPayload, LiveCopied, timeout=7200)
