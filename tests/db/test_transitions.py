"""Compare-and-swap transitions and capacity accounting, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import (
    Image,
    ImageCache,
    ObjectState,
    PrimaryStorage,
    Snapshot,
    StoreState,
    Volume,
)
from controller.db.transitions import (
    release_cache,
    release_snapshot,
    reserve_capacity,
    transition,
)
from shared.errors import Conflict, InsufficientCapacity
from tests.support.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "sqlite+aiosqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every database the controller supports: SQLite on the loop's thread (the default),
    SQLite through aiosqlite (when the operator names it), PostgreSQL."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.new_database()
    return f"{request.param}:///{tmp_path / 'strata.sqlite'}"


async def _storage(db: async_sessionmaker[AsyncSession], total: int = 1000,
                   factor: float = 1.5, threshold: float = 100.0) -> PrimaryStorage:
    async with db.begin() as session:
        store = PrimaryStorage(name="ps", type="local", config={"path": "/x"},
                               capacity_total=total, overprovision_factor=factor,
                               allocation_threshold=threshold, state=StoreState.READY)
        session.add(store)
    return store


async def test_only_one_concurrent_transition_wins(db: async_sessionmaker[AsyncSession]) -> None:
    store = await _storage(db)
    async with db.begin() as session:
        vol = Volume(name="v", primary_storage_id=store.id, size=1, state=ObjectState.READY)
        session.add(vol)

    async def try_delete() -> bool:
        async with db.begin() as session:
            return await transition(session, Volume, vol.id, ObjectState.READY,
                                    ObjectState.DESTROYING)

    results = await asyncio.gather(*(try_delete() for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]


async def test_capacity_respects_overprovisioning(db: async_sessionmaker[AsyncSession]) -> None:
    store = await _storage(db, total=1000, factor=1.5)

    async def reserve(size: int) -> bool:
        try:
            async with db.begin() as session:
                await reserve_capacity(session, store, size)
            return True
        except InsufficientCapacity:
            return False

    results = await asyncio.gather(*(reserve(100) for _ in range(20)))
    assert results.count(True) == 15
    async with db() as session:
        row = await session.get(PrimaryStorage, store.id)
        assert row is not None and row.capacity_allocated == 1500
    with pytest.raises(InsufficientCapacity, match="1500 of 1500"):
        async with db.begin() as session:
            await reserve_capacity(session, row, 1)


async def test_capacity_stops_at_the_allocation_threshold(
        db: async_sessionmaker[AsyncSession]) -> None:
    """The threshold is a percent of the over-provisioned total, checked in the same
    statement that reserves; the refusal says where the storage would be."""
    store = await _storage(db, total=1000, factor=2.0, threshold=90)
    async with db.begin() as session:
        await reserve_capacity(session, store, 1800)
    with pytest.raises(InsufficientCapacity,
                       match=r"ps cannot hold 1 more bytes: it would be 90.1% allocated, "
                             r"above its allocation threshold of 90%"):
        async with db.begin() as session:
            await reserve_capacity(session, store, 1)
    async with db.begin() as session:
        await session.execute(update(PrimaryStorage).where(PrimaryStorage.id == store.id)
                              .values(allocation_threshold=95, state=StoreState.MAINTENANCE))
    with pytest.raises(Conflict) as refused:
        async with db.begin() as session:
            await reserve_capacity(session, store, 1)
    assert refused.value.code == "storage_not_ready"
    async with db.begin() as session:
        await transition(session, PrimaryStorage, store.id, StoreState.MAINTENANCE,
                         StoreState.READY)
        await reserve_capacity(session, store, 100)
    async with db() as session:
        row = await session.get(PrimaryStorage, store.id)
        assert row is not None and row.capacity_allocated == 1900


async def test_cache_bytes_are_released_exactly_once(
        db: async_sessionmaker[AsyncSession]) -> None:
    store = await _storage(db)
    async with db.begin() as session:
        image = Image(name="i", url="http://x", state=ObjectState.READY, size=300)
        session.add(image)
        await session.flush()
        await reserve_capacity(session, store, 300)
        cache = ImageCache(image_id=image.id, primary_storage_id=store.id, size=300,
                           state=ObjectState.CREATING)
        session.add(cache)

    async def fail() -> bool:
        async with db.begin() as session:
            return await release_cache(session, cache.id, ObjectState.CREATING,
                                       ObjectState.ERROR, reason="x")

    assert sorted(await asyncio.gather(fail(), fail(), fail())) == [False, False, True]
    async with db() as session:
        row = await session.get(PrimaryStorage, store.id)
        cached = await session.get(ImageCache, cache.id)
        assert row is not None and row.capacity_allocated == 0
        assert cached is not None and cached.state == ObjectState.ERROR and cached.size == 0


async def test_snapshot_bytes_are_released_exactly_once(
        db: async_sessionmaker[AsyncSession]) -> None:
    store = await _storage(db)
    async with db.begin() as session:
        vol = Volume(name="v", primary_storage_id=store.id, size=200, state=ObjectState.READY)
        session.add(vol)
        await session.flush()
        await reserve_capacity(session, store, 400)
        snap = Snapshot(name="s", volume_id=vol.id, primary_storage_id=store.id, path="/x/s",
                        size=200, virtual_size=200, state=ObjectState.DESTROYING)
        session.add(snap)

    async def destroy() -> bool:
        async with db.begin() as session:
            return await release_snapshot(session, snap.id, ObjectState.DESTROYING,
                                          ObjectState.DESTROYED, path=None)

    assert sorted(await asyncio.gather(destroy(), destroy(), destroy())) == [False, False, True]
    async with db() as session:
        row = await session.get(PrimaryStorage, store.id)
        gone = await session.get(Snapshot, snap.id)
        assert row is not None and row.capacity_allocated == 200
        assert gone is not None and gone.state == ObjectState.DESTROYED and gone.size == 0
