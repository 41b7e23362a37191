"""Kernel NFS mounts for NFS primary storages in `mount` mode."""

from __future__ import annotations

from collections.abc import Callable

from agent.services import AgentServices
from shared.protocol import NfsMountPayload, NfsMountResult, NfsUnmountPayload


async def nfs_mount(svc: AgentServices, payload: NfsMountPayload,
                    progress: Callable[[float], None]) -> NfsMountResult:
    users = await svc.mounts.mount(payload.server, payload.export, payload.mount_point,
                                   payload.options, payload.user)
    return NfsMountResult(mount_point=payload.mount_point, users=users)


async def nfs_unmount(svc: AgentServices, payload: NfsUnmountPayload,
                      progress: Callable[[float], None]) -> NfsMountResult:
    users = await svc.mounts.unmount(payload.mount_point, payload.user)
    return NfsMountResult(mount_point=payload.mount_point, users=users)
