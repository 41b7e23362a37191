"""/v1/volumes, /v1/volumes/<id>/access, /v1/volumes/<id>/resize, /v1/volumes/<id>/attach,
/v1/volumes/<id>/detach and /v1/volumes/<id>/migrate"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.api.keys import SERVICES
from controller.api.request import body, flag_param
from controller.api.schemas import (
    AccessOut,
    ExportOut,
    HostRef,
    VolumeAttach,
    VolumeAttachmentOut,
    VolumeCreate,
    VolumeDetach,
    VolumeMigrate,
    VolumeOut,
    VolumeResize,
)
from controller.api.views.common import accepted, listing, showing
from controller.db.models import Volume, VolumeAccess, VolumeAttachment
from controller.services.commands import CreateVolume, ResizeVolume
from controller.services.container import Services


async def _volumes_out(_: Services, session: AsyncSession,
                       volumes: Sequence[Volume]) -> list[VolumeOut]:
    grants = (await session.scalars(select(VolumeAccess).where(
        VolumeAccess.volume_id.in_([v.id for v in volumes])))).all()
    attached = {a.volume_id: a for a in (await session.scalars(select(VolumeAttachment).where(
        VolumeAttachment.volume_id.in_([v.id for v in volumes])))).all()}
    out = []
    for v in volumes:
        export = v.export
        out.append(VolumeOut(
            id=v.id, name=v.name, primary_storage_id=v.primary_storage_id, image_id=v.image_id,
            size=v.size, format=v.format, path=v.path, state=v.state, reason=v.reason,
            created_at=v.created_at, snapshot_id=v.snapshot_id,
            export=ExportOut(portal=export["portal"], target=export["target"],
                             lun=export["lun"], chap=bool(export.get("chap")))
            if export else None,
            access=[AccessOut.model_validate(g) for g in grants if g.volume_id == v.id],
            attachment=VolumeAttachmentOut.model_validate(attached[v.id]) if v.id in attached
            else None,
        ))
    return out


async def list_volumes(request: web.Request) -> web.Response:
    return await listing(request, Volume, ("name", "state", "primary_storage_id", "image_id"),
                         _volumes_out)


async def get_volume(request: web.Request) -> web.Response:
    return await showing(request, Volume, "volume", _volumes_out)


async def create_volume(request: web.Request) -> web.Response:
    req = await body(request, VolumeCreate)
    _, job = await request.app[SERVICES].volumes.create(CreateVolume(
        name=req.name, primary_storage_id=req.primary_storage_id, image_id=req.image_id,
        size=req.size, snapshot_id=req.snapshot_id, backup_id=req.backup_id,
        storage_tags=tuple(req.storage_tags)))
    return accepted(job)


async def delete_volume(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].volumes.delete(
        request.match_info["id"], cascade=flag_param(request, "cascade")))


async def grant_access(request: web.Request) -> web.Response:
    ref = await body(request, HostRef)
    return accepted(await request.app[SERVICES].volumes.grant(request.match_info["id"],
                                                              ref.host_id))


async def revoke_access(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].volumes.revoke(request.match_info["id"],
                                                               request.match_info["host_id"]))


async def resize_volume(request: web.Request) -> web.Response:
    req = await body(request, VolumeResize)
    return accepted(await request.app[SERVICES].volumes.resize(
        ResizeVolume(volume_id=request.match_info["id"], size=req.size)))


async def attach_volume(request: web.Request) -> web.Response:
    req = await body(request, VolumeAttach)
    return accepted(await request.app[SERVICES].attachments.attach(
        request.match_info["id"], req.host_id, req.domain))


async def detach_volume(request: web.Request) -> web.Response:
    req = await body(request, VolumeDetach)
    return accepted(await request.app[SERVICES].attachments.detach(
        request.match_info["id"], req.timeout))


async def migrate_volume(request: web.Request) -> web.Response:
    req = await body(request, VolumeMigrate)
    return accepted(await request.app[SERVICES].migration.migrate(request.match_info["id"],
                                                                  req.primary_storage_id))
