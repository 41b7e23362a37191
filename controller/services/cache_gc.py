"""Image cache garbage collection per primary storage: when the storage's disk is fuller
than its high watermark, the least recently used image caches that nothing needs are
removed until it would be below the low watermark. A dry run reports what would go.

A cache is needed, and never removed, while a volume (with its snapshots) sits on it,
while a volume of its image is being made on that storage, and while any volume of its
image is in a transitional state anywhere (a migration installs the destination's cache
before the volume's row moves there); only `ready` caches are candidates, so none a job
is filling. The check and the move to `destroying` are one transaction: a volume request
that comes after finds the cache going and fails with `cache_destroying`, never with a
backing file removed under it.

"Recently used" is the newest volume made on the cache (the cache's own time when none
was), read from the rows: nothing is written on the path that makes volumes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_or_404
from controller.db.models import (
    TRANSITIONAL,
    Image,
    ImageCache,
    Job,
    JobState,
    ObjectState,
    PrimaryStorage,
    StorageReport,
    StoreState,
    Volume,
)
from controller.db.transitions import transition
from controller.jobs.engine import JobContext
from controller.services.base import ServiceDeps
from controller.services.maintenance import ensure_accepting
from controller.services.reconcile import STORAGE_KIND, relative
from shared.errors import StrataError

log = logging.getLogger(__name__)

KIND = "cache_gc"


class CacheGcSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    high_watermark: float = Field(
        gt=0, le=100, description="Percent of the disk used above which caches are removed.")
    low_watermark: float = Field(
        ge=0, le=100, description="Percent of the disk used that removal brings it down to.")

    @model_validator(mode="after")
    def _ordered(self) -> CacheGcSettings:
        if self.low_watermark > self.high_watermark:
            raise ValueError("low_watermark must not be above high_watermark")
        return self


class CacheGcItem(BaseModel):
    cache_id: str
    image_id: str
    image_name: str
    path: str
    size: int = Field(description="Bytes on disk (as listed), else the recorded size.")
    last_used_at: float


class CacheGcRun(BaseModel):
    job_id: str | None
    dry_run: bool
    started_at: float
    finished_at: float
    settings: CacheGcSettings
    total: int
    used_before: int
    used_percent_before: float
    # What went (or, in a dry run, would go), least recently used first.
    removed: list[CacheGcItem]
    # Caches kept because something needs them.
    in_use: int
    failed: list[str] = []


class CacheGcOut(BaseModel):
    storage_id: str
    settings: CacheGcSettings
    last_run: CacheGcRun | None


def needed(cache: Any) -> ColumnElement[bool]:
    """Whether a volume needs `cache` (a row or the ImageCache table), as a SQL
    condition: see the module's docstring."""
    return select(Volume.id).where(or_(
        and_(Volume.image_cache_id == cache.id, Volume.state != ObjectState.DESTROYED),
        # Being made (on this storage or another), moved, copied...
        and_(Volume.image_id == cache.image_id, Volume.state.in_(TRANSITIONAL)),
    )).exists()


def pick(candidates: list[CacheGcItem], total: int, used: int,
         settings: CacheGcSettings) -> list[CacheGcItem]:
    """Least recently used first, until the disk would be at the low watermark; none
    while it is at or below the high one."""
    if total <= 0 or used * 100 <= settings.high_watermark * total:
        return []
    chosen = []
    for item in sorted(candidates, key=lambda c: c.last_used_at):
        if used * 100 <= settings.low_watermark * total:
            break
        chosen.append(item)
        used -= item.size
    return chosen


class CacheGcService:
    def __init__(self, deps: ServiceDeps) -> None:
        self._d = deps
        deps.jobs.register("primary_storage.cache_gc", self.run)

    async def show(self, store_id: str) -> CacheGcOut:
        async with self._d.db() as session:
            store = await get_or_404(session, PrimaryStorage, store_id, "primary storage")
            row = await self._report_row(session, store.id)
        return CacheGcOut(
            storage_id=store.id, settings=settings_of(store),
            last_run=CacheGcRun.model_validate(row.report) if row and row.report else None)

    async def configure(self, store_id: str, settings: CacheGcSettings) -> CacheGcOut:
        async with self._d.db.begin() as session:
            store = await get_or_404(session, PrimaryStorage, store_id, "primary storage")
            store.cache_gc_high_watermark = settings.high_watermark
            store.cache_gc_low_watermark = settings.low_watermark
        return await self.show(store_id)

    async def submit(self, store_id: str, dry_run: bool) -> Job:
        """A collection job; the one running already for the storage, if there is one."""
        async with self._d.db.begin() as session:
            store = await get_or_404(session, PrimaryStorage, store_id, "primary storage")
            running = await session.scalar(select(Job).where(
                Job.kind == self._d.jobs.kind_of(self.run), Job.resource_id == store.id,
                Job.state == JobState.RUNNING).limit(1))
            if running is not None:
                return running
            ensure_accepting(store)
            job = self._d.jobs.new_job(session, self.run, resource_type="primary_storage",
                                       resource_id=store.id, params={"dry_run": dry_run})
        self._d.jobs.start(job)
        return job

    async def submit_all(self) -> None:
        """The periodic run, on every ready primary storage."""
        async with self._d.db() as session:
            ids = (await session.scalars(select(PrimaryStorage.id).where(
                PrimaryStorage.state == StoreState.READY))).all()
        for store_id in ids:
            try:
                await self.submit(store_id, dry_run=False)
            except StrataError as exc:
                log.info("no cache collection on primary storage %s: %s", store_id,
                         exc.message)

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        started = time.time()
        dry_run = bool(ctx.params["dry_run"])
        async with ctx.db() as session:
            row = await get_or_404(session, PrimaryStorage, ctx.job.resource_id or "",
                                   "primary storage")
            store = self._d.registry.primary(row)
            host = await self._d.selector.for_primary(session, store)
        settings = settings_of(row)
        driver = self._d.registry.primary_provider(row.type).driver
        listing = await driver.list_objects(ctx, store, host)
        sizes = {o.path: o.size for o in listing.objects}
        total = listing.capacity.total if listing.capacity else 0
        used = total - listing.capacity.available if listing.capacity else 0
        async with ctx.db() as session:
            candidates, in_use = await self._candidates(session, row.id,
                                                        driver.object_root(store), sizes)
        chosen = pick(candidates, total, used, settings)
        removed, failed = [], []
        for item in chosen:
            if dry_run:
                removed.append(item)
                continue
            try:
                if await self._remove(ctx, store, item):
                    removed.append(item)
                else:
                    in_use += 1
            except StrataError as exc:
                failed.append(f"{item.path}: {exc.message}")
        report = CacheGcRun(
            job_id=ctx.job.id, dry_run=dry_run, started_at=started, finished_at=time.time(),
            settings=settings, total=total, used_before=used,
            used_percent_before=round(100.0 * used / total, 2) if total else 0.0,
            removed=removed, in_use=in_use, failed=failed)
        result = {"dry_run": dry_run, "removed": len(removed), "failed": len(failed)}
        async with ctx.db.begin() as session:
            report_row = await self._report_row(session, row.id)
            if report_row is None:
                report_row = StorageReport(storage_kind=STORAGE_KIND, storage_id=row.id,
                                           kind=KIND)
                session.add(report_row)
            report_row.job_id = ctx.job.id
            report_row.report = report.model_dump(mode="json")
            await ctx.succeed(session, result)
        return result

    async def _candidates(self, session: AsyncSession, store_id: str, root: str,
                          sizes: dict[str, int]) -> tuple[list[CacheGcItem], int]:
        """The ready caches nothing needs now, and how many ready ones something does."""
        last_volume = (select(func.max(Volume.created_at))
                       .where(Volume.image_cache_id == ImageCache.id).scalar_subquery())
        rows = (await session.execute(
            select(ImageCache, Image.name, last_volume, needed(ImageCache))
            .join(Image, Image.id == ImageCache.image_id)
            .where(ImageCache.primary_storage_id == store_id,
                   ImageCache.state == ObjectState.READY))).all()
        items = []
        for cache, image_name, last, is_needed in rows:
            if is_needed or not cache.path:
                continue
            path = relative(root, cache.path)
            items.append(CacheGcItem(
                cache_id=cache.id, image_id=cache.image_id, image_name=image_name, path=path,
                size=sizes.get(path, cache.size),
                last_used_at=max(last or 0.0, cache.updated_at)))
        return items, len(rows) - len(items)

    async def _remove(self, ctx: JobContext, store: Any, item: CacheGcItem) -> bool:
        """False when something took the cache since it was picked."""
        async with ctx.db.begin() as session:
            cache = await session.get(ImageCache, item.cache_id)
            if cache is None or await session.scalar(select(needed(cache))):
                return False
            if not await transition(session, ImageCache, cache.id, ObjectState.READY,
                                    ObjectState.DESTROYING):
                return False
        await self._d.install.remove(ctx, store, cache)
        return True

    async def _report_row(self, session: AsyncSession, store_id: str) -> StorageReport | None:
        return await session.scalar(select(StorageReport).where(
            StorageReport.storage_kind == STORAGE_KIND, StorageReport.storage_id == store_id,
            StorageReport.kind == KIND))


def settings_of(store: PrimaryStorage) -> CacheGcSettings:
    return CacheGcSettings(high_watermark=store.cache_gc_high_watermark,
                           low_watermark=store.cache_gc_low_watermark)
