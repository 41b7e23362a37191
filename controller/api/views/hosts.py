"""/v1/hosts"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from controller.api.keys import SERVICES
from controller.api.request import body, paginate
from controller.api.schemas import HostCreate, HostOut
from controller.api.views.common import accepted, ok
from controller.db.lookup import get_or_404
from controller.db.models import Host
from controller.services.commands import AddHost


async def list_hosts(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db() as session:
        page = await paginate(session, request, select(Host), Host,
                              ("name", "state", "hypervisor"))
    return ok(page.page([HostOut.model_validate(h).model_dump(mode="json") for h in page.rows]))


async def get_host(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db() as session:
        host = await get_or_404(session, Host, request.match_info["id"], "host")
    return ok(HostOut.model_validate(host))


async def create_host(request: web.Request) -> web.Response:
    req = await body(request, HostCreate)
    _, job = await request.app[SERVICES].hosts.add(AddHost(
        name=req.name, address=req.address, hypervisor=req.hypervisor,
        initiator_iqn=req.initiator_iqn))
    return accepted(job)


async def reconnect_host(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].hosts.reconnect(request.match_info["id"]))


async def delete_host(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].hosts.delete(request.match_info["id"]))
