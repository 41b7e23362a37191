"""VolumeService: root volumes as linked clones of an image cache, empty data volumes,
deletion. Capacity is reserved with the volume row and released with its end."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from controller.api.schemas import VolumeCreate
from controller.db.models import (
    BackupStorage,
    Image,
    ImageCache,
    ImageStoreRef,
    Job,
    ObjectState,
    PrimaryStorage,
    Volume,
)
from controller.db.transitions import (
    record_fs_capacity,
    release_capacity,
    reserve_capacity,
    transition,
)
from controller.jobs.engine import JobContext
from controller.plugins.interfaces import TemplateInstallStrategy
from controller.services.base import ServiceDeps
from controller.services.lookup import get_fresh, get_or_404
from shared.errors import Conflict, InvalidInput, StrataError


class VolumeService:
    def __init__(self, deps: ServiceDeps, install: TemplateInstallStrategy) -> None:
        self._d = deps
        self._install = install
        deps.jobs.register("volume.create", self.run_create)
        deps.jobs.register("volume.delete", self.run_delete)

    async def create(self, req: VolumeCreate) -> tuple[Volume, Job]:
        async with self._d.db.begin() as session:
            store = await get_fresh(session, PrimaryStorage, req.primary_storage_id,
                                    "primary storage")
            self._d.registry.backend(store.type, store.hypervisor)
            await self._d.selector.for_primary(session, store)
            size = req.size
            if req.image_id is not None:
                image = await get_or_404(session, Image, req.image_id, "image")
                if image.state != ObjectState.READY:
                    raise Conflict(f"image {image.name} is {image.state}, not ready",
                                   code="image_not_ready")
                await self._check_matrix(session, image, store)
                assert image.virtual_size is not None
                size = max(size or 0, image.virtual_size)
            elif size is None:
                raise InvalidInput("an empty volume needs a size in bytes")
            assert size is not None
            await reserve_capacity(session, store, size)
            volume = Volume(name=req.name, primary_storage_id=store.id, image_id=req.image_id,
                            size=size, state=ObjectState.ALLOCATED)
            session.add(volume)
            await session.flush()
            job = self._d.jobs.new_job(session, "volume.create", resource_type="volume",
                                       resource_id=volume.id)
        self._d.jobs.start(job)
        return volume, job

    async def _check_matrix(self, session: Any, image: Image, store: PrimaryStorage) -> None:
        """Refuses up front (409 naming the cell) what no mediator could carry out."""
        cached = await session.scalar(select(ImageCache.id).where(
            ImageCache.image_id == image.id, ImageCache.primary_storage_id == store.id,
            ImageCache.state == ObjectState.READY))
        if cached is not None:
            return
        backup_types = (await session.scalars(
            select(BackupStorage.type)
            .join(ImageStoreRef, ImageStoreRef.backup_storage_id == BackupStorage.id)
            .where(ImageStoreRef.image_id == image.id,
                   ImageStoreRef.state == ObjectState.READY))).all()
        cells = [(store.type, b, store.hypervisor) for b in backup_types]
        if not any(cell in self._d.registry.mediators for cell in cells):
            self._d.registry.mediator(*(cells[0] if cells else (store.type, "none",
                                                                store.hypervisor)))

    async def run_create(self, ctx: JobContext) -> dict[str, Any]:
        volume_id = ctx.job.resource_id or ""
        cache: ImageCache | None = None
        async with ctx.db.begin() as session:
            await transition(session, Volume, volume_id, ObjectState.ALLOCATED,
                             ObjectState.CREATING)
            volume = await get_fresh(session, Volume, volume_id, "volume")
            if volume.state == ObjectState.READY:
                return {"path": volume.path}
            store = await get_or_404(session, PrimaryStorage, volume.primary_storage_id,
                                     "primary storage")
            image = await session.get(Image, volume.image_id) if volume.image_id else None
            if image is not None:
                cache = await self._install.installed(session, image, store)
            host = await self._d.selector.for_primary(session, store)
        try:
            if image is not None and cache is None:
                cache = await self._install.install(ctx, image, store)
            backend = self._d.registry.backend(store.type, store.hypervisor)
            facts = await backend.create_volume(ctx, store, volume, host, cache,
                                                image.format if image else None)
        except StrataError as exc:
            async with ctx.db.begin() as session:
                if await transition(session, Volume, volume.id, ObjectState.CREATING,
                                    ObjectState.ERROR, reason=exc.message):
                    await release_capacity(session, store.id, volume.size)
            raise
        result = {"path": facts.path, "virtual_size": facts.virtual_size}
        async with ctx.db.begin() as session:
            await transition(session, Volume, volume.id, ObjectState.CREATING,
                             ObjectState.READY, path=facts.path,
                             image_cache_id=cache.id if cache else None)
            await record_fs_capacity(session, store.id, facts.capacity.total,
                                     facts.capacity.available)
            await ctx.succeed(session, result)
        return result

    async def delete(self, volume_id: str) -> Job:
        async with self._d.db.begin() as session:
            volume = await get_or_404(session, Volume, volume_id, "volume")
            # A volume in error gave its capacity back when it failed.
            release = volume.state == ObjectState.READY
            if not await transition(session, Volume, volume.id,
                                    (ObjectState.READY, ObjectState.ERROR),
                                    ObjectState.DESTROYING):
                raise Conflict(f"volume {volume.name} is {volume.state}; "
                               "try again when it settles")
            job = self._d.jobs.new_job(session, "volume.delete", resource_type="volume",
                                       resource_id=volume.id, params={"release": release})
        self._d.jobs.start(job)
        return job

    async def run_delete(self, ctx: JobContext) -> None:
        async with ctx.db() as session:
            volume = await get_or_404(session, Volume, ctx.job.resource_id or "", "volume")
            store = await get_or_404(session, PrimaryStorage, volume.primary_storage_id,
                                     "primary storage")
            host = await self._d.selector.for_primary(session, store)
        backend = self._d.registry.backend(store.type, store.hypervisor)
        try:
            capacity = await backend.delete_volume(ctx, store, volume, host)
        except StrataError as exc:
            async with ctx.db.begin() as session:
                if await transition(session, Volume, volume.id, ObjectState.DESTROYING,
                                    ObjectState.ERROR, reason=f"delete failed: {exc.message}"):
                    if ctx.params["release"]:
                        await release_capacity(session, store.id, volume.size)
            raise
        async with ctx.db.begin() as session:
            if await transition(session, Volume, volume.id, ObjectState.DESTROYING,
                                ObjectState.DESTROYED) and ctx.params["release"]:
                await release_capacity(session, store.id, volume.size)
            await record_fs_capacity(session, store.id, capacity.total, capacity.available)
            await ctx.succeed(session, None)
