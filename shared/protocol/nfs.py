"""Kernel NFS mounts, for NFS primary storages in `mount` mode."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shared.protocol.command import Command
from shared.protocol.types import AbsPath, HostName, Model

MountOption = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+(=[A-Za-z0-9_.:-]+)?$")]
MountUser = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")]


class NfsMountPayload(Model):
    """Mount `server:export` on `mount_point` with the kernel NFS client for `user` (a
    storage): mounts are counted per export, and the last user's unmount unmounts."""

    server: HostName
    export: AbsPath
    mount_point: AbsPath
    options: list[MountOption] = Field(default_factory=list)
    user: MountUser


class NfsMountResult(Model):
    mount_point: str
    users: list[str]


class NfsUnmountPayload(Model):
    mount_point: AbsPath
    user: MountUser


NFS_MOUNT = Command("nfs_mount", NfsMountPayload, NfsMountResult, timeout=120,
                    idempotent=True)
NFS_UNMOUNT = Command("nfs_unmount", NfsUnmountPayload, NfsMountResult, timeout=120,
                      idempotent=True)
