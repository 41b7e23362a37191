"""KVM backend for storages whose volumes are qcow2 files that the hosts open by path:
`local` (this package) and `nfs` (which reuses it). Root volumes are linked clones of the
image cache (`qemu-img create -b <cache> -F <fmt>`).

Snapshots are external qcow2 overlays, the chain libvirt makes live: taking one freezes
the active layer where it is and puts a new overlay, under a new name, on top of it. The
volume's path therefore moves (the row records it) rather than staying fixed by renames:
a renamed file would break the backing reference of every file above it, and a running
VM's file can't be renamed under it, while a new overlay with a new name is exactly
what a live snapshot by libvirt makes, so both kinds fit the same rows."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any, TypeVar

from controller.db.models import Host, ImageCache, Snapshot, Volume
from controller.jobs.engine import JobContext
from controller.plugins.files import delete_cache_file, delete_file
from controller.plugins.interfaces.backend import (
    Layer,
    PrimaryStorageBackend,
    SnapshotTaken,
    Switch,
    VolumeCreated,
    VolumeGrown,
)
from controller.plugins.interfaces.primary import PrimaryStorageProvider
from controller.plugins.interfaces.stores import Primary, StoreConfig
from controller.plugins.local.provider import LOCAL
from shared.errors import Conflict
from shared.names import validate_file_name
from shared.protocol.files import BackingFile
from shared.protocol.libvirt import (
    LIVE_COMMIT,
    LIVE_SNAPSHOT,
    LiveCommitPayload,
    LiveSnapshotPayload,
    VolumeSource,
)
from shared.protocol.types import FsCapacity
from shared.protocol.volumes import (
    CLONE_LAYER,
    COPY_VOLUME,
    CREATE_VOLUME,
    DELETE_SNAPSHOT,
    RESIZE_VOLUME,
    REVERT_SNAPSHOT,
    TAKE_SNAPSHOT,
    CloneLayerPayload,
    CopyVolumePayload,
    CreateVolumePayload,
    DeleteSnapshotPayload,
    ResizeVolumePayload,
    RevertSnapshotPayload,
    TakeSnapshotPayload,
)

C = TypeVar("C", bound=StoreConfig)


def volume_file_name(volume: Volume) -> str:
    return f"{volume.id}.qcow2"


def layer_name(directory: str, path: str | None) -> str:
    """The name of a volume's layer (active or frozen) in the volume directory; a path
    elsewhere is refused, so no command ever names a file outside the storage."""
    if path is None or posixpath.dirname(path) != directory:
        raise Conflict(f"{path} is not a file of the volume directory {directory}",
                       code="path_outside_storage")
    return validate_file_name(posixpath.basename(path))


class Qcow2FileBackend(PrimaryStorageBackend[C]):
    hypervisor = "kvm"

    def __init__(self, provider: PrimaryStorageProvider[C]) -> None:
        self.primary_type = provider.type
        self._driver = provider.driver

    async def create_volume(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            host: Host, backing: BackingFile | None) -> VolumeCreated:
        payload = CreateVolumePayload(dest_dir=self._driver.volume_dir(store),
                                      file_name=volume_file_name(volume), size=volume.size,
                                      backing=backing)
        facts = await ctx.call(host, CREATE_VOLUME, payload, step="create-volume",
                               span=(50 if backing else 0, 100))
        return VolumeCreated(facts.path, facts.virtual_size, facts.capacity)

    async def delete_volume(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            host: Host) -> FsCapacity:
        """Removes the active layer: where the row says once snapshots moved it, else
        the name it was created under (a create that failed has no path)."""
        directory = self._driver.volume_dir(store)
        name = (layer_name(directory, volume.path) if volume.path
                else volume_file_name(volume))
        return await delete_file(ctx, host, directory, name, f"delete-{volume.id}")

    async def delete_cache(self, ctx: JobContext, store: Primary[C], cache: ImageCache,
                           host: Host) -> FsCapacity:
        return await delete_cache_file(ctx, self._driver, store, cache, host)

    async def resize_volume(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            host: Host, size: int) -> VolumeGrown:
        """`qemu-img resize` of the active layer on any host that reaches the file (a
        linked clone or a layer on snapshots too: the part past its backing file's end
        reads as zeroes)."""
        directory = self._driver.volume_dir(store)
        payload = ResizeVolumePayload(dir=directory, file_name=layer_name(directory, volume.path),
                                      size=size)
        result = await ctx.call(host, RESIZE_VOLUME, payload, step="resize-volume")
        return VolumeGrown(result.virtual_size, result.capacity)

    copies_onto_cache = True

    def copy_source(self, store: Primary[C], volume: Volume) -> BackingFile | None:
        """The active layer: qemu-img reads the chain under it."""
        return BackingFile(path=volume.path, format="qcow2") if volume.path else None

    def can_copy(self, store: Primary[C], source: BackingFile, origin: Primary[Any]) -> bool:
        return True

    async def copy(self, ctx: JobContext, store: Primary[C], volume: Volume,
                   source: BackingFile, host: Host, backing: BackingFile | None,
                   file_name: str | None = None) -> VolumeCreated:
        """`qemu-img convert` (onto `backing` when given: only what `source` holds above
        its own backing file is copied), `qemu-img compare` of what the two read, then
        publish, all on `host`."""
        name = file_name or volume_file_name(volume)
        payload = CopyVolumePayload(source=source, dest_dir=self._driver.volume_dir(store),
                                    file_name=name, backing=backing)
        facts = await ctx.call(host, COPY_VOLUME, payload, step=f"copy-{name}",
                               span=(10, 90))
        return VolumeCreated(facts.path, facts.virtual_size, facts.capacity)

    def carries_snapshots(self, store: Primary[C]) -> bool:
        return True

    async def copy_snapshot(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            layer: Layer, host: Host,
                            backing: BackingFile | None) -> VolumeCreated:
        return await self.copy(ctx, store, volume, layer.source, host, backing,
                               layer.file_name)

    def check_snapshots(self, store: Primary[C]) -> None:
        return None

    def check_snapshot_copies(self, store: Primary[C]) -> None:
        return None

    async def take_snapshot(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            snapshot: Snapshot, overlay: str, host: Host) -> SnapshotTaken:
        directory = self._driver.volume_dir(store)
        payload = TakeSnapshotPayload(dir=directory, active=layer_name(directory, volume.path),
                                      overlay=overlay)
        facts = await ctx.call(host, TAKE_SNAPSHOT, payload, step=f"take-{snapshot.id}")
        return SnapshotTaken(facts.path, facts.snapshot_path, facts.actual_size,
                             facts.capacity)

    async def take_live_snapshot(self, ctx: JobContext, store: Primary[C], volume: Volume,
                                 snapshot: Snapshot, overlay: str, host: Host,
                                 domain: str) -> SnapshotTaken:
        directory = self._driver.volume_dir(store)
        payload = LiveSnapshotPayload(dir=directory, active=layer_name(directory, volume.path),
                                      overlay=overlay, domain=domain, serial=volume.id)
        facts = await ctx.call(host, LIVE_SNAPSHOT, payload, step=f"live-take-{snapshot.id}")
        return SnapshotTaken(facts.path, facts.snapshot_path, facts.actual_size,
                             facts.capacity, "quiesced" if facts.quiesced else "crash")

    merges_live = True

    def volume_source(self, ctx: JobContext, store: Primary[C], volume: Volume) -> VolumeSource:
        """The active layer; its chain may only use the volume directory and the image
        cache, which the agent checks before describing it to libvirt."""
        source = super().volume_source(ctx, store, volume)
        return VolumeSource.model_validate({
            **source.model_dump(),
            "dirs": [self._driver.volume_dir(store), self._driver.cache_dir(store)]})

    async def delete_live_snapshot(self, ctx: JobContext, store: Primary[C], volume: Volume,
                                   snapshot: Snapshot, top: str, host: Host,
                                   domain: str) -> FsCapacity:
        directory = self._driver.volume_dir(store)
        payload = LiveCommitPayload(domain=domain, serial=volume.id, dir=directory,
                                    base=layer_name(directory, snapshot.path),
                                    top=layer_name(directory, top))
        facts = await ctx.call(host, LIVE_COMMIT, payload, step=f"live-merge-{snapshot.id}")
        return facts.capacity

    async def revert_snapshot(self, ctx: JobContext, store: Primary[C], volume: Volume,
                              snapshot: Snapshot, overlay: str, host: Host,
                              switch: Switch) -> FsCapacity:
        """The old active layer is dropped only once the row points at the new one: a
        failure in between leaks at most an unused file, never the volume's data."""
        directory = self._driver.volume_dir(store)
        old = layer_name(directory, volume.path)
        payload = RevertSnapshotPayload(dir=directory, overlay=overlay,
                                        snapshot=layer_name(directory, snapshot.path),
                                        size=volume.size)
        facts = await ctx.call(host, REVERT_SNAPSHOT, payload, step=f"revert-{overlay}",
                               span=(0, 50))
        await switch(VolumeCreated(facts.path, facts.virtual_size, facts.capacity))
        return await delete_file(ctx, host, directory, old, f"drop-{old}")

    async def delete_snapshot(self, ctx: JobContext, store: Primary[C], snapshot: Snapshot,
                              children: Sequence[str], host: Host) -> FsCapacity:
        directory = self._driver.volume_dir(store)
        payload = DeleteSnapshotPayload(
            dir=directory, cache_dir=self._driver.cache_dir(store),
            snapshot=layer_name(directory, snapshot.path),
            children=[layer_name(directory, child) for child in children])
        result = await ctx.call(host, DELETE_SNAPSHOT, payload, step=f"merge-{snapshot.id}")
        return result.capacity

    async def clone_layer(self, ctx: JobContext, store: Primary[C], source: BackingFile,
                          volume: Volume, host: Host, backing: BackingFile | None,
                          drop_source: bool = False) -> VolumeCreated:
        directory = self._driver.volume_dir(store)
        payload = CloneLayerPayload(dir=directory, source=layer_name(directory, source.path),
                                    file_name=volume_file_name(volume), backing=backing,
                                    drop_source=drop_source)
        facts = await ctx.call(host, CLONE_LAYER, payload, step=f"clone-{volume.id}",
                               span=(70, 100))
        return VolumeCreated(facts.path, facts.virtual_size, facts.capacity)


LOCAL_KVM = Qcow2FileBackend(LOCAL)
