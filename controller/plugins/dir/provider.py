"""The `dir` backup storage type: lifecycle and image driver."""

from __future__ import annotations

import posixpath

from controller.db.models import BackupStorage, Host, Image, ImageStoreRef
from controller.jobs.engine import JobContext
from controller.plugins.common import DirectoryLifeCycle
from controller.plugins.interfaces import (
    DataStoreProvider,
    ImageDataStoreDriver,
    StorageRole,
)
from shared.protocol.files import (
    DELETE_FILE,
    DOWNLOAD_IMAGE,
    DeleteFilePayload,
    DownloadImagePayload,
    ImageFacts,
)

IMAGES = "images"


class DirLifeCycle(DirectoryLifeCycle):
    subdirs = (IMAGES,)


class DirDriver(ImageDataStoreDriver):
    def image_dir(self, store: BackupStorage) -> str:
        return posixpath.join(store.config["path"], IMAGES)

    async def register(self, ctx: JobContext, store: BackupStorage, image: Image,
                       host: Host) -> ImageFacts:
        payload = DownloadImagePayload(
            url=image.url, dest_dir=self.image_dir(store), file_name=image.id,
            expected_sha256=image.declared_sha256,
            expected_format=image.declared_format,  # type: ignore[arg-type]
        )
        return await ctx.call(host, DOWNLOAD_IMAGE, payload, step="download", span=(0, 99))

    async def delete(self, ctx: JobContext, store: BackupStorage, ref: ImageStoreRef,
                     host: Host) -> None:
        payload = DeleteFilePayload(dir=self.image_dir(store), file_name=ref.image_id)
        await ctx.call(host, DELETE_FILE, payload, step=f"delete-{ref.id}")


PROVIDER = DataStoreProvider(
    type="dir", role=StorageRole.BACKUP, lifecycle=DirLifeCycle(), driver=DirDriver(),
    description="an image store directory that hosts reach by path",
)
