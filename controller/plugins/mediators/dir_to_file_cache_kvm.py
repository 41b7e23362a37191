"""Cells (P <-> dir, kvm), P in {local, nfs, iscsi}: the host that serves P copies image files
from the directory store into its cache, and volumes up into the store, verified."""

from __future__ import annotations

import posixpath

from controller.jobs.engine import JobContext
from controller.plugins.dir.provider import IMAGES
from controller.plugins.interfaces import MotionRequest, Uploaded, UploadRequest
from controller.plugins.mediators.file_cache import FileCacheMediator
from shared.protocol.files import COPY_IMAGE, CopyImagePayload, ImageFacts


class DirToFileCacheKvm(FileCacheMediator):
    backup_type = "dir"

    async def download_to_cache(self, ctx: JobContext, request: MotionRequest) -> ImageFacts:
        payload = CopyImagePayload(src_path=self.source(request), **self.cache_target(request))
        return await self.fetch(ctx, request, COPY_IMAGE, payload)

    async def upload_from_primary(self, ctx: JobContext, request: UploadRequest) -> Uploaded:
        assert request.volume.path
        payload = CopyImagePayload(
            src_path=request.volume.path, file_name=request.file_name,
            dest_dir=posixpath.join(request.backup.config["path"], IMAGES))
        return await self.send(ctx, request, COPY_IMAGE, payload)
