"""/v1/primary-storages and /v1/backup-storages"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.api.keys import SERVICES
from controller.api.request import body, paginate
from controller.api.schemas import (
    AttachmentOut,
    BackupStorageCreate,
    BackupStorageOut,
    Capacity,
    HostRef,
    PrimaryStorageCreate,
    PrimaryStorageOut,
)
from controller.api.views.common import accepted, ok
from controller.db.lookup import get_or_404
from controller.db.models import BackupStorage, PrimaryStorage, PrimaryStorageHostRef
from controller.plugins.registry import PluginRegistry
from controller.services.commands import CreateBackupStorage, CreatePrimaryStorage


def _backup_out(registry: PluginRegistry, store: BackupStorage) -> BackupStorageOut:
    out = BackupStorageOut.model_validate(store)
    out.config = registry.backup_provider(store.type).config_model.public(store.config)
    return out


async def _primary_out(session: AsyncSession, registry: PluginRegistry,
                       stores: list[PrimaryStorage]) -> list[PrimaryStorageOut]:
    refs = (await session.scalars(select(PrimaryStorageHostRef).where(
        PrimaryStorageHostRef.primary_storage_id.in_([s.id for s in stores])))).all()
    out = []
    for s in stores:
        out.append(PrimaryStorageOut(
            id=s.id, name=s.name, type=s.type, hypervisor=s.hypervisor,
            config=registry.primary_provider(s.type).config_model.public(s.config),
            state=s.state, created_at=s.created_at,
            capacity=Capacity(total=s.capacity_total, available=s.capacity_available,
                              allocated=s.capacity_allocated,
                              overprovision_factor=s.overprovision_factor),
            hosts=[AttachmentOut.model_validate(r) for r in refs
                   if r.primary_storage_id == s.id],
        ))
    return out


async def list_primary(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db() as session:
        page = await paginate(session, request, select(PrimaryStorage), PrimaryStorage,
                              ("name", "type", "state"))
        items = await _primary_out(session, request.app[SERVICES].registry, page.rows)
    return ok(page.page([i.model_dump(mode="json") for i in items]))


async def get_primary(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db() as session:
        store = await get_or_404(session, PrimaryStorage, request.match_info["id"],
                                 "primary storage")
        (out,) = await _primary_out(session, request.app[SERVICES].registry, [store])
    return ok(out)


async def create_primary(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    req = await body(request, PrimaryStorageCreate)
    store, job = await services.primary_storages.create(CreatePrimaryStorage(
        name=req.name, type=req.type, config=req.config,
        overprovision_factor=req.overprovision_factor, hosts=tuple(req.hosts)))
    if job is not None:
        return accepted(job)
    async with services.db() as session:
        (out,) = await _primary_out(session, request.app[SERVICES].registry, [store])
    return ok(out, status=201)


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


async def list_backup(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db() as session:
        page = await paginate(session, request, select(BackupStorage), BackupStorage,
                              ("name", "type", "state"))
    registry = request.app[SERVICES].registry
    return ok(page.page([_backup_out(registry, s).model_dump(mode="json") for s in page.rows]))


async def get_backup(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db() as session:
        store = await get_or_404(session, BackupStorage, request.match_info["id"],
                                 "backup storage")
    return ok(_backup_out(request.app[SERVICES].registry, store))


async def create_backup(request: web.Request) -> web.Response:
    req = await body(request, BackupStorageCreate)
    _, job = await request.app[SERVICES].backup_storages.create(CreateBackupStorage(
        name=req.name, type=req.type, config=req.config))
    return accepted(job)


async def delete_backup(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].backup_storages.delete(request.match_info["id"]))
