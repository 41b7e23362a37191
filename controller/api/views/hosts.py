"""/v1/hosts"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from controller.api.keys import SERVICES
from controller.api.request import body
from controller.api.schemas import HostCreate, HostOut
from controller.api.views.common import accepted, listing, showing
from controller.db.models import Host
from controller.services.commands import AddHost
from controller.services.container import Services


async def _hosts_out(_: Services, __: AsyncSession, hosts: Sequence[Host]) -> list[HostOut]:
    return [HostOut.model_validate(h) for h in hosts]


async def list_hosts(request: web.Request) -> web.Response:
    return await listing(request, Host, ("name", "state", "hypervisor"), _hosts_out)


async def get_host(request: web.Request) -> web.Response:
    return await showing(request, Host, "host", _hosts_out)


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
