"""The `nfs` primary storage type: one export shared by every attached host.

Two ways to reach it, one layout: in `mount` mode each host's agent mounts the export
with the kernel client at the same mount point, and volumes are files under it; in
`libnfs` mode nothing is mounted, and volumes and their backing files are `nfs://` URLs
that QEMU and the agent open with libnfs. Either way the same paths work on every host,
which is what makes a volume made through one host usable from another.
"""

from __future__ import annotations

import posixpath
from typing import Literal

from pydantic import Field, field_validator

from controller.db.models import Host
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.primary import (
    PrimaryDataStoreDriver,
    PrimaryLifeCycle,
    PrimaryStorageProvider,
)
from controller.plugins.interfaces.stores import HostDir, Primary, StoreConfig
from controller.plugins.local.provider import FILE_STORE_DIRS
from shared.protocol.files import PREPARE_STORAGE, PrepareStoragePayload
from shared.protocol.nfs import (
    NFS_MOUNT,
    NFS_UNMOUNT,
    MountOption,
    NfsMountPayload,
    NfsUnmountPayload,
)
from shared.protocol.objects import LIST_OBJECTS, ListObjectsPayload, ObjectList
from shared.protocol.types import AbsPath, FsCapacity, HostName

VOLUMES = "volumes"
IMAGE_CACHE = "imagecache"
MOUNT_ROOT = "/var/lib/strata/mnt"


class NfsConfig(StoreConfig):
    server: HostName = Field(description="The NFS server's name or address.")
    export: AbsPath = Field(description="The exported directory (or one below it).")
    mode: Literal["mount", "libnfs"] = Field(
        default="mount",
        description="mount: kernel NFS client; libnfs: QEMU's userspace client, no mount.")
    mount_options: list[MountOption] = Field(default_factory=list,
                                     description="Extra kernel mount options (mount mode).")
    mount_point: HostDir | None = Field(
        default=None, description=f"Where hosts mount it; default {MOUNT_ROOT}/<storage id>.")

    def servers(self) -> list[str]:
        return [self.server]

    @field_validator("mount_options", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        """`vers=4.1,hard` as the CLI's --set gives it."""
        return v.split(",") if isinstance(v, str) else v


def mount_point(store: Primary[NfsConfig]) -> str:
    return store.config.mount_point or posixpath.join(MOUNT_ROOT, store.id)


class NfsDriver(PrimaryDataStoreDriver[NfsConfig]):
    def root(self, store: Primary[NfsConfig]) -> str:
        """Where every host finds the storage: the mount point, or the export's URL."""
        if store.config.mode == "libnfs":
            return f"nfs://{store.config.server}{store.config.export}"
        return mount_point(store)

    def volume_dir(self, store: Primary[NfsConfig]) -> str:
        return posixpath.join(self.root(store), VOLUMES)

    def cache_dir(self, store: Primary[NfsConfig]) -> str:
        return posixpath.join(self.root(store), IMAGE_CACHE)

    async def list_objects(self, ctx: JobContext, store: Primary[NfsConfig],
                           host: Host) -> ObjectList:
        """Through a host that has the export mounted (mount mode) or reaches it with
        libnfs: the same layout as local storage, under the export."""
        return await ctx.call(host, LIST_OBJECTS, ListObjectsPayload(
            root=self.root(store), dirs=FILE_STORE_DIRS), step=f"list-{store.id}")


class NfsLifeCycle(PrimaryLifeCycle[NfsConfig]):
    """Attaching mounts the export on the host (mount mode), then proves the storage with
    a heartbeat write; reconnecting an agent attaches again, which remounts."""

    def __init__(self, driver: NfsDriver) -> None:
        self._driver = driver

    async def attach(self, ctx: JobContext, store: Primary[NfsConfig], host: Host) -> FsCapacity:
        if store.config.mode == "mount":
            await ctx.call(host, NFS_MOUNT, NfsMountPayload(
                server=store.config.server, export=store.config.export,
                mount_point=mount_point(store), options=store.config.mount_options,
                user=store.id), step=f"mount-{store.id}-{host.id}")
        payload = PrepareStoragePayload(path=self._driver.root(store),
                                        subdirs=[VOLUMES, IMAGE_CACHE],
                                        in_flight=await ctx.in_flight())
        result = await ctx.call(host, PREPARE_STORAGE, payload,
                                step=f"prepare-{store.id}-{host.id}")
        return result.capacity

    async def detach(self, ctx: JobContext, store: Primary[NfsConfig], host: Host) -> None:
        if store.config.mode == "mount":
            await ctx.call(host, NFS_UNMOUNT,
                           NfsUnmountPayload(mount_point=mount_point(store), user=store.id),
                           step=f"unmount-{store.id}-{host.id}")


_DRIVER = NfsDriver()
NFS = PrimaryStorageProvider(
    type="nfs", description="an NFS export shared by every attached host (kernel mount or "
                            "libnfs)",
    config_model=NfsConfig, lifecycle=NfsLifeCycle(_DRIVER), driver=_DRIVER,
)
