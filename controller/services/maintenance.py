"""Maintenance mode of a primary storage (CloudStack's maintain / cancel maintain).

`maintain` moves a ready storage to `entering_maintenance` by compare-and-swap, so from
then on every request that would put bytes on it or touch its files is refused
(`ensure_accepting`, `ensure_reachable`: 409 `storage_in_maintenance`). Its job waits, at most
`drain_timeout` seconds, for the running jobs on the storage to end (they are named in
the job's message meanwhile); jobs still running then make it fail (`storage_busy`,
naming them) and the storage is ready again. Then each host releases the storage (the
type's detach: an NFS unmount; nothing for local and iSCSI, whose sessions come with
volume attachments, which maintenance refuses) and its attachment goes `maintenance`;
the storage ends `maintenance`. A failure on a host attaches the released ones again
and leaves the storage ready.

`cancel_maintain` (`leaving_maintenance`) attaches it on every host again (mount,
prepare), which reports the capacity the storage has now; it is ready once one host
attached it, and stays in maintenance when none could (the attachments say why).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_fresh, get_or_404
from controller.db.models import (
    IN_MAINTENANCE,
    AttachState,
    Host,
    HostState,
    ImageCache,
    Job,
    JobState,
    PrimaryStorage,
    PrimaryStorageHostRef,
    Snapshot,
    StoreState,
    Volume,
    VolumeAttachment,
)
from controller.db.transitions import transition
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.stores import Primary
from controller.services.base import ServiceDeps
from controller.services.primary_storages import PrimaryStorageService
from shared.errors import Conflict, StrataError

DRAIN_POLL = 0.5
RELEASED = "released for the storage's maintenance"


def ensure_reachable(storage: PrimaryStorage) -> None:
    """Every request that works on a primary storage's files (deletes, reverts, copies out,
    attaches, grants) calls this first: in maintenance its hosts have released it."""
    if storage.state in IN_MAINTENANCE:
        raise Conflict(f"primary storage {storage.name} is in maintenance ({storage.state}); "
                       "it takes no new work until its maintenance is cancelled",
                       code="storage_in_maintenance")


def ensure_accepting(storage: PrimaryStorage) -> None:
    """Every request that puts bytes on a primary storage (volumes, growth, snapshots,
    migrations in) calls this first: it must be ready, and not in maintenance."""
    ensure_reachable(storage)
    if storage.state != StoreState.READY:
        raise Conflict(f"primary storage {storage.name} is {storage.state}, not ready",
                       code="storage_not_ready")


class MaintenanceService:
    def __init__(self, deps: ServiceDeps, primary_storages: PrimaryStorageService) -> None:
        self._d = deps
        self._ps = primary_storages
        deps.jobs.register("primary_storage.maintain", self.run_maintain,
                           on_failure=self._fail_maintain)
        deps.jobs.register("primary_storage.cancel_maintain", self.run_cancel,
                           on_failure=self._fail_cancel)

    async def maintain(self, store_id: str, drain_timeout: float) -> Job:
        async with self._d.db.begin() as session:
            store = await get_fresh(session, PrimaryStorage, store_id, "primary storage")
            await _refuse_if_attached(session, store)
            if not await transition(session, PrimaryStorage, store.id, StoreState.READY,
                                    StoreState.ENTERING_MAINTENANCE):
                ensure_accepting(store)
                raise Conflict(f"primary storage {store.name} changed meanwhile; try again",
                               code="storage_busy")
            job = self._d.jobs.new_job(session, self.run_maintain,
                                       resource_type="primary_storage", resource_id=store.id,
                                       params={"drain_timeout": drain_timeout})
        self._d.jobs.start(job)
        return job

    async def run_maintain(self, ctx: JobContext) -> dict[str, Any]:
        store_id = ctx.job.resource_id or ""
        await self._drain(ctx, store_id, float(ctx.params["drain_timeout"]))
        async with ctx.db() as session:
            store = self._d.registry.primary(
                await get_or_404(session, PrimaryStorage, store_id, "primary storage"))
            await _refuse_if_attached(session, store.row)
            refs = await _refs(session, store_id, (AttachState.CONNECTED,
                                                   AttachState.DISCONNECTED,
                                                   AttachState.MAINTENANCE))
        released: list[str] = []
        try:
            for n, (ref, host) in enumerate(refs):
                # A host whose agent is not reachable is told nothing (`release`): what
                # it holds stays, and its attachment says so.
                reason = (RELEASED if host.state == HostState.CONNECTED else
                          f"{RELEASED}; host {host.state}, so nothing was released on it")
                async with ctx.db.begin() as session:
                    await transition(session, PrimaryStorageHostRef, ref.id,
                                     (AttachState.CONNECTED, AttachState.DISCONNECTED),
                                     AttachState.MAINTENANCE, reason=reason)
                released.append(host.name)
                await self._ps.release(ctx, store, [host])
                ctx.progress(50 + 50 * (n + 1) / len(refs))
        except StrataError:
            ctx.notice("a host failed to release the storage: attaching it again where it "
                       "was released")
            await self._reattach(ctx, store, (AttachState.MAINTENANCE,))
            raise
        async with ctx.db.begin() as session:
            if not await transition(session, PrimaryStorage, store_id,
                                    StoreState.ENTERING_MAINTENANCE, StoreState.MAINTENANCE):
                raise Conflict(f"primary storage {store.name} left entering_maintenance "
                               "meanwhile", code="storage_busy")
            result = {"released": released}
            await ctx.succeed(session, result)
        return result

    async def _drain(self, ctx: JobContext, store_id: str, timeout: float) -> None:
        """Waits for the running jobs on the storage to end; no new one starts meanwhile.
        The deadline counts from the request, so a job resumed by another controller keeps
        it."""
        deadline = ctx.job.created_at + timeout
        while True:
            async with ctx.db() as session:
                store = await get_or_404(session, PrimaryStorage, store_id, "primary storage")
                holders = await _holders(session, store_id, ctx.job.id)
            if not holders:
                ctx.notice(None)
                ctx.progress(50)
                return
            named = ", ".join(f"{job.kind} {job.id}" for job in holders[:10])
            if time.time() >= deadline:
                raise Conflict(f"primary storage {store.name} still has {len(holders)} "
                               f"running job(s) after {timeout:g} s: {named}; maintenance "
                               "refused, the storage is ready again", code="storage_busy")
            ctx.notice(f"waiting for {len(holders)} running job(s) on {store.name}: {named}")
            ctx.progress(50 * min(1.0, (time.time() - ctx.job.created_at) / max(timeout, 1)))
            await asyncio.sleep(DRAIN_POLL)

    async def _fail_maintain(self, ctx: JobContext, reason: str) -> None:
        """Back to ready; an attachment still released (its re-attach failed) says so."""
        async with ctx.db.begin() as session:
            store_id = ctx.job.resource_id or ""
            await transition(session, PrimaryStorage, store_id,
                             StoreState.ENTERING_MAINTENANCE, StoreState.READY)
            await _disconnect_released(session, store_id, f"maintenance failed: {reason}")

    async def cancel(self, store_id: str) -> Job:
        async with self._d.db.begin() as session:
            store = await get_fresh(session, PrimaryStorage, store_id, "primary storage")
            if not await transition(session, PrimaryStorage, store.id, StoreState.MAINTENANCE,
                                    StoreState.LEAVING_MAINTENANCE):
                raise Conflict(f"primary storage {store.name} is {store.state}, not in "
                               "maintenance", code="not_in_maintenance")
            job = self._d.jobs.new_job(session, self.run_cancel,
                                       resource_type="primary_storage", resource_id=store.id)
        self._d.jobs.start(job)
        return job

    async def run_cancel(self, ctx: JobContext) -> dict[str, Any]:
        store_id = ctx.job.resource_id or ""
        async with ctx.db() as session:
            store = self._d.registry.primary(
                await get_or_404(session, PrimaryStorage, store_id, "primary storage"))
        attached, failed = await self._reattach(
            ctx, store, (AttachState.MAINTENANCE, AttachState.DISCONNECTED))
        if failed and not attached:
            raise Conflict(f"no host attached primary storage {store.name} again: "
                           + "; ".join(f"{h}: {m}" for h, m in failed.items()),
                           code="attach_failed")
        async with ctx.db.begin() as session:
            await transition(session, PrimaryStorage, store_id,
                             StoreState.LEAVING_MAINTENANCE, StoreState.READY)
            row = await get_fresh(session, PrimaryStorage, store_id, "primary storage")
            result = {"attached": attached, "failed": failed,
                      "capacity_total": row.capacity_total,
                      "capacity_available": row.capacity_available}
            await ctx.succeed(session, result)
        return result

    async def _fail_cancel(self, ctx: JobContext, reason: str) -> None:
        async with ctx.db.begin() as session:
            await transition(session, PrimaryStorage, ctx.job.resource_id or "",
                             StoreState.LEAVING_MAINTENANCE, StoreState.MAINTENANCE)

    async def _reattach(self, ctx: JobContext, store: Primary[Any],
                        states: tuple[AttachState, ...]) -> tuple[list[str], dict[str, str]]:
        """Attaches the storage again on the hosts whose attachment is in `states` (the
        type's attach: mount, prepare, capacity); the hosts that did and those that
        failed, with the reason (also on their attachment)."""
        async with ctx.db() as session:
            refs = await _refs(session, store.id, states)
        attached: list[str] = []
        failed: dict[str, str] = {}
        for ref, host in refs:
            async with ctx.db.begin() as session:
                moved = await transition(session, PrimaryStorageHostRef, ref.id, states,
                                         AttachState.CONNECTING, reason=None)
            if not moved:
                continue
            try:
                await self._ps.attach_on(ctx, ref, store, host)
                attached.append(host.name)
            except StrataError as exc:
                failed[host.name] = exc.message
        return attached, failed


async def _refs(session: AsyncSession, store_id: str,
                states: tuple[AttachState, ...]) -> list[tuple[PrimaryStorageHostRef, Host]]:
    rows = (await session.execute(
        select(PrimaryStorageHostRef, Host)
        .join(Host, Host.id == PrimaryStorageHostRef.host_id)
        .where(PrimaryStorageHostRef.primary_storage_id == store_id,
               PrimaryStorageHostRef.state.in_(states))
        .order_by(Host.name))).all()
    return [(ref, host) for ref, host in rows]


async def _disconnect_released(session: AsyncSession, store_id: str, reason: str) -> None:
    for ref, _ in await _refs(session, store_id, (AttachState.MAINTENANCE,)):
        await transition(session, PrimaryStorageHostRef, ref.id, AttachState.MAINTENANCE,
                         AttachState.DISCONNECTED, reason=reason)


async def _refuse_if_attached(session: AsyncSession, store: PrimaryStorage) -> None:
    """The domains would lose their disks: they are named, and the operator detaches (or
    migrates) those volumes first."""
    rows = (await session.execute(
        select(Volume.name, VolumeAttachment.domain, Host.name)
        .join(VolumeAttachment, VolumeAttachment.volume_id == Volume.id)
        .join(Host, Host.id == VolumeAttachment.host_id)
        .where(Volume.primary_storage_id == store.id)
        .order_by(VolumeAttachment.domain, Volume.name).limit(20))).all()
    if rows:
        named = ", ".join(f"{domain} on {host} (volume {volume})"
                          for volume, domain, host in rows)
        raise Conflict(f"primary storage {store.name} has volumes attached to domains: "
                       f"{named}; detach or migrate them before maintenance",
                       code="volumes_attached")


async def _holders(session: AsyncSession, store_id: str, own_id: str) -> list[Job]:
    """The running jobs (other than `own_id`) about the storage or about a volume, snapshot
    or image cache on it, by their resource or a parameter (a migration's destination,
    the volume an image is made of)."""
    running = (await session.scalars(select(Job).where(
        Job.state == JobState.RUNNING, Job.id != own_id).order_by(Job.created_at))).all()
    named = {job.id: {job.resource_id, *(v for v in job.params.values() if isinstance(v, str))}
             for job in running}
    ids = set().union(*named.values()) - {None}
    ours = {store_id}
    for model in (Volume, Snapshot, ImageCache):
        ours |= set((await session.scalars(select(model.id).where(
            model.primary_storage_id == store_id, model.id.in_(ids)))).all())
    return [job for job in running if named[job.id] & ours]
