"""ImageService: registering image templates into a backup storage, deleting them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_or_404
from controller.db.models import (
    LIVE,
    BackupStorage,
    Image,
    ImageCache,
    ImageStoreRef,
    Job,
    ObjectState,
    PrimaryStorage,
    Snapshot,
    StoreState,
    Volume,
)
from controller.db.transitions import transition
from controller.jobs.engine import JobContext, JobHandler
from controller.plugins.interfaces.mediator import UploadRequest
from controller.services.base import ServiceDeps
from controller.services.commands import RegisterImage
from controller.services.maintenance import ensure_reachable
from controller.services.snapshots import lock_volume, ready_snapshot, unlock_volume
from shared.errors import ChecksumMismatch, Conflict, InUse
from shared.protocol.files import ChunkManifest
from shared.protocol.types import ImageFormat


class ImageService:
    def __init__(self, deps: ServiceDeps) -> None:
        self._d = deps
        deps.jobs.register("image.register", self.run_register, on_failure=self._fail_create)
        deps.jobs.register("image.from_volume", self.run_from_volume,
                           on_failure=self._fail_from_volume)
        deps.jobs.register("image.delete", self.run_delete, on_failure=self._fail_delete)

    async def register(self, req: RegisterImage) -> tuple[Image, Job]:
        async with self._d.db.begin() as session:
            store = await get_or_404(session, BackupStorage, req.backup_storage_id,
                                     "backup storage")
            if store.state != StoreState.READY:
                raise Conflict(f"backup storage {store.name} is {store.state}, not ready",
                               code="storage_not_ready")
            params = {"backup_storage_id": store.id}
            fmt: ImageFormat | None
            handler: JobHandler
            if req.volume_id is not None:
                volume = await self._lock_volume(session, req.volume_id, store)
                url, handler, fmt = f"volume:{volume.id}", self.run_from_volume, volume.format
                params["volume_id"] = volume.id
            elif req.snapshot_id is not None:
                snapshot, volume = await self._lock_snapshot(session, req.snapshot_id, store)
                url, handler, fmt = f"snapshot:{snapshot.id}", self.run_from_volume, "qcow2"
                params.update(volume_id=volume.id, snapshot_id=snapshot.id)
            else:
                assert req.url is not None
                url, handler, fmt = req.url, self.run_register, req.format
            image = Image(name=req.name, url=url, declared_format=fmt,
                          declared_sha256=req.sha256, state=ObjectState.ALLOCATED)
            session.add(image)
            await session.flush()
            session.add(ImageStoreRef(image_id=image.id, backup_storage_id=store.id,
                                      state=ObjectState.ALLOCATED))
            job = self._d.jobs.new_job(session, handler, resource_type="image",
                                       resource_id=image.id, params=params)
        self._d.jobs.start(job)
        return image, job

    async def _lock_volume(self, session: AsyncSession, volume_id: str,
                           store: BackupStorage) -> Volume:
        """The volume to copy up, moved to `copying` so nothing deletes it meanwhile."""
        volume = await get_or_404(session, Volume, volume_id, "volume")
        primary = await get_or_404(session, PrimaryStorage, volume.primary_storage_id,
                                   "primary storage")
        ensure_reachable(primary)
        self._d.motion.check_upload(primary, store)
        if not await transition(session, Volume, volume.id, ObjectState.READY,
                                ObjectState.COPYING):
            raise Conflict(f"volume {volume.name} is {volume.state}, not ready")
        return volume

    async def _lock_snapshot(self, session: AsyncSession, snapshot_id: str,
                             store: BackupStorage) -> tuple[Snapshot, Volume]:
        """The snapshot to copy up; its volume is `snapshotting` meanwhile, so no merge
        changes the chain being read."""
        snapshot = await get_or_404(session, Snapshot, snapshot_id, "snapshot")
        volume = await get_or_404(session, Volume, snapshot.volume_id, "volume")
        primary = await self._d.store_of(session, volume)
        ensure_reachable(primary.row)
        self._d.registry.backend_of(primary).check_snapshot_copies(primary)
        self._d.motion.check_upload(primary.row, store)
        await ready_snapshot(session, snapshot.id)
        await lock_volume(session, volume)
        return snapshot, volume

    async def run_from_volume(self, ctx: JobContext) -> dict[str, Any]:
        """Copies the volume (or its snapshot) up through the data motion service (the
        matrix cell's mediator), then gives it back. A layer on a chain (a linked clone,
        a volume on snapshots, a snapshot) is flattened on the way: the image holds all
        it reads and sits on nothing."""
        snapshot_id = ctx.params.get("snapshot_id")
        async with ctx.db() as session:
            image = await get_or_404(session, Image, ctx.job.resource_id or "", "image")
            volume = await get_or_404(session, Volume, ctx.params["volume_id"], "volume")
            snapshot = (await get_or_404(session, Snapshot, snapshot_id, "snapshot")
                        if snapshot_id else None)
            primary = self._d.registry.primary(await get_or_404(
                session, PrimaryStorage, volume.primary_storage_id, "primary storage"))
            store = self._d.registry.backup(await get_or_404(
                session, BackupStorage, ctx.params["backup_storage_id"], "backup storage"))
            ref = await session.scalar(select(ImageStoreRef).where(
                ImageStoreRef.image_id == image.id, ImageStoreRef.backup_storage_id == store.id))
            assert ref is not None
            host = await self._d.selector.for_primary(session, primary)
        chained = (snapshot is not None or volume.image_id is not None
                   or volume.snapshot_id is not None)
        uploaded = await self._d.motion.upload(ctx, UploadRequest(
            volume=volume, primary=primary, backup=store, host=host, file_name=image.id,
            task_id=ctx.task_id("upload"), source=snapshot.path if snapshot else None,
            flatten=chained, source_format=volume.format))
        if image.declared_sha256 and uploaded.sha256 != image.declared_sha256:
            raise ChecksumMismatch(f"the volume's sha256 is {uploaded.sha256}, "
                                   f"not {image.declared_sha256} as declared")
        result = {"sha256": uploaded.sha256, "size": uploaded.size,
                  "format": "qcow2" if chained else volume.format,
                  "virtual_size": snapshot.virtual_size if snapshot else volume.size}
        async with ctx.db.begin() as session:
            await _give_back(session, ctx)
            await _image_ready(session, image.id, ref.id, uploaded.path, result,
                               uploaded.manifest)
            await ctx.succeed(session, result)
        return result

    async def run_register(self, ctx: JobContext) -> dict[str, Any]:
        image_id = ctx.job.resource_id or ""
        async with ctx.db.begin() as session:
            await transition(session, Image, image_id, ObjectState.ALLOCATED,
                             ObjectState.CREATING)
            image = await get_or_404(session, Image, image_id, "image")
            row = await get_or_404(session, BackupStorage, ctx.params["backup_storage_id"],
                                   "backup storage")
            ref = await session.scalar(select(ImageStoreRef).where(
                ImageStoreRef.image_id == image.id, ImageStoreRef.backup_storage_id == row.id))
            assert ref is not None
            if image.state == ObjectState.READY:
                return {"sha256": image.sha256}
            await transition(session, ImageStoreRef, ref.id, ObjectState.ALLOCATED,
                             ObjectState.CREATING)
            store = self._d.registry.backup(row)
            host = await self._d.selector.for_backup(session, store)
        facts = await self._d.registry.backup_provider(row.type).driver.register(
            ctx, store, image, host)
        result = {"sha256": facts.sha256, "size": facts.size, "format": facts.format,
                  "virtual_size": facts.virtual_size}
        async with ctx.db.begin() as session:
            await _image_ready(session, image.id, ref.id, facts.path, result, facts.manifest)
            backup = await get_or_404(session, BackupStorage, store.id, "backup storage")
            backup.capacity_total = facts.capacity.total
            backup.capacity_available = facts.capacity.available
            await ctx.succeed(session, result)
        return result

    async def delete(self, image_id: str) -> Job:
        async with self._d.db.begin() as session:
            image = await get_or_404(session, Image, image_id, "image")
            users = (await session.scalars(select(Volume.name).where(
                Volume.image_id == image.id, Volume.state.in_(LIVE)).limit(20))).all()
            if users:
                raise InUse(f"image {image.name} is still needed by volumes: "
                            f"{', '.join(users)}; delete them first")
            # Its caches go with it: not from a storage whose hosts released it.
            for store in (await session.scalars(select(PrimaryStorage).join(
                    ImageCache, ImageCache.primary_storage_id == PrimaryStorage.id).where(
                    ImageCache.image_id == image.id,
                    ImageCache.state != ObjectState.DESTROYED))).all():
                ensure_reachable(store)
            if not await transition(session, Image, image.id,
                                    (ObjectState.READY, ObjectState.ERROR),
                                    ObjectState.DESTROYING):
                raise Conflict(f"image {image.name} is {image.state}; try again when it settles")
            job = self._d.jobs.new_job(session, self.run_delete, resource_type="image",
                                       resource_id=image.id)
        self._d.jobs.start(job)
        return job

    async def run_delete(self, ctx: JobContext) -> None:
        """Removes the image's caches from primary storages, then its store copies."""
        image_id = ctx.job.resource_id or ""
        async with ctx.db() as session:
            caches = (await session.execute(
                select(ImageCache, PrimaryStorage)
                .join(PrimaryStorage, PrimaryStorage.id == ImageCache.primary_storage_id)
                .where(ImageCache.image_id == image_id,
                       ImageCache.state != ObjectState.DESTROYED))).all()
            refs = (await session.execute(
                select(ImageStoreRef, BackupStorage)
                .join(BackupStorage, BackupStorage.id == ImageStoreRef.backup_storage_id)
                .where(ImageStoreRef.image_id == image_id,
                       ImageStoreRef.state != ObjectState.DESTROYED))).all()
        for cache, primary in caches:
            await self._d.install.remove(ctx, self._d.registry.primary(primary), cache)
        for ref, row in refs:
            store = self._d.registry.backup(row)
            async with ctx.db() as session:
                host = await self._d.selector.for_backup(session, store)
            await self._d.registry.backup_provider(row.type).driver.delete(ctx, store, ref, host)
            async with ctx.db.begin() as session:
                await transition(session, ImageStoreRef, ref.id, list(LIVE),
                                 ObjectState.DESTROYED)
        async with ctx.db.begin() as session:
            await transition(session, Image, image_id, ObjectState.DESTROYING,
                             ObjectState.DESTROYED)


    async def _fail_create(self, ctx: JobContext, reason: str) -> None:
        """The image and its copy on the store end in error, from which they are deleted."""
        image_id = ctx.job.resource_id or ""
        async with ctx.db.begin() as session:
            await transition(session, Image, image_id, UNFINISHED, ObjectState.ERROR,
                             reason=reason)
            await session.execute(
                update(ImageStoreRef)
                .where(ImageStoreRef.image_id == image_id,
                       ImageStoreRef.backup_storage_id == ctx.params["backup_storage_id"],
                       ImageStoreRef.state.in_(UNFINISHED))
                .values(state=ObjectState.ERROR).execution_options(synchronize_session=False))

    async def _fail_from_volume(self, ctx: JobContext, reason: str) -> None:
        """The image failed; the volume it was made of is the operator's again."""
        async with ctx.db.begin() as session:
            await _give_back(session, ctx)
        await self._fail_create(ctx, reason)

    async def _fail_delete(self, ctx: JobContext, reason: str) -> None:
        """In error, the image can be deleted again; what was removed stays removed."""
        async with ctx.db.begin() as session:
            await transition(session, Image, ctx.job.resource_id or "", ObjectState.DESTROYING,
                             ObjectState.ERROR, reason=f"delete failed: {reason}")


UNFINISHED = (ObjectState.ALLOCATED, ObjectState.CREATING)


async def _give_back(session: AsyncSession, ctx: JobContext) -> None:
    """The volume an image was copied from is ready again: `copying` for a volume,
    `snapshotting` for a snapshot's."""
    if "snapshot_id" in ctx.params:
        await unlock_volume(session, ctx.params["volume_id"])
    else:
        await transition(session, Volume, ctx.params["volume_id"], ObjectState.COPYING,
                         ObjectState.READY)


async def _image_ready(session: AsyncSession, image_id: str, ref_id: str, path: str,
                       facts: dict[str, Any], manifest: ChunkManifest | None) -> None:
    """The image and its copy on the store are ready: `facts` are sha256, size, format
    and virtual_size, as verified by the agent, and `manifest` the chunk digests it made
    in the same pass (kept on the row, out of the job's result)."""
    await transition(session, ImageStoreRef, ref_id, UNFINISHED, ObjectState.READY, path=path)
    await transition(session, Image, image_id, UNFINISHED, ObjectState.READY, **facts,
                     chunk_size=manifest.chunk_size if manifest else None,
                     chunk_sha256s=manifest.chunks if manifest else None)
