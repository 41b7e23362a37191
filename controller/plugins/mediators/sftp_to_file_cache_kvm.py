"""Cells (P <- sftp, kvm) for every primary type P whose image cache is a directory on
the host that serves it (local, iscsi): that host fetches the image over SFTP into the
cache, verifying sha256 and format as it writes."""

from __future__ import annotations

from controller.jobs.engine import JobContext
from controller.plugins.interfaces import (
    MotionRequest,
    PrimaryDataStoreDriver,
    PrimaryToBackupStorageMediator,
)
from controller.plugins.sftp.provider import endpoint
from shared.protocol import Command, ImageFacts, SftpDownloadPayload


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


