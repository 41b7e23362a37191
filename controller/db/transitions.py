"""Compare-and-swap state changes and capacity accounting.

Every change is `UPDATE ... WHERE state IN (:expected)`, never read-modify-write, so two
requests (or two controllers) can't both win. Capacity moves in the same transaction as
the state change that causes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import (
    BackupStorage,
    Base,
    ImageCache,
    PrimaryStorage,
    Snapshot,
    SnapshotBackup,
    StoreState,
)
from shared.errors import Conflict, InsufficientCapacity

PRIMARY: Any = PrimaryStorage.__table__


async def transition(
    session: AsyncSession, model: type[Base], obj_id: str,
    expected: str | Iterable[str], new: str, *, where: dict[str, Any] | None = None,
    **values: Any,
) -> bool:
    """Moves one row from one of `expected` to `new` (and any `where` column equal to its
    value); False if the row was not in that state."""
    states = [expected] if isinstance(expected, str) else list(expected)
    table: Any = model.__table__
    cols = table.c
    conditions = [cols[col] == val for col, val in (where or {}).items()]
    # A Core statement on the table: the ORM's bulk-update layer adds nothing here.
    stmt = (
        update(table)
        .where(cols.id == obj_id, cols.state.in_(states), *conditions)
        .values(state=new, **values)
    )
    result: Any = await session.execute(stmt)
    return bool(result.rowcount == 1)


async def reserve_capacity(session: AsyncSession, storage: PrimaryStorage, size: int) -> None:
    """Adds `size` to the allocated bytes if that keeps the storage at or below its
    allocation threshold (a percent of the over-provisioned total). Every allocation (a
    volume, a growth, a snapshot, an image cache, a migration's destination) goes
    through here, so every one obeys the threshold."""
    ps = PRIMARY.c
    result: Any = await session.execute(
        update(PRIMARY)
        .where(
            ps.id == storage.id,
            ps.state == StoreState.READY,
            (ps.capacity_allocated + size) * 100
            <= ps.capacity_total * ps.overprovision_factor * ps.allocation_threshold,
        )
        .values(capacity_allocated=ps.capacity_allocated + size)
    )
    if result.rowcount != 1:
        fresh = await session.get(PrimaryStorage, storage.id, populate_existing=True)
        if fresh is not None and fresh.state != StoreState.READY:
            raise Conflict(f"primary storage {fresh.name} is {fresh.state}, not ready",
                           code="storage_not_ready")
        raise InsufficientCapacity(threshold_refusal(fresh or storage, size))


def used_percent(allocated: int, total: int, overprovision_factor: float) -> float:
    """`allocated` bytes as a percent of a storage's over-provisioned total."""
    limit = total * overprovision_factor
    return allocated * 100 / limit if limit > 0 else float("inf")


def percent_text(value: float) -> str:
    """One decimal where it matters, rounded up: 90.01 is `90.1%`, never a `90%` that
    would read as within a 90% threshold."""
    if value == float("inf"):
        return "over 100%"
    return f"{math.ceil(round(value * 10, 6)) / 10:.1f}".removesuffix(".0") + "%"


def threshold_refusal(storage: PrimaryStorage, size: int) -> str:
    """Why `size` more bytes do not fit: the percent the storage would be at, its threshold."""
    after = used_percent(storage.capacity_allocated + size, storage.capacity_total,
                         storage.overprovision_factor)
    limit = int(storage.capacity_total * storage.overprovision_factor)
    return (f"primary storage {storage.name} cannot hold {size} more bytes: it would be "
            f"{percent_text(after)} allocated, above its allocation threshold of "
            f"{storage.allocation_threshold:g}% ({storage.capacity_allocated} of {limit} "
            f"allocated: total {storage.capacity_total} x over-provisioning "
            f"{storage.overprovision_factor:g})")


async def release_capacity(session: AsyncSession, storage_id: str, size: int) -> None:
    ps = PRIMARY.c
    await session.execute(
        update(PRIMARY)
        .where(ps.id == storage_id)
        .values(capacity_allocated=ps.capacity_allocated - size)
    )


async def record_fs_capacity(
    session: AsyncSession, storage_id: str, total: int, available: int
) -> None:
    """What the agent's statvfs reported after a change."""
    await session.execute(
        update(PRIMARY).where(PRIMARY.c.id == storage_id)
        .values(capacity_total=total, capacity_available=available)
    )


async def release_cache(session: AsyncSession, cache_id: str, expected: str, new: str,
                        *, where: dict[str, Any] | None = None, **values: Any) -> bool:
    """Moves an image cache to a state that holds no bytes, giving back what it held.
    `size` is what the cache holds, so zeroing it makes the release happen once."""
    cache = await session.get(ImageCache, cache_id, populate_existing=True)
    if cache is None or cache.state != expected:
        return False
    held = cache.size
    if not await transition(session, ImageCache, cache_id, expected, new,
                            where={"size": held, **(where or {})}, size=0, **values):
        return False
    await release_capacity(session, cache.primary_storage_id, held)
    return True


async def release_snapshot(session: AsyncSession, snapshot_id: str,
                           expected: str | Iterable[str], new: str, **values: Any) -> bool:
    """Moves a snapshot to `new` and gives back what it held in the ledger, once: as with
    image caches, `size` is zeroed in the same compare-and-swap."""
    snapshot = await session.get(Snapshot, snapshot_id, populate_existing=True)
    states = [expected] if isinstance(expected, str) else list(expected)
    if snapshot is None or snapshot.state not in states:
        return False
    held = snapshot.size
    if not await transition(session, Snapshot, snapshot_id, states, new,
                            where={"size": held}, size=0, **values):
        return False
    await release_capacity(session, snapshot.primary_storage_id, held)
    return True


async def hold_backup(session: AsyncSession, backup_id: str, expected: str, new: str,
                      size: int, **values: Any) -> bool:
    """A snapshot's backup is stored: it counts `size` bytes in its backup storage's
    ledger, once (only a row that holds nothing yet takes them)."""
    backup = await session.get(SnapshotBackup, backup_id, populate_existing=True)
    if backup is None or not await transition(session, SnapshotBackup, backup_id, expected,
                                              new, where={"size": 0}, size=size, **values):
        return False
    await _move_backup_bytes(session, backup.backup_storage_id, size)
    return True


async def release_backup(session: AsyncSession, backup_id: str,
                         expected: str | Iterable[str], new: str, **values: Any) -> bool:
    """Moves a snapshot's backup to `new` and gives back what it held, once."""
    backup = await session.get(SnapshotBackup, backup_id, populate_existing=True)
    states = [expected] if isinstance(expected, str) else list(expected)
    if backup is None or backup.state not in states:
        return False
    held = backup.size
    if not await transition(session, SnapshotBackup, backup_id, states, new,
                            where={"size": held}, size=0, **values):
        return False
    await _move_backup_bytes(session, backup.backup_storage_id, -held)
    return True


async def _move_backup_bytes(session: AsyncSession, storage_id: str, delta: int) -> None:
    bs = BackupStorage
    await session.execute(
        update(bs).where(bs.id == storage_id)
        .values(capacity_allocated=bs.capacity_allocated + delta)
        .execution_options(synchronize_session=False))
