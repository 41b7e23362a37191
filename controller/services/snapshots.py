"""SnapshotService: taking a snapshot of a volume, reverting a volume to one, deleting one
(merging it into its neighbours), and the part of a cascading volume delete that removes
them.

A volume's snapshots form a tree (`Snapshot.parent_id`); the volume's active layer sits on
`Volume.snapshot_id`. While a job works on a volume's snapshots, the volume is
`snapshotting`, so a second request (or a delete) is refused with a 409 instead of racing
it. Each snapshot holds the volume's virtual size in the capacity ledger, as a volume does.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_fresh, get_or_404
from controller.db.models import (
    Host,
    Job,
    ObjectState,
    Snapshot,
    Volume,
)
from controller.db.transitions import (
    record_fs_capacity,
    release_snapshot,
    reserve_capacity,
    transition,
)
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.backend import PrimaryStorageBackend, VolumeCreated
from controller.plugins.interfaces.stores import Primary
from controller.services.attachments import live_target, refuse_attached
from controller.services.base import ServiceDeps
from controller.services.maintenance import ensure_accepting, ensure_reachable
from shared.errors import Conflict, InUse, InvalidInput

# The longest chain of snapshots under a volume's active layer. Every layer is one more
# file QEMU opens and one more lookup for clusters the top layers lack; past this, a take
# is refused (409 `chain_too_deep`) until a snapshot of the chain is deleted (merged).
MAX_CHAIN_DEPTH = 16
# The states in which a snapshot is (or may still be) a file of its volume's tree.
HELD = (ObjectState.CREATING, ObjectState.READY, ObjectState.DESTROYING, ObjectState.ERROR)


class SnapshotService:
    def __init__(self, deps: ServiceDeps) -> None:
        self._d = deps
        deps.jobs.register("snapshot.take", self.run_take, on_failure=self._fail_take)
        deps.jobs.register("snapshot.revert", self.run_revert, on_failure=self._fail_revert)
        deps.jobs.register("snapshot.delete", self.run_delete, on_failure=self._fail_delete)

    # ---- take ---------------------------------------------------------------------------

    async def take(self, volume_id: str, name: str) -> tuple[Snapshot, Job]:
        async with self._d.db.begin() as session:
            volume = await get_or_404(session, Volume, volume_id, "volume")
            store = await self._d.store_of(session, volume)
            ensure_accepting(store.row)
            self._d.registry.backend_of(store).check_snapshots(store)
            tree = await snapshots_of(session, volume.id)
            depth = len(chain_of(tree, volume.snapshot_id))
            if depth >= MAX_CHAIN_DEPTH:
                raise Conflict(f"volume {volume.name} already sits on {depth} snapshots, the "
                               f"most a chain may hold ({MAX_CHAIN_DEPTH}); delete one of "
                               "them first (its data is merged, not lost)",
                               code="chain_too_deep")
            live = await live_target(session, volume)
            await lock_volume(session, volume)
            if live is None:
                await refuse_attached(session, volume, "snapshotted offline")
            await reserve_capacity(session, store.row, volume.size)
            snapshot = Snapshot(name=name, volume_id=volume.id, parent_id=volume.snapshot_id,
                                primary_storage_id=volume.primary_storage_id,
                                path=volume.path, size=volume.size,
                                virtual_size=volume.size, state=ObjectState.CREATING)
            session.add(snapshot)
            await session.flush()
            job = self._d.jobs.new_job(session, self.run_take, resource_type="snapshot",
                                       resource_id=snapshot.id,
                                       params={"volume_id": volume.id,
                                               "overlay": overlay_name(volume),
                                               "live": live})
        self._d.jobs.start(job)
        return snapshot, job

    async def run_take(self, ctx: JobContext) -> dict[str, Any]:
        async with ctx.db() as session:
            snapshot, volume, store, host = await self._where(session,
                                                              ctx.job.resource_id or "")
        backend = self._d.registry.backend_of(store)
        if live := ctx.params.get("live"):
            async with ctx.db() as session:
                host = await get_fresh(session, Host, live["host_id"], "host")
            taken = await backend.take_live_snapshot(ctx, store, volume, snapshot,
                                                     ctx.params["overlay"], host,
                                                     live["domain"])
        else:
            taken = await backend.take_snapshot(ctx, store, volume, snapshot,
                                                ctx.params["overlay"], host)
        result = {"path": taken.path, "snapshot_path": taken.snapshot_path,
                  "consistency": taken.consistency}
        async with ctx.db.begin() as session:
            await transition(session, Snapshot, snapshot.id, ObjectState.CREATING,
                             ObjectState.READY, path=taken.snapshot_path,
                             actual_size=taken.actual_size, consistency=taken.consistency)
            await transition(session, Volume, volume.id, ObjectState.SNAPSHOTTING,
                             ObjectState.READY, path=taken.path, snapshot_id=snapshot.id)
            await record_fs_capacity(session, store.id, taken.capacity.total,
                                     taken.capacity.available)
            await ctx.succeed(session, result)
        return result

    async def _fail_take(self, ctx: JobContext, reason: str) -> None:
        """The volume is as it was; the snapshot holds nothing (its path was the active
        layer's, which stays the volume's) and gives its capacity back."""
        async with ctx.db.begin() as session:
            await release_snapshot(session, ctx.job.resource_id or "", ObjectState.CREATING,
                                   ObjectState.ERROR, path=None, reason=reason)
            await unlock_volume(session, ctx.params["volume_id"])

    # ---- revert -------------------------------------------------------------------------

    async def revert(self, volume_id: str, snapshot_id: str) -> Job:
        async with self._d.db.begin() as session:
            volume = await get_or_404(session, Volume, volume_id, "volume")
            snapshot = await get_or_404(session, Snapshot, snapshot_id, "snapshot")
            if snapshot.volume_id != volume.id:
                raise InvalidInput(f"snapshot {snapshot.name} is of another volume, not of "
                                   f"{volume.name}", code="snapshot_of_another_volume")
            if snapshot.state != ObjectState.READY:
                raise Conflict(f"snapshot {snapshot.name} is {snapshot.state}, not ready")
            store = await self._d.store_of(session, volume)
            ensure_reachable(store.row)
            self._d.registry.backend_of(store).check_snapshots(store)
            await lock_volume(session, volume)
            await refuse_attached(session, volume, "reverted offline")
            job = self._d.jobs.new_job(session, self.run_revert, resource_type="volume",
                                       resource_id=volume.id,
                                       params={"snapshot_id": snapshot.id,
                                               "active": volume.path,
                                               "overlay": overlay_name(volume)})
        self._d.jobs.start(job)
        return job

    async def run_revert(self, ctx: JobContext) -> dict[str, Any]:
        async with ctx.db() as session:
            snapshot, volume, store, host = await self._where(session,
                                                              ctx.params["snapshot_id"])
        # The layer to drop is the one active when the revert was asked: a resumed job
        # may find the row already switched to the new one.
        volume.path = ctx.params["active"]

        async def switch(created: VolumeCreated) -> None:
            async with ctx.db.begin() as session:
                await session.execute(
                    update(Volume).where(Volume.id == volume.id,
                                         Volume.state == ObjectState.SNAPSHOTTING)
                    .values(path=created.path, snapshot_id=snapshot.id)
                    .execution_options(synchronize_session=False))

        capacity = await self._d.registry.backend_of(store).revert_snapshot(
            ctx, store, volume, snapshot, ctx.params["overlay"], host, switch)
        async with ctx.db.begin() as session:
            reverted = await get_fresh(session, Volume, volume.id, "volume")
            await unlock_volume(session, volume.id)
            await record_fs_capacity(session, store.id, capacity.total, capacity.available)
            result = {"path": reverted.path, "snapshot_id": reverted.snapshot_id}
            await ctx.succeed(session, result)
        return result

    async def _fail_revert(self, ctx: JobContext, reason: str) -> None:
        """The volume is usable on whichever active layer its row records: the new one
        is recorded before the old one is dropped."""
        async with ctx.db.begin() as session:
            await unlock_volume(session, ctx.job.resource_id or "")

    # ---- delete -------------------------------------------------------------------------

    async def delete(self, snapshot_id: str) -> Job:
        async with self._d.db.begin() as session:
            snapshot = await get_or_404(session, Snapshot, snapshot_id, "snapshot")
            volume = await get_or_404(session, Volume, snapshot.volume_id, "volume")
            store = await self._d.store_of(session, volume)
            ensure_reachable(store.row)
            self._d.registry.backend_of(store).check_snapshots(store)
            tree = await snapshots_of(session, volume.id)
            unsettled = [s.name for s in tree if s.parent_id == snapshot.id
                         and s.path is not None and s.state != ObjectState.READY]
            if unsettled:
                raise Conflict(f"snapshot {snapshot.name} has children that are not ready: "
                               f"{', '.join(unsettled)}; delete them first")
            live = await live_target(session, volume)
            await lock_volume(session, volume)
            merge = None
            if live is None:
                await refuse_attached(session, volume,
                                      "changed offline (a snapshot of it merged)")
            elif self._d.registry.backend_of(store).merges_live:
                merge = live_merge(tree, volume, snapshot)
            if not await transition(session, Snapshot, snapshot.id,
                                    (ObjectState.READY, ObjectState.ERROR),
                                    ObjectState.DESTROYING):
                raise Conflict(f"snapshot {snapshot.name} is {snapshot.state}; try again "
                               "when it settles")
            job = self._d.jobs.new_job(
                session, self.run_delete, resource_type="snapshot", resource_id=snapshot.id,
                params={"volume_id": volume.id,
                        "live": {**live, **merge} if live and merge else None})
        self._d.jobs.start(job)
        return job

    async def run_delete(self, ctx: JobContext) -> None:
        """Merges the snapshot into every file that sits on it, then moves them (in the
        tree) onto its parent, in one transaction with its end. Live, the one file on it
        is merged into it instead, and takes over its path."""
        async with ctx.db() as session:
            snapshot, volume, store, host = await self._where(session,
                                                              ctx.job.resource_id or "")
            children = [s for s in await snapshots_of(session, volume.id)
                        if s.parent_id == snapshot.id]
        capacity = None
        live = ctx.params.get("live")
        if live is not None:
            async with ctx.db() as session:
                host = await get_fresh(session, Host, live["host_id"], "host")
            capacity = await self._d.registry.backend_of(store).delete_live_snapshot(
                ctx, store, volume, snapshot, live["top"], host, live["domain"])
        elif snapshot.path is not None:
            paths = [s.path for s in children if s.path is not None]
            if volume.snapshot_id == snapshot.id and volume.path is not None:
                paths.append(volume.path)
            backend = self._d.registry.backend_of(store)
            capacity = await backend.delete_snapshot(ctx, store, snapshot, paths, host)
        async with ctx.db.begin() as session:
            if live is not None:
                merged = (update(Snapshot).where(Snapshot.id == live["child_id"])
                          if live["child_id"] is not None
                          else update(Volume).where(Volume.id == volume.id))
                await session.execute(merged.values(path=snapshot.path)
                                      .execution_options(synchronize_session=False))
            await session.execute(
                update(Snapshot).where(Snapshot.parent_id == snapshot.id)
                .values(parent_id=snapshot.parent_id)
                .execution_options(synchronize_session=False))
            await session.execute(
                update(Volume).where(Volume.id == volume.id,
                                     Volume.snapshot_id == snapshot.id)
                .values(snapshot_id=snapshot.parent_id)
                .execution_options(synchronize_session=False))
            await release_snapshot(session, snapshot.id, ObjectState.DESTROYING,
                                   ObjectState.DESTROYED, path=None)
            await unlock_volume(session, volume.id)
            if capacity is not None:
                await record_fs_capacity(session, store.id, capacity.total, capacity.available)
            await ctx.succeed(session, None)

    async def _fail_delete(self, ctx: JobContext, reason: str) -> None:
        """The snapshot is in error and still counted (its file may be there); deleting
        it again finishes the merge, which a cut-short run left readable."""
        async with ctx.db.begin() as session:
            await transition(session, Snapshot, ctx.job.resource_id or "",
                             ObjectState.DESTROYING, ObjectState.ERROR,
                             reason=f"delete failed: {reason}")
            await unlock_volume(session, ctx.params["volume_id"])

    # ---- helpers ------------------------------------------------------------------------


    async def _where(self, session: AsyncSession, snapshot_id: str) -> tuple[
            Snapshot, Volume, Primary[Any], Host]:
        """A job's snapshot, its volume and storage, and the host to work through."""
        snapshot = await get_fresh(session, Snapshot, snapshot_id, "snapshot")
        volume = await get_fresh(session, Volume, snapshot.volume_id, "volume")
        store = await self._d.store_of(session, volume)
        return snapshot, volume, store, await self._d.selector.for_primary(session, store)



async def lock_volume(session: AsyncSession, volume: Volume) -> None:
    """The volume is `snapshotting` while a job reads or changes its chain: every other
    snapshot request, and its delete, is a 409 meanwhile."""
    if not await transition(session, Volume, volume.id, ObjectState.READY,
                            ObjectState.SNAPSHOTTING):
        raise Conflict(f"volume {volume.name} is {volume.state}, not ready; try again "
                       "when it settles", code="volume_busy")


async def unlock_volume(session: AsyncSession, volume_id: str) -> None:
    await transition(session, Volume, volume_id, ObjectState.SNAPSHOTTING, ObjectState.READY)


async def ready_snapshot(session: AsyncSession, snapshot_id: str) -> Snapshot:
    """A snapshot whose frozen file can be read (a 404 if there is none, a 409 if it is
    not ready)."""
    snapshot = await get_or_404(session, Snapshot, snapshot_id, "snapshot")
    if snapshot.state != ObjectState.READY or snapshot.path is None:
        raise Conflict(f"snapshot {snapshot.name} is {snapshot.state}, not ready",
                       code="snapshot_not_ready")
    return snapshot


def live_merge(tree: Sequence[Snapshot], volume: Volume,
               snapshot: Snapshot) -> dict[str, Any] | None:
    """How a snapshot in the chain an attached volume's domain runs is deleted live: the
    layer right above its file (`top`: a child snapshot's file, `child_id`, or the active
    layer) is block-committed into it. None for a snapshot off that chain: no file the
    domain has open changes, so the offline merge serves. Each of the two files must
    carry only that chain: a commit changes what reads through the lower one, and
    removes the upper one."""
    chain = chain_of(tree, volume.snapshot_id)
    ids = [s.id for s in chain]
    if snapshot.id not in ids or snapshot.path is None:
        return None
    at = ids.index(snapshot.id)
    child = chain[at - 1] if at > 0 else None
    for point in (snapshot, child):
        if point is None:
            continue
        on_it = [s.name for s in tree if s.parent_id == point.id and s.path is not None]
        if volume.snapshot_id == point.id:
            on_it.append("the active layer")
        if len(on_it) > 1:
            raise Conflict(f"snapshot {point.name} carries more than the running chain "
                           f"({', '.join(on_it)}); delete the other branches first, or "
                           "detach the volume to merge it offline",
                           code="snapshot_has_branches")
    top = child.path if child is not None else volume.path
    return {"top": top, "child_id": child.id if child is not None else None}


def overlay_name(volume: Volume) -> str:
    """A new active layer's file name: the volume's id and a part of its own, so every
    take and revert writes a file no other one does."""
    return f"{volume.id}.{secrets.token_hex(6)}.qcow2"


async def snapshots_of(session: AsyncSession, volume_id: str) -> list[Snapshot]:
    """A volume's snapshots that still hold (or may hold) a file, oldest first."""
    return list((await session.scalars(
        select(Snapshot).where(Snapshot.volume_id == volume_id, Snapshot.state.in_(HELD))
        .order_by(Snapshot.created_at, Snapshot.id))).all())


def chain_of(tree: Sequence[Snapshot], snapshot_id: str | None) -> list[Snapshot]:
    """`snapshot_id` and its ancestors, nearest first."""
    by_id = {s.id: s for s in tree}
    chain: list[Snapshot] = []
    while snapshot_id is not None and snapshot_id in by_id and len(chain) <= len(tree):
        chain.append(by_id[snapshot_id])
        snapshot_id = by_id[snapshot_id].parent_id
    return chain


# ---- a volume's delete (called by VolumeService) ----------------------------------------


async def doom_snapshots(session: AsyncSession, volume: Volume, cascade: bool) -> None:
    """Before a volume is deleted: refuses (409 naming them) while it has snapshots,
    unless `cascade`, in which case they are all moved to destroying with it."""
    tree = await snapshots_of(session, volume.id)
    if not tree:
        return
    if not cascade:
        names = ", ".join(s.name for s in tree[:20])
        raise InUse(f"volume {volume.name} has snapshots: {names}; delete them first, "
                    "or delete the volume with cascade", code="has_snapshots")
    for s in tree:
        if not await transition(session, Snapshot, s.id,
                                (ObjectState.READY, ObjectState.ERROR,
                                 ObjectState.DESTROYING), ObjectState.DESTROYING):
            raise Conflict(f"snapshot {s.name} is {s.state}; try again when it settles")


async def drop_snapshots(ctx: JobContext, backend: PrimaryStorageBackend[Any],
                         store: Primary[Any], host: Host, volume_id: str) -> None:
    """Removes every snapshot file of a volume whose active layer is gone, leaves first,
    so each goes with nothing sitting on it."""
    async with ctx.db() as session:
        tree = await snapshots_of(session, volume_id)
    for snapshot in sorted(tree, key=lambda s: -len(chain_of(tree, s.id))):
        if snapshot.path is not None:
            await backend.delete_snapshot(ctx, store, snapshot, [], host)


async def release_snapshots(session: AsyncSession, volume_id: str) -> None:
    """A cascading delete succeeded: its snapshots are destroyed and give back what they
    held."""
    for snapshot in await snapshots_of(session, volume_id):
        await release_snapshot(session, snapshot.id, ObjectState.DESTROYING,
                               ObjectState.DESTROYED, path=None)


async def settle_snapshots(session: AsyncSession, volume_id: str, reason: str) -> None:
    """A cascading delete failed: its snapshots are in error, still counted."""
    await session.execute(
        update(Snapshot).where(Snapshot.volume_id == volume_id,
                               Snapshot.state == ObjectState.DESTROYING)
        .values(state=ObjectState.ERROR, reason=f"delete failed: {reason}")
        .execution_options(synchronize_session=False))
