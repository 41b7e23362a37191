"""Backup storages: create (and connect), delete."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select

from controller.db.lookup import get_or_404
from controller.db.models import (
    BackupStorage,
    Host,
    ImageStoreRef,
    Job,
    ObjectState,
    SnapshotBackup,
    StoreState,
)
from controller.db.transitions import transition
from controller.jobs.engine import JobContext
from controller.services.base import ServiceDeps, check_store_paths, ensure_unique_name
from controller.services.commands import CreateBackupStorage
from shared.errors import Conflict, InUse

CONNECTABLE = (StoreState.CREATING, StoreState.READY, StoreState.ERROR)


class BackupStorageService:
    def __init__(self, deps: ServiceDeps) -> None:
        self._d = deps
        deps.jobs.register("backup_storage.connect", self.run_connect,
                           on_failure=self._fail)
        deps.jobs.register("backup_storage.delete", self.run_delete, on_failure=self._fail)

    async def create(self, req: CreateBackupStorage) -> tuple[BackupStorage, Job]:
        provider = self._d.registry.backup_provider(req.type)
        config = provider.config_model.model_validate(req.config)
        async with self._d.db.begin() as session:
            await ensure_unique_name(session, BackupStorage.name, req.name, "backup storage")
            await check_store_paths(session, self._d, config)
            store = BackupStorage(name=req.name, type=req.type,
                                  config=config.sealed(self._d.secrets),
                                  state=StoreState.CREATING)
            session.add(store)
            await session.flush()
            job = self._d.jobs.new_job(session, self.run_connect,
                                       resource_type="backup_storage", resource_id=store.id)
        self._d.jobs.start(job)
        return store, job

    async def run_connect(self, ctx: JobContext) -> None:
        async with ctx.db() as session:
            row = await get_or_404(session, BackupStorage, ctx.job.resource_id or "",
                                   "backup storage")
            host = await self._d.selector.for_backup(session, self._d.registry.backup(row))
        await self.attach_on(ctx, row, host, CONNECTABLE)

    async def attach_on(self, ctx: JobContext, row: BackupStorage, host: Host,
                        states: Iterable[StoreState] = (StoreState.READY,)) -> None:
        """Has `host` attach the storage (prove it reaches it, clear leftovers of work cut
        short there) and records its capacity; the storage is ready after, if it was in
        one of `states`."""
        store = self._d.registry.backup(row)
        lifecycle = self._d.registry.backup_provider(row.type).lifecycle
        capacity = await lifecycle.attach(ctx, store, host)
        async with ctx.db.begin() as session:
            await transition(session, BackupStorage, store.id, states, StoreState.READY,
                             reason=None, capacity_total=capacity.total,
                             capacity_available=capacity.available)

    async def delete(self, store_id: str) -> Job:
        async with self._d.db.begin() as session:
            store = await get_or_404(session, BackupStorage, store_id, "backup storage")
            images = (await session.scalars(select(ImageStoreRef.image_id).where(
                ImageStoreRef.backup_storage_id == store.id,
                ImageStoreRef.state != ObjectState.DESTROYED).limit(20))).all()
            if images:
                raise InUse(f"backup storage {store.name} still holds images: "
                            f"{', '.join(images)}; delete them first")
            backups = (await session.scalars(select(SnapshotBackup.id).where(
                SnapshotBackup.backup_storage_id == store.id,
                SnapshotBackup.state != ObjectState.DESTROYED).limit(20))).all()
            if backups:
                raise InUse(f"backup storage {store.name} still holds snapshot backups: "
                            f"{', '.join(backups)}; delete them first")
            if not await transition(session, BackupStorage, store.id, CONNECTABLE,
                                    StoreState.DELETING):
                raise Conflict(f"backup storage {store.name} is {store.state}")
            job = self._d.jobs.new_job(session, self.run_delete,
                                       resource_type="backup_storage", resource_id=store.id)
        self._d.jobs.start(job)
        return job

    async def _fail(self, ctx: JobContext, reason: str) -> None:
        async with ctx.db.begin() as session:
            await transition(session, BackupStorage, ctx.job.resource_id or "",
                             (StoreState.CREATING, StoreState.DELETING), StoreState.ERROR,
                             reason=reason)

    async def run_delete(self, ctx: JobContext) -> None:
        async with ctx.db.begin() as session:
            await session.execute(delete(ImageStoreRef)
                                  .where(ImageStoreRef.backup_storage_id == ctx.job.resource_id))
            await session.execute(delete(SnapshotBackup).where(
                SnapshotBackup.backup_storage_id == ctx.job.resource_id))
            await session.execute(delete(BackupStorage)
                                  .where(BackupStorage.id == ctx.job.resource_id))
