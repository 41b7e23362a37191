"""Data motion against a real (in-memory) database: the strategy that bids carries the
copy, a copy nobody bids on is a 409 naming the missing cell, and the image cache is
made once, then removed."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import (
    AttachState,
    ImageCache,
    ObjectState,
    PrimaryStorage,
    PrimaryStorageHostRef,
)
from controller.jobs.engine import JobContext
from controller.motion.endpoints import ConnectedHostSelector
from controller.motion.install import CacheThenCloneInstall
from controller.motion.service import DataMotionService
from controller.motion.strategies import MediatorMotionStrategy
from controller.plugins.dir.provider import DIR
from controller.plugins.files import DirectoryConfig
from controller.plugins.interfaces.backup import BackupStorageProvider
from controller.plugins.interfaces.stores import Primary
from controller.plugins.matrix import default_registry
from controller.plugins.registry import PluginRegistry
from shared.errors import Interrupted, Unsupported
from shared.protocol.files import COPY_IMAGE, DELETE_FILE, CopyImagePayload, DeleteFilePayload
from tests.unit.controller.fakes import SHA, Call, RecordingAgent, backup, host, image, store_ref

HOST = host()
TAPE = BackupStorageProvider(type="tape", description="a backup type in no cell",
                             config_model=DirectoryConfig, lifecycle=DIR.lifecycle,
                             driver=DIR.driver)


@pytest.fixture
def registry() -> PluginRegistry:
    registry = default_registry()
    registry.add_backup_type(TAPE)
    return registry


@pytest.fixture
def motion(registry: PluginRegistry) -> DataMotionService:
    return DataMotionService(registry, ConnectedHostSelector(registry),
                             [MediatorMotionStrategy(registry)])


async def seed(db: async_sessionmaker[AsyncSession], registry: PluginRegistry,
               *backup_types: str) -> Primary[Any]:
    """A local storage attached to HOST, and image img-1 ready on a store of each type."""
    store = registry.primary(PrimaryStorage(
        id="ps-1", name="local", type="local", hypervisor="kvm",
        config={"path": "/srv/local"}, capacity_total=1 << 40))
    async with db.begin() as session:
        session.add_all([host(), store.row, image()])
        await session.flush()
        session.add(PrimaryStorageHostRef(primary_storage_id=store.id, host_id=HOST.id,
                                          state=AttachState.CONNECTED))
        for n, type_ in enumerate(backup_types):
            provider = TAPE if type_ == "tape" else DIR
            row = backup(provider, {"path": f"/srv/{type_}"}, store_id=f"bs-{n}").row
            ref = store_ref(f"/srv/{type_}/images/img-1")
            ref.id, ref.backup_storage_id = f"ref-{n}", row.id
            session.add(row)
            await session.flush()
            session.add(ref)
    return store


async def test_the_bidding_strategy_carries_the_copy(
        ctx: JobContext, agent: RecordingAgent, db: async_sessionmaker[AsyncSession],
        registry: PluginRegistry, motion: DataMotionService) -> None:
    store = await seed(db, registry, "tape", "dir")
    install = CacheThenCloneInstall(motion, registry, ConnectedHostSelector(registry))
    cache = await install.install(ctx, image(), store)
    assert cache.state == ObjectState.READY and cache.path == "/srv/local/imagecache/img-1"
    assert agent.calls == [Call(HOST.address, COPY_IMAGE, f"cache-{cache.id}-1", CopyImagePayload(
        src_path="/srv/dir/images/img-1", dest_dir="/srv/local/imagecache", file_name="img-1",
        expected_sha256=SHA, expected_format="qcow2"))]
    async with db() as session:
        assert await install.installed(session, image(), store) is not None
    assert (await install.install(ctx, image(), store)).id == cache.id
    assert len(agent.calls) == 1, "a ready cache is not copied again"

    await install.remove(ctx, store, cache)
    assert agent.calls[1:] == [Call(HOST.address, DELETE_FILE, f"job-1.delete-{cache.id}",
                                    DeleteFilePayload(dir="/srv/local/imagecache",
                                                      file_name="img-1"))]
    async with db() as session:
        row = await session.get(ImageCache, cache.id)
        storage = await session.get(PrimaryStorage, store.id)
    assert row is not None and row.state == ObjectState.DESTROYED and row.size == 0
    assert storage is not None and storage.capacity_allocated == 0


async def test_a_copy_nobody_bids_on_names_the_cell(
        ctx: JobContext, agent: RecordingAgent, db: async_sessionmaker[AsyncSession],
        registry: PluginRegistry, motion: DataMotionService) -> None:
    store = await seed(db, registry, "tape")
    cache = ImageCache(id="cache-1", image_id="img-1", primary_storage_id=store.id, attempt=1)
    with pytest.raises(Unsupported) as refused:
        await motion.download(ctx, image(), store, cache)
    assert refused.value.code == "unsupported_combination"
    assert "local <- tape, kvm" in refused.value.message
    assert agent.calls == []


def test_checks_up_front(motion: DataMotionService) -> None:
    local = PrimaryStorage(type="local", hypervisor="kvm")
    motion.check_download(local, ["tape", "dir"])
    with pytest.raises(Unsupported, match=r"local <- tape, kvm"):
        motion.check_download(local, ["tape"])
    with pytest.raises(Unsupported, match=r"local <- none, kvm"):
        motion.check_download(local, [])
    with pytest.raises(Unsupported, match=r"local <- tape, kvm"):
        motion.check_upload(local, backup(TAPE, {"path": "/t"}).row)


async def test_a_copy_cut_short_by_an_agent_restart_is_tried_again_as_a_new_task(
        ctx: JobContext, agent: RecordingAgent, db: async_sessionmaker[AsyncSession],
        registry: PluginRegistry, motion: DataMotionService) -> None:
    store = await seed(db, registry, "dir")
    copy = agent.answers["copy_image"]
    interrupted = []

    def restart_once(payload: Any) -> Any:
        if not interrupted:
            interrupted.append(payload)
            raise Interrupted("the agent restarted while the task was running")
        return copy(payload)

    agent.answers["copy_image"] = restart_once
    install = CacheThenCloneInstall(motion, registry, ConnectedHostSelector(registry))
    cache = await install.install(ctx, image(), store)
    assert cache.state == ObjectState.READY and cache.attempt == 2
    assert [c.task_id for c in agent.calls] == [f"cache-{cache.id}-1", f"cache-{cache.id}-2"]
