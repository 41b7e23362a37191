"""Reconcile: what a primary storage holds (its driver's `list_objects`) against what the
rows say it holds. The report names files no row knows (orphans), rows whose files are
missing, and files whose size is not the recorded one; the last report of each storage
is kept. Orphans are only ever moved aside, into the storage's quarantine directory, and
only when the operator names them.

What a running job is making is neither an orphan nor missing: the storage is listed
first and the rows read after, so every file listed whose row existed is known; files
named after an object in a transitional state (being made, copied, moved, deleted), and
temporaries whose writing task belongs to a running job or a cache being filled, are
counted as in progress; and only `ready` rows can miss their file.

Backup storages are reconciled too (report only): their layout is fixed by ids
(`images/<image id>`, `snapshots/<volume id>.<snapshot id>.qcow2`), whatever the type.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.ledger import check_ledger
from controller.db.lookup import get_or_404
from controller.db.models import (
    TRANSITIONAL,
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
    StorageReport,
    StoreState,
    Volume,
)
from controller.jobs.engine import JobContext, in_flight
from controller.plugins.interfaces.backup import IMAGES, SNAPSHOTS
from controller.plugins.interfaces.stores import Primary
from controller.services.backups import backup_file_name
from controller.services.base import ServiceDeps
from controller.services.maintenance import ensure_reachable
from shared.errors import Conflict, InvalidInput, NotFound, StrataError
from shared.names import task_in_flight, temp_task_id
from shared.protocol.objects import QUARANTINE_OBJECTS, QuarantinePayload, StoreObject

log = logging.getLogger(__name__)

KIND = "reconcile"
STORAGE_KIND = "primary"
BACKUP_KIND = "backup"


class Orphan(BaseModel):
    """A file no row knows (`kind` temporary: a leftover of work that ended)."""

    path: str
    place: str
    kind: str
    size: int


class MissingFile(BaseModel):
    """A ready row whose file the storage does not hold."""

    resource_type: str
    id: str
    name: str
    path: str


class SizeMismatch(BaseModel):
    """A file whose virtual size is not the one its row records."""

    path: str
    resource_type: str
    id: str
    expected: int
    found: int


class Quarantined(BaseModel):
    path: str
    moved_to: str
    at: float


class ReconcileReport(BaseModel):
    storage_id: str
    job_id: str | None
    host_id: str
    started_at: float
    finished_at: float
    objects: int
    orphans: list[Orphan]
    missing: list[MissingFile]
    size_mismatches: list[SizeMismatch]
    # Files a running job is making, left out of the comparison.
    in_progress: list[str]
    # Orphans moved aside since this report was made (by the operator's request).
    quarantined: list[Quarantined] = []
    # The storage's capacity ledger and its recomputation from the rows (primary
    # storages only): they differ only if an allocation was lost or counted twice.
    capacity_allocated: int | None = None
    capacity_recomputed: int | None = None


@dataclass(frozen=True)
class Known:
    """A row's file: what the storage should hold at `path`."""

    resource_type: str
    id: str
    name: str
    state: str
    virtual_size: int | None


@dataclass(frozen=True)
class Rows:
    known: dict[str, Known]
    # Ids of objects in a transitional state, and what is in flight (`in_flight`): a file
    # named after one (or a temporary its task writes) is work in progress.
    busy_ids: frozenset[str]
    in_flight: frozenset[str]


def relative(root: str, path: str) -> str:
    """A row's path as a listing names it: below the store's root, or a logical
    volume's name."""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else posixpath.basename(path)


def _in_progress(obj: StoreObject, rows: Rows) -> bool:
    name = posixpath.basename(obj.path)
    if obj.kind == "temporary":
        task_id = temp_task_id(name)
        if task_id is None:
            return False
        return (task_in_flight(task_id, rows.in_flight)
                or any(i in task_id for i in rows.busy_ids))
    return any(i in name for i in rows.busy_ids)


def compare(objects: Iterable[StoreObject], rows: Rows) -> tuple[
        list[Orphan], list[MissingFile], list[SizeMismatch], list[str]]:
    """The heart of the report; pure, so that its rules are tested without a storage."""
    orphans, mismatches, in_progress = [], [], []
    seen = set()
    for obj in objects:
        row = rows.known.get(obj.path)
        if row is None:
            if _in_progress(obj, rows):
                in_progress.append(obj.path)
            else:
                orphans.append(Orphan(path=obj.path, place=obj.place, kind=obj.kind,
                                      size=obj.size))
            continue
        seen.add(obj.path)
        if (row.state == ObjectState.READY and row.virtual_size is not None
                and obj.virtual_size is not None
                # LVM rounds a logical volume up to whole extents.
                and (obj.virtual_size < row.virtual_size if obj.place == "lv"
                     else obj.virtual_size != row.virtual_size)):
            mismatches.append(SizeMismatch(path=obj.path, resource_type=row.resource_type,
                                           id=row.id, expected=row.virtual_size,
                                           found=obj.virtual_size))
    missing = [MissingFile(resource_type=r.resource_type, id=r.id, name=r.name, path=p)
               for p, r in sorted(rows.known.items())
               if p not in seen and r.state == ObjectState.READY]
    return orphans, missing, mismatches, in_progress


class ReconcileService:
    def __init__(self, deps: ServiceDeps) -> None:
        self._d = deps
        deps.jobs.register("primary_storage.reconcile", self.run)
        deps.jobs.register("primary_storage.quarantine", self.run_quarantine)
        deps.jobs.register("backup_storage.reconcile", self.run_backup)

    async def submit(self, store_id: str, storage_kind: str = STORAGE_KIND) -> Job:
        """A reconcile job for the storage; the one running already, if there is one."""
        handler = self.run if storage_kind == STORAGE_KIND else self.run_backup
        async with self._d.db.begin() as session:
            store = await _store_row(session, store_id, storage_kind)
            running = await self._running(session, store.id)
            if running is not None:
                return running
            if isinstance(store, PrimaryStorage):
                ensure_reachable(store)
            if store.state != StoreState.READY:
                raise Conflict(f"{storage_kind} storage {store.name} is {store.state}",
                               code="storage_not_ready")
            job = self._d.jobs.new_job(session, handler,
                                       resource_type=f"{storage_kind}_storage",
                                       resource_id=store.id)
        self._d.jobs.start(job)
        return job

    async def submit_all(self) -> None:
        """The periodic run: every ready primary and backup storage."""
        async with self._d.db() as session:
            stores = [(STORAGE_KIND, i) for i in (await session.scalars(
                select(PrimaryStorage.id).where(PrimaryStorage.state == StoreState.READY)
            )).all()] + [(BACKUP_KIND, i) for i in (await session.scalars(
                select(BackupStorage.id).where(BackupStorage.state == StoreState.READY)
            )).all()]
        for storage_kind, store_id in stores:
            try:
                await self.submit(store_id, storage_kind)
            except StrataError as exc:
                log.info("no reconcile of %s storage %s: %s", storage_kind, store_id,
                         exc.message)

    async def _running(self, session: AsyncSession, store_id: str) -> Job | None:
        kinds = [self._d.jobs.kind_of(h) for h in (self.run, self.run_quarantine,
                                                  self.run_backup)]
        return await session.scalar(select(Job).where(
            Job.kind.in_(kinds), Job.resource_id == store_id,
            Job.state == JobState.RUNNING).limit(1))

    async def report(self, store_id: str,
                     storage_kind: str = STORAGE_KIND) -> ReconcileReport:
        async with self._d.db() as session:
            store = await _store_row(session, store_id, storage_kind)
            row = await self._report_row(session, store.id, storage_kind)
        if row is None or row.report is None:
            raise NotFound(f"{storage_kind} storage {store.name} has no reconcile report "
                           "yet; run one (POST .../reconcile)", code="no_report")
        return ReconcileReport.model_validate(row.report)

    async def quarantine(self, store_id: str, paths: list[str]) -> Job:
        """Only orphans of the last report may be named; the job checks each again."""
        report = await self.report(store_id)
        orphans = {o.path for o in report.orphans}
        unknown = sorted(set(paths) - orphans)
        if unknown:
            raise InvalidInput(f"not orphans of the last reconcile report: "
                               f"{', '.join(unknown[:20])}", code="not_an_orphan")
        async with self._d.db.begin() as session:
            ensure_reachable(await get_or_404(session, PrimaryStorage, store_id,
                                              "primary storage"))
            if await self._running(session, store_id) is not None:
                raise Conflict("a reconcile or quarantine of this storage is running; "
                               "wait for it", code="storage_busy")
            job = self._d.jobs.new_job(session, self.run_quarantine,
                                       resource_type="primary_storage", resource_id=store_id,
                                       params={"paths": sorted(set(paths))})
        self._d.jobs.start(job)
        return job

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        return await self._finish(ctx, await self._reconcile(ctx), STORAGE_KIND)

    async def run_backup(self, ctx: JobContext) -> dict[str, Any]:
        """Through a connected host: the store's images and snapshot backups."""
        started = time.time()
        async with ctx.db() as session:
            row = await get_or_404(session, BackupStorage, ctx.job.resource_id or "",
                                   "backup storage")
            store = self._d.registry.backup(row)
            host = await self._d.selector.for_backup(session, store)
        driver = self._d.registry.backup_provider(row.type).driver
        listing = await driver.list_objects(ctx, store, host)
        async with ctx.db() as session:
            rows = await self._backup_rows(session, row.id, started)
        return await self._finish(ctx, self._report(ctx, row.id, host, started, listing.objects,
                                                    rows), BACKUP_KIND)

    async def _finish(self, ctx: JobContext, report: ReconcileReport,
                      storage_kind: str) -> dict[str, Any]:
        async with ctx.db.begin() as session:
            await self._save(session, report, storage_kind)
            result = {"objects": report.objects, "orphans": len(report.orphans),
                      "missing": len(report.missing),
                      "size_mismatches": len(report.size_mismatches)}
            await ctx.succeed(session, result)
        return result

    async def run_quarantine(self, ctx: JobContext) -> dict[str, Any]:
        """Lists the storage and compares again: a file that became known (or busy) since
        the report is left alone. The rest is moved by the agent that listed it."""
        report = await self._reconcile(ctx)
        still = {o.path for o in report.orphans}
        asked = list(ctx.params["paths"])
        movable = [p for p in asked if p in still]
        skipped = [{"path": p, "reason": "no longer an orphan"} for p in asked
                   if p not in still]
        moved: dict[str, str] = {}
        if movable:
            async with ctx.db() as session:
                store, host = await self._store_and_host(session, ctx.job.resource_id or "")
            driver = self._d.registry.primary_provider(store.row.type).driver
            places = {o.path: o.place for o in report.orphans}
            files = [p for p in movable if places[p] == "file"]
            skipped += [{"path": p, "reason": "a logical volume is not moved"}
                        for p in movable if places[p] != "file"]
            if files:
                result = await ctx.call(host, QUARANTINE_OBJECTS, QuarantinePayload(
                    root=driver.object_root(store), paths=files), step="quarantine")
                moved = result.moved
                skipped += [s.model_dump() for s in result.skipped]
        now = time.time()
        report.orphans = [o for o in report.orphans if o.path not in moved]
        report.quarantined = [Quarantined(path=p, moved_to=t, at=now) for p, t in moved.items()]
        async with ctx.db.begin() as session:
            await self._save(session, report, STORAGE_KIND)
            result_out = {"moved": moved, "skipped": skipped}
            await ctx.succeed(session, result_out)
        return result_out

    async def _store_and_host(self, session: AsyncSession,
                              store_id: str) -> tuple[Primary[Any], Host]:
        store = self._d.registry.primary(await get_or_404(
            session, PrimaryStorage, store_id, "primary storage"))
        return store, await self._d.selector.for_primary(session, store)

    async def _reconcile(self, ctx: JobContext) -> ReconcileReport:
        started = time.time()
        async with ctx.db() as session:
            store, host = await self._store_and_host(session, ctx.job.resource_id or "")
        driver = self._d.registry.primary_provider(store.row.type).driver
        # The rows are read after the listing: see the module's docstring.
        listing = await driver.list_objects(ctx, store, host)
        async with ctx.db() as session:
            rows = await self._rows(session, store, driver.object_root(store), started)
            ledger = {c.storage_id: c for c in await check_ledger(session)}[store.id]
        report = self._report(ctx, store.id, host, started, listing.objects, rows)
        report.capacity_allocated = ledger.recorded
        report.capacity_recomputed = ledger.recomputed
        return report

    def _report(self, ctx: JobContext, store_id: str, host: Host, started: float,
                objects: list[StoreObject], rows: Rows) -> ReconcileReport:
        orphans, missing, mismatches, in_progress = compare(objects, rows)
        return ReconcileReport(
            storage_id=store_id, job_id=ctx.job.id, host_id=host.id, started_at=started,
            finished_at=time.time(), objects=len(objects), orphans=orphans,
            missing=missing, size_mismatches=mismatches, in_progress=in_progress)

    async def _rows(self, session: AsyncSession, store: Primary[Any], root: str,
                    listed_at: float) -> Rows:
        """Every row whose file lives on `store`. A row destroyed since the listing began
        counts as known: its file may have been listed just before it went."""
        def alive(model: type[Volume] | type[Snapshot] | type[ImageCache]) -> Any:
            return or_(model.state != ObjectState.DESTROYED, model.updated_at >= listed_at)

        known: dict[str, Known] = {}
        volumes = (await session.scalars(select(Volume).where(
            Volume.primary_storage_id == store.id, alive(Volume)))).all()
        for v in volumes:
            if v.path:
                known[relative(root, v.path)] = Known("volume", v.id, v.name, v.state, v.size)
        snapshots = (await session.scalars(select(Snapshot).where(
            Snapshot.primary_storage_id == store.id, alive(Snapshot)))).all()
        for s in snapshots:
            if s.path:
                known[relative(root, s.path)] = Known("snapshot", s.id, s.name, s.state,
                                                      s.virtual_size)
        caches = (await session.execute(select(ImageCache, Image).join(
            Image, Image.id == ImageCache.image_id).where(
            ImageCache.primary_storage_id == store.id, alive(ImageCache)))).all()
        for cache, image in caches:
            if cache.path:
                known[relative(root, cache.path)] = Known("image_cache", cache.id, image.name,
                                                          cache.state, image.virtual_size)
        return await _with_work(session, known, (Volume, Snapshot, ImageCache))

    async def _backup_rows(self, session: AsyncSession, store_id: str,
                           listed_at: float) -> Rows:
        """Images and snapshot backups, where the layout puts them."""
        known: dict[str, Known] = {}
        refs = (await session.execute(select(ImageStoreRef, Image).join(
            Image, Image.id == ImageStoreRef.image_id).where(
            ImageStoreRef.backup_storage_id == store_id,
            or_(ImageStoreRef.state != ObjectState.DESTROYED,
                ImageStoreRef.updated_at >= listed_at)))).all()
        for ref, image in refs:
            known[f"{IMAGES}/{image.id}"] = Known("image", image.id, image.name, ref.state,
                                                  image.virtual_size)
        backups = (await session.scalars(select(SnapshotBackup).where(
            SnapshotBackup.backup_storage_id == store_id,
            or_(SnapshotBackup.state != ObjectState.DESTROYED,
                SnapshotBackup.updated_at >= listed_at)))).all()
        for b in backups:
            known[f"{SNAPSHOTS}/{backup_file_name(b)}"] = Known(
                "snapshot_backup", b.id, b.id, b.state, b.virtual_size)
        return await _with_work(session, known, (Image, ImageStoreRef, SnapshotBackup))

    async def _report_row(self, session: AsyncSession, store_id: str,
                          storage_kind: str = STORAGE_KIND) -> StorageReport | None:
        return await session.scalar(select(StorageReport).where(
            StorageReport.storage_kind == storage_kind, StorageReport.storage_id == store_id,
            StorageReport.kind == KIND))

    async def _save(self, session: AsyncSession, report: ReconcileReport,
                    storage_kind: str) -> None:
        row = await self._report_row(session, report.storage_id, storage_kind)
        if row is None:
            row = StorageReport(storage_kind=storage_kind, storage_id=report.storage_id,
                                kind=KIND)
            session.add(row)
        row.job_id = report.job_id
        row.report = report.model_dump(mode="json")


async def _with_work(session: AsyncSession, known: dict[str, Known],
                     models: tuple[type[Any], ...]) -> Rows:
    """`known`, with the ids of `models` rows in a transitional state and what is in
    flight: what work in progress is named after."""
    busy: set[str] = set()
    for model in models:
        busy.update((await session.scalars(select(model.id).where(
            model.state.in_(TRANSITIONAL)))).all())
    return Rows(known=known, busy_ids=frozenset(busy),
                in_flight=frozenset(await in_flight(session)))


async def _store_row(session: AsyncSession, store_id: str,
                     storage_kind: str) -> PrimaryStorage | BackupStorage:
    if storage_kind == STORAGE_KIND:
        return await get_or_404(session, PrimaryStorage, store_id, "primary storage")
    return await get_or_404(session, BackupStorage, store_id, "backup storage")
