"""DataMotionService: moves image bytes between stores through the best strategy."""

from __future__ import annotations

from sqlalchemy import select

from controller.db.models import (
    BackupStorage,
    Image,
    ImageCache,
    ImageStoreRef,
    ObjectState,
    PrimaryStorage,
)
from controller.jobs.engine import JobContext
from controller.plugins.interfaces import EndPointSelector, MotionRequest
from controller.plugins.registry import PluginRegistry
from shared.errors import Conflict, Unsupported
from shared.protocol.files import ImageFacts


class DataMotionService:
    def __init__(self, registry: PluginRegistry, selector: EndPointSelector) -> None:
        self._registry = registry
        self._selector = selector

    async def copy_to_cache(self, ctx: JobContext, image: Image, primary: PrimaryStorage,
                            cache: ImageCache) -> ImageFacts:
        async with ctx.db() as session:
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
        requests = [
            MotionRequest(image=image, ref=ref, backup=backup, primary=primary, cache=cache,
                          host=host, task_id=f"cache-{cache.id}-{cache.attempt}")
            for ref, backup in rows
        ]
        unsupported: Unsupported | None = None
        for request in requests:
            try:
                strategy = self._registry.strategy_for(request)
            except Unsupported as exc:
                unsupported = exc
                continue
            return await strategy.copy(ctx, request)
        assert unsupported is not None
        raise unsupported
