"""Kernel NFS mounts for NFS primary storages in `mount` mode."""

from __future__ import annotations

from collections.abc import Callable

from agent.commands.registry import handles
from agent.services import AgentServices
from shared.protocol.nfs import (
    NFS_MOUNT,
    NFS_UNMOUNT,
    NfsMountPayload,
    NfsMountResult,
    NfsUnmountPayload,
)


@handles(NFS_MOUNT)
async def nfs_mount(svc: AgentServices, payload: NfsMountPayload,
                    progress: Callable[[float], None]) -> NfsMountResult:
    users = await svc.mounts.mount(payload.server, payload.export, payload.mount_point,
                                   payload.options, payload.user)
    return NfsMountResult(mount_point=payload.mount_point, users=users)


@handles(NFS_UNMOUNT)
async def nfs_unmount(svc: AgentServices, payload: NfsUnmountPayload,
                      progress: Callable[[float], None]) -> NfsMountResult:
    users = await svc.mounts.unmount(payload.mount_point, payload.user)
    return NfsMountResult(mount_point=payload.mount_point, users=users)
