"""The `sftp` side of its matrix cells on KVM: the host that serves the primary storage
fetches images over SFTP into its cache, and sends volumes up to the server, sha256
checked at both ends."""

from __future__ import annotations

from typing import TypeVar

from controller.jobs.engine import JobContext
from controller.plugins.files import FileCacheMediator
from controller.plugins.interfaces.mediator import DownloadRequest, Uploaded, UploadRequest
from controller.plugins.interfaces.stores import StoreConfig
from controller.plugins.sftp.provider import SftpConfig, endpoint, image_dir
from shared.protocol.files import ImageFacts
from shared.protocol.sftp import SFTP_DOWNLOAD, SFTP_UPLOAD, SftpDownloadPayload, SftpUploadPayload

PC = TypeVar("PC", bound=StoreConfig)


class SftpKvmMediator(FileCacheMediator[PC, SftpConfig]):
    async def download(self, ctx: JobContext,
                       request: DownloadRequest[PC, SftpConfig]) -> ImageFacts:
        payload = SftpDownloadPayload(endpoint=endpoint(ctx, request.backup),
                                      remote_path=self.source(request),
                                      **self.cache_target(request))
        return await self.fetch(ctx, request, SFTP_DOWNLOAD, payload)

    async def upload(self, ctx: JobContext, request: UploadRequest[PC, SftpConfig]) -> Uploaded:
        payload = SftpUploadPayload(
            endpoint=endpoint(ctx, request.backup), local_path=self.volume_path(request),
            remote_dir=image_dir(request.backup), file_name=request.file_name)
        return await self.send(ctx, request, SFTP_UPLOAD, payload)
