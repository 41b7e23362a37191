"""The default template install strategy for file-based primary storages: copy the image
once into the storage's image cache; root volumes are then linked clones of it.

Concurrent requests for the same image and storage share one copy: the first inserts the
cache row (a unique constraint picks the winner), and every waiter submits the same agent
task id, which the agent runs once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_fresh, get_or_404
from controller.db.models import Image, ImageCache, ObjectState, PrimaryStorage
from controller.db.transitions import release_cache, reserve_capacity, transition
from controller.jobs.engine import JobContext
from controller.motion.service import DataMotionService
from controller.plugins.interfaces.motion import EndPointSelector, TemplateInstallStrategy
from controller.plugins.interfaces.stores import Primary
from controller.plugins.registry import PluginRegistry
from shared.errors import Conflict, Interrupted, StrataError

MAX_RACES = 10
REVIVABLE = (ObjectState.ERROR, ObjectState.DESTROYED)


class CacheThenCloneInstall(TemplateInstallStrategy):
    def __init__(self, motion: DataMotionService, registry: PluginRegistry,
                 selector: EndPointSelector) -> None:
        self._motion = motion
        self._registry = registry
        self._selector = selector

    async def installed(self, session: AsyncSession, image: Image,
                        store: Primary[Any]) -> ImageCache | None:
        cache: ImageCache | None = await session.scalar(select(ImageCache).where(
            ImageCache.image_id == image.id, ImageCache.primary_storage_id == store.id,
            ImageCache.state == ObjectState.READY))
        return cache

    async def install(self, ctx: JobContext, image: Image, store: Primary[Any]) -> ImageCache:
        for _ in range(MAX_RACES):
            cache = await self._claim(ctx, image, store)
            if cache is None:
                continue
            if cache.state == ObjectState.READY:
                return cache
            filled = await self._fill(ctx, image, store, cache)
            if filled is not None:
                return filled
        raise Conflict(f"could not settle the image cache of {image.name} on {store.name}")

    async def remove(self, ctx: JobContext, store: Primary[Any], cache: ImageCache) -> None:
        """Deletes the cache file through the storage's host, then releases its bytes."""
        async with ctx.db.begin() as session:
            moved = await transition(session, ImageCache, cache.id,
                                     (ObjectState.READY, ObjectState.ERROR),
                                     ObjectState.DESTROYING)
            row = await get_or_404(session, ImageCache, cache.id, "image cache")
            if not moved and row.state != ObjectState.DESTROYING:
                raise Conflict(f"image cache {cache.id} is {row.state}; try again when it "
                               "settles")
            host = await self._selector.for_primary(session, store)
        backend = self._registry.backend_of(store)
        try:
            await backend.delete_cache(ctx, store, cache, host)
        except StrataError as exc:
            async with ctx.db.begin() as session:
                await transition(session, ImageCache, cache.id, ObjectState.DESTROYING,
                                 ObjectState.ERROR, reason=f"delete failed: {exc.message}")
            raise
        async with ctx.db.begin() as session:
            await release_cache(session, cache.id, ObjectState.DESTROYING, ObjectState.DESTROYED)

    async def _claim(self, ctx: JobContext, image: Image,
                     store: Primary[Any]) -> ImageCache | None:
        """The cache row in state ready or creating, made or revived if need be;
        None when another request changed it meanwhile (the caller tries again)."""
        size = image.size or 0
        try:
            async with ctx.db.begin() as session:
                cache = await session.scalar(
                    select(ImageCache).where(ImageCache.image_id == image.id,
                                             ImageCache.primary_storage_id == store.id))
                ps = await get_fresh(session, PrimaryStorage, store.id, "primary storage")
                if cache is None:
                    await reserve_capacity(session, ps, size)
                    cache = ImageCache(image_id=image.id, primary_storage_id=store.id,
                                       size=size, state=ObjectState.CREATING, attempt=1)
                    session.add(cache)
                elif cache.state in REVIVABLE:
                    await reserve_capacity(session, ps, size)
                    if not await transition(session, ImageCache, cache.id, cache.state,
                                            ObjectState.CREATING, attempt=cache.attempt + 1,
                                            size=size, reason=None):
                        return None
                    await session.refresh(cache)
                elif cache.state == ObjectState.DESTROYING:
                    raise Conflict(f"the image cache of {image.name} on {store.name} is "
                                   "being deleted", code="cache_destroying")
            return cache
        except IntegrityError:
            return None

    async def _fill(self, ctx: JobContext, image: Image, store: Primary[Any],
                    cache: ImageCache) -> ImageCache | None:
        """The filled cache; None when the copy was interrupted by an agent restart and
        the cache moved to a new attempt (a new agent task), which the caller joins."""
        try:
            facts = await self._motion.download(ctx, image, store, cache)
        except Interrupted:
            async with ctx.db.begin() as session:
                await transition(session, ImageCache, cache.id, ObjectState.CREATING,
                                 ObjectState.CREATING, where={"attempt": cache.attempt},
                                 attempt=cache.attempt + 1)
            return None
        except StrataError as exc:
            async with ctx.db.begin() as session:
                await release_cache(session, cache.id, ObjectState.CREATING, ObjectState.ERROR,
                                    where={"attempt": cache.attempt}, reason=exc.message)
            raise
        async with ctx.db.begin() as session:
            await transition(session, ImageCache, cache.id, ObjectState.CREATING,
                             ObjectState.READY, where={"attempt": cache.attempt},
                             path=facts.path)
            cache = await get_fresh(session, ImageCache, cache.id, "image cache")
        if cache.state != ObjectState.READY:
            raise Conflict(f"the image cache of {image.name} on {store.name} changed to "
                           f"{cache.state} while it was being filled")
        return cache
