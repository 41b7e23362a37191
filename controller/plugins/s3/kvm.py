"""The `s3` side of its matrix cells on KVM: the host that serves the primary storage
fetches image objects into its cache in ranged parts, and sends volumes up as
(multipart) objects, sha256 checked both ways."""

from __future__ import annotations

from typing import TypeVar

from controller.jobs.engine import JobContext
from controller.plugins.files import FileCacheMediator
from controller.plugins.interfaces.mediator import DownloadRequest, Uploaded, UploadRequest
from controller.plugins.interfaces.stores import StoreConfig
from controller.plugins.s3.provider import S3Config, endpoint, object_key
from shared.protocol.files import ImageFacts
from shared.protocol.s3 import S3_DOWNLOAD, S3_UPLOAD, S3DownloadPayload, S3UploadPayload

PC = TypeVar("PC", bound=StoreConfig)


class S3KvmMediator(FileCacheMediator[PC, S3Config]):
    async def download(self, ctx: JobContext,
                       request: DownloadRequest[PC, S3Config]) -> ImageFacts:
        payload = S3DownloadPayload(endpoint=endpoint(ctx, request.backup),
                                    key=self.source(request), **self.cache_target(request))
        return await self.fetch(ctx, request, S3_DOWNLOAD, payload)

    async def upload(self, ctx: JobContext, request: UploadRequest[PC, S3Config]) -> Uploaded:
        payload = S3UploadPayload(endpoint=endpoint(ctx, request.backup),
                                  local_path=self.volume_path(request),
                                  key=object_key(request.backup, request.file_name))
        return await self.send(ctx, request, S3_UPLOAD, payload)
