"""The `dir` backup storage type: lifecycle and image store driver."""

from __future__ import annotations

import posixpath

from controller.db.models import Host, Image, ImageStoreRef
from controller.jobs.engine import JobContext
from controller.plugins.files import DirectoryConfig
from controller.plugins.interfaces.backup import (
    IMAGES,
    SNAPSHOTS,
    STORE_DIRS,
    BackupLifeCycle,
    BackupStorageProvider,
    Folder,
    ImageStoreDriver,
)
from controller.plugins.interfaces.stores import Backup
from shared.protocol.files import (
    DELETE_FILE,
    DOWNLOAD_IMAGE,
    PREPARE_STORAGE,
    DeleteFilePayload,
    DownloadImagePayload,
    ImageFacts,
    PrepareStoragePayload,
)
from shared.protocol.objects import LIST_OBJECTS, ListObjectsPayload, ObjectList
from shared.protocol.types import FsCapacity


def folder_dir(store: Backup[DirectoryConfig], folder: Folder) -> str:
    return posixpath.join(store.config.path, folder)


def image_dir(store: Backup[DirectoryConfig]) -> str:
    return folder_dir(store, IMAGES)


class DirLifeCycle(BackupLifeCycle[DirectoryConfig]):
    """Attaching: the host's agent creates the image directory, proves it can write there,
    clears leftovers of interrupted work and reports capacity."""

    async def attach(self, ctx: JobContext, store: Backup[DirectoryConfig],
                     host: Host) -> FsCapacity:
        payload = PrepareStoragePayload(path=store.config.path, subdirs=[IMAGES, SNAPSHOTS],
                                        in_flight=await ctx.in_flight())
        result = await ctx.call(host, PREPARE_STORAGE, payload,
                                step=f"prepare-{store.id}-{host.id}")
        return result.capacity


class DirDriver(ImageStoreDriver[DirectoryConfig]):
    async def register(self, ctx: JobContext, store: Backup[DirectoryConfig], image: Image,
                       host: Host) -> ImageFacts:
        payload = DownloadImagePayload(
            url=image.url, dest_dir=image_dir(store), file_name=image.id,
            expected_sha256=image.declared_sha256, expected_format=image.declared_format)
        return await ctx.call(host, DOWNLOAD_IMAGE, payload, step="download", span=(0, 99))

    async def delete(self, ctx: JobContext, store: Backup[DirectoryConfig], ref: ImageStoreRef,
                     host: Host) -> None:
        payload = DeleteFilePayload(dir=image_dir(store), file_name=ref.image_id)
        await ctx.call(host, DELETE_FILE, payload, step=f"delete-{ref.id}")

    async def delete_file(self, ctx: JobContext, store: Backup[DirectoryConfig],
                          folder: Folder, name: str, host: Host) -> None:
        payload = DeleteFilePayload(dir=folder_dir(store, folder), file_name=name)
        await ctx.call(host, DELETE_FILE, payload, step=f"delete-{folder}")

    async def list_objects(self, ctx: JobContext, store: Backup[DirectoryConfig],
                           host: Host) -> ObjectList:
        return await ctx.call(host, LIST_OBJECTS, ListObjectsPayload(
            root=store.config.path, dirs=STORE_DIRS),
            step=f"list-{store.id}")


DIR = BackupStorageProvider(
    type="dir", description="an image store directory that hosts reach by path",
    config_model=DirectoryConfig, lifecycle=DirLifeCycle(), driver=DirDriver(),
)
