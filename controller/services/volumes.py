"""VolumeService: root volumes as linked clones of an image cache, empty data volumes,
growing, deletion. Capacity is reserved with the volume row (and with each growth) and
released with its end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_fresh, get_or_404
from controller.db.models import (
    AccessState,
    BackupStorage,
    Host,
    Image,
    ImageCache,
    ImageStoreRef,
    Job,
    JobState,
    ObjectState,
    PrimaryStorage,
    Snapshot,
    SnapshotBackup,
    StoreState,
    Volume,
    VolumeAccess,
    new_id,
)
from controller.db.transitions import (
    record_fs_capacity,
    release_cache,
    release_capacity,
    reserve_capacity,
    transition,
)
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.backend import VolumeCreated
from controller.plugins.interfaces.mediator import RestoreRequest
from controller.plugins.interfaces.primary import PrimaryDataStoreDriver
from controller.plugins.interfaces.stores import Primary
from controller.services.allocator import Candidate, allocate
from controller.services.attachments import refuse_attached
from controller.services.backups import ready_backup_storage
from controller.services.base import ServiceDeps
from controller.services.commands import CreateVolume, ResizeVolume
from controller.services.maintenance import ensure_accepting, ensure_reachable
from controller.services.snapshots import (
    doom_snapshots,
    drop_snapshots,
    lock_volume,
    ready_snapshot,
    release_snapshots,
    settle_snapshots,
    unlock_volume,
)
from shared.errors import Conflict, InvalidInput, NotFound, StrataError
from shared.protocol.files import BackingFile


@dataclass(frozen=True)
class Copy:
    """A volume made of a snapshot or a backup: its size, the image cache it will sit
    on (if any), and what its job needs."""

    size: int
    image_id: str | None
    image_cache_id: str | None
    params: dict[str, Any]


@dataclass(frozen=True)
class _Read:
    """What a create job needs of the database before it calls the agent."""

    volume: Volume
    store: Primary[Any]
    image: Image | None
    cache: ImageCache | None
    host: Host


class VolumeService:
    def __init__(self, deps: ServiceDeps) -> None:
        self._d = deps
        # The rows `create` read, for the job it starts in this process: job id -> rows.
        self._read: dict[str, _Read] = {}
        deps.jobs.register("volume.create", self.run_create, on_failure=self._fail_create,
                           on_cancel=self._cancel_create)
        deps.jobs.register("volume.delete", self.run_delete, on_failure=self._fail_delete)
        deps.jobs.register("volume.grant", self.run_grant, on_failure=self._fail_grant)
        deps.jobs.register("volume.revoke", self.run_revoke)
        deps.jobs.register("volume.resize", self.run_resize, on_failure=self._fail_resize)

    async def create(self, req: CreateVolume) -> tuple[Volume, Job]:
        """The volume is `creating` from the start: its job is in the same transaction.
        A request naming no storage has the allocator pick one; the job says why."""
        async with self._d.db.begin() as session:
            allocation: str | None = None
            if req.primary_storage_id is not None:
                storage_id = req.primary_storage_id
            elif req.snapshot_id is not None:
                snapshot = await get_or_404(session, Snapshot, req.snapshot_id, "snapshot")
                storage_id = snapshot.primary_storage_id
            else:
                storage_id, allocation = await self._allocate(session, req)
            row = await get_fresh(session, PrimaryStorage, storage_id, "primary storage")
            self._d.registry.backend(row.type, row.hypervisor)
            ensure_accepting(row)
            store = self._d.registry.primary(row)
            host = await self._d.selector.for_primary(session, store)
            size = req.size
            copy: Copy | None = None
            image: Image | None = None
            cache: ImageCache | None = None
            if req.snapshot_id is not None:
                copy = await self._of_snapshot(session, req.snapshot_id, row)
            elif req.backup_id is not None:
                copy = await self._of_backup(session, req.backup_id, row)
            if copy is not None:
                size = copy.size
            else:
                size, image = await self._own_size(session, req)
                if image is not None:
                    cache = await self._check_matrix(session, image, store)
            await reserve_capacity(session, row, size)
            # The id is set here, so the volume and its job are written in one flush.
            volume = Volume(id=new_id(), name=req.name, primary_storage_id=row.id,
                            image_id=copy.image_id if copy else req.image_id,
                            image_cache_id=copy.image_cache_id if copy else None,
                            size=size, state=ObjectState.CREATING)
            session.add(volume)
            params = dict(copy.params) if copy else {}
            if allocation is not None:
                params["allocation"] = allocation
            job = self._d.jobs.new_job(session, self.run_create, resource_type="volume",
                                       resource_id=volume.id, params=params)
            job.message = allocation
        if copy is None:
            self._read[job.id] = _Read(volume, store, image, cache, host)
        self._d.jobs.start(job)
        return volume, job

    async def _own_size(self, session: AsyncSession,
                        req: CreateVolume) -> tuple[int, Image | None]:
        """The size of a root volume (at least its image's) or of an empty one, and the
        image; neither depends on the storage."""
        if req.image_id is None:
            if req.size is None:
                raise InvalidInput("an empty volume needs a size in bytes")
            return req.size, None
        image = await get_or_404(session, Image, req.image_id, "image")
        if image.state != ObjectState.READY:
            raise Conflict(f"image {image.name} is {image.state}, not ready",
                           code="image_not_ready")
        assert image.virtual_size is not None
        return max(req.size or 0, image.virtual_size), image

    async def _allocate(self, session: AsyncSession, req: CreateVolume) -> tuple[str, str]:
        """The storage the allocator picks for `req` (an image's volume, an empty one or
        a restore), and its reasons. Each storage is checked as a request naming it would
        be (a connected host, the matrix cell); an image not cached there counts its
        cache's bytes too."""
        image: Image | None = None
        if req.backup_id is not None:
            size = (await get_or_404(session, SnapshotBackup, req.backup_id,
                                     "snapshot backup")).virtual_size
        else:
            size, image = await self._own_size(session, req)
        rows = (await session.scalars(select(PrimaryStorage)
                                      .order_by(PrimaryStorage.name))).all()
        candidates = []
        for row in rows:
            extra, refusal = 0, None
            if row.state == StoreState.READY:
                try:
                    self._d.registry.backend(row.type, row.hypervisor)
                    store = self._d.registry.primary(row)
                    await self._d.selector.for_primary(session, store)
                    if req.backup_id is not None:
                        await self._of_backup(session, req.backup_id, row)
                    elif image is not None and \
                            await self._check_matrix(session, image, store) is None:
                        extra = image.size or 0
                except StrataError as exc:
                    refusal = exc.message
            candidates.append(Candidate(
                id=row.id, name=row.name, state=row.state, tags=frozenset(row.tags),
                capacity_total=row.capacity_total,
                overprovision_factor=row.overprovision_factor,
                allocated=row.capacity_allocated, threshold=row.allocation_threshold,
                extra=extra, refusal=refusal))
        picked = allocate(candidates, size, req.storage_tags)
        return picked.chosen.id, picked.explain(req.storage_tags)

    async def release_orphan_caches(self) -> int:
        """At start, before jobs resume: an image cache left filling by a controller that
        died, which no resumed volume job will go on filling, gives its bytes back and is
        in error, from which the next request fills it again."""
        needed = (select(Volume.id).join(Job, Job.resource_id == Volume.id)
                  .where(Job.kind == self._d.jobs.kind_of(self.run_create),
                         Job.state == JobState.RUNNING,
                         Volume.image_id == ImageCache.image_id,
                         Volume.primary_storage_id == ImageCache.primary_storage_id))
        async with self._d.db.begin() as session:
            orphans = (await session.scalars(select(ImageCache.id).where(
                ImageCache.state == ObjectState.CREATING, ~needed.exists()))).all()
            for cache_id in orphans:
                await release_cache(session, cache_id, ObjectState.CREATING, ObjectState.ERROR,
                                    reason="left unfilled by a controller that stopped")
        return len(orphans)

    async def _check_matrix(self, session: AsyncSession, image: Image,
                            store: Primary[Any]) -> ImageCache | None:
        """Refuses up front (409 naming the cell) what no data motion strategy could carry
        out. Returns the image's ready cache on `store`, if there is one."""
        cached = await self._d.install.installed(session, image, store)
        if cached is not None:
            return cached
        backup_types = (await session.scalars(
            select(BackupStorage.type)
            .join(ImageStoreRef, ImageStoreRef.backup_storage_id == BackupStorage.id)
            .where(ImageStoreRef.image_id == image.id,
                   ImageStoreRef.state == ObjectState.READY))).all()
        self._d.motion.check_download(store.row, backup_types)
        return None

    async def run_create(self, ctx: JobContext) -> dict[str, Any]:
        """A job started by `create` in this process uses the rows `create` read in its
        transaction; a resumed one reads them again."""
        read = self._read.pop(ctx.job.id, None) or await self._read_for_create(ctx)
        if isinstance(read, dict):
            return read
        volume, store, image, cache, host = (read.volume, read.store, read.image, read.cache,
                                             read.host)
        copy = "snapshot_id" in ctx.params or "backup_id" in ctx.params
        backing = None
        if image is not None:
            ctx.engine.metrics.cache_lookup(hit=cache is not None)
            cache = cache or await self._d.install.install(ctx, image, store)
            assert cache.path is not None and image.format is not None
            backing = BackingFile(path=cache.path, format=image.format)
        backend = self._d.registry.backend_of(store)
        if copy:
            facts = await self._copy(ctx, store, volume, host, backing)
        else:
            facts = await backend.create_volume(ctx, store, volume, host, backing)
        result = {"path": facts.path, "virtual_size": facts.virtual_size}
        if "allocation" in ctx.params:
            result["allocation"] = ctx.params["allocation"]
        export = facts.export.model_dump() if facts.export else None
        if export and export["chap"]:
            export["chap"]["password"] = self._d.secrets.seal(export["chap"]["password"])
        async with ctx.db.begin() as session:
            await transition(session, Volume, volume.id, ObjectState.CREATING,
                             ObjectState.READY, path=facts.path, format=facts.format,
                             export=export,
                             image_cache_id=cache.id if cache else None)
            if "source_volume_id" in ctx.params:
                await unlock_volume(session, ctx.params["source_volume_id"])
            await record_fs_capacity(session, store.id, facts.capacity.total,
                                     facts.capacity.available)
            await ctx.succeed(session, result)
        return result

    async def _read_for_create(self, ctx: JobContext) -> _Read | dict[str, Any]:
        """The rows a resumed create job needs, or its result when the volume is ready
        already (the controller stopped after the end was committed)."""
        volume_id = ctx.job.resource_id or ""
        cache: ImageCache | None = None
        async with ctx.db.begin() as session:
            # A volume allocated by an older controller, which made it `creating` here.
            await transition(session, Volume, volume_id, ObjectState.ALLOCATED,
                             ObjectState.CREATING)
            volume = await get_fresh(session, Volume, volume_id, "volume")
            if volume.state == ObjectState.READY:
                return {"path": volume.path}
            store = await self._d.store_of(session, volume)
            image = await session.get(Image, volume.image_id) if volume.image_id else None
            if ("snapshot_id" in ctx.params or "backup_id" in ctx.params) \
                    and volume.image_cache_id is not None:
                cache = await session.get(ImageCache, volume.image_cache_id)
            elif image is not None:
                cache = await self._d.install.installed(session, image, store)
            host = await self._d.selector.for_primary(session, store)
        return _Read(volume, store, image, cache, host)

    # ---- a volume made of a snapshot, or of a snapshot's backup ----------------------

    async def _of_snapshot(self, session: AsyncSession, snapshot_id: str,
                           store: PrimaryStorage) -> Copy:
        """A copy on the snapshot's own storage, on the image cache its volume sits on (or
        flat): never a linked clone of the snapshot's file, which would tie a second
        volume's chain to this one's, and a merge of this tree could not keep it whole.
        The snapshot's volume is `snapshotting` while its layer is read."""
        snapshot = await get_or_404(session, Snapshot, snapshot_id, "snapshot")
        source = await get_or_404(session, Volume, snapshot.volume_id, "volume")
        if source.primary_storage_id != store.id:
            raise InvalidInput(f"snapshot {snapshot.name} is on another primary storage; a "
                               "volume is made of a snapshot on its own storage (back it up "
                               "and make one of the backup elsewhere)",
                               code="snapshot_on_other_storage")
        primary = self._d.registry.primary(store)
        self._d.registry.backend_of(primary).check_snapshot_copies(primary)
        await ready_snapshot(session, snapshot.id)
        await lock_volume(session, source)
        cached = source.image_cache_id is not None
        return Copy(size=snapshot.virtual_size, image_id=source.image_id if cached else None,
                    image_cache_id=source.image_cache_id,
                    params={"snapshot_id": snapshot.id, "source_volume_id": source.id})

    async def _of_backup(self, session: AsyncSession, backup_id: str,
                         store: PrimaryStorage) -> Copy:
        """A restore through the download direction of the matrix: rebased onto the image
        cache of the backup's image when this storage has it ready, else flat."""
        backup = await get_or_404(session, SnapshotBackup, backup_id, "snapshot backup")
        if backup.state != ObjectState.READY:
            raise Conflict(f"snapshot backup {backup.id} is {backup.state}, not ready",
                           code="backup_not_ready")
        row = await ready_backup_storage(session, backup.backup_storage_id)
        primary = self._d.registry.primary(store)
        self._d.registry.backend_of(primary).check_snapshot_copies(primary)
        self._d.motion.check_restore(store, row)
        cache = None
        if backup.image_id is not None:
            cache = await session.scalar(select(ImageCache).where(
                ImageCache.image_id == backup.image_id,
                ImageCache.primary_storage_id == store.id,
                ImageCache.state == ObjectState.READY))
        return Copy(size=backup.virtual_size, image_id=cache.image_id if cache else None,
                    image_cache_id=cache.id if cache else None,
                    params={"backup_id": backup.id})

    async def _copy(self, ctx: JobContext, store: Primary[Any], volume: Volume, host: Host,
                    backing: BackingFile | None) -> VolumeCreated:
        backend = self._d.registry.backend_of(store)
        async with ctx.db() as session:
            if "snapshot_id" in ctx.params:
                snapshot = await get_fresh(session, Snapshot, ctx.params["snapshot_id"],
                                           "snapshot")
                source = await get_fresh(session, Volume, snapshot.volume_id, "volume")
                assert snapshot.path is not None
                return await backend.clone_layer(
                    ctx, store, BackingFile(path=snapshot.path, format=source.format),
                    volume, host, backing)
            backup = await get_fresh(session, SnapshotBackup, ctx.params["backup_id"],
                                     "snapshot backup")
            bstore = self._d.registry.backup(await get_or_404(
                session, BackupStorage, backup.backup_storage_id, "backup storage"))
        assert backup.path is not None and backup.sha256 is not None
        directory = self._driver(store).volume_dir(store)
        restored = await self._d.motion.restore(ctx, RestoreRequest(
            backup=bstore, primary=store, source=backup.path, sha256=backup.sha256,
            format=backup.format, dest_dir=directory, file_name=f"{volume.id}.restored.qcow2",
            host=host, task_id=ctx.task_id("restore")))
        if backing is None and backend.copies_onto_cache:
            return VolumeCreated(restored.path, restored.virtual_size, restored.capacity)
        return await backend.clone_layer(
            ctx, store, BackingFile(path=restored.path, format=backup.format), volume, host,
            backing, drop_source=True)

    async def _fail_create(self, ctx: JobContext, reason: str) -> None:
        """Whatever step failed, the volume ends in error and gives its capacity back; the
        volume it was copied from is free again."""
        async with ctx.db.begin() as session:
            if "source_volume_id" in ctx.params:
                await unlock_volume(session, ctx.params["source_volume_id"])
            volume = await session.get(Volume, ctx.job.resource_id, populate_existing=True)
            if volume is not None and await transition(
                    session, Volume, volume.id, (ObjectState.ALLOCATED, ObjectState.CREATING),
                    ObjectState.ERROR, reason=reason):
                await release_capacity(session, volume.primary_storage_id, volume.size)

    async def _cancel_create(self, ctx: JobContext, reason: str) -> None:
        """A cancelled create leaves nothing: the volume settles as a failed one, then its
        file (made or not) is removed and it ends destroyed. Should the removal fail, it
        stays in error, from which it is deleted as usual."""
        await self._fail_create(ctx, reason)
        async with ctx.db() as session:
            volume = await session.get(Volume, ctx.job.resource_id, populate_existing=True)
            if volume is None or volume.state != ObjectState.ERROR:
                return
            store = await self._d.store_of(session, volume)
            host = await self._d.selector.for_primary(session, store)
        await self._d.registry.backend_of(store).delete_volume(ctx, store, volume, host)
        async with ctx.db.begin() as session:
            await transition(session, Volume, volume.id, ObjectState.ERROR,
                             ObjectState.DESTROYED, reason=reason)

    async def delete(self, volume_id: str, cascade: bool = False) -> Job:
        """`cascade`: its snapshots go too; without it, a volume with any is a 409."""
        async with self._d.db.begin() as session:
            volume = await get_or_404(session, Volume, volume_id, "volume")
            ensure_reachable((await self._d.store_of(session, volume)).row)
            await doom_snapshots(session, volume, cascade)
            # A volume in error gave its capacity back when it failed.
            release = volume.state == ObjectState.READY
            if not await transition(session, Volume, volume.id,
                                    (ObjectState.READY, ObjectState.ERROR),
                                    ObjectState.DESTROYING):
                raise Conflict(f"volume {volume.name} is {volume.state}; "
                               "try again when it settles")
            await refuse_attached(session, volume, "deleted")
            job = self._d.jobs.new_job(session, self.run_delete, resource_type="volume",
                                       resource_id=volume.id, params={"release": release})
        self._d.jobs.start(job)
        return job

    async def run_delete(self, ctx: JobContext) -> None:
        """Revokes every grant first, so no host keeps a path to a volume being removed."""
        async with ctx.db() as session:
            volume = await get_or_404(session, Volume, ctx.job.resource_id or "", "volume")
            store = await self._d.store_of(session, volume)
            host = await self._d.selector.for_primary(session, store)
            grants = (await session.execute(
                select(VolumeAccess, Host).join(Host, Host.id == VolumeAccess.host_id)
                .where(VolumeAccess.volume_id == volume.id))).all()
        backend = self._d.registry.backend_of(store)
        for access, grantee in grants:
            await self.revoke_grant(ctx, store, volume, access, grantee)
        capacity = await backend.delete_volume(ctx, store, volume, host)
        await drop_snapshots(ctx, backend, store, host, volume.id)
        async with ctx.db.begin() as session:
            if await transition(session, Volume, volume.id, ObjectState.DESTROYING,
                                ObjectState.DESTROYED, export=None) and ctx.params["release"]:
                await release_capacity(session, store.id, volume.size)
            await release_snapshots(session, volume.id)
            await record_fs_capacity(session, store.id, capacity.total, capacity.available)
            await ctx.succeed(session, None)

    async def _fail_delete(self, ctx: JobContext, reason: str) -> None:
        """The volume is in error, deletable again; a ready one gives its capacity back."""
        async with ctx.db.begin() as session:
            volume = await session.get(Volume, ctx.job.resource_id, populate_existing=True)
            if volume is not None and await transition(
                    session, Volume, volume.id, ObjectState.DESTROYING, ObjectState.ERROR,
                    reason=f"delete failed: {reason}") and ctx.params["release"]:
                await release_capacity(session, volume.primary_storage_id, volume.size)
            await settle_snapshots(session, ctx.job.resource_id or "", reason)

    async def grant(self, volume_id: str, host_id: str) -> Job:
        """Checks everything a grant needs up front, so bad requests are a 4xx."""
        async with self._d.db.begin() as session:
            volume = await get_or_404(session, Volume, volume_id, "volume")
            host = await get_or_404(session, Host, host_id, "host")
            store = await self._d.store_of(session, volume)
            ensure_reachable(store.row)
            self._driver(store).check_grant(store, host)
            if volume.state != ObjectState.READY:
                raise Conflict(f"volume {volume.name} is {volume.state}, not ready")
            await self.mark_granting(session, volume, host)
            job = self._d.jobs.new_job(session, self.run_grant, resource_type="volume",
                                       resource_id=volume.id, params={"host_id": host.id})
        self._d.jobs.start(job)
        return job

    async def run_grant(self, ctx: JobContext) -> dict[str, Any]:
        store, volume, _, host = await self._access(ctx)
        uri = await self._driver(store).grant_access(ctx, store, volume, host)
        result = {"host_id": host.id, "uri": uri}
        async with ctx.db.begin() as session:
            await self.mark_granted(session, volume.id, host.id, uri)
            await ctx.succeed(session, result)
        return result

    @staticmethod
    async def mark_granting(session: AsyncSession, volume: Volume, host: Host) -> None:
        """The host's grant row, made or moved to `granting` (a 409 while it is revoked)."""
        access = await session.scalar(select(VolumeAccess).where(
            VolumeAccess.volume_id == volume.id, VolumeAccess.host_id == host.id))
        if access is None:
            session.add(VolumeAccess(volume_id=volume.id, host_id=host.id,
                                     state=AccessState.GRANTING))
        elif not await transition(session, VolumeAccess, access.id,
                                  (AccessState.GRANTED, AccessState.ERROR,
                                   AccessState.GRANTING), AccessState.GRANTING):
            raise Conflict(f"access of host {host.name} to {volume.name} is being revoked")

    @staticmethod
    async def mark_granted(session: AsyncSession, volume_id: str, host_id: str,
                           uri: str) -> None:
        await session.execute(
            update(VolumeAccess)
            .where(VolumeAccess.volume_id == volume_id, VolumeAccess.host_id == host_id,
                   VolumeAccess.state == AccessState.GRANTING)
            .values(state=AccessState.GRANTED, uri=uri, reason=None)
            .execution_options(synchronize_session=False))

    async def _fail_grant(self, ctx: JobContext, reason: str) -> None:
        async with ctx.db.begin() as session:
            await session.execute(
                update(VolumeAccess)
                .where(VolumeAccess.volume_id == ctx.job.resource_id,
                       VolumeAccess.host_id == ctx.params["host_id"],
                       VolumeAccess.state == AccessState.GRANTING)
                .values(state=AccessState.ERROR, reason=reason)
                .execution_options(synchronize_session=False))

    async def revoke(self, volume_id: str, host_id: str) -> Job:
        async with self._d.db.begin() as session:
            volume = await get_or_404(session, Volume, volume_id, "volume")
            access = await session.scalar(select(VolumeAccess).where(
                VolumeAccess.volume_id == volume.id, VolumeAccess.host_id == host_id))
            if access is None:
                raise NotFound(f"host {host_id} holds no access to volume {volume.name}",
                               code="no_access")
            if not await transition(session, VolumeAccess, access.id,
                                    (AccessState.GRANTED, AccessState.ERROR,
                                     AccessState.REVOKING), AccessState.REVOKING):
                raise Conflict(f"access of host {host_id} to {volume.name} is being granted; "
                               "try again when it settles")
            job = self._d.jobs.new_job(session, self.run_revoke, resource_type="volume",
                                       resource_id=volume.id, params={"host_id": host_id})
        self._d.jobs.start(job)
        return job

    async def run_revoke(self, ctx: JobContext) -> None:
        store, volume, access, host = await self._access(ctx)
        await self.revoke_grant(ctx, store, volume, access, host)

    def _driver(self, store: Primary[Any]) -> PrimaryDataStoreDriver[Any]:
        return self._d.registry.primary_provider(store.row.type).driver

    async def _access(
        self, ctx: JobContext,
    ) -> tuple[Primary[Any], Volume, VolumeAccess, Host]:
        async with ctx.db() as session:
            volume = await get_or_404(session, Volume, ctx.job.resource_id or "", "volume")
            store = await self._d.store_of(session, volume)
            host = await get_or_404(session, Host, ctx.params["host_id"], "host")
            access = await session.scalar(select(VolumeAccess).where(
                VolumeAccess.volume_id == volume.id, VolumeAccess.host_id == host.id))
        if access is None:
            raise NotFound(f"host {host.name} holds no access to volume {volume.name}",
                           code="no_access")
        return store, volume, access, host

    async def revoke_grant(self, ctx: JobContext, store: Primary[Any], volume: Volume,
                      access: VolumeAccess, host: Host) -> None:
        """Removes the host's ACL on the server, then the grant's row."""
        try:
            await self._driver(store).revoke_access(ctx, store, volume, host)
        except StrataError as exc:
            async with ctx.db.begin() as session:
                await transition(session, VolumeAccess, access.id, list(AccessState),
                                 AccessState.ERROR, reason=f"revoke failed: {exc.message}")
            raise
        async with ctx.db.begin() as session:
            await session.execute(delete(VolumeAccess).where(VolumeAccess.id == access.id))


    # ---- growing a volume ----------------------------------------------------------

    async def resize(self, req: ResizeVolume) -> Job:
        """A growth moves the volume to `resizing` (so no other job takes it meanwhile) and
        reserves the added bytes in one transaction. Asking for the size it has is a job
        that succeeds at once; asking for less is refused: shrinking loses data."""
        async with self._d.db.begin() as session:
            volume = await get_fresh(session, Volume, req.volume_id, "volume")
            if volume.state != ObjectState.READY:
                raise Conflict(f"volume {volume.name} is {volume.state}; it can be resized "
                               "when ready", code="volume_busy")
            await refuse_attached(session, volume, "resized")
            if req.size < volume.size:
                raise InvalidInput(f"volume {volume.name} is {volume.size} bytes; it cannot "
                                   f"shrink to {req.size}", code="volume_shrink")
            params = {"size": req.size, "from": volume.size}
            if req.size > volume.size:
                row = await get_fresh(session, PrimaryStorage, volume.primary_storage_id,
                                      "primary storage")
                ensure_accepting(row)
                store = self._d.registry.primary(row)
                self._d.registry.backend(row.type, row.hypervisor)
                await self._d.selector.for_primary(session, store)
                if not await transition(session, Volume, volume.id, ObjectState.READY,
                                        ObjectState.RESIZING, where={"size": volume.size}):
                    raise Conflict(f"volume {volume.name} changed meanwhile; try again",
                                   code="volume_busy")
                await reserve_capacity(session, row, req.size - volume.size)
            job = self._d.jobs.new_job(session, self.run_resize, resource_type="volume",
                                       resource_id=volume.id, params=params)
        self._d.jobs.start(job)
        return job

    async def run_resize(self, ctx: JobContext) -> dict[str, Any]:
        """The backend grows the volume through the host that reaches it (an iSCSI
        storage server's agent); the new size and the job's end commit together."""
        size, before = ctx.params["size"], ctx.params["from"]
        if size == before:
            return {"size": size, "grown": False}
        async with ctx.db() as session:
            volume = await get_fresh(session, Volume, ctx.job.resource_id or "", "volume")
            store = await self._d.store_of(session, volume)
            host = await self._d.selector.for_primary(session, store)
        backend = self._d.registry.backend_of(store)
        grown = await backend.resize_volume(ctx, store, volume, host, size)
        result = {"size": size, "grown": True, "virtual_size": grown.virtual_size}
        async with ctx.db.begin() as session:
            await transition(session, Volume, volume.id, ObjectState.RESIZING,
                             ObjectState.READY, size=size, reason=None)
            await record_fs_capacity(session, store.id, grown.capacity.total,
                                     grown.capacity.available)
            await ctx.succeed(session, result)
        return result

    async def _fail_resize(self, ctx: JobContext, reason: str) -> None:
        """The volume is ready again at the size it had, and the added bytes go back. (A
        failure after the agent grew it leaves it larger than recorded until a resize to
        that size, which the agent finds done, is asked again.)"""
        size, before = ctx.params["size"], ctx.params["from"]
        async with ctx.db.begin() as session:
            volume = await session.get(Volume, ctx.job.resource_id, populate_existing=True)
            if volume is not None and await transition(
                    session, Volume, volume.id, ObjectState.RESIZING, ObjectState.READY,
                    reason=f"resize to {size} bytes failed: {reason}"):
                await release_capacity(session, volume.primary_storage_id, size - before)
