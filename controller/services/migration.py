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
restart re-attaches to its agent tasks (task ids derived from the job).

A volume with snapshots moves with its whole tree, between storages that carry
snapshots (qcow2 files, and LUN files on iSCSI) when one host reaches both: each
snapshot's file is copied and verified (onto its parent's copy, the oldest onto the
image cache, where the destination keeps qcow2 chains; a whole raw copy beside the LUN
on iSCSI), and the switch moves every snapshot row (storage, path) and their share of
the capacity ledger with the volume's. Elsewhere such a volume is refused (409 naming
the snapshots).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
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
from controller.plugins.interfaces.backend import Layer
from controller.plugins.interfaces.motion import LiveTarget, Migrated, MigrateRequest
from controller.plugins.interfaces.stores import Primary
from controller.services.attachments import live_target
from controller.services.base import ServiceDeps
from controller.services.maintenance import ensure_accepting, ensure_reachable
from controller.services.snapshots import chain_of, snapshots_of
from shared.errors import Conflict, InvalidInput, StrataError
from shared.names import validate_file_name
from shared.protocol.files import BackingFile
from shared.protocol.libvirt import DOMAIN_INFO, DomainPayload
from shared.protocol.types import ImageFormat

log = logging.getLogger(__name__)


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
            ensure_accepting(row)
            source = await self._d.store_of(session, volume)
            ensure_reachable(source.row)
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
            tree = await self._check_free(session, volume, source, dest, live is not None)
            request = await self._request(session, volume, source, dest, None, "", live)
            self._d.motion.migration_strategy(request)
            held = volume.size + sum(s.size for s in tree)
            await reserve_capacity(session, row, held)
            job = self._d.jobs.new_job(
                session, self.run_migrate, resource_type="volume", resource_id=volume.id,
                params={"source": source.id, "dest": row.id, "source_path": volume.path,
                        "held": held, "layers": [[layer.snapshot_id, layer.source.path]
                                                 for layer in request.layers],
                        "live": [live.host.id, live.domain] if live else None})
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

    async def _check_free(self, session: AsyncSession, volume: Volume, source: Primary[Any],
                          dest: Primary[Any], attached: bool) -> list[Snapshot]:
        """No host holding the volume but the one it is attached to; snapshots (returned)
        only where their chain can move (cold, between storages of qcow2 files), and all
        settled."""
        tree = await snapshots_of(session, volume.id)
        registry = self._d.registry
        carried = (registry.backend_of(source).carries_snapshots(source)
                   and registry.backend_of(dest).carries_snapshots(dest))
        if tree and (attached or not carried):
            names = ", ".join(sorted(s.name for s in tree))
            where = ("a live migration does not carry" if attached else
                     "move only between storages of qcow2 files or LUN files")
            raise Conflict(f"volume {volume.name} has snapshots ({names}), which {where}; "
                           "delete them first",
                           code="volume_has_snapshots")
        unsettled = sorted(s.name for s in tree if s.state != ObjectState.READY and s.path)
        if unsettled:
            raise Conflict(f"volume {volume.name} has snapshots that are not ready "
                           f"({', '.join(unsettled)}); delete them first",
                           code="snapshot_not_ready")
        granted = await session.scalar(select(VolumeAccess.host_id).where(
            VolumeAccess.volume_id == volume.id).limit(1))
        if granted is not None and not attached:
            raise Conflict(f"volume {volume.name} is granted to host {granted}; revoke the "
                           "access first", code="volume_in_use")
        return tree

    async def _request(self, session: AsyncSession, volume: Volume, source: Primary[Any],
                       dest: Primary[Any], backing: BackingFile | None,
                       task_prefix: str, live: LiveTarget | None,
                       strict: bool = True) -> MigrateRequest:
        """`strict`: a storage no host reaches is a 409; else it has no hosts (a failed
        job's clean-up does what it still can)."""
        staging = (await session.scalars(select(BackupStorage).where(
            BackupStorage.state == StoreState.READY).order_by(BackupStorage.name))).all()
        tree = [s for s in await snapshots_of(session, volume.id) if s.path]

        async def reaching(store: Primary[Any]) -> list[Host]:
            try:
                return await self._d.selector.reaching(session, store)
            except Conflict:
                if strict:
                    raise
                return []

        return MigrateRequest(
            volume=volume, source=source, dest=dest,
            source_hosts=await reaching(source), dest_hosts=await reaching(dest),
            backing=backing, staging=[self._d.registry.backup(b) for b in staging],
            task_prefix=task_prefix, layers=layers(tree, volume.format),
            file_name=file_name(volume.path) if tree else None,
            active_parent=volume.snapshot_id if tree else None, live=live)

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
        backend = self._d.registry.backend_of(source)
        capacity = await backend.delete_volume(ctx, source, old, host)
        for snapshot in leaves_first(ctx.params.get("layers", []), volume.id):
            capacity = await backend.delete_snapshot(ctx, source, snapshot, [], host)
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
        """The row moves to the copy (on the image cache `cache_id`, if any), every
        snapshot row to its layer's copy, and the capacity with them, in one
        transaction."""
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
                await session.execute(
                    update(Snapshot).where(Snapshot.volume_id == volume.id,
                                           Snapshot.primary_storage_id == source.id)
                    .values(primary_storage_id=dest.id)
                    .execution_options(synchronize_session=False))
                for snapshot_id, copy in migrated.layers.items():
                    await session.execute(
                        update(Snapshot).where(Snapshot.id == snapshot_id).values(path=copy.path)
                        .execution_options(synchronize_session=False))
                await release_capacity(session, source.id,
                                       ctx.params.get("held", volume.size))
            await record_fs_capacity(session, dest.id, created.capacity.total,
                                     created.capacity.available)

    async def _fail_migrate(self, ctx: JobContext, reason: str) -> None:
        """Before the switch, the volume stays where it was, ready, and the destination's
        copies (if any were made) go; after it, the volume is ready on the destination
        and only the source's files may be left."""
        dest_id = ctx.params["dest"]
        async with ctx.db() as session:
            volume = await session.get(Volume, ctx.job.resource_id, populate_existing=True)
            if volume is None:
                return
            switched = volume.primary_storage_id == dest_id
            source = self._d.registry.primary(await get_fresh(
                session, PrimaryStorage, ctx.params["source"], "primary storage"))
        if not switched and not await self._left_on_source(ctx, source, volume):
            async with ctx.db.begin() as session:
                await transition(
                    session, Volume, volume.id, ObjectState.MIGRATING, ObjectState.ERROR,
                    reason=f"live migration failed: {reason}; the domain's disk could not "
                           "be confirmed on the source, so the copy on the destination is "
                           "kept: check which one the domain uses before removing either")
            return
        async with ctx.db.begin() as session:
            if await transition(session, Volume, volume.id, ObjectState.MIGRATING,
                                ObjectState.READY,
                                reason=f"migration failed: {reason}") and not switched:
                await release_capacity(session, dest_id, ctx.params.get("held", volume.size))
        if switched:
            return
        async with ctx.db() as session:
            dest = self._d.registry.primary(await get_fresh(
                session, PrimaryStorage, dest_id, "primary storage"))
            request = await self._request(session, volume, source, dest, None, "", None,
                                          strict=False)
        await self._d.motion.abandon_migrate(ctx, request)
        if not request.dest_hosts:
            return
        host = request.dest_hosts[0]
        backend = self._d.registry.backend_of(dest)
        copied = ctx.params.get("layers", [])
        directory = self._d.registry.primary_provider(dest.row.type).driver.volume_dir(dest)
        path = (posixpath.join(directory, file_name(ctx.params["source_path"])) if copied
                else None)
        copy = Volume(id=volume.id, name=volume.name, path=path, primary_storage_id=dest_id,
                      size=volume.size)
        await backend.delete_volume(ctx, dest, copy, host)
        moved = [[sid, posixpath.join(directory, file_name(src))] for sid, src in copied]
        for snapshot in leaves_first(moved, volume.id):
            await backend.delete_snapshot(ctx, dest, snapshot, [], host)

    async def _left_on_source(self, ctx: JobContext, source: Primary[Any],
                              volume: Volume) -> bool:
        """Whether a failed migration left the volume's data only on the source. A live
        copy may still have pivoted after the controller stopped waiting (an agent out
        of reach): then the domain writes to the copy, which must not be removed. A
        domain that can't be asked counts as not left on the source."""
        live = ctx.params.get("live")
        if live is None:
            return True
        expected = self._d.registry.backend_of(source).volume_source(ctx, source, volume).path
        async with ctx.db() as session:
            host = await get_fresh(session, Host, live[0], "host")
        try:
            facts = await ctx.call(host, DOMAIN_INFO, DomainPayload(domain=live[1]),
                                   step="live-check")
        except StrataError as exc:
            log.warning("volume %s: cannot ask domain %s which file it uses: %s",
                        volume.id, live[1], exc)
            return False
        return facts.tops.get(volume.id) == expected


def file_name(path: str | None) -> str:
    """A layer's name as a qcow2 file, which its copy keeps on a destination of qcow2
    chains: a qcow2 layer's own name, a LUN's or LUN snapshot's with `.qcow2` for `.raw`
    (names that never meet, so the copies of a tree never collide)."""
    stem = posixpath.splitext(posixpath.basename(path or ""))[0]
    return validate_file_name(f"{stem}.qcow2")


def layers(tree: Sequence[Snapshot], fmt: ImageFormat) -> list[Layer]:
    """The snapshots' frozen files (of the volume's `fmt`), parents first."""
    ordered = sorted(tree, key=lambda s: len(chain_of(tree, s.id)))
    return [Layer(snapshot_id=s.id, source=BackingFile(path=s.path or "", format=fmt),
                  file_name=file_name(s.path), parent=s.parent_id) for s in ordered]


def leaves_first(copied: list[list[str]], volume_id: str) -> list[Snapshot]:
    """Snapshot files of the volume to remove (`copied`: snapshot id and path, parents
    first), each once nothing sits on it any more."""
    return [Snapshot(id=sid, volume_id=volume_id, path=path)
            for sid, path in reversed(copied)]

