"""Cells (P <-> s3, kvm), P in {local, nfs, iscsi}: the host that serves P fetches image
objects into its cache in ranged parts, and sends volumes up as (multipart) objects,
sha256 checked both ways."""

from __future__ import annotations

from controller.jobs.engine import JobContext
from controller.plugins.interfaces import MotionRequest, Uploaded, UploadRequest
from controller.plugins.mediators.file_cache import FileCacheMediator
from controller.plugins.s3.provider import endpoint, object_key
from shared.protocol.files import ImageFacts
from shared.protocol.s3 import S3_DOWNLOAD, S3_UPLOAD, S3DownloadPayload, S3UploadPayload


class S3ToFileCacheKvm(FileCacheMediator):
    backup_type = "s3"

    async def download_to_cache(self, ctx: JobContext, request: MotionRequest) -> ImageFacts:
        payload = S3DownloadPayload(endpoint=endpoint(ctx, request.backup),
                                    key=self.source(request), **self.cache_target(request))
        return await self.fetch(ctx, request, S3_DOWNLOAD, payload)

    async def upload_from_primary(self, ctx: JobContext, request: UploadRequest) -> Uploaded:
        assert request.volume.path
        payload = S3UploadPayload(endpoint=endpoint(ctx, request.backup),
                                  local_path=request.volume.path,
                                  key=object_key(request.backup, request.file_name))
        return await self.send(ctx, request, S3_UPLOAD, payload)
