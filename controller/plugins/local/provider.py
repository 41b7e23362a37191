"""The `local` primary storage type: lifecycle and driver."""

from __future__ import annotations

import posixpath

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import (
    AttachState,
    Host,
    PrimaryStorage,
    PrimaryStorageHostRef,
)
from controller.plugins.common import DirectoryLifeCycle
from controller.plugins.interfaces import (
    DataStoreProvider,
    PrimaryDataStoreDriver,
    StorageRole,
)
from shared.errors import Conflict

VOLUMES = "volumes"
IMAGE_CACHE = "imagecache"


class LocalLifeCycle(DirectoryLifeCycle):
    subdirs = (VOLUMES, IMAGE_CACHE)

    async def can_attach(self, session: AsyncSession, store: PrimaryStorage, host: Host) -> None:
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


class LocalDriver(PrimaryDataStoreDriver):
    def volume_dir(self, store: PrimaryStorage) -> str:
        return posixpath.join(store.config["path"], VOLUMES)

    def cache_dir(self, store: PrimaryStorage) -> str:
        return posixpath.join(store.config["path"], IMAGE_CACHE)


PROVIDER = DataStoreProvider(
    type="local", role=StorageRole.PRIMARY, lifecycle=LocalLifeCycle(), driver=LocalDriver(),
    description="a directory on one host's local disk",
)
