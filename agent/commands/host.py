"""Facts about the host, and a no-op task for checking the task machinery end to end."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable

from agent import __version__
from agent.commands.registry import handles
from agent.services import AgentServices
from agent.tools import netlink
from shared.errors import StrataError
from shared.protocol.host import (
    HOST_INFO,
    SLEEP,
    HostInfoResult,
    NetworkFacts,
    ServerRoute,
    SleepPayload,
    SleepResult,
)
from shared.protocol.types import EmptyPayload


@handles(HOST_INFO)
async def host_info(
    svc: AgentServices, payload: EmptyPayload, progress: Callable[[float], None]
) -> HostInfoResult:
    return HostInfoResult(
        hostname=socket.gethostname(), agent_id=svc.agent_id, agent_version=__version__,
        instance=svc.instance,
        qemu_img_version=await svc.qemu_img.version(),
        initiator_iqn=svc.initiator.iqn if svc.initiator else None,
        network=await network_facts(svc),
    )


RESOLVE_TIMEOUT = 5


async def network_facts(svc: AgentServices, asked: Iterable[str] = ()) -> NetworkFacts:
    """What an operator checks first when a mount or a login fails: the interfaces, and
    the route and source address toward each storage server, those this agent reaches
    now (NFS) and those `asked` about."""
    servers = sorted(svc.files.nfs_servers() | set(asked))
    return NetworkFacts(interfaces=await asyncio.to_thread(netlink.interfaces),
                        routes=[await server_route(server) for server in servers])


async def server_route(server: str) -> ServerRoute:
    """The route to `server` (a name, an IPv4 or a bracketed IPv6 address), or why
    there is none."""
    host = server.strip("[]")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
                host, None, proto=socket.IPPROTO_TCP), RESOLVE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            return ServerRoute(server=server, error=f"{host} does not resolve: {exc}")
        address = str(infos[0][4][0])
    try:
        route = await asyncio.to_thread(netlink.route_to, address)
    except StrataError as exc:
        return ServerRoute(server=server, address=address, error=exc.message)
    return route.model_copy(update={"server": server})


@handles(SLEEP)
async def sleep(
    svc: AgentServices, payload: SleepPayload, progress: Callable[[float], None]
) -> SleepResult:
    steps = max(1, int(payload.seconds * 10))
    for i in range(steps):
        await asyncio.sleep(payload.seconds / steps)
        progress(100.0 * (i + 1) / steps)
    return SleepResult(slept=payload.seconds)
