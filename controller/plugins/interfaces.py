"""The plugin interfaces, after the CloudStack storage subsystem and ZStack's M x N model.

A storage type is a `DataStoreProvider` handing out its `DataStoreLifeCycle` and driver.
Primary storage logic that depends on the hypervisor lives in a `PrimaryStorageBackend`
per (primary type, hypervisor); what depends on the backup storage too lives in a
`PrimaryToBackupStorageMediator` per (primary type, backup type, hypervisor).
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import (
    BackupStorage,
    Host,
    Image,
    ImageCache,
    ImageStoreRef,
    PrimaryStorage,
    Volume,
)
from controller.jobs.engine import JobContext
from shared.errors import Unsupported
from shared.protocol.files import ImageFacts
from shared.protocol.iscsi import IscsiTarget
from shared.protocol.types import FsCapacity


class StorageRole(enum.StrEnum):
    PRIMARY = "primary"
    BACKUP = "backup"


class DataStoreLifeCycle(abc.ABC):
    """Bringing a store into use: validate its settings, attach and detach hosts."""

    config_model: type[BaseModel]
    # Settings that are credentials: stored sealed, never shown by the API.
    secret_fields: frozenset[str] = frozenset()

    def validate_config(self, config: dict[str, object]) -> dict[str, object]:
        return self.config_model.model_validate(config).model_dump(mode="json")

    def public_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in self.secret_fields}

    async def check_config(self, session: AsyncSession, config: dict[str, Any]) -> None:
        """Checks what the settings refer to (other rows); nothing by default."""
        return None

    @abc.abstractmethod
    async def attach(self, ctx: JobContext, store: PrimaryStorage | BackupStorage,
                     host: Host) -> FsCapacity:
        """Makes `store` usable from `host` and reports its capacity as seen there."""

    async def detach(self, ctx: JobContext, store: PrimaryStorage, host: Host) -> None:
        """Releases what `attach` took on `host` (a mount); nothing by default."""
        return None

    async def can_attach(self, session: AsyncSession, store: PrimaryStorage, host: Host) -> None:
        """Raises a Conflict when `host` may not attach `store` (e.g. a second host on local).
        Any host may by default."""
        return None


class PrimaryDataStoreDriver(abc.ABC):
    """Where a primary storage keeps things, and how a host reaches them."""

    @abc.abstractmethod
    def volume_dir(self, store: PrimaryStorage) -> str: ...

    @abc.abstractmethod
    def cache_dir(self, store: PrimaryStorage) -> str: ...

    def server_host_id(self, store: PrimaryStorage) -> str | None:
        """The host that serves this storage's volumes when one does (an iSCSI storage
        server); None when the attached hosts reach the volumes themselves."""
        return None

    def check_grant(self, store: PrimaryStorage, host: Host) -> None:
        """Raises a 4xx error when `host` cannot be granted this storage's volumes; the
        API calls it before accepting a grant. Storages without grants refuse all."""
        raise access_not_supported(store)

    async def grant_access(self, ctx: JobContext, store: PrimaryStorage, volume: Volume,
                           host: Host) -> str:
        """Makes `volume` reachable from `host`; returns the URI the host opens it by."""
        raise access_not_supported(store)

    async def revoke_access(self, ctx: JobContext, store: PrimaryStorage, volume: Volume,
                            host: Host) -> None:
        raise access_not_supported(store)


def access_not_supported(store: PrimaryStorage) -> Unsupported:
    return Unsupported(
        f"primary storage {store.name} is {store.type}: its volumes are not granted to hosts; "
        "access grants apply to storages that export volumes (iscsi)",
        code="access_not_supported")


class ImageDataStoreDriver(abc.ABC):
    """Where a backup storage keeps images, and how they are registered into it."""

    @abc.abstractmethod
    def image_dir(self, store: BackupStorage) -> str: ...

    @abc.abstractmethod
    async def register(self, ctx: JobContext, store: BackupStorage, image: Image,
                       host: Host) -> ImageFacts:
        """Fetches `image.url` into the store, verified, through `host`."""

    @abc.abstractmethod
    async def delete(self, ctx: JobContext, store: BackupStorage, ref: ImageStoreRef,
                     host: Host) -> None: ...


@dataclass(frozen=True)
class DataStoreProvider:
    """The entry point of a storage type, registered at controller start."""

    type: str
    role: StorageRole
    lifecycle: DataStoreLifeCycle
    driver: PrimaryDataStoreDriver | ImageDataStoreDriver
    description: str


@dataclass(frozen=True)
class VolumeCreated:
    path: str
    virtual_size: int
    capacity: FsCapacity
    format: str = "qcow2"
    export: IscsiTarget | None = None


class PrimaryStorageBackend(abc.ABC):
    """The hypervisor-specific half of a primary storage: how volumes are made for it."""

    primary_type: str
    hypervisor: str

    @abc.abstractmethod
    async def create_volume(self, ctx: JobContext, store: PrimaryStorage, volume: Volume,
                            host: Host, backing: ImageCache | None,
                            backing_format: str | None) -> VolumeCreated:
        """Makes the volume: empty, or from the image cache `backing`."""

    @abc.abstractmethod
    async def delete_volume(self, ctx: JobContext, store: PrimaryStorage, volume: Volume,
                            host: Host) -> FsCapacity: ...

    @abc.abstractmethod
    async def delete_cache(self, ctx: JobContext, store: PrimaryStorage, cache: ImageCache,
                           host: Host) -> FsCapacity: ...


@dataclass(frozen=True)
class MotionRequest:
    """Bring an image from a backup storage into a primary storage's cache, through
    `host`, as the agent task `task_id` (shared by every job waiting for that cache)."""

    image: Image
    ref: ImageStoreRef
    backup: BackupStorage
    primary: PrimaryStorage
    cache: ImageCache
    host: Host
    task_id: str


@dataclass(frozen=True)
class UploadRequest:
    """Copy `volume` from its primary storage into `backup` as `file_name`, through `host`
    (the host that reaches the volume), as the agent task `task_id`."""

    volume: Volume
    primary: PrimaryStorage
    backup: BackupStorage
    host: Host
    file_name: str
    task_id: str


@dataclass(frozen=True)
class Uploaded:
    path: str
    size: int
    sha256: str


class PrimaryToBackupStorageMediator(abc.ABC):
    """One cell of the matrix: moves bytes between a backup type and a primary type,
    for one hypervisor: images down into a cache, volumes up into the store."""

    primary_type: str
    backup_type: str
    hypervisor: str

    @abc.abstractmethod
    async def download_to_cache(self, ctx: JobContext, request: MotionRequest) -> ImageFacts:
        """Copies the image into the primary storage's image cache, verified."""

    @abc.abstractmethod
    async def upload_from_primary(self, ctx: JobContext, request: UploadRequest) -> Uploaded:
        """Copies the volume into the backup storage, verified there."""


class DataMotionStrategy(abc.ABC):
    """Strategies bid on a motion; the highest non-zero bid carries it out."""

    @abc.abstractmethod
    def bid(self, request: MotionRequest) -> int: ...

    @abc.abstractmethod
    async def copy(self, ctx: JobContext, request: MotionRequest) -> ImageFacts: ...


class EndPointSelector(abc.ABC):
    """Chooses which host's agent executes a step."""

    @abc.abstractmethod
    async def for_primary(self, session: AsyncSession, store: PrimaryStorage) -> Host: ...

    @abc.abstractmethod
    async def for_backup(self, session: AsyncSession, store: BackupStorage,
                         near: PrimaryStorage | None = None) -> Host: ...


class TemplateInstallStrategy(abc.ABC):
    """How an image becomes the base of root volumes on a primary storage."""

    @abc.abstractmethod
    async def installed(self, session: AsyncSession, image: Image,
                        store: PrimaryStorage) -> ImageCache | None:
        """The ready base of `image` on `store`, if it is there already."""

    @abc.abstractmethod
    async def install(self, ctx: JobContext, image: Image, store: PrimaryStorage) -> ImageCache:
        """Returns a ready image cache of `image` on `store`, making it if needed."""
