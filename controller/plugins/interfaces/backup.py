"""A backup storage type (CloudStack's image store): where images are kept."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar

from controller.db.models import BackupStorage, Host, Image, ImageStoreRef
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.primary import list_not_supported
from controller.plugins.interfaces.stores import Backup, StorageProvider, StoreConfig
from shared.protocol.files import ImageFacts
from shared.protocol.objects import ObjectDir, ObjectList
from shared.protocol.types import FsCapacity

C = TypeVar("C", bound=StoreConfig)

# What a backup storage holds, one folder each (a directory, or a key prefix): image
# files named by image id, and snapshots' backups named `<volume id>.<snapshot id>.qcow2`.
Folder = Literal["images", "snapshots"]
IMAGES: Final[Folder] = "images"
SNAPSHOTS: Final[Folder] = "snapshots"
# What `list_objects` lists of a backup storage.
STORE_DIRS = [ObjectDir(subdir=IMAGES, kind="image"), ObjectDir(subdir=SNAPSHOTS, kind="snapshot")]


class BackupLifeCycle(abc.ABC, Generic[C]):
    """Bringing a backup storage into use."""

    @abc.abstractmethod
    async def attach(self, ctx: JobContext, store: Backup[C], host: Host) -> FsCapacity:
        """Proves `store` usable from `host` and reports its capacity as seen there."""


class ImageStoreDriver(abc.ABC, Generic[C]):
    """How images get into a backup storage, and out of it."""

    @abc.abstractmethod
    async def register(self, ctx: JobContext, store: Backup[C], image: Image,
                       host: Host) -> ImageFacts:
        """Fetches `image.url` into the store, verified, through `host`."""

    @abc.abstractmethod
    async def delete(self, ctx: JobContext, store: Backup[C], ref: ImageStoreRef,
                     host: Host) -> None: ...

    @abc.abstractmethod
    async def delete_file(self, ctx: JobContext, store: Backup[C], folder: Folder, name: str,
                          host: Host) -> None:
        """Removes the file (or object) `name` of `folder`; one already gone is no error."""

    async def list_objects(self, ctx: JobContext, store: Backup[C], host: Host) -> ObjectList:
        """What the store holds (images, temporaries), through `host`, for the reconcile
        work to compare with the database."""
        raise list_not_supported(store.name, store.row.type)


@dataclass(frozen=True)
class BackupStorageProvider(StorageProvider[BackupStorage, C]):
    lifecycle: BackupLifeCycle[C]
    driver: ImageStoreDriver[C]
