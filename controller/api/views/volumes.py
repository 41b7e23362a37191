"""/v1/volumes"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from controller.api.keys import SERVICES
from controller.api.request import body, paginate
from controller.api.schemas import VolumeCreate, VolumeOut
from controller.api.views.common import accepted, ok
from controller.db.models import Volume
from controller.services.lookup import get_or_404


async def list_volumes(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db() as session:
        page = await paginate(session, request, select(Volume), Volume,
                              ("name", "state", "primary_storage_id", "image_id"))
    return ok(page.page([VolumeOut.model_validate(v).model_dump(mode="json")
                         for v in page.rows]))


async def get_volume(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db() as session:
        volume = await get_or_404(session, Volume, request.match_info["id"], "volume")
    return ok(VolumeOut.model_validate(volume))


async def create_volume(request: web.Request) -> web.Response:
    _, job = await request.app[SERVICES].volumes.create(await body(request, VolumeCreate))
    return accepted(job)


async def delete_volume(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].volumes.delete(request.match_info["id"]))
