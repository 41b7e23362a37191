"""SnapshotBackupService: a snapshot backed up to a backup storage, through the upload
direction of the primary x backup matrix, and such a backup deleted.

The snapshot's chain (or an iSCSI snapshot's raw copy) is flattened on the host that
reaches it (`qemu-img convert` into a temporary qcow2 file) and stored as
`snapshots/<volume id>.<snapshot id>.qcow2`, sha256 verified where it lands. While the
copy runs the snapshot's volume is `snapshotting`, so nothing merges or removes a layer
being read. A backup outlives its snapshot and its volume: a volume can be made from it
(`VolumeService`) on any primary storage the matrix reaches from its backup storage.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_fresh, get_or_404
from controller.db.models import (
    BackupStorage,
    Job,
    ObjectState,
    Snapshot,
    SnapshotBackup,
    StoreState,
    Volume,
)
from controller.db.transitions import hold_backup, release_backup, transition
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.backup import SNAPSHOTS
from controller.plugins.interfaces.mediator import UploadRequest
from controller.plugins.interfaces.stores import Backup
from controller.services.base import ServiceDeps
from controller.services.maintenance import ensure_reachable
from controller.services.snapshots import lock_volume, ready_snapshot, unlock_volume
from shared.errors import Conflict

# A backup of one snapshot per backup storage: the next one waits until it is deleted.
HELD = (ObjectState.CREATING, ObjectState.READY, ObjectState.DESTROYING, ObjectState.ERROR)


def backup_file_name(backup: SnapshotBackup) -> str:
    """The name a restore reads its volume and snapshot from."""
    return f"{backup.volume_id}.{backup.snapshot_id}.qcow2"


async def ready_backup_storage(session: AsyncSession, store_id: str) -> BackupStorage:
    store = await get_or_404(session, BackupStorage, store_id, "backup storage")
    if store.state != StoreState.READY:
        raise Conflict(f"backup storage {store.name} is {store.state}, not ready",
                       code="storage_not_ready")
    return store


class SnapshotBackupService:
    def __init__(self, deps: ServiceDeps) -> None:
        self._d = deps
        deps.jobs.register("snapshot.backup", self.run_backup, on_failure=self._fail_backup)
        deps.jobs.register("snapshot.backup_delete", self.run_delete,
                           on_failure=self._fail_delete)

    async def backup(self, snapshot_id: str, backup_storage_id: str) -> tuple[
            SnapshotBackup, Job]:
        async with self._d.db.begin() as session:
            snapshot = await get_or_404(session, Snapshot, snapshot_id, "snapshot")
            row = await ready_backup_storage(session, backup_storage_id)
            volume = await get_or_404(session, Volume, snapshot.volume_id, "volume")
            primary = await self._d.store_of(session, volume)
            ensure_reachable(primary.row)
            self._d.registry.backend_of(primary).check_snapshot_copies(primary)
            self._d.motion.check_upload(primary.row, row)
            await ready_snapshot(session, snapshot.id)
            held = await session.scalar(select(SnapshotBackup.id).where(
                SnapshotBackup.snapshot_id == snapshot.id,
                SnapshotBackup.backup_storage_id == row.id,
                SnapshotBackup.state.in_(HELD)))
            if held is not None:
                raise Conflict(f"snapshot {snapshot.name} has a backup on {row.name} "
                               f"already ({held}); delete it first", code="backup_exists")
            await lock_volume(session, volume)
            backup = SnapshotBackup(snapshot_id=snapshot.id, volume_id=volume.id,
                                    image_id=volume.image_id, backup_storage_id=row.id,
                                    virtual_size=snapshot.virtual_size,
                                    state=ObjectState.CREATING)
            session.add(backup)
            await session.flush()
            job = self._d.jobs.new_job(session, self.run_backup,
                                       resource_type="snapshot_backup", resource_id=backup.id,
                                       params={"volume_id": volume.id})
        self._d.jobs.start(job)
        return backup, job

    async def run_backup(self, ctx: JobContext) -> dict[str, Any]:
        async with ctx.db() as session:
            backup = await get_fresh(session, SnapshotBackup, ctx.job.resource_id or "",
                                     "snapshot backup")
            snapshot = await get_fresh(session, Snapshot, backup.snapshot_id, "snapshot")
            volume = await get_fresh(session, Volume, backup.volume_id, "volume")
            primary = await self._d.store_of(session, volume)
            store = await self._backup_store(session, backup)
            host = await self._d.selector.for_primary(session, primary)
        uploaded = await self._d.motion.upload(ctx, UploadRequest(
            volume=volume, primary=primary, backup=store, host=host,
            file_name=backup_file_name(backup), task_id=ctx.task_id("upload"),
            source=snapshot.path, flatten=True, folder=SNAPSHOTS,
            source_format=volume.format))
        result = {"path": uploaded.path, "size": uploaded.size, "sha256": uploaded.sha256}
        async with ctx.db.begin() as session:
            await hold_backup(session, backup.id, ObjectState.CREATING, ObjectState.READY,
                              uploaded.size, path=uploaded.path, sha256=uploaded.sha256)
            await unlock_volume(session, volume.id)
            await ctx.succeed(session, result)
        return result

    async def _fail_backup(self, ctx: JobContext, reason: str) -> None:
        """Nothing was stored under the backup's name (uploads publish by rename): it is
        in error, holds nothing, and its volume is free again."""
        async with ctx.db.begin() as session:
            await transition(session, SnapshotBackup, ctx.job.resource_id or "",
                             ObjectState.CREATING, ObjectState.ERROR, reason=reason)
            await unlock_volume(session, ctx.params["volume_id"])

    async def delete(self, backup_id: str) -> Job:
        async with self._d.db.begin() as session:
            backup = await get_or_404(session, SnapshotBackup, backup_id, "snapshot backup")
            if not await transition(session, SnapshotBackup, backup.id,
                                    (ObjectState.READY, ObjectState.ERROR),
                                    ObjectState.DESTROYING):
                raise Conflict(f"snapshot backup {backup.id} is {backup.state}; try again "
                               "when it settles")
            job = self._d.jobs.new_job(session, self.run_delete,
                                       resource_type="snapshot_backup", resource_id=backup.id)
        self._d.jobs.start(job)
        return job

    async def run_delete(self, ctx: JobContext) -> None:
        async with ctx.db() as session:
            backup = await get_fresh(session, SnapshotBackup, ctx.job.resource_id or "",
                                     "snapshot backup")
            store = await self._backup_store(session, backup)
            host = await self._d.selector.for_backup(session, store)
        driver = self._d.registry.backup_provider(store.row.type).driver
        await driver.delete_file(ctx, store, SNAPSHOTS, backup_file_name(backup), host)
        async with ctx.db.begin() as session:
            await release_backup(session, backup.id, ObjectState.DESTROYING,
                                 ObjectState.DESTROYED, path=None)
            await ctx.succeed(session, None)

    async def _fail_delete(self, ctx: JobContext, reason: str) -> None:
        """In error and still counted (its file may be there); deleting it again
        finishes."""
        async with ctx.db.begin() as session:
            await transition(session, SnapshotBackup, ctx.job.resource_id or "",
                             ObjectState.DESTROYING, ObjectState.ERROR,
                             reason=f"delete failed: {reason}")

    async def _backup_store(self, session: AsyncSession,
                            backup: SnapshotBackup) -> Backup[Any]:
        return self._d.registry.backup(await get_or_404(
            session, BackupStorage, backup.backup_storage_id, "backup storage"))
