"""Cells (P <-> sftp, kvm), P in {local, nfs, iscsi}: the host that serves P fetches images
over SFTP into its cache, and sends volumes up to the server, sha256 checked at both
ends."""

from __future__ import annotations

from controller.jobs.engine import JobContext
from controller.plugins.interfaces import MotionRequest, Uploaded, UploadRequest
from controller.plugins.mediators.file_cache import FileCacheMediator
from controller.plugins.sftp.provider import endpoint, image_dir
from shared.protocol.files import ImageFacts
from shared.protocol.sftp import SFTP_DOWNLOAD, SFTP_UPLOAD, SftpDownloadPayload, SftpUploadPayload


class SftpToFileCacheKvm(FileCacheMediator):
    backup_type = "sftp"

    async def download_to_cache(self, ctx: JobContext, request: MotionRequest) -> ImageFacts:
        payload = SftpDownloadPayload(endpoint=endpoint(ctx, request.backup),
                                      remote_path=self.source(request),
                                      **self.cache_target(request))
        return await self.fetch(ctx, request, SFTP_DOWNLOAD, payload)

    async def upload_from_primary(self, ctx: JobContext, request: UploadRequest) -> Uploaded:
        assert request.volume.path
        payload = SftpUploadPayload(
            endpoint=endpoint(ctx, request.backup), local_path=request.volume.path,
            remote_dir=image_dir(request.backup), file_name=request.file_name)
        return await self.send(ctx, request, SFTP_UPLOAD, payload)
