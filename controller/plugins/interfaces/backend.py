"""The hypervisor-specific half of a primary storage type: how its volumes are made."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Generic, TypeVar

from controller.db.models import Host, ImageCache, Volume
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.stores import Primary, StoreConfig
from shared.protocol.files import BackingFile
from shared.protocol.iscsi import IscsiTarget
from shared.protocol.types import FsCapacity, ImageFormat

C = TypeVar("C", bound=StoreConfig)


@dataclass(frozen=True)
class VolumeCreated:
    path: str
    virtual_size: int
    capacity: FsCapacity
    format: ImageFormat = "qcow2"
    export: IscsiTarget | None = None


@dataclass(frozen=True)
class VolumeGrown:
    """`virtual_size`: what the guest sees now (at least the size asked for: LVM rounds up
    to whole extents)."""

    virtual_size: int
    capacity: FsCapacity


class PrimaryStorageBackend(abc.ABC, Generic[C]):
    """One per (primary storage type, hypervisor)."""

    primary_type: str
    hypervisor: str

    @abc.abstractmethod
    async def create_volume(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            host: Host, backing: BackingFile | None) -> VolumeCreated:
        """Makes the volume: empty, or from `backing`, the image cache file it starts from."""

    @abc.abstractmethod
    async def delete_volume(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            host: Host) -> FsCapacity: ...

    @abc.abstractmethod
    async def delete_cache(self, ctx: JobContext, store: Primary[C], cache: ImageCache,
                           host: Host) -> FsCapacity: ...

    @abc.abstractmethod
    async def resize_volume(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            host: Host, size: int) -> VolumeGrown:
        """Grows the volume to `size` bytes through `host`; never shrinks it, and growing
        it to the size it has already succeeds (so a retried job does)."""
