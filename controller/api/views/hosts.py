"""/v1/hosts"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from controller.api.keys import SERVICES
from controller.api.request import body
from controller.api.schemas import HostAccepted, HostCreate, HostOut, JoinTokenOut
from controller.api.views.common import accepted, listing, ok, showing
from controller.db.models import Host
from controller.services.commands import AddHost
from controller.services.container import Services
from shared.protocol.host import NetworkQuery


async def _hosts_out(_: Services, __: AsyncSession, hosts: Sequence[Host]) -> list[HostOut]:
    return [host_out(h) for h in hosts]


def host_out(host: Host) -> HostOut:
    return HostOut.model_validate(host).model_copy(
        update={"enrolled": host.enrolment_id is not None})


async def list_hosts(request: web.Request) -> web.Response:
    return await listing(request, Host, ("name", "state", "hypervisor"), _hosts_out)


async def get_host(request: web.Request) -> web.Response:
    return await showing(request, Host, "host", _hosts_out)


async def create_host(request: web.Request) -> web.Response:
    req = await body(request, HostCreate)
    host, job, token = await request.app[SERVICES].hosts.add(AddHost(
        name=req.name, address=req.address, hypervisor=req.hypervisor,
        initiator_iqn=req.initiator_iqn))
    return accepted(job, HostAccepted(
        job_id=job.id, resource_type=job.resource_type, resource_id=job.resource_id,
        join_token=str(token), join_token_expires_at=host.join_token_expires_at or 0))


async def create_join_token(request: web.Request) -> web.Response:
    host, token = await request.app[SERVICES].hosts.join_token(request.match_info["id"])
    return ok(JoinTokenOut(host_id=host.id, join_token=str(token),
                           join_token_expires_at=host.join_token_expires_at or 0), status=201)


async def revoke_host(request: web.Request) -> web.Response:
    return ok(host_out(await request.app[SERVICES].hosts.revoke(request.match_info["id"])))


async def reconnect_host(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].hosts.reconnect(request.match_info["id"]))


async def host_network(request: web.Request) -> web.Response:
    query = NetworkQuery(servers=request.query.getall("server", []))
    return ok(await request.app[SERVICES].hosts.network(request.match_info["id"],
                                                          query.servers))


async def delete_host(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].hosts.delete(request.match_info["id"]))
