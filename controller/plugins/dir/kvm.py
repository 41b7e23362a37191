"""The `dir` side of its matrix cells on KVM: the host that serves the primary storage
copies image files (and snapshots' backups) from the directory into its cache (or a
volume directory), and volumes and snapshots up into the directory, verified."""

from __future__ import annotations

from typing import Any, TypeVar

from controller.jobs.engine import JobContext
from controller.plugins.dir.provider import folder_dir
from controller.plugins.files import DirectoryConfig, FetchTarget, FileCacheMediator
from controller.plugins.interfaces.mediator import Uploaded, UploadRequest
from controller.plugins.interfaces.stores import Backup, StoreConfig
from shared.protocol.command import Command
from shared.protocol.files import COPY_IMAGE, CopyImagePayload, ImageFacts
from shared.protocol.types import Model

PC = TypeVar("PC", bound=StoreConfig)


class DirKvmMediator(FileCacheMediator[PC, DirectoryConfig]):
    def fetch_command(self, ctx: JobContext, backup: Backup[DirectoryConfig], source: str,
                      target: FetchTarget) -> tuple[Command[Any, ImageFacts], Model]:
        return COPY_IMAGE, CopyImagePayload(src_path=source, **target)

    async def upload(self, ctx: JobContext,
                     request: UploadRequest[PC, DirectoryConfig]) -> Uploaded:
        payload = CopyImagePayload(src_path=self.volume_path(request),
                                   dest_dir=folder_dir(request.backup, request.folder),
                                   file_name=request.file_name, flatten=request.flatten,
                                   src_format=request.source_format)
        return await self.send(ctx, request, COPY_IMAGE, payload)
