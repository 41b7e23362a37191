"""SnapshotService and a cascading volume delete against the recording fake agent and an
in-memory database: the steps in order, a revert resumed after a controller stopped in
the middle, and the capacity ledger."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import (
    AttachState,
    JobState,
    ObjectState,
    PrimaryStorage,
    PrimaryStorageHostRef,
    Snapshot,
    Volume,
)
from controller.jobs.engine import JobEngine
from controller.motion.endpoints import ConnectedHostSelector
from controller.motion.install import CacheThenCloneInstall
from controller.motion.service import DataMotionService
from controller.motion.strategies import MediatorMotionStrategy
from controller.plugins.matrix import default_registry
from controller.services.base import ServiceDeps
from controller.services.paths import PathPolicy
from controller.services.snapshots import SnapshotService
from controller.services.volumes import VolumeService
from shared.protocol.files import DeleteFilePayload, DeleteFileResult
from shared.protocol.types import Model
from shared.protocol.volumes import DeleteSnapshotPayload
from tests.unit.controller.fakes import ANSWERS, SECRETS, RecordingAgent, host, volume

M = TypeVar("M", Volume, Snapshot)
GIB = 1 << 30
VOLUMES = "/srv/local/volumes"


def deps(db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> ServiceDeps:
    """What a (re)started controller builds: a fresh job engine over the same database."""
    registry = default_registry()
    selector = ConnectedHostSelector(registry)
    motion = DataMotionService(registry, selector, [MediatorMotionStrategy(registry)])
    return ServiceDeps(db=db, jobs=JobEngine(db, agent, SECRETS), registry=registry,
                       selector=selector, secrets=SECRETS, motion=motion,
                       install=CacheThenCloneInstall(motion, registry, selector),
                       paths=PathPolicy(roots=("/srv",), state_dirs=()))


async def seed(db: async_sessionmaker[AsyncSession]) -> None:
    """A ready 1 GiB volume on a local storage attached to one host."""
    async with db.begin() as session:
        session.add_all([host(), PrimaryStorage(
            id="ps-1", name="local", type="local", hypervisor="kvm",
            config={"path": "/srv/local"}, capacity_total=1 << 40, capacity_allocated=GIB)])
        await session.flush()
        session.add_all([
            PrimaryStorageHostRef(primary_storage_id="ps-1", host_id="host-kvm-1",
                                  state=AttachState.CONNECTED),
            volume(path=f"{VOLUMES}/vol-1.qcow2")])


async def row(db: async_sessionmaker[AsyncSession], model: type[M], obj_id: str) -> M:
    async with db() as session:
        found = await session.get(model, obj_id)
    assert found is not None
    return found


async def allocated(db: async_sessionmaker[AsyncSession]) -> int:
    async with db() as session:
        store = await session.get(PrimaryStorage, "ps-1")
    assert store is not None
    return store.capacity_allocated


async def succeeded(jobs: JobEngine, job_id: str) -> None:
    job = await jobs.get(job_id, wait=5)
    assert job.state == JobState.SUCCEEDED, (job.error_code, job.error_message)


async def test_a_revert_resumed_after_the_switch_drops_the_old_layer_only(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    await seed(db)
    first = deps(db, agent)
    service = SnapshotService(first)
    snap, job = await service.take("vol-1", "s1")
    await succeeded(first.jobs, job.id)
    taken = await row(db, Volume, "vol-1")
    assert taken.snapshot_id == snap.id and taken.path != f"{VOLUMES}/vol-1.qcow2"
    assert (await row(db, Snapshot, snap.id)).path == f"{VOLUMES}/vol-1.qcow2"

    stopped = asyncio.Event()

    def stop_once(payload: Model) -> DeleteFileResult:
        if not stopped.is_set():
            stopped.set()
            raise asyncio.CancelledError  # the controller stops here
        return ANSWERS["delete_file"](payload)  # type: ignore[return-value]

    agent.answers["delete_file"] = stop_once
    job = await service.revert("vol-1", snap.id)
    await asyncio.wait_for(stopped.wait(), 5)
    await asyncio.sleep(0.05)
    halfway = await row(db, Volume, "vol-1")
    assert halfway.state == ObjectState.SNAPSHOTTING
    assert halfway.path != taken.path, "the new layer is recorded before the old one goes"

    agent.calls.clear()
    await first.jobs.shutdown()  # which lets go of the job's lease
    second = deps(db, agent)
    SnapshotService(second)
    assert await second.jobs.adopt() == 1
    await succeeded(second.jobs, job.id)
    reverted = await row(db, Volume, "vol-1")
    assert reverted.state == ObjectState.READY and reverted.path == halfway.path
    assert reverted.snapshot_id == snap.id
    dropped = [c.payload.file_name for c in agent.calls
               if isinstance(c.payload, DeleteFilePayload)]
    assert taken.path is not None and dropped == [taken.path.rsplit("/", 1)[1]]
    await second.jobs.shutdown()


async def test_cascade_removes_the_active_layer_then_leaves_first(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    await seed(db)
    d = deps(db, agent)
    snapshots, volumes = SnapshotService(d), VolumeService(d)
    names: dict[str, str] = {}
    for name in ("s1", "s2"):
        snap, job = await snapshots.take("vol-1", name)
        await succeeded(d.jobs, job.id)
        names[snap.id] = name
    assert await allocated(db) == 3 * GIB
    agent.calls.clear()
    job = await volumes.delete("vol-1", cascade=True)
    await succeeded(d.jobs, job.id)
    order = []
    for call in agent.calls:
        if isinstance(call.payload, DeleteSnapshotPayload):
            order.append(names[call.task_id.rsplit("merge-", 1)[1]])
            assert call.payload.children == []
        else:
            order.append(call.command.name)
    assert order == ["delete_file", "s2", "s1"]
    assert await allocated(db) == 0
    for snap_id in names:
        gone = await row(db, Snapshot, snap_id)
        assert gone.state == ObjectState.DESTROYED and gone.size == 0
    await d.jobs.shutdown()
