"""What the services are asked to do: plain values, checked by whoever makes them (the
API's request schemas, the embedded defaults), so services know nothing of HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.protocol.types import ImageFormat


@dataclass(frozen=True)
class AddHost:
    name: str
    address: str
    hypervisor: str = "kvm"
    initiator_iqn: str | None = None


@dataclass(frozen=True)
class CreatePrimaryStorage:
    """`config` is checked by the storage type's config model; `hosts` are attached at once."""

    name: str
    type: str
    config: dict[str, Any]
    hosts: tuple[str, ...]
    overprovision_factor: float = 1.0
    allocation_threshold: float = 90.0
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpdatePrimaryStorage:
    """The settings an operator may change on a storage; None leaves one as it is."""

    allocation_threshold: float | None = None
    tags: tuple[str, ...] | None = None


@dataclass(frozen=True)
class CreateBackupStorage:
    name: str
    type: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisterImage:
    """From `url` (downloaded and verified), from `volume_id` (copied up from its
    primary storage), or from `snapshot_id` (its chain flattened and copied up): exactly
    one of them."""

    name: str
    backup_storage_id: str
    url: str | None = None
    volume_id: str | None = None
    snapshot_id: str | None = None
    format: ImageFormat | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class CreateVolume:
    """A linked clone of `image_id`, a copy of the snapshot `snapshot_id` (on its
    storage), a restore of the snapshot backup `backup_id`, or an empty volume of `size`
    bytes. Without `primary_storage_id` the allocator picks a storage carrying every one
    of `storage_tags` (a snapshot's copy goes on the snapshot's storage)."""

    name: str
    primary_storage_id: str | None
    image_id: str | None = None
    size: int | None = None
    snapshot_id: str | None = None
    backup_id: str | None = None
    storage_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResizeVolume:
    """Grow `volume_id` to `size` bytes."""

    volume_id: str
    size: int
