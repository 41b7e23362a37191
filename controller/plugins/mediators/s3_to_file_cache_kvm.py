"""Cells (P <-> s3, kvm) for every primary type P whose image cache is a directory on the
host that serves it (local, iscsi): that host fetches image objects into the cache in
ranged parts, and sends volumes up as (multipart) objects, sha256 checked both ways."""

from __future__ import annotations

from controller.jobs.engine import JobContext
from controller.plugins.interfaces import (
    MotionRequest,
    PrimaryDataStoreDriver,
    PrimaryToBackupStorageMediator,
    Uploaded,
    UploadRequest,
)
from controller.plugins.s3.provider import endpoint, object_key
from shared.protocol import Command, ImageFacts, S3DownloadPayload, S3UploadPayload, UploadResult


class S3ToFileCacheKvm(PrimaryToBackupStorageMediator):
    backup_type = "s3"
    hypervisor = "kvm"

    def __init__(self, primary_type: str, primary_driver: PrimaryDataStoreDriver) -> None:
        self.primary_type = primary_type
        self._primary = primary_driver

    async def download_to_cache(self, ctx: JobContext, request: MotionRequest) -> ImageFacts:
        image = request.image
        assert request.ref.path and image.sha256 and image.format
        payload = S3DownloadPayload(
            endpoint=endpoint(ctx, request.backup), key=request.ref.path,
            dest_dir=self._primary.cache_dir(request.primary), file_name=image.id,
            expected_sha256=image.sha256, expected_format=image.format,  # type: ignore[arg-type]
        )
        return await ctx.call(request.host, Command.S3_DOWNLOAD, payload, ImageFacts,
                              task_id=request.task_id, span=(0, 50))

    async def upload_from_primary(self, ctx: JobContext, request: UploadRequest) -> Uploaded:
        assert request.volume.path
        payload = S3UploadPayload(endpoint=endpoint(ctx, request.backup),
                                  local_path=request.volume.path,
                                  key=object_key(request.backup, request.file_name))
        result = await ctx.call(request.host, Command.S3_UPLOAD, payload, UploadResult,
                                task_id=request.task_id, span=(0, 99))
        return Uploaded(result.path, result.size, result.sha256)
