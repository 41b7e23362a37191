"""MigrationService: moving a volume to another primary storage: cold when no VM holds
it open; live (`motion/live.py`) when it is attached to a running domain, whose disk
moves by a block copy and a pivot before the same switch of the row.

The volume is `migrating` from the request to the end (a compare-and-swap from `ready`,
so a volume another job holds is a 409), and the destination's capacity is reserved in
the same transaction. The job then has a data motion strategy make a verified copy on
the destination, under a temporary name published by rename (onto the destination's
image cache where it has, or gets, one), switches the row (storage, path, format,
export, image cache, the capacity of both storages) in one transaction, and only then
removes the source. Until the switch the source is the volume, untouched; a job that
fails before it removes the half-made copy, and a job resumed after a controller
restart re-attaches to its agent tasks (task ids derived from the job). A volume with
snapshots is refused (409 naming them): their chain is not moved.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_fresh
from controller.db.models import (
    BackupStorage,
    Host,
    Image,
    Job,
    ObjectState,
    PrimaryStorage,
    Snapshot,
    StoreState,
    Volume,
    VolumeAccess,
)
from controller.db.transitions import (
    record_fs_capacity,
    release_capacity,
    reserve_capacity,
    transition,
)
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.motion import LiveTarget, Migrated, MigrateRequest
from controller.plugins.interfaces.stores import Primary
from controller.services.attachments import live_target
from controller.services.base import ServiceDeps
from controller.services.snapshots import HELD
from shared.errors import Conflict, InvalidInput, StrataError
from shared.protocol.files import BackingFile


class MigrationService:
    def __init__(self, deps: ServiceDeps) -> None:
        self._d = deps
        deps.jobs.register("volume.migrate", self.run_migrate, on_failure=self._fail_migrate)

    async def migrate(self, volume_id: str, dest_id: str) -> Job:
        """Checks everything up front (a 4xx rather than a failed job), then moves the
        volume to `migrating` and reserves its size on the destination."""
        async with self._d.db.begin() as session:
            volume = await get_fresh(session, Volume, volume_id, "volume")
            row = await get_fresh(session, PrimaryStorage, dest_id, "primary storage")
            if row.id == volume.primary_storage_id:
                raise InvalidInput(f"volume {volume.name} is on primary storage {row.name} "
                                   "already", code="same_storage")
            if volume.state != ObjectState.READY:
                raise Conflict(f"volume {volume.name} is {volume.state}; it can be migrated "
                               "when ready", code="volume_busy")
            if row.state != StoreState.READY:
                raise Conflict(f"primary storage {row.name} is {row.state}, not ready",
                               code="storage_not_ready")
            source = await self._d.store_of(session, volume)
            dest = self._d.registry.primary(row)
            self._d.registry.backend(row.type, row.hypervisor)
            if row.hypervisor != source.row.hypervisor:
                raise Conflict(f"primary storage {row.name} serves {row.hypervisor}, volume "
                               f"{volume.name} is for {source.row.hypervisor}",
                               code="hypervisor_mismatch")
            self._check_apart(source, dest)
            if not await transition(session, Volume, volume.id, ObjectState.READY,
                                    ObjectState.MIGRATING,
                                    where={"primary_storage_id": source.id}):
                raise Conflict(f"volume {volume.name} changed meanwhile; try again",
                               code="volume_busy")
            # After the compare-and-swap, so that an attach committed meanwhile is seen.
            live = await self._live(session, volume)
            await self._check_free(session, volume, attached=live is not None)
            request = await self._request(session, volume, source, dest, None, "", live)
            self._d.motion.migration_strategy(request)
            await reserve_capacity(session, row, volume.size)
            job = self._d.jobs.new_job(
                session, self.run_migrate, resource_type="volume", resource_id=volume.id,
                params={"source": source.id, "dest": row.id, "source_path": volume.path})
        self._d.jobs.start(job)
        return job

    def _check_apart(self, source: Primary[Any], dest: Primary[Any]) -> None:
        """Two storages over the same volume directory (two rows for one NFS export) would
        have the copy land on the source's own file, and a failed copy's clean-up remove
        it: refused."""
        driver = self._d.registry.primary_provider
        directory = driver(dest.row.type).driver.volume_dir(dest)
        if driver(source.row.type).driver.volume_dir(source) == directory:
            raise Conflict(f"primary storages {source.name} and {dest.name} keep volumes in "
                           f"the same directory ({directory})", code="same_directory")

    @staticmethod
    async def _live(session: AsyncSession, volume: Volume) -> LiveTarget | None:
        """The running domain the volume is attached to, if any (a 409 while it is being
        attached or detached)."""
        target = await live_target(session, volume)
        if target is None:
            return None
        return LiveTarget(await get_fresh(session, Host, target["host_id"], "host"),
                          target["domain"])

    @staticmethod
    async def _check_free(session: AsyncSession, volume: Volume, attached: bool) -> None:
        """No snapshots to leave behind, no host holding the volume but the one it is
        attached to."""
        snapshots = (await session.scalars(select(Snapshot.name).where(
            Snapshot.volume_id == volume.id, Snapshot.state.in_(HELD))
            .order_by(Snapshot.name))).all()
        if snapshots:
            raise Conflict(f"volume {volume.name} has snapshots ({', '.join(snapshots)}), "
                           "which are not migrated; delete them first",
                           code="volume_has_snapshots")
        granted = await session.scalar(select(VolumeAccess.host_id).where(
            VolumeAccess.volume_id == volume.id).limit(1))
        if granted is not None and not attached:
            raise Conflict(f"volume {volume.name} is granted to host {granted}; revoke the "
                           "access first", code="volume_in_use")

    async def _request(self, session: AsyncSession, volume: Volume, source: Primary[Any],
                       dest: Primary[Any], backing: BackingFile | None,
                       task_prefix: str, live: LiveTarget | None) -> MigrateRequest:
        staging = (await session.scalars(select(BackupStorage).where(
            BackupStorage.state == StoreState.READY).order_by(BackupStorage.name))).all()
        return MigrateRequest(
            volume=volume, source=source, dest=dest,
            source_hosts=await self._d.selector.reaching(session, source),
            dest_hosts=await self._d.selector.reaching(session, dest),
            backing=backing, staging=[self._d.registry.backup(b) for b in staging],
            task_prefix=task_prefix, live=live)

    async def run_migrate(self, ctx: JobContext) -> dict[str, Any]:
        source_id, dest_id = ctx.params["source"], ctx.params["dest"]
        async with ctx.db() as session:
            volume = await get_fresh(session, Volume, ctx.job.resource_id or "", "volume")
            source = self._d.registry.primary(await get_fresh(
                session, PrimaryStorage, source_id, "primary storage"))
            dest = self._d.registry.primary(await get_fresh(
                session, PrimaryStorage, dest_id, "primary storage"))
        if volume.primary_storage_id == source_id:
            cache = await self._cache(ctx, volume, source, dest)
            backing = cache[1] if cache else None
            async with ctx.db() as session:
                request = await self._request(session, volume, source, dest, backing,
                                              ctx.task_id("migrate"),
                                              await self._live(session, volume))
            migrated = await self._d.motion.migrate(ctx, request)
            await self._switch(ctx, volume, source, dest, migrated,
                               cache[0] if cache and migrated.on_cache else None)
        # The source goes only once the row points at the copy; a job resumed after the
        # switch comes straight here.
        old = Volume(id=volume.id, name=volume.name, path=ctx.params["source_path"],
                     primary_storage_id=source_id, size=volume.size)
        async with ctx.db() as session:
            host = await self._d.selector.for_primary(session, source)
        capacity = await self._d.registry.backend_of(source).delete_volume(ctx, source, old,
                                                                           host)
        async with ctx.db.begin() as session:
            moved = await get_fresh(session, Volume, volume.id, "volume")
            await transition(session, Volume, volume.id, ObjectState.MIGRATING,
                             ObjectState.READY, reason=None)
            await record_fs_capacity(session, source_id, capacity.total, capacity.available)
            result = {"primary_storage_id": dest_id, "path": moved.path}
            await ctx.succeed(session, result)
        return result

    async def _cache(self, ctx: JobContext, volume: Volume, source: Primary[Any],
                     dest: Primary[Any]) -> tuple[str, BackingFile] | None:
        """The destination's image cache a linked clone's copy can sit on, installed if
        it is missing; None (a whole copy) when either side is not a chain of qcow2
        files on an image cache, or the image can't be brought there."""
        registry = self._d.registry
        if (volume.image_id is None or volume.image_cache_id is None
                or not registry.backend_of(source).copies_onto_cache
                or not registry.backend_of(dest).copies_onto_cache):
            return None
        async with ctx.db() as session:
            image = await session.get(Image, volume.image_id)
            cache = await self._d.install.installed(session, image, dest) if image else None
        if image is None:
            return None
        if cache is None:
            try:
                cache = await self._d.install.install(ctx, image, dest)
            except StrataError:
                return None
        assert cache.path is not None and image.format is not None
        return cache.id, BackingFile(path=cache.path, format=image.format)

    async def _switch(self, ctx: JobContext, volume: Volume, source: Primary[Any],
                      dest: Primary[Any], migrated: Migrated,
                      cache_id: str | None) -> None:
        """The row moves to the copy (on the image cache `cache_id`, if any), and the
        capacity with it, in one transaction."""
        created = migrated.created
        export = created.export.model_dump() if created.export else None
        if export and export["chap"]:
            export["chap"]["password"] = self._d.secrets.seal(export["chap"]["password"])
        async with ctx.db.begin() as session:
            if await transition(
                    session, Volume, volume.id, ObjectState.MIGRATING, ObjectState.MIGRATING,
                    where={"primary_storage_id": source.id}, primary_storage_id=dest.id,
                    path=created.path, format=created.format, export=export,
                    image_cache_id=cache_id):
                await release_capacity(session, source.id, volume.size)
            await record_fs_capacity(session, dest.id, created.capacity.total,
                                     created.capacity.available)

    async def _fail_migrate(self, ctx: JobContext, reason: str) -> None:
        """Before the switch, the volume stays where it was, ready, and the destination's
        copy (if any was made) goes; after it, the volume is ready on the destination
        and only the source's file may be left."""
        dest_id = ctx.params["dest"]
        async with ctx.db.begin() as session:
            volume = await session.get(Volume, ctx.job.resource_id, populate_existing=True)
            if volume is None:
                return
            switched = volume.primary_storage_id == dest_id
            if await transition(session, Volume, volume.id, ObjectState.MIGRATING,
                                ObjectState.READY,
                                reason=f"migration failed: {reason}") and not switched:
                await release_capacity(session, dest_id, volume.size)
        if switched:
            return
        async with ctx.db() as session:
            dest = self._d.registry.primary(await get_fresh(
                session, PrimaryStorage, dest_id, "primary storage"))
            host = await self._d.selector.for_primary(session, dest)
        copy = Volume(id=volume.id, name=volume.name, path=None, primary_storage_id=dest_id,
                      size=volume.size)
        await self._d.registry.backend_of(dest).delete_volume(ctx, dest, copy, host)

