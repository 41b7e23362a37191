"""Cells (P <-> sftp, kvm) for every primary type P whose image cache is a directory on
the host that serves it (local, iscsi): that host fetches images over SFTP into the
cache, and sends volumes up to the server, verifying sha256 at both ends."""

from __future__ import annotations

from controller.jobs.engine import JobContext
from controller.plugins.interfaces import (
    MotionRequest,
    PrimaryDataStoreDriver,
    PrimaryToBackupStorageMediator,
    Uploaded,
    UploadRequest,
)
from controller.plugins.sftp.provider import endpoint, image_dir
from shared.protocol import (
    Command,
    ImageFacts,
    SftpDownloadPayload,
    SftpUploadPayload,
    UploadResult,
)


class SftpToFileCacheKvm(PrimaryToBackupStorageMediator):
    backup_type = "sftp"
    hypervisor = "kvm"

    def __init__(self, primary_type: str, primary_driver: PrimaryDataStoreDriver) -> None:
        self.primary_type = primary_type
        self._primary = primary_driver

    async def download_to_cache(self, ctx: JobContext, request: MotionRequest) -> ImageFacts:
        image = request.image
        assert request.ref.path and image.sha256 and image.format
        payload = SftpDownloadPayload(
            endpoint=endpoint(ctx, request.backup), remote_path=request.ref.path,
            dest_dir=self._primary.cache_dir(request.primary), file_name=image.id,
            expected_sha256=image.sha256, expected_format=image.format,  # type: ignore[arg-type]
        )
        return await ctx.call(request.host, Command.SFTP_DOWNLOAD, payload, ImageFacts,
                              task_id=request.task_id, span=(0, 50))



    async def upload_from_primary(self, ctx: JobContext, request: UploadRequest) -> Uploaded:
        assert request.volume.path
        payload = SftpUploadPayload(
            endpoint=endpoint(ctx, request.backup), local_path=request.volume.path,
            remote_dir=image_dir(request.backup), file_name=request.file_name)
        result = await ctx.call(request.host, Command.SFTP_UPLOAD, payload, UploadResult,
                                task_id=request.task_id, span=(0, 99))
        return Uploaded(result.path, result.size, result.sha256)
