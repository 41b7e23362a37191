"""Cells (P <-> dir, kvm) for every primary type P whose image cache is a directory on
the host that serves it (local, iscsi): that host copies the image file from the
directory store into the cache, or a volume up into the store, verifying as it goes."""

from __future__ import annotations

import posixpath

from controller.jobs.engine import JobContext
from controller.plugins.dir.provider import IMAGES
from controller.plugins.interfaces import (
    MotionRequest,
    PrimaryDataStoreDriver,
    PrimaryToBackupStorageMediator,
    Uploaded,
    UploadRequest,
)
from shared.protocol import Command, CopyImagePayload, ImageFacts


class DirToFileCacheKvm(PrimaryToBackupStorageMediator):
    backup_type = "dir"
    hypervisor = "kvm"

    def __init__(self, primary_type: str, primary_driver: PrimaryDataStoreDriver) -> None:
        self.primary_type = primary_type
        self._primary = primary_driver

    async def download_to_cache(self, ctx: JobContext, request: MotionRequest) -> ImageFacts:
        image = request.image
        assert request.ref.path and image.sha256 and image.format
        payload = CopyImagePayload(
            src_path=request.ref.path, dest_dir=self._primary.cache_dir(request.primary),
            file_name=image.id, expected_sha256=image.sha256,
            expected_format=image.format,  # type: ignore[arg-type]
        )
        return await ctx.call(request.host, Command.COPY_IMAGE, payload, ImageFacts,
                              task_id=request.task_id, span=(0, 50))

    async def upload_from_primary(self, ctx: JobContext, request: UploadRequest) -> Uploaded:
        assert request.volume.path
        payload = CopyImagePayload(
            src_path=request.volume.path, file_name=request.file_name,
            dest_dir=posixpath.join(request.backup.config["path"], IMAGES))
        facts = await ctx.call(request.host, Command.COPY_IMAGE, payload, ImageFacts,
                               task_id=request.task_id, span=(0, 99))
        return Uploaded(facts.path, facts.size, facts.sha256)
