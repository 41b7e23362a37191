"""A primary storage type: where VM volumes live and run."""

from __future__ import annotations

import abc
import posixpath
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Host, PrimaryStorage, Volume
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.stores import Primary, StorageProvider, StoreConfig
from shared.errors import Unsupported
from shared.protocol.objects import ObjectList
from shared.protocol.types import FsCapacity

C = TypeVar("C", bound=StoreConfig)


class PrimaryLifeCycle(abc.ABC, Generic[C]):
    """Bringing a primary storage into use on hosts, and out of it."""

    async def check_config(self, session: AsyncSession, config: C) -> None:
        """Checks what the settings refer to (other rows); nothing by default."""
        return None

    async def can_attach(self, session: AsyncSession, store: Primary[C], host: Host) -> None:
        """Raises a Conflict when `host` may not attach `store` (e.g. a second host on local).
        Any host may by default."""
        return None

    @abc.abstractmethod
    async def attach(self, ctx: JobContext, store: Primary[C], host: Host) -> FsCapacity:
        """Makes `store` usable from `host` and reports its capacity as seen there."""

    async def detach(self, ctx: JobContext, store: Primary[C], host: Host) -> None:
        """Releases what `attach` took on `host` (a mount); nothing by default."""
        return None


class PrimaryDataStoreDriver(abc.ABC, Generic[C]):
    """Where a primary storage keeps things, and how a host is given its volumes."""

    @abc.abstractmethod
    def volume_dir(self, store: Primary[C]) -> str: ...

    @abc.abstractmethod
    def cache_dir(self, store: Primary[C]) -> str: ...

    def object_root(self, store: Primary[C]) -> str:
        """The directory `list_objects` names files relative to (its quarantine directory
        is there too): the one that holds the volume directory."""
        return posixpath.dirname(self.volume_dir(store))

    def server_host_id(self, store: Primary[C]) -> str | None:
        """The host that serves this storage's volumes when one does (an iSCSI storage
        server); None when the attached hosts reach the volumes themselves."""
        return None

    # Whether a host needs a grant (grant_access) before it may open a volume.
    grants_per_host: bool = False

    def check_grant(self, store: Primary[C], host: Host) -> None:
        """Raises a 4xx error when `host` cannot be granted this storage's volumes; the
        API calls it before accepting a grant. Storages without grants refuse all."""
        raise access_not_supported(store)

    async def grant_access(self, ctx: JobContext, store: Primary[C], volume: Volume,
                           host: Host) -> str:
        """Makes `volume` reachable from `host`; returns the URI the host opens it by."""
        raise access_not_supported(store)

    async def revoke_access(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            host: Host) -> None:
        raise access_not_supported(store)

    async def list_objects(self, ctx: JobContext, store: Primary[C], host: Host) -> ObjectList:
        """What the storage holds (volumes, image caches, snapshots, temporaries), as seen
        through `host` (a storage server's own agent where there is one), for the
        reconcile work to compare with the database."""
        raise list_not_supported(store.name, store.row.type)


def list_not_supported(name: str, store_type: str) -> Unsupported:
    return Unsupported(f"storage {name} is {store_type}, which cannot list what it holds",
                       code="list_unsupported")


def access_not_supported(store: Primary[Any]) -> Unsupported:
    return Unsupported(
        f"primary storage {store.name} is {store.row.type}: its volumes are not granted to "
        "hosts; access grants apply to storages that export volumes (iscsi)",
        code="access_not_supported")


@dataclass(frozen=True)
class PrimaryStorageProvider(StorageProvider[PrimaryStorage, C]):
    lifecycle: PrimaryLifeCycle[C]
    driver: PrimaryDataStoreDriver[C]
