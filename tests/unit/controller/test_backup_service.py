"""SnapshotBackupService and volumes made of backups and snapshots, against the
recording fake agent and an in-memory database: the commands each step sends, the
backup storage's ledger, and the states a failed step leaves."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import (
    BackupStorage,
    ImageCache,
    ObjectState,
    SnapshotBackup,
    StoreState,
    Volume,
)
from controller.services.backups import SnapshotBackupService
from controller.services.commands import CreateVolume
from controller.services.snapshots import SnapshotService
from controller.services.volumes import VolumeService
from shared.errors import OperationFailed
from shared.protocol.files import CopyImagePayload, DeleteFilePayload
from shared.protocol.types import Model
from shared.protocol.volumes import CloneLayerPayload
from tests.unit.controller.fakes import RecordingAgent, image
from tests.unit.controller.test_snapshot_service import VOLUMES, deps, row, seed, succeeded


async def seed_store(db: async_sessionmaker[AsyncSession]) -> None:
    async with db.begin() as session:
        session.add(BackupStorage(id="bs-1", name="store", type="dir",
                                  config={"path": "/srv/images"}, state=StoreState.READY))


async def ledger(db: async_sessionmaker[AsyncSession]) -> int:
    async with db() as session:
        store = await session.get(BackupStorage, "bs-1")
    assert store is not None
    return store.capacity_allocated


async def backup_row(db: async_sessionmaker[AsyncSession], backup_id: str) -> SnapshotBackup:
    async with db() as session:
        found = await session.get(SnapshotBackup, backup_id)
    assert found is not None
    return found


async def test_backup_restore_and_delete(db: async_sessionmaker[AsyncSession],
                                         agent: RecordingAgent) -> None:
    await seed(db)
    await seed_store(db)
    d = deps(db, agent)
    snapshots, backups, volumes = SnapshotService(d), SnapshotBackupService(d), VolumeService(d)
    snap, job = await snapshots.take("vol-1", "s1")
    await succeeded(d.jobs, job.id)
    agent.calls.clear()

    backup, job = await backups.backup(snap.id, "bs-1")
    assert (await row(db, Volume, "vol-1")).state == ObjectState.SNAPSHOTTING
    await succeeded(d.jobs, job.id)
    name = f"vol-1.{snap.id}.qcow2"
    assert [c.payload for c in agent.calls] == [CopyImagePayload(
        src_path=f"{VOLUMES}/vol-1.qcow2", dest_dir="/srv/images/snapshots",
        file_name=name, flatten=True)]
    done = await backup_row(db, backup.id)
    assert done.state == ObjectState.READY and done.path == f"/srv/images/snapshots/{name}"
    assert done.size == 12 << 20 and await ledger(db) == 12 << 20
    assert (await row(db, Volume, "vol-1")).state == ObjectState.READY

    # Restored where no cache of the volume's image is: the flat file is the volume.
    agent.calls.clear()
    flat, job = await volumes.create(CreateVolume(name="r", primary_storage_id="ps-1",
                                                  backup_id=backup.id))
    await succeeded(d.jobs, job.id)
    assert [c.command.name for c in agent.calls] == ["copy_image"]
    restored = await row(db, Volume, flat.id)
    assert restored.path == f"{VOLUMES}/{flat.id}.restored.qcow2"
    assert restored.image_cache_id is None and restored.image_id is None

    # Where the image is cached: rebased onto the cache, the restored file dropped.
    async with db.begin() as session:
        session.add(image(id="img-1"))
        await session.flush()
        session.add(ImageCache(id="cache-1", image_id="img-1", primary_storage_id="ps-1",
                               path="/srv/local/imagecache/img-1", size=1,
                               state=ObjectState.READY))
        await session.flush()
        stored = await session.get(SnapshotBackup, backup.id)
        assert stored is not None
        stored.image_id = "img-1"
    agent.calls.clear()
    rebased, job = await volumes.create(CreateVolume(name="r2", primary_storage_id="ps-1",
                                                     backup_id=backup.id))
    await succeeded(d.jobs, job.id)
    clone = agent.calls[1].payload
    assert isinstance(clone, CloneLayerPayload) and clone.drop_source
    assert clone.source == f"{rebased.id}.restored.qcow2"
    assert clone.backing is not None and clone.backing.path == "/srv/local/imagecache/img-1"
    again = await row(db, Volume, rebased.id)
    assert again.image_cache_id == "cache-1" and again.path == f"{VOLUMES}/{rebased.id}.qcow2"

    agent.calls.clear()
    job = await backups.delete(backup.id)
    await succeeded(d.jobs, job.id)
    assert [c.payload for c in agent.calls] == [
        DeleteFilePayload(dir="/srv/images/snapshots", file_name=name)]
    gone = await backup_row(db, backup.id)
    assert gone.state == ObjectState.DESTROYED and gone.size == 0 and await ledger(db) == 0
    await d.jobs.shutdown()


async def test_a_failed_backup_holds_nothing_and_frees_the_volume(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    await seed(db)
    await seed_store(db)
    d = deps(db, agent)
    snapshots, backups = SnapshotService(d), SnapshotBackupService(d)
    snap, job = await snapshots.take("vol-1", "s1")
    await succeeded(d.jobs, job.id)

    def fail(payload: Model) -> Model:
        raise OperationFailed("the disk is full", code="disk_full")

    agent.answers["copy_image"] = fail
    backup, job = await backups.backup(snap.id, "bs-1")
    failed = await d.jobs.get(job.id, wait=5)
    assert failed.state == "failed" and failed.error_code == "disk_full"
    settled = await backup_row(db, backup.id)
    assert settled.state == ObjectState.ERROR and settled.size == 0
    assert (await row(db, Volume, "vol-1")).state == ObjectState.READY
    assert await ledger(db) == 0
    await d.jobs.shutdown()
