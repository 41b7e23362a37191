"""The hypervisor-specific half of a primary storage type: how its volumes are made."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from controller.db.models import Host, ImageCache, Snapshot, Volume
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.stores import Primary, StoreConfig
from shared.errors import Conflict, Unsupported
from shared.protocol.files import BackingFile
from shared.protocol.iscsi import IscsiTarget
from shared.protocol.libvirt import VolumeSource
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
class SnapshotTaken:
    """`path`: the volume's new active layer; `snapshot_path`: the snapshot's frozen file."""

    path: str
    snapshot_path: str
    actual_size: int
    capacity: FsCapacity
    consistency: str = "offline"


# Records a reverted volume's new active layer; called before the old one is dropped.
Switch = Callable[[VolumeCreated], Awaitable[None]]


@dataclass(frozen=True)
class VolumeGrown:
    """`virtual_size`: what the guest sees now (at least the size asked for: LVM rounds up
    to whole extents)."""

    virtual_size: int
    capacity: FsCapacity


@dataclass(frozen=True)
class Layer:
    """A snapshot's frozen file that moves with its volume: `source` is read; where the
    destination keeps chains of qcow2 files, the copy is named `file_name` and sits on
    the copy of the layer `parent` (a snapshot id; None: on the destination's image
    cache, or on nothing)."""

    snapshot_id: str
    source: BackingFile
    file_name: str
    parent: str | None


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

    def volume_source(self, ctx: JobContext, store: Primary[C], volume: Volume) -> VolumeSource:
        """What a hypervisor opens to attach the volume: its active layer, by path or
        `nfs://` URL, for file-based storages."""
        if volume.path is None:
            raise Conflict(f"volume {volume.name} has no file yet", code="volume_busy")
        return VolumeSource(path=volume.path, format=volume.format)

    # Snapshots (CloudStack's takeSnapshot / revertSnapshot / deleteSnapshot). A backend
    # without them refuses up front, through `check_snapshots`.
    def check_snapshots(self, store: Primary[C]) -> None:
        """Raises a 409 when this storage's volumes can't be snapshotted; the API calls it
        before accepting a snapshot request."""
        raise snapshots_not_supported(store)

    def check_snapshot_copies(self, store: Primary[C]) -> None:
        """Raises a 409 when snapshots on this storage can't be copied out as qcow2 files,
        or such copies brought onto it (backups and restores, volumes and images made of
        snapshots)."""
        raise Unsupported(f"primary storage {store.name} is {store.row.type}: backups, "
                          "restores and copies of its snapshots are not supported yet",
                          code="snapshot_copies_not_supported")

    async def take_snapshot(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            snapshot: Snapshot, overlay: str, host: Host) -> SnapshotTaken:
        """Freezes the volume's active layer as `snapshot`; a new active layer named
        `overlay` goes on top of it."""
        raise snapshots_not_supported(store)

    async def take_live_snapshot(self, ctx: JobContext, store: Primary[C], volume: Volume,
                                 snapshot: Snapshot, overlay: str, host: Host,
                                 domain: str) -> SnapshotTaken:
        """take_snapshot, done by the domain on `host` that has the volume attached."""
        raise snapshots_not_supported(store)

    # Whether a snapshot's file is a layer of the volume's chain, so deleting one the
    # running domain has open is a live merge (`delete_live_snapshot`); where snapshots
    # are copies beside the volume (iSCSI), deleting one never touches what runs.
    merges_live = False

    async def delete_live_snapshot(self, ctx: JobContext, store: Primary[C], volume: Volume,
                                   snapshot: Snapshot, top: str, host: Host,
                                   domain: str) -> FsCapacity:
        """Merges `top` (the layer right above the snapshot's file in the chain the domain
        on `host` runs: a child snapshot's file, or the active layer) into the snapshot's
        file, by a block commit, and removes `top`: the snapshot's file then holds what
        `top` held."""
        raise snapshots_not_supported(store)

    async def revert_snapshot(self, ctx: JobContext, store: Primary[C], volume: Volume,
                              snapshot: Snapshot, overlay: str, host: Host,
                              switch: Switch) -> FsCapacity:
        """Makes a new active layer `overlay` on `snapshot`, has `switch` record it, then
        drops the volume's old active layer; no snapshot is touched."""
        raise snapshots_not_supported(store)

    async def delete_snapshot(self, ctx: JobContext, store: Primary[C], snapshot: Snapshot,
                              children: Sequence[str], host: Host) -> FsCapacity:
        """Merges `snapshot` into `children` (the paths of the files that sit on it: child
        snapshots' and the active layer), then removes it."""
        raise snapshots_not_supported(store)

    async def clone_layer(self, ctx: JobContext, store: Primary[C], source: BackingFile,
                          volume: Volume, host: Host, backing: BackingFile | None,
                          drop_source: bool = False) -> VolumeCreated:
        """Makes `volume` a copy of what `source` (a snapshot's file, or a restored
        backup, on `store`) reads: on `backing` (the image cache) holding only what
        differs from it, or flat without. It shares no file of `source`'s chain; with
        `drop_source`, `source` is removed whatever happens."""
        raise snapshots_not_supported(store)

    # Copies between primary storages (CloudStack's canCopy / copyAsync), for migration.
    # A backend reads its volumes as files (`copy_source`) and writes volumes from a file
    # of another storage that the same host reaches (`can_copy`, `copy`).
    copies_onto_cache = False

    def copy_source(self, store: Primary[C], volume: Volume) -> BackingFile | None:
        """What a host reaching `store` opens to read `volume` whole; None when no host
        can read it as a file."""
        return None

    def can_copy(self, store: Primary[C], source: BackingFile, origin: Primary[Any]) -> bool:
        """Whether `copy` can make a volume of `store` from `source`, a volume of
        `origin`."""
        return False

    async def copy(self, ctx: JobContext, store: Primary[C], volume: Volume,
                   source: BackingFile, host: Host, backing: BackingFile | None,
                   file_name: str | None = None) -> VolumeCreated:
        """Makes `volume` on `store` a verified copy of `source`, which `host` reads,
        published under its final name only once it matches; `backing`, where the backend
        `copies_onto_cache`, is the file the copy sits on (the image cache, or the copy
        of the layer under `source`), and `file_name` names the copy (one layer of a
        volume with snapshots; by default the volume's own name)."""
        raise Unsupported(f"primary storage {store.name} ({store.row.type}) takes no "
                          "copies of volumes", code="copy_not_supported")

    def carries_snapshots(self, store: Primary[C]) -> bool:
        """Whether a volume with snapshots moves onto or off `store` with them, each
        snapshot's file read whole (`copy_source` reads the volume) and copied by
        `copy_snapshot`."""
        return False

    async def copy_snapshot(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            layer: Layer, host: Host,
                            backing: BackingFile | None) -> VolumeCreated:
        """Makes on `store` a verified copy of the snapshot file `layer.source` of
        `volume`, which `host` reads; `backing` is the copy of its parent (or the image
        cache) where the backend `copies_onto_cache`."""
        raise Unsupported(f"primary storage {store.name} ({store.row.type}) takes no "
                          "copies of snapshots", code="copy_not_supported")


def snapshots_not_supported(store: Primary[Any]) -> Unsupported:
    return Unsupported(f"primary storage {store.name} is {store.row.type}: its volumes "
                       "can't be snapshotted yet", code="snapshots_not_supported")
