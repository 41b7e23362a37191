"""The `local` primary storage type: lifecycle and driver."""

from __future__ import annotations

import posixpath

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import AttachState, Host, PrimaryStorageHostRef
from controller.jobs.engine import JobContext
from controller.plugins.files import DirectoryConfig
from controller.plugins.interfaces.primary import (
    PrimaryDataStoreDriver,
    PrimaryLifeCycle,
    PrimaryStorageProvider,
)
from controller.plugins.interfaces.stores import Primary
from shared.errors import Conflict
from shared.protocol.files import PREPARE_STORAGE, PrepareStoragePayload
from shared.protocol.objects import LIST_OBJECTS, ListObjectsPayload, ObjectDir, ObjectList
from shared.protocol.types import FsCapacity

VOLUMES = "volumes"
IMAGE_CACHE = "imagecache"


class LocalLifeCycle(PrimaryLifeCycle[DirectoryConfig]):
    """Attaching: the host's agent creates the subdirectories, proves it can write there,
    clears leftovers of interrupted work and reports capacity."""

    async def can_attach(self, session: AsyncSession, store: Primary[DirectoryConfig],
                         host: Host) -> None:
        other = await session.scalar(
            select(PrimaryStorageHostRef.host_id).where(
                PrimaryStorageHostRef.primary_storage_id == store.id,
                PrimaryStorageHostRef.host_id != host.id,
                PrimaryStorageHostRef.state != AttachState.DETACHING,
            )
        )
        if other is not None:
            raise Conflict(
                f"local primary storage {store.name} is already attached to host {other}; "
                "a local storage belongs to exactly one host",
                code="already_attached",
            )

    async def attach(self, ctx: JobContext, store: Primary[DirectoryConfig],
                     host: Host) -> FsCapacity:
        payload = PrepareStoragePayload(path=store.config.path, subdirs=[VOLUMES, IMAGE_CACHE],
                                        in_flight=await ctx.in_flight())
        result = await ctx.call(host, PREPARE_STORAGE, payload,
                                step=f"prepare-{store.id}-{host.id}")
        return result.capacity


class LocalDriver(PrimaryDataStoreDriver[DirectoryConfig]):
    def volume_dir(self, store: Primary[DirectoryConfig]) -> str:
        return posixpath.join(store.config.path, VOLUMES)

    def cache_dir(self, store: Primary[DirectoryConfig]) -> str:
        return posixpath.join(store.config.path, IMAGE_CACHE)

    async def list_objects(self, ctx: JobContext, store: Primary[DirectoryConfig],
                           host: Host) -> ObjectList:
        return await ctx.call(host, LIST_OBJECTS, ListObjectsPayload(
            root=store.config.path, dirs=FILE_STORE_DIRS), step=f"list-{store.id}")


# What a file primary storage's directories hold.
FILE_STORE_DIRS = [ObjectDir(subdir=VOLUMES, kind="volume"),
                   ObjectDir(subdir=IMAGE_CACHE, kind="cache")]


LOCAL = PrimaryStorageProvider(
    type="local", description="a directory on one host's local disk",
    config_model=DirectoryConfig, lifecycle=LocalLifeCycle(), driver=LocalDriver(),
)
