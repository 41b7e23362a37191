"""/v1/primary-storages and /v1/backup-storages"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.api.keys import SERVICES
from controller.api.request import body
from controller.api.schemas import (
    AttachmentOut,
    BackupStorageCreate,
    BackupStorageOut,
    CacheGcRequest,
    Capacity,
    HostRef,
    MaintainRequest,
    PrimaryStorageCreate,
    PrimaryStorageOut,
    PrimaryStorageUpdate,
    QuarantineRequest,
)
from controller.api.views.common import accepted, listing, ok, showing
from controller.db.models import BackupStorage, PrimaryStorage, PrimaryStorageHostRef
from controller.services.cache_gc import CacheGcSettings
from controller.services.commands import (
    CreateBackupStorage,
    CreatePrimaryStorage,
    UpdatePrimaryStorage,
)
from controller.services.container import Services
from controller.services.reconcile import BACKUP_KIND


async def _primary_out(services: Services, session: AsyncSession,
                       stores: Sequence[PrimaryStorage]) -> list[PrimaryStorageOut]:
    """Each storage with its attachments, and its settings without credentials."""
    refs = (await session.scalars(select(PrimaryStorageHostRef).where(
        PrimaryStorageHostRef.primary_storage_id.in_([s.id for s in stores])))).all()
    out = []
    for s in stores:
        config_model = services.registry.primary_provider(s.type).config_model
        out.append(PrimaryStorageOut(
            id=s.id, name=s.name, type=s.type, hypervisor=s.hypervisor,
            config=config_model.public(s.config), state=s.state, created_at=s.created_at,
            capacity=Capacity(total=s.capacity_total, available=s.capacity_available,
                              allocated=s.capacity_allocated,
                              overprovision_factor=s.overprovision_factor),
            allocation_threshold=s.allocation_threshold, tags=s.tags,
            hosts=[AttachmentOut.model_validate(r) for r in refs
                   if r.primary_storage_id == s.id],
        ))
    return out


async def _backup_out(services: Services, _: AsyncSession,
                      stores: Sequence[BackupStorage]) -> list[BackupStorageOut]:
    out = []
    for s in stores:
        store = BackupStorageOut.model_validate(s)
        store.config = services.registry.backup_provider(s.type).config_model.public(s.config)
        out.append(store)
    return out


async def list_primary(request: web.Request) -> web.Response:
    return await listing(request, PrimaryStorage, ("name", "type", "state"), _primary_out)


async def get_primary(request: web.Request) -> web.Response:
    return await showing(request, PrimaryStorage, "primary storage", _primary_out)


async def create_primary(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    req = await body(request, PrimaryStorageCreate)
    _, job = await services.primary_storages.create(CreatePrimaryStorage(
        name=req.name, type=req.type, config=req.config,
        overprovision_factor=req.overprovision_factor, hosts=tuple(req.hosts),
        allocation_threshold=req.allocation_threshold, tags=tuple(req.tags)))
    return accepted(job)


async def update_primary(request: web.Request) -> web.Response:
    req = await body(request, PrimaryStorageUpdate)
    settings = UpdatePrimaryStorage(allocation_threshold=req.allocation_threshold,
                                    tags=None if req.tags is None else tuple(req.tags))
    await request.app[SERVICES].primary_storages.update(request.match_info["id"], settings)
    return await get_primary(request)


async def attach_primary(request: web.Request) -> web.Response:
    ref = await body(request, HostRef)
    return accepted(await request.app[SERVICES].primary_storages.attach(
        request.match_info["id"], ref.host_id))


async def detach_primary(request: web.Request) -> web.Response:
    ref = await body(request, HostRef)
    return accepted(await request.app[SERVICES].primary_storages.detach(
        request.match_info["id"], ref.host_id))


async def delete_primary(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].primary_storages.delete(request.match_info["id"]))


async def maintain_primary(request: web.Request) -> web.Response:
    req = await body(request, MaintainRequest)
    return accepted(await request.app[SERVICES].maintenance.maintain(
        request.match_info["id"], req.drain_timeout))


async def cancel_maintain_primary(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].maintenance.cancel(request.match_info["id"]))


async def reconcile_primary(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].reconcile.submit(request.match_info["id"]))


async def reconcile_report(request: web.Request) -> web.Response:
    return ok(await request.app[SERVICES].reconcile.report(request.match_info["id"]))


async def quarantine_orphans(request: web.Request) -> web.Response:
    req = await body(request, QuarantineRequest)
    return accepted(await request.app[SERVICES].reconcile.quarantine(
        request.match_info["id"], list(req.paths)))


async def cache_gc_show(request: web.Request) -> web.Response:
    return ok(await request.app[SERVICES].cache_gc.show(request.match_info["id"]))


async def cache_gc_configure(request: web.Request) -> web.Response:
    settings = await body(request, CacheGcSettings)
    return ok(await request.app[SERVICES].cache_gc.configure(request.match_info["id"],
                                                             settings))


async def cache_gc_run(request: web.Request) -> web.Response:
    req = await body(request, CacheGcRequest)
    return accepted(await request.app[SERVICES].cache_gc.submit(request.match_info["id"],
                                                                req.dry_run))


async def reconcile_backup(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].reconcile.submit(request.match_info["id"],
                                                                 BACKUP_KIND))


async def reconcile_backup_report(request: web.Request) -> web.Response:
    return ok(await request.app[SERVICES].reconcile.report(request.match_info["id"],
                                                           BACKUP_KIND))


async def list_backup(request: web.Request) -> web.Response:
    return await listing(request, BackupStorage, ("name", "type", "state"), _backup_out)


async def get_backup(request: web.Request) -> web.Response:
    return await showing(request, BackupStorage, "backup storage", _backup_out)


async def create_backup(request: web.Request) -> web.Response:
    req = await body(request, BackupStorageCreate)
    _, job = await request.app[SERVICES].backup_storages.create(CreateBackupStorage(
        name=req.name, type=req.type, config=req.config))
    return accepted(job)


async def delete_backup(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].backup_storages.delete(request.match_info["id"]))
