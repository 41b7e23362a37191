"""The `sftp` side of its matrix cells on KVM: the host that serves the primary storage
fetches images (and snapshots' backups) over SFTP into its cache (or a volume
directory), and sends volumes and snapshots up to the server, sha256 checked at both
ends."""

from __future__ import annotations

from typing import Any, TypeVar

from controller.jobs.engine import JobContext
from controller.plugins.files import FetchTarget, FileCacheMediator
from controller.plugins.interfaces.mediator import Uploaded, UploadRequest
from controller.plugins.interfaces.stores import Backup, StoreConfig
from controller.plugins.sftp.provider import SftpConfig, endpoint, folder_dir
from shared.protocol.command import Command
from shared.protocol.files import ImageFacts
from shared.protocol.sftp import SFTP_DOWNLOAD, SFTP_UPLOAD, SftpDownloadPayload, SftpUploadPayload
from shared.protocol.types import Model

PC = TypeVar("PC", bound=StoreConfig)


class SftpKvmMediator(FileCacheMediator[PC, SftpConfig]):
    def fetch_command(self, ctx: JobContext, backup: Backup[SftpConfig], source: str,
                      target: FetchTarget) -> tuple[Command[Any, ImageFacts], Model]:
        return SFTP_DOWNLOAD, SftpDownloadPayload(endpoint=endpoint(ctx, backup),
                                                  remote_path=source, **target)

    async def upload(self, ctx: JobContext, request: UploadRequest[PC, SftpConfig]) -> Uploaded:
        payload = SftpUploadPayload(
            endpoint=endpoint(ctx, request.backup), local_path=self.volume_path(request),
            remote_dir=folder_dir(request.backup, request.folder),
            file_name=request.file_name, flatten=request.flatten,
            src_format=request.source_format)
        return await self.send(ctx, request, SFTP_UPLOAD, payload)
