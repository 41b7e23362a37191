"""/v1/images"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.api.keys import SERVICES
from controller.api.request import body
from controller.api.schemas import ImageCreate, ImageOut
from controller.api.views.common import accepted, listing, showing
from controller.db.models import Image, ImageStoreRef, ObjectState
from controller.services.commands import RegisterImage
from controller.services.container import Services


async def _images_out(_: Services, session: AsyncSession,
                      images: Sequence[Image]) -> list[ImageOut]:
    refs = (await session.scalars(select(ImageStoreRef).where(
        ImageStoreRef.image_id.in_([i.id for i in images]),
        ImageStoreRef.state != ObjectState.DESTROYED))).all()
    return [
        ImageOut.model_validate({
            **{k: getattr(i, k) for k in ImageOut.model_fields if k != "backup_storage_ids"},
            "backup_storage_ids": [r.backup_storage_id for r in refs if r.image_id == i.id],
        })
        for i in images
    ]


async def list_images(request: web.Request) -> web.Response:
    return await listing(request, Image, ("name", "state", "format"), _images_out)


async def get_image(request: web.Request) -> web.Response:
    return await showing(request, Image, "image", _images_out)


async def create_image(request: web.Request) -> web.Response:
    req = await body(request, ImageCreate)
    _, job = await request.app[SERVICES].images.register(RegisterImage(
        name=req.name, backup_storage_id=req.backup_storage_id, url=req.url,
        volume_id=req.volume_id, snapshot_id=req.snapshot_id, format=req.format,
        sha256=req.sha256))
    return accepted(job)


async def delete_image(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].images.delete(request.match_info["id"]))
