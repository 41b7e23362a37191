"""Facts about the host, and a no-op task for checking the task machinery end to end."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from agent import __version__
from agent.commands.registry import handles
from agent.services import AgentServices
from shared.protocol.host import HOST_INFO, SLEEP, HostInfoResult, SleepPayload, SleepResult
from shared.protocol.types import EmptyPayload


@handles(HOST_INFO)
async def host_info(
    svc: AgentServices, payload: EmptyPayload, progress: Callable[[float], None]
) -> HostInfoResult:
    return HostInfoResult(
        hostname=socket.gethostname(), agent_id=svc.agent_id, agent_version=__version__,
        qemu_img_version=await svc.qemu_img.version(),
        initiator_iqn=svc.initiator.iqn if svc.initiator else None,
    )


@handles(SLEEP)
async def sleep(
    svc: AgentServices, payload: SleepPayload, progress: Callable[[float], None]
) -> SleepResult:
    steps = max(1, int(payload.seconds * 10))
    for i in range(steps):
        await asyncio.sleep(payload.seconds / steps)
        progress(100.0 * (i + 1) / steps)
    return SleepResult(slept=payload.seconds)
