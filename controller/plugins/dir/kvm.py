"""The `dir` side of its matrix cells on KVM: the host that serves the primary storage
copies image files from the directory into its cache, and volumes up into the
directory, verified."""

from __future__ import annotations

from typing import TypeVar

from controller.jobs.engine import JobContext
from controller.plugins.dir.provider import image_dir
from controller.plugins.files import DirectoryConfig, FileCacheMediator
from controller.plugins.interfaces.mediator import DownloadRequest, Uploaded, UploadRequest
from controller.plugins.interfaces.stores import StoreConfig
from shared.protocol.files import COPY_IMAGE, CopyImagePayload, ImageFacts

PC = TypeVar("PC", bound=StoreConfig)


class DirKvmMediator(FileCacheMediator[PC, DirectoryConfig]):
    async def download(self, ctx: JobContext,
                       request: DownloadRequest[PC, DirectoryConfig]) -> ImageFacts:
        payload = CopyImagePayload(src_path=self.source(request), **self.cache_target(request))
        return await self.fetch(ctx, request, COPY_IMAGE, payload)

    async def upload(self, ctx: JobContext,
                     request: UploadRequest[PC, DirectoryConfig]) -> Uploaded:
        payload = CopyImagePayload(src_path=self.volume_path(request),
                                   dest_dir=image_dir(request.backup),
                                   file_name=request.file_name)
        return await self.send(ctx, request, COPY_IMAGE, payload)
