"""Primary storages: create, attach to hosts and detach from them, delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_or_404
from controller.db.models import (
    LIVE,
    AttachState,
    Host,
    HostState,
    ImageCache,
    Job,
    ObjectState,
    PrimaryStorage,
    PrimaryStorageHostRef,
    StoreState,
    Volume,
)
from controller.db.transitions import record_fs_capacity, transition
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.stores import Primary
from controller.services.base import ServiceDeps, check_store_paths, ensure_unique_name
from controller.services.commands import CreatePrimaryStorage, UpdatePrimaryStorage
from shared.errors import Conflict, InUse, InvalidInput, StrataError

ATTACHED = (AttachState.CONNECTING, AttachState.CONNECTED, AttachState.DISCONNECTED)
# A storage that never came up (or whose delete failed) may be attached again; one that
# is in maintenance or going away may not.
ATTACHABLE = (StoreState.CREATING, StoreState.READY, StoreState.ERROR)


class PrimaryStorageService:
    def __init__(self, deps: ServiceDeps) -> None:
        self._d = deps
        deps.jobs.register("primary_storage.attach", self.run_attach,
                           on_failure=self._fail_attach)
        deps.jobs.register("primary_storage.detach", self.run_detach,
                           on_failure=self._fail_attach)
        deps.jobs.register("primary_storage.delete", self.run_delete,
                           on_failure=self._fail_delete)

    async def create(self, req: CreatePrimaryStorage) -> tuple[PrimaryStorage, Job]:
        """The storage starts `creating` and is ready once one of `req.hosts` attached it:
        a path no host can use never shows as ready."""
        provider = self._d.registry.primary_provider(req.type)
        config = provider.config_model.model_validate(req.config)
        jobs: list[Job] = []
        async with self._d.db.begin() as session:
            await provider.lifecycle.check_config(session, config)
            await ensure_unique_name(session, PrimaryStorage.name, req.name, "primary storage")
            await check_store_paths(session, self._d, config)
            if not req.hosts:
                raise InvalidInput(f"primary storage {req.name} needs at least one host to "
                                   "attach it to")
            store = PrimaryStorage(name=req.name, type=req.type,
                                   config=config.sealed(self._d.secrets),
                                   overprovision_factor=req.overprovision_factor,
                                   allocation_threshold=req.allocation_threshold,
                                   tags=sorted(set(req.tags)), state=StoreState.CREATING)
            session.add(store)
            await session.flush()
            for host_id in req.hosts:
                jobs.append(await self._new_attach(session, store, host_id))
        for job in jobs:
            self._d.jobs.start(job)
        return store, jobs[0]

    async def update(self, store_id: str, req: UpdatePrimaryStorage) -> PrimaryStorage:
        """Changes the allocation settings; they apply to the next reservation."""
        async with self._d.db.begin() as session:
            store = await get_or_404(session, PrimaryStorage, store_id, "primary storage")
            if req.allocation_threshold is not None:
                store.allocation_threshold = req.allocation_threshold
            if req.tags is not None:
                store.tags = sorted(set(req.tags))
        return store

    async def attach(self, store_id: str, host_id: str) -> Job:
        async with self._d.db.begin() as session:
            store = await get_or_404(session, PrimaryStorage, store_id, "primary storage")
            job = await self._new_attach(session, store, host_id)
        self._d.jobs.start(job)
        return job

    async def _new_attach(self, session: AsyncSession, store: PrimaryStorage,
                          host_id: str) -> Job:
        host = await get_or_404(session, Host, host_id, "host")
        if store.state not in ATTACHABLE:
            raise Conflict(f"primary storage {store.name} is {store.state}")
        lifecycle = self._d.registry.primary_provider(store.type).lifecycle
        await lifecycle.can_attach(session, self._d.registry.primary(store), host)
        ref = await session.scalar(select(PrimaryStorageHostRef).where(
            PrimaryStorageHostRef.primary_storage_id == store.id,
            PrimaryStorageHostRef.host_id == host.id))
        if ref is None:
            ref = PrimaryStorageHostRef(primary_storage_id=store.id, host_id=host.id,
                                        state=AttachState.CONNECTING)
            session.add(ref)
            await session.flush()
        elif not await transition(session, PrimaryStorageHostRef, ref.id, ATTACHED,
                                  AttachState.CONNECTING):
            raise Conflict(f"primary storage {store.name} is being detached from {host.name}")
        return self._d.jobs.new_job(session, self.run_attach,
                                    resource_type="primary_storage", resource_id=store.id,
                                    params={"host_id": host.id, "ref_id": ref.id})

    async def run_attach(self, ctx: JobContext) -> None:
        async with ctx.db() as session:
            store = await self._job_store(session, ctx)
            host = await get_or_404(session, Host, ctx.params["host_id"], "host")
            ref = await get_or_404(session, PrimaryStorageHostRef, ctx.params["ref_id"],
                                   "attachment")
        await self.attach_on(ctx, ref, store, host)

    async def _job_store(self, session: AsyncSession, ctx: JobContext) -> Primary[Any]:
        """The primary storage the job is about."""
        return self._d.registry.primary(await get_or_404(
            session, PrimaryStorage, ctx.job.resource_id or "", "primary storage"))

    async def attach_on(self, ctx: JobContext, ref: PrimaryStorageHostRef, store: Primary[Any],
                        host: Host) -> None:
        """Runs the storage type's attach on `host` and records the result on the attachment
        `ref`. A failure is recorded with its reason and raised."""
        lifecycle = self._d.registry.primary_provider(store.row.type).lifecycle
        try:
            capacity = await lifecycle.attach(ctx, store, host)
        except StrataError as exc:
            async with ctx.db.begin() as session:
                await transition(session, PrimaryStorageHostRef, ref.id, ATTACHED,
                                 AttachState.DISCONNECTED, reason=exc.message)
                await _settle_unproven(session, store.id)
            raise
        async with ctx.db.begin() as session:
            # An attachment that is being detached meanwhile stays so.
            if await transition(session, PrimaryStorageHostRef, ref.id, ATTACHED,
                                AttachState.CONNECTED, reason=None):
                await record_fs_capacity(session, store.id, capacity.total, capacity.available)
                await transition(session, PrimaryStorage, store.id,
                                 (StoreState.CREATING, StoreState.ERROR), StoreState.READY)

    async def detach(self, store_id: str, host_id: str) -> Job:
        async with self._d.db.begin() as session:
            store = await get_or_404(session, PrimaryStorage, store_id, "primary storage")
            ref = await session.scalar(select(PrimaryStorageHostRef).where(
                PrimaryStorageHostRef.primary_storage_id == store.id,
                PrimaryStorageHostRef.host_id == host_id))
            if ref is None:
                raise Conflict(f"primary storage {store.name} is not attached to host {host_id}",
                               code="not_attached")
            others = await session.scalar(select(PrimaryStorageHostRef.id).where(
                PrimaryStorageHostRef.primary_storage_id == store.id,
                PrimaryStorageHostRef.id != ref.id,
                PrimaryStorageHostRef.state == AttachState.CONNECTED))
            if others is None:
                await _refuse_if_volumes(session, store)
            # A detach that failed part-way may be asked again.
            await transition(session, PrimaryStorageHostRef, ref.id, ATTACHED,
                             AttachState.DETACHING)
            job = self._d.jobs.new_job(session, self.run_detach,
                                       resource_type="primary_storage", resource_id=store.id,
                                       params={"ref_id": ref.id, "host_id": host_id})
        self._d.jobs.start(job)
        return job

    async def run_detach(self, ctx: JobContext) -> None:
        async with ctx.db() as session:
            store = await self._job_store(session, ctx)
            host = await get_or_404(session, Host, ctx.params["host_id"], "host")
        await self.release(ctx, store, [host])
        async with ctx.db.begin() as session:
            await session.execute(delete(PrimaryStorageHostRef)
                                  .where(PrimaryStorageHostRef.id == ctx.params["ref_id"]))

    async def _fail_attach(self, ctx: JobContext, reason: str) -> None:
        """An attachment that did not come up, or did not go away, is disconnected with
        the reason; attaching or detaching it again is the way out."""
        async with ctx.db.begin() as session:
            await transition(session, PrimaryStorageHostRef, ctx.params["ref_id"],
                             (AttachState.CONNECTING, AttachState.DETACHING),
                             AttachState.DISCONNECTED, reason=reason)
            await _settle_unproven(session, ctx.job.resource_id or "")

    async def _fail_delete(self, ctx: JobContext, reason: str) -> None:
        async with ctx.db.begin() as session:
            await transition(session, PrimaryStorage, ctx.job.resource_id or "",
                             StoreState.DELETING, StoreState.ERROR)

    async def release(self, ctx: JobContext, store: Primary[Any], hosts: list[Host]) -> None:
        """Runs the storage type's detach on each connected host; a host that is not
        connected keeps what it holds (its agent is told nothing)."""
        lifecycle = self._d.registry.primary_provider(store.row.type).lifecycle
        for host in hosts:
            if host.state == HostState.CONNECTED:
                await lifecycle.detach(ctx, store, host)
            else:
                ctx.notice(f"host {host.name} is {host.state}: {store.name} is left attached "
                           "on it until its agent is reachable")

    async def delete(self, store_id: str) -> Job:
        async with self._d.db.begin() as session:
            store = await get_or_404(session, PrimaryStorage, store_id, "primary storage")
            await _refuse_if_volumes(session, store)
            if not await transition(session, PrimaryStorage, store.id,
                                    (StoreState.READY, StoreState.ERROR, StoreState.MAINTENANCE),
                                    StoreState.DELETING):
                raise Conflict(f"primary storage {store.name} is {store.state}")
            job = self._d.jobs.new_job(session, self.run_delete,
                                       resource_type="primary_storage", resource_id=store.id)
        self._d.jobs.start(job)
        return job

    async def run_delete(self, ctx: JobContext) -> None:
        """Removes the image caches on the storage's host, then the storage's rows."""
        async with ctx.db() as session:
            store = await self._job_store(session, ctx)
            caches = (await session.scalars(select(ImageCache).where(
                ImageCache.primary_storage_id == store.id,
                ImageCache.state != ObjectState.DESTROYED))).all()
            hosts = (await session.scalars(select(Host).join(
                PrimaryStorageHostRef, PrimaryStorageHostRef.host_id == Host.id).where(
                PrimaryStorageHostRef.primary_storage_id == store.id))).all()
        for cache in caches:
            await self._d.install.remove(ctx, store, cache)
        await self.release(ctx, store, list(hosts))
        async with ctx.db.begin() as session:
            await session.execute(delete(ImageCache)
                                  .where(ImageCache.primary_storage_id == store.id))
            await session.execute(delete(Volume).where(Volume.primary_storage_id == store.id))
            await session.execute(delete(PrimaryStorageHostRef)
                                  .where(PrimaryStorageHostRef.primary_storage_id == store.id))
            await session.execute(delete(PrimaryStorage).where(PrimaryStorage.id == store.id))


async def _refuse_if_volumes(session: AsyncSession, store: PrimaryStorage) -> None:
    names = (await session.scalars(select(Volume.name).where(
        Volume.primary_storage_id == store.id, Volume.state.in_(LIVE)).limit(20))).all()
    if names:
        raise InUse(f"primary storage {store.name} still holds volumes: {', '.join(names)}")


async def _settle_unproven(session: AsyncSession, store_id: str) -> None:
    """A storage is ready only once one host has attached it: while it is still being
    created and no attachment is connected or on its way, it is in error (the attachments
    carry the reasons)."""
    pending = await session.scalar(select(PrimaryStorageHostRef.id).where(
        PrimaryStorageHostRef.primary_storage_id == store_id,
        PrimaryStorageHostRef.state.in_((AttachState.CONNECTING, AttachState.CONNECTED))))
    if pending is None:
        await transition(session, PrimaryStorage, store_id, StoreState.CREATING,
                         StoreState.ERROR)
