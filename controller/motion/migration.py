"""Data motion strategies that move a volume between two primary storages (cold
migration: neither bids on an attached volume, see `live.py`). Each bids on a
`MigrateRequest`; the service hands the copy to the highest:

- `SharedHostMigration`: one host reaches both storages' files (two local storages of a
  host, local and NFS, NFS and NFS, an iSCSI storage server that also reaches the other
  storage), so its agent copies the volume directly, onto the destination's image cache;
  a volume with snapshots layer by layer: its chain rebuilt on a destination of qcow2
  files, whole raw copies beside the LUN on iSCSI.
- `StagedMigration`: no host reaches both; a host of the source makes a whole copy of
  the volume beside it, sends it up to a backup storage through its matrix cell's upload
  direction, and a host of the destination brings it down into the destination's volume
  directory through the download direction, sha256-checked at both ends, and rebases it
  onto the destination's image cache when there is one. Every staged file is removed
  once the next step has it, and by `abandon_migrate` after a failure (a run cut short
  by a controller restart may not have got to it). A volume with snapshots is not
  staged."""

from __future__ import annotations

from typing import Any

from controller.db.models import Host, Image, ImageCache, ImageStoreRef, Volume
from controller.jobs.engine import JobContext
from controller.plugins.files import delete_file
from controller.plugins.interfaces.backend import VolumeCreated
from controller.plugins.interfaces.backup import IMAGES
from controller.plugins.interfaces.mediator import (
    Cell,
    DownloadRequest,
    Uploaded,
    UploadRequest,
)
from controller.plugins.interfaces.motion import DataMotionStrategy, Migrated, MigrateRequest
from controller.plugins.interfaces.stores import Backup, Primary
from controller.plugins.local.kvm import volume_file_name
from controller.plugins.registry import PluginRegistry
from shared.errors import Unsupported
from shared.protocol.files import BackingFile, ImageFacts
from shared.protocol.volumes import COPY_VOLUME, CopyVolumePayload

SHARED_HOST_BID = 20
STAGED_BID = 5


class VolumeMigrationStrategy(DataMotionStrategy):
    """A strategy for volumes between primary storages only: it bids nothing on images."""

    def __init__(self, registry: PluginRegistry) -> None:
        self._registry = registry

    def bid_download(self, request: DownloadRequest[Any, Any]) -> int:
        return 0

    async def download(self, ctx: JobContext, request: DownloadRequest[Any, Any]) -> ImageFacts:
        raise Unsupported("this strategy only migrates volumes")

    def bid_upload(self, request: UploadRequest[Any, Any]) -> int:
        return 0

    async def upload(self, ctx: JobContext, request: UploadRequest[Any, Any]) -> Uploaded:
        raise Unsupported("this strategy only migrates volumes")


def shared_hosts(request: MigrateRequest) -> list[Host]:
    dest = {host.id for host in request.dest_hosts}
    return [host for host in request.source_hosts if host.id in dest]


class SharedHostMigration(VolumeMigrationStrategy):
    def bid_migrate(self, request: MigrateRequest) -> int:
        if request.live is not None:
            return 0
        source = self._registry.backend_of(request.source).copy_source(request.source,
                                                                       request.volume)
        dest = self._registry.backend_of(request.dest)
        if source is None or not dest.can_copy(request.dest, source, request.source):
            return 0
        if request.layers and not dest.carries_snapshots(request.dest):
            return 0
        return SHARED_HOST_BID if shared_hosts(request) else 0

    async def migrate(self, ctx: JobContext, request: MigrateRequest) -> Migrated:
        """Snapshots first, parents before children, each copy onto its parent's copy (the
        oldest onto the image cache), so the destination's chain has the source's shape
        and every layer is compared with the one it copies; the active layer last."""
        source = self._registry.backend_of(request.source).copy_source(request.source,
                                                                       request.volume)
        assert source is not None
        dest = self._registry.backend_of(request.dest)
        host = shared_hosts(request)[0]
        copies: dict[str, VolumeCreated] = {}

        def onto(parent: str | None) -> BackingFile | None:
            """Where the destination's copies are chains: the copy of `parent`, or the
            image cache under the oldest."""
            if not dest.copies_onto_cache:
                return None
            return request.backing if parent is None else BackingFile(
                path=copies[parent].path, format="qcow2")

        for layer in request.layers:
            copies[layer.snapshot_id] = await dest.copy_snapshot(
                ctx, request.dest, request.volume, layer, host, onto(layer.parent))
        created = await dest.copy(ctx, request.dest, request.volume, source, host,
                                  onto(request.active_parent), request.file_name)
        return Migrated(created, on_cache=onto(None) is not None, layers=copies)


class StagedMigration(VolumeMigrationStrategy):
    def _route(self, request: MigrateRequest) -> tuple[Backup[Any], Cell, Cell] | None:
        """The first staging backup storage with a cell from the source and one to the
        destination."""
        cells = self._registry.cells
        for backup in request.staging:
            up = cells.get((request.source.row.type, backup.row.type,
                            request.source.row.hypervisor))
            down = cells.get((request.dest.row.type, backup.row.type,
                              request.dest.row.hypervisor))
            if up is not None and down is not None:
                return backup, up, down
        return None

    def bid_migrate(self, request: MigrateRequest) -> int:
        """Only into storages whose volumes are qcow2 files: what comes down is one."""
        if request.live is not None:
            return 0
        source = self._registry.backend_of(request.source).copy_source(request.source,
                                                                       request.volume)
        if (source is None or not self._registry.backend_of(request.dest).copies_onto_cache
                or not request.source_hosts or not request.dest_hosts or request.layers):
            return 0
        return STAGED_BID if self._route(request) else 0

    async def migrate(self, ctx: JobContext, request: MigrateRequest) -> Migrated:
        route = self._route(request)
        assert route is not None
        backup, up, down = route
        volume, prefix = request.volume, request.task_prefix
        source = self._registry.backend_of(request.source).copy_source(request.source,
                                                                       volume)
        assert source is not None
        src_host, dest_host = request.source_hosts[0], request.dest_hosts[0]
        staged_name = staged_file_name(volume)
        src_dir = self._volume_dir(request.source)
        whole = await ctx.call(src_host, COPY_VOLUME, CopyVolumePayload(
            source=source, dest_dir=src_dir, file_name=staged_name),
            task_id=f"{prefix}.stage", span=(0, 30))
        try:
            uploaded = await up.mediator.upload(ctx, UploadRequest(
                volume=Volume(id=volume.id, name=volume.name, path=whole.path),
                primary=request.source, backup=backup, host=src_host, file_name=staged_name,
                task_id=f"{prefix}.up"))
        finally:
            await delete_file(ctx, src_host, src_dir, staged_name, "unstage-source")
        ref = ImageStoreRef(id=f"staged-{volume.id}", image_id=staged_name,
                            backup_storage_id=backup.id, path=uploaded.path)
        dest_dir = self._volume_dir(request.dest)
        # With an image cache the copy comes down beside the volume's name, then only
        # what differs from the image is kept: a linked clone stays one.
        landed = staged_name if request.backing else volume_file_name(volume)
        try:
            facts = await down.mediator.download(ctx, DownloadRequest(
                image=Image(id=staged_name, name=volume.name, sha256=uploaded.sha256,
                            format="qcow2"),
                ref=ref, backup=backup, primary=request.dest,
                cache=ImageCache(id=ref.id), host=dest_host, task_id=f"{prefix}.down",
                dest=(dest_dir, landed), manifest=uploaded.manifest))
        finally:
            await self._registry.backup_provider(backup.row.type).driver.delete(
                ctx, backup, ref, dest_host)
        if request.backing is None:
            return Migrated(VolumeCreated(facts.path, facts.virtual_size, facts.capacity),
                            on_cache=False)
        created = await self._registry.backend_of(request.dest).clone_layer(
            ctx, request.dest, BackingFile(path=facts.path, format="qcow2"), volume,
            dest_host, request.backing, drop_source=True)
        return Migrated(created, on_cache=True)

    async def abandon_migrate(self, ctx: JobContext, request: MigrateRequest) -> None:
        """Removes the staged copy wherever a host still reaches: beside the source, in
        the backup storage, beside the destination."""
        name = staged_file_name(request.volume)
        route = self._route(request)
        hosts = [*request.dest_hosts, *request.source_hosts]
        if route is not None and hosts:
            await self._registry.backup_provider(route[0].row.type).driver.delete_file(
                ctx, route[0], IMAGES, name, hosts[0])
        for store, reaching, side in ((request.source, request.source_hosts, "source"),
                                      (request.dest, request.dest_hosts, "dest")):
            if reaching:
                await delete_file(ctx, reaching[0], self._volume_dir(store), name,
                                  f"abandon-{side}")

    def _volume_dir(self, store: Primary[Any]) -> str:
        return self._registry.primary_provider(store.row.type).driver.volume_dir(store)


def staged_file_name(volume: Volume) -> str:
    return f"{volume.id}.staged.qcow2"
