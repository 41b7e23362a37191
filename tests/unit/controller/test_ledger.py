"""The capacity ledger after 1,000 random operations with injected faults: agent errors
and timeouts, commits that fail (before or after the database took them), and the
controller stopping mid-job and starting again. Whatever happened, each storage's
`capacity_allocated` must equal its recomputation from the rows. The seed is printed;
STRATA_FAULT_SEED replays one."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from controller.agentchannel import AgentTarget
from controller.agentclient import NoticeCallback, ProgressCallback
from controller.db.engine import create_engine, migrate
from controller.db.ledger import check_ledger, recompute_allocated
from controller.db.models import (
    TRANSITIONAL,
    AttachState,
    BackupStorage,
    ImageCache,
    Job,
    JobState,
    ObjectState,
    PrimaryStorage,
    PrimaryStorageHostRef,
    Snapshot,
    StoreState,
    Volume,
)
from controller.jobs.engine import JobEngine
from controller.motion.endpoints import ConnectedHostSelector
from controller.motion.install import CacheThenCloneInstall
from controller.motion.migration import SharedHostMigration
from controller.motion.service import DataMotionService
from controller.motion.strategies import MediatorMotionStrategy
from controller.plugins.matrix import default_registry
from controller.services.base import ServiceDeps
from controller.services.commands import CreateVolume, ResizeVolume
from controller.services.migration import MigrationService
from controller.services.paths import PathPolicy
from controller.services.snapshots import SnapshotService
from controller.services.volumes import VolumeService
from shared.errors import AgentUnreachable, OperationFailed, StrataError
from shared.protocol.command import Command
from shared.protocol.types import Model
from shared.protocol.volumes import VolumeResized
from tests.unit.controller.fakes import (
    CAPACITY,
    SECRETS,
    RecordingAgent,
    host,
    image,
    store_ref,
)

P = TypeVar("P", bound=Model)
R = TypeVar("R", bound=Model)
GIB = 1 << 30
OPS = 1000
STORES = {"ps-1": "/srv/local", "ps-2": "/srv/other"}


class InjectedCommitFailure(OperationalError):
    def __init__(self, when: str) -> None:
        super().__init__(f"injected commit failure {when}", None, Exception(when))


class FaultySession(Session):
    """The sessions of this test alone: commits fail at random."""


class Faults:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.counts: Counter[str] = Counter()
        self.armed = False
        self.stopped = False

    def roll(self, kind: str, p: float) -> bool:
        if self.armed and self.rng.random() < p:
            self.counts[kind] += 1
            return True
        return False


class FaultyAgent(RecordingAgent):
    """Errors, timeouts and controller deaths at agent calls; the rest as recorded."""

    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults
        self.answers["resize_volume"] = lambda p: VolumeResized(
            path=f"{p.dir}/{p.file_name}", virtual_size=p.size, capacity=CAPACITY)

    async def call(
        self, target: AgentTarget, command: Command[P, R], task_id: str, payload: P, *,
        timeout: float | None = None, progress: ProgressCallback | None = None,
        notice: NoticeCallback | None = None,
    ) -> R:
        await asyncio.sleep(0)  # lets other jobs interleave
        f = self.faults
        if f.roll("agent_error", 0.04):
            raise OperationFailed(f"injected failure of {command.name}")
        if f.roll("agent_timeout", 0.02):
            raise AgentUnreachable(f"injected timeout of {command.name}")
        if f.roll("controller_stop", 0.01):
            f.stopped = True
            raise asyncio.CancelledError  # the controller dies in this call
        return await super().call(target, command, task_id, payload, timeout=timeout,
                                  progress=progress, notice=notice)


@pytest.fixture
async def faulty_db() -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], Faults]]:
    seed = int(os.environ.get("STRATA_FAULT_SEED") or random.randrange(1 << 32))
    print(f"STRATA_FAULT_SEED={seed}")
    faults = Faults(random.Random(seed))
    engine = create_engine("sqlite:///:memory:")
    await migrate(engine)

    def before_commit(session: Session) -> None:
        if faults.roll("commit_lost", 0.01):
            raise InjectedCommitFailure("before the commit")

    event.listen(FaultySession, "before_commit", before_commit)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False,
                                 sync_session_class=FaultySession), faults
    finally:
        event.remove(FaultySession, "before_commit", before_commit)
        await engine.dispose()


async def seed_rows(db: async_sessionmaker[AsyncSession]) -> None:
    """Two local storages on one host, and a ready image on a dir backup storage."""
    async with db.begin() as session:
        session.add_all([host(), BackupStorage(id="bs-1", name="store", type="dir",
                                               config={"path": "/srv/backup"},
                                               state=StoreState.READY), image()])
        session.add_all([PrimaryStorage(id=sid, name=sid, type="local", hypervisor="kvm",
                                        config={"path": path}, capacity_total=1 << 40)
                         for sid, path in STORES.items()])
        await session.flush()
        session.add_all([PrimaryStorageHostRef(primary_storage_id=sid, host_id="host-kvm-1",
                                               state=AttachState.CONNECTED)
                         for sid in STORES] + [store_ref("/srv/backup/images/img-1")])


def deps(db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> ServiceDeps:
    """What a (re)started controller builds, with the strategy that moves volumes
    between two storages of one host."""
    registry = default_registry()
    selector = ConnectedHostSelector(registry)
    motion = DataMotionService(registry, selector, [MediatorMotionStrategy(registry),
                                                    SharedHostMigration(registry)])
    return ServiceDeps(db=db, jobs=JobEngine(db, agent, SECRETS), registry=registry,
                       selector=selector, secrets=SECRETS, motion=motion,
                       install=CacheThenCloneInstall(motion, registry, selector),
                       paths=PathPolicy(roots=("/srv",), state_dirs=()))


class Controller:
    """The services of one controller process; `restart` is a new one on the same
    database after the old one died (its jobs let go, then adopted)."""

    def __init__(self, db: async_sessionmaker[AsyncSession], agent: FaultyAgent) -> None:
        self.db, self.agent = db, agent
        self._build()

    def _build(self) -> None:
        self.deps: ServiceDeps = deps(self.db, self.agent)
        self.volumes = VolumeService(self.deps)
        self.snapshots = SnapshotService(self.deps)
        self.migration = MigrationService(self.deps)

    async def restart(self) -> None:
        """As the controller started again from the same state directory: it names its
        predecessor, whose jobs it takes over at once even where the handback of their
        leases was lost to a failed commit."""
        predecessor = self.deps.jobs.owner
        await self.deps.jobs.shutdown()
        self._build()
        self.agent.faults.stopped = False
        while True:
            try:
                await self.deps.jobs.adopt(predecessor)
                return
            except OperationalError:
                continue  # the injected commit failures hit the adoption too


async def ids(db: async_sessionmaker[AsyncSession], model: Any, *states: str) -> list[str]:
    async with db() as session:
        return sorted((await session.scalars(select(model.id).where(
            model.state.in_(states)))).all())


async def running(db: async_sessionmaker[AsyncSession]) -> list[tuple[Any, ...]]:
    async with db() as session:
        return [tuple(r) for r in (await session.execute(
            select(Job.id, Job.kind, Job.owner, Job.params).where(
                Job.state == JobState.RUNNING))).all()]


async def settle(c: Controller, timeout: float = 20) -> None:
    """Until no job runs, restarting the controller wherever it died."""
    deadline = time.monotonic() + timeout
    while await running(c.db):
        assert time.monotonic() < deadline, f"jobs stuck: {await running(c.db)}"
        if c.agent.faults.stopped:
            await c.restart()
        await asyncio.sleep(0.001)


Op = Callable[[random.Random], Awaitable[object]]


def operations(c: Controller) -> dict[str, Op]:
    db = c.db

    async def create_empty(rng: random.Random) -> object:
        return await c.volumes.create(CreateVolume(
            name="empty", primary_storage_id=rng.choice(list(STORES)),
            size=rng.randint(1, 4) * GIB))

    async def create_from_image(rng: random.Random) -> object:
        return await c.volumes.create(CreateVolume(
            name="clone", primary_storage_id=rng.choice(list(STORES)), image_id="img-1"))

    async def snapshot(rng: random.Random) -> object:
        return await c.snapshots.take(rng.choice(await ids(db, Volume, ObjectState.READY)
                                                 or [""]), "snap")

    async def delete_snapshot(rng: random.Random) -> object:
        return await c.snapshots.delete(rng.choice(await ids(
            db, Snapshot, ObjectState.READY, ObjectState.ERROR) or [""]))

    async def delete_volume(rng: random.Random) -> object:
        return await c.volumes.delete(rng.choice(await ids(
            db, Volume, ObjectState.READY, ObjectState.ERROR) or [""]),
            cascade=rng.random() < 0.7)

    async def resize(rng: random.Random) -> object:
        volume_id = rng.choice(await ids(db, Volume, ObjectState.READY) or [""])
        async with db() as session:
            volume = await session.get(Volume, volume_id)
        size = (volume.size if volume else GIB) + rng.randint(0, 2) * GIB
        return await c.volumes.resize(ResizeVolume(volume_id=volume_id, size=size))

    async def migrate(rng: random.Random) -> object:
        volume_id = rng.choice(await ids(db, Volume, ObjectState.READY) or [""])
        async with db() as session:
            volume = await session.get(Volume, volume_id)
        dest = "ps-2" if volume and volume.primary_storage_id == "ps-1" else "ps-1"
        return await c.migration.migrate(volume_id, dest)

    return {"create_empty": create_empty, "create_from_image": create_from_image,
            "snapshot": snapshot, "delete_snapshot": delete_snapshot,
            "delete_volume": delete_volume, "resize": resize, "migrate": migrate}


async def test_the_ledger_holds_after_random_operations_and_faults(
        faulty_db: tuple[async_sessionmaker[AsyncSession], Faults]) -> None:
    db, faults = faulty_db
    await seed_rows(db)
    c = Controller(db, FaultyAgent(faults))
    ops = operations(c)
    rng = faults.rng
    outcomes: Counter[str] = Counter()
    faults.armed = True
    for n in range(OPS):
        name = rng.choice(sorted(ops))
        try:
            await ops[name](rng)
            outcomes[f"{name}: accepted"] += 1
        except StrataError:
            outcomes[f"{name}: refused"] += 1
        except OperationalError:
            outcomes[f"{name}: commit failed"] += 1
        if c.agent.faults.stopped:
            await c.restart()
        # A few jobs run at once; then they all end before the next few start.
        if n % 4 == 3:
            await settle(c)
    await settle(c)
    faults.armed = False

    async with db() as session:
        checks = await check_ledger(session)
        states: Counter[str] = Counter()
        for model in (Volume, Snapshot, ImageCache):
            states.update(f"{model.__tablename__}.{s}"
                          for s in (await session.scalars(select(model.state))).all())
        jobs = Counter((await session.scalars(select(Job.state))).all())
    print(f"faults: {dict(faults.counts)}\noutcomes: {dict(sorted(outcomes.items()))}\n"
          f"rows: {dict(sorted(states.items()))}\njobs: {dict(jobs)}")
    assert faults.counts["agent_error"] and faults.counts["controller_stop"], \
        "the faults were injected"
    assert states[f"volumes.{ObjectState.READY}"], "some volumes were made"
    transitional = {k: n for k, n in states.items() if k.split(".")[1] in TRANSITIONAL}
    assert not transitional, ("rows left transitional with no job running", transitional)
    for check in checks:
        assert check.drift == 0, (check, "STRATA_FAULT_SEED replays it")
    await c.deps.jobs.shutdown()


async def test_the_recomputation_counts_what_jobs_hold(
        faulty_db: tuple[async_sessionmaker[AsyncSession], Faults]) -> None:
    """A volume being grown, deleted or migrated holds what its job moved in the ledger."""
    db, _ = faulty_db
    await seed_rows(db)
    async with db.begin() as session:
        session.add_all([
            Volume(id="grow", name="g", primary_storage_id="ps-1", size=GIB,
                   state=ObjectState.RESIZING),
            Volume(id="gone", name="d", primary_storage_id="ps-1", size=2 * GIB,
                   state=ObjectState.DESTROYING),
            Volume(id="failed", name="f", primary_storage_id="ps-1", size=8 * GIB,
                   state=ObjectState.DESTROYING),
            Volume(id="move", name="m", primary_storage_id="ps-1", size=4 * GIB,
                   state=ObjectState.MIGRATING),
            Volume(id="err", name="e", primary_storage_id="ps-2", size=16 * GIB,
                   state=ObjectState.ERROR)])
        await session.flush()
        session.add_all([
            Snapshot(id="s", name="s", volume_id="move", primary_storage_id="ps-1",
                     size=4 * GIB, virtual_size=4 * GIB, state=ObjectState.READY),
            Job(kind="volume.resize", resource_type="volume", resource_id="grow",
                params={"size": 3 * GIB, "from": GIB}, state=JobState.RUNNING),
            Job(kind="volume.delete", resource_type="volume", resource_id="gone",
                params={"release": True}, state=JobState.RUNNING),
            Job(kind="volume.delete", resource_type="volume", resource_id="failed",
                params={"release": False}, state=JobState.RUNNING),
            Job(kind="volume.migrate", resource_type="volume", resource_id="move",
                params={"source": "ps-1", "dest": "ps-2", "held": 8 * GIB},
                state=JobState.RUNNING)])
    async with db() as session:
        totals = await recompute_allocated(session)
    assert totals == {"ps-1": 3 * GIB + 2 * GIB + 4 * GIB + 4 * GIB, "ps-2": 8 * GIB}
