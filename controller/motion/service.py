"""DataMotionService: moves bytes between stores through the strategy that bids best."""

from __future__ import annotations

from collections.abc import Sequence

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
from controller.plugins.interfaces import DataMotionStrategy, EndPointSelector, MotionRequest
from controller.plugins.registry import PluginRegistry
from shared.errors import Conflict, Unsupported
from shared.protocol.files import ImageFacts


class DataMotionService:
    def __init__(self, registry: PluginRegistry, selector: EndPointSelector,
                 strategies: Sequence[DataMotionStrategy]) -> None:
        self._registry = registry
        self._selector = selector
        self._strategies = list(strategies)

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
                strategy = self._strategy_for(request)
            except Unsupported as exc:
                unsupported = exc
                continue
            return await strategy.copy(ctx, request)
        assert unsupported is not None
        raise unsupported

    def _strategy_for(self, request: MotionRequest) -> DataMotionStrategy:
        bids = [(s.bid(request), i, s) for i, s in enumerate(self._strategies)]
        best = max(bids, default=(0, 0, None), key=lambda b: (b[0], -b[1]))
        if best[0] <= 0 or best[2] is None:
            # No strategy took it: name the missing matrix cell.
            self._registry.mediator(request.primary.type, request.backup.type,
                                    request.primary.hypervisor)
            raise Unsupported("no data motion strategy can carry out this copy")
        return best[2]
