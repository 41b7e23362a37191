"""What every cell into a file-based image cache shares (primary types local, nfs and
iscsi, whose cache is a directory, or an `nfs://` URL, that the chosen host reaches): the
cache as destination, the verification asked of every copy, and how the agent's answer
comes back."""

from __future__ import annotations

from typing import Any, TypeVar

from controller.jobs.engine import JobContext
from controller.plugins.interfaces import (
    MotionRequest,
    PrimaryDataStoreDriver,
    PrimaryToBackupStorageMediator,
    Uploaded,
    UploadRequest,
)
from shared.protocol.command import Command
from shared.protocol.files import ImageFacts, UploadResult
from shared.protocol.types import Model

P = TypeVar("P", bound=Model)
# What an upload command reports of the stored copy.
Stored = TypeVar("Stored", ImageFacts, UploadResult)


class FileCacheMediator(PrimaryToBackupStorageMediator):
    hypervisor = "kvm"

    def __init__(self, primary_type: str, primary_driver: PrimaryDataStoreDriver) -> None:
        self.primary_type = primary_type
        self._primary = primary_driver

    @staticmethod
    def source(request: MotionRequest) -> str:
        """Where the backup storage keeps the image (a path or an object key)."""
        assert request.ref.path
        return request.ref.path

    def cache_target(self, request: MotionRequest) -> dict[str, Any]:
        """Where the image lands in the cache, and what it must prove to be."""
        image = request.image
        assert image.sha256 and image.format
        return {"dest_dir": self._primary.cache_dir(request.primary), "file_name": image.id,
                "expected_sha256": image.sha256, "expected_format": image.format}

    async def fetch(self, ctx: JobContext, request: MotionRequest,
                    command: Command[P, ImageFacts], payload: P) -> ImageFacts:
        return await ctx.call(request.host, command, payload, task_id=request.task_id,
                              span=(0, 50))

    async def send(self, ctx: JobContext, request: UploadRequest,
                   command: Command[P, Stored], payload: P) -> Uploaded:
        result = await ctx.call(request.host, command, payload, task_id=request.task_id,
                                span=(0, 99))
        return Uploaded(result.path, result.size, result.sha256)
