"""The capacity ledger recomputed from the rows: what a primary storage's
`capacity_allocated` must be, whatever sequence of operations and faults led there.

`controller.db.transitions` moves the ledger in the transaction of each state change, so
the figure follows from the rows: a snapshot or an image cache holds its `size` column
(zeroed when given back); a volume holds its size in every live state but `error` (a
failed volume gave it back); a volume being deleted holds it only if it was ready when
the delete began (its delete job says so); one being grown holds the bytes its resize
job added; and a volume being migrated holds, on its destination, what its migrate job
reserved there until the row switches over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import ImageCache, Job, ObjectState, PrimaryStorage, Snapshot, Volume

# Volume states that hold the volume's size on its storage (beside those settled by jobs).
HOLDING = (ObjectState.ALLOCATED, ObjectState.CREATING, ObjectState.READY,
           ObjectState.COPYING, ObjectState.SNAPSHOTTING, ObjectState.MIGRATING,
           ObjectState.RESIZING)
RESIZE, DELETE, MIGRATE = "volume.resize", "volume.delete", "volume.migrate"


@dataclass(frozen=True)
class LedgerCheck:
    """A storage's recorded allocation against the recomputed one."""

    storage_id: str
    recorded: int
    recomputed: int

    @property
    def drift(self) -> int:
        return self.recorded - self.recomputed


async def recompute_allocated(session: AsyncSession) -> dict[str, int]:
    """Every primary storage's allocated bytes as the rows say."""
    totals: dict[str, int] = {i: 0 for i in (await session.scalars(
        select(PrimaryStorage.id))).all()}

    def add(storage_id: str, size: int) -> None:
        totals[storage_id] = totals.get(storage_id, 0) + size

    for model in (Snapshot, ImageCache):
        for storage_id, size in (await session.execute(
                select(model.primary_storage_id, func.coalesce(func.sum(model.size), 0))
                .group_by(model.primary_storage_id))).all():
            add(storage_id, int(size))
    volumes = (await session.execute(select(Volume.id, Volume.primary_storage_id,
                                            Volume.size, Volume.state).where(
        Volume.state.in_((*HOLDING, ObjectState.DESTROYING))))).all()
    jobs = await _last_jobs(session, [v.id for v in volumes if v.state in (
        ObjectState.RESIZING, ObjectState.DESTROYING, ObjectState.MIGRATING)])
    for volume_id, storage_id, size, state in volumes:
        params = jobs.get((volume_id, _JOB_OF.get(state, "")), {})
        if state == ObjectState.DESTROYING:
            add(storage_id, size if params.get("release") else 0)
            continue
        add(storage_id, size)
        if state == ObjectState.RESIZING and params.get("from") == size:
            add(storage_id, int(params["size"]) - size)
        elif state == ObjectState.MIGRATING and params.get("dest") not in (None, storage_id):
            add(str(params["dest"]), int(params.get("held", size)))
    return totals


async def check_ledger(session: AsyncSession) -> list[LedgerCheck]:
    """Each primary storage's recorded allocation beside the recomputed one."""
    recomputed = await recompute_allocated(session)
    recorded = (await session.execute(select(PrimaryStorage.id,
                                             PrimaryStorage.capacity_allocated))).all()
    return [LedgerCheck(i, int(n), recomputed.get(i, 0)) for i, n in recorded]


_JOB_OF: dict[str, str] = {ObjectState.RESIZING: RESIZE, ObjectState.DESTROYING: DELETE,
           ObjectState.MIGRATING: MIGRATE}


async def _last_jobs(session: AsyncSession,
                     volume_ids: Iterable[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The parameters of each volume's latest resize, delete and migrate job: the one
    that put it in its present state."""
    ids = list(volume_ids)
    if not ids:
        return {}
    rows = (await session.execute(
        select(Job.resource_id, Job.kind, Job.params)
        .where(Job.resource_type == "volume", Job.resource_id.in_(ids),
               Job.kind.in_((RESIZE, DELETE, MIGRATE)))
        .order_by(Job.created_at))).all()
    return {(str(i), kind): params or {} for i, kind, params in rows}
