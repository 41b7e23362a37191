"""DataMotionService: moves bytes between stores through the strategy that bids best."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import (
    BackupStorage,
    Image,
    ImageCache,
    ImageStoreRef,
    ObjectState,
    PrimaryStorage,
)
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.mediator import (
    DownloadRequest,
    RestoreRequest,
    Uploaded,
    UploadRequest,
)
from controller.plugins.interfaces.motion import (
    DataMotionStrategy,
    EndPointSelector,
    Migrated,
    MigrateRequest,
)
from controller.plugins.interfaces.stores import Backup, Primary
from controller.plugins.registry import PluginRegistry
from shared.errors import Conflict, Unsupported
from shared.protocol.files import ChunkManifest, ImageFacts


class DataMotionService:
    def __init__(self, registry: PluginRegistry, selector: EndPointSelector,
                 strategies: Sequence[DataMotionStrategy]) -> None:
        self._registry = registry
        self._selector = selector
        self._strategies = list(strategies)

    async def download(self, ctx: JobContext, image: Image, primary: Primary[Any],
                       cache: ImageCache) -> ImageFacts:
        """Fills `cache` from whichever backup storage holding `image` a strategy serves,
        checked against the image's chunk manifest when it has one."""
        async with ctx.db() as session:
            manifest = await chunk_manifest(session, image.id)
            rows = (await session.execute(
                select(ImageStoreRef, BackupStorage)
                .join(BackupStorage, BackupStorage.id == ImageStoreRef.backup_storage_id)
                .where(ImageStoreRef.image_id == image.id,
                       ImageStoreRef.state == ObjectState.READY)
            )).all()
            if not rows:
                raise Conflict(f"image {image.name} is on no ready backup storage",
                               code="image_not_ready")
            host = await self._selector.for_primary(session, primary)
        unsupported: Unsupported | None = None
        for ref, backup in rows:
            request = DownloadRequest(image=image, ref=ref, backup=self._registry.backup(backup),
                                      primary=primary, cache=cache, host=host,
                                      task_id=cache.task_id, manifest=manifest)
            try:
                strategy = self._winner([s.bid_download(request) for s in self._strategies],
                                        primary, request.backup)
            except Unsupported as exc:
                unsupported = exc
                continue
            return await strategy.download(ctx, request)
        assert unsupported is not None
        raise unsupported

    async def upload(self, ctx: JobContext, request: UploadRequest[Any, Any]) -> Uploaded:
        strategy = self._winner([s.bid_upload(request) for s in self._strategies],
                                request.primary, request.backup)
        return await strategy.upload(ctx, request)

    async def restore(self, ctx: JobContext, request: RestoreRequest[Any, Any]) -> ImageFacts:
        """A snapshot's backup into a volume directory: the download direction."""
        strategy = self._winner([s.bid_restore(request) for s in self._strategies],
                                request.primary, request.backup)
        return await strategy.restore(ctx, request)

    def migration_strategy(self, request: MigrateRequest) -> DataMotionStrategy:
        """The first of the highest bidders on moving a volume; none bids: a 409."""
        bids = [strategy.bid_migrate(request) for strategy in self._strategies]
        best = max(bids, default=0)
        if best <= 0 and request.live is not None:
            raise Conflict(
                f"volume {request.volume.name} is attached to domain {request.live.domain} "
                f"on host {request.live.host.name}, and no live migration reaches from "
                f"{request.source.name} to {request.dest.name} (it needs qcow2 file storages "
                "on both sides, the host reaching both, and no snapshots); detach it (or "
                "stop the VM) to migrate it cold", code="volume_attached")
        if best <= 0:
            raise Conflict(
                f"no strategy can move volume {request.volume.name} from "
                f"{request.source.name} to {request.dest.name}: no connected host reaches "
                "both, and no backup storage has matrix cells for both to stage through",
                code="no_migration_path")
        return self._strategies[bids.index(best)]

    async def migrate(self, ctx: JobContext, request: MigrateRequest) -> Migrated:
        return await self.migration_strategy(request).migrate(ctx, request)

    async def abandon_migrate(self, ctx: JobContext, request: MigrateRequest) -> None:
        """Every strategy clears what it may have left: the one that carried the failed
        migration is not recorded, and may not bid any more."""
        for strategy in self._strategies:
            await strategy.abandon_migrate(ctx, request)

    def check_download(self, primary: PrimaryStorage, backup_types: Sequence[str]) -> None:
        """Refuses up front (a 409 naming a missing matrix cell) an image that no strategy
        could bring into `primary` from any of the backup storage types holding it."""
        cells = [(primary.type, b, primary.hypervisor) for b in backup_types]
        if not any(cell in self._registry.cells for cell in cells):
            self._registry.cell(*(cells[0] if cells else (primary.type, "none",
                                                          primary.hypervisor)))

    def check_upload(self, primary: PrimaryStorage, backup: BackupStorage) -> None:
        """Refuses up front (a 409 naming the matrix cell) a volume that no strategy could
        copy from `primary` into `backup`."""
        self._registry.cell(primary.type, backup.type, primary.hypervisor)

    def check_restore(self, primary: PrimaryStorage, backup: BackupStorage) -> None:
        """Refuses up front (a 409 naming the matrix cell) a backup that no strategy could
        bring from `backup` into `primary`."""
        self._registry.cell(primary.type, backup.type, primary.hypervisor)

    def _winner(self, bids: list[int], primary: Primary[Any],
                backup: Backup[Any]) -> DataMotionStrategy:
        """The first of the highest bidders; none bids: a 409 naming the missing cell."""
        best, winner = 0, None
        for bid, strategy in zip(bids, self._strategies, strict=True):
            if bid > best:
                best, winner = bid, strategy
        if winner is None:
            self._registry.cell(primary.row.type, backup.row.type, primary.row.hypervisor)
            raise Unsupported("no data motion strategy can carry out this copy")
        return winner


async def chunk_manifest(session: AsyncSession, image_id: str) -> ChunkManifest | None:
    """The image's chunk manifest, read alone: the row's digests are never loaded with it."""
    row = (await session.execute(select(Image.chunk_size, Image.chunk_sha256s)
                                 .where(Image.id == image_id))).one_or_none()
    if row is None or row.chunk_size is None or row.chunk_sha256s is None:
        return None
    return ChunkManifest(chunk_size=row.chunk_size, chunks=row.chunk_sha256s)
