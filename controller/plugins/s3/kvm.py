"""The `s3` side of its matrix cells on KVM: the host that serves the primary storage
fetches image objects (and snapshots' backups) into its cache (or a volume directory)
in ranged parts, and sends volumes and snapshots up as (multipart) objects, sha256
checked both ways."""

from __future__ import annotations

from typing import Any, TypeVar

from controller.jobs.engine import JobContext
from controller.plugins.files import FetchTarget, FileCacheMediator
from controller.plugins.interfaces.mediator import Uploaded, UploadRequest
from controller.plugins.interfaces.stores import Backup, StoreConfig
from controller.plugins.s3.provider import S3Config, endpoint, object_key
from shared.protocol.command import Command
from shared.protocol.files import ImageFacts
from shared.protocol.s3 import S3_DOWNLOAD, S3_UPLOAD, S3DownloadPayload, S3UploadPayload
from shared.protocol.types import Model

PC = TypeVar("PC", bound=StoreConfig)


class S3KvmMediator(FileCacheMediator[PC, S3Config]):
    def fetch_command(self, ctx: JobContext, backup: Backup[S3Config], source: str,
                      target: FetchTarget) -> tuple[Command[Any, ImageFacts], Model]:
        return S3_DOWNLOAD, S3DownloadPayload(endpoint=endpoint(ctx, backup), key=source,
                                              **target)

    async def upload(self, ctx: JobContext, request: UploadRequest[PC, S3Config]) -> Uploaded:
        payload = S3UploadPayload(endpoint=endpoint(ctx, request.backup),
                                  local_path=self.volume_path(request),
                                  key=object_key(request.backup, request.file_name,
                                                 request.folder),
                                  flatten=request.flatten,
                                  src_format=request.source_format)
        return await self.send(ctx, request, S3_UPLOAD, payload)
