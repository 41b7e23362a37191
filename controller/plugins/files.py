"""Stores whose data are files that a host reaches by path, or by `nfs://` URL (local,
nfs and iscsi primary storages, dir backup storages): their directory setting, deleting
a file, and the file image cache that every matrix cell on KVM fills."""

from __future__ import annotations

from typing import Any, TypeVar

from controller.db.models import Host, ImageCache
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.mediator import (
    DownloadRequest,
    PrimaryToBackupStorageMediator,
    Uploaded,
    UploadRequest,
)
from controller.plugins.interfaces.primary import PrimaryDataStoreDriver
from controller.plugins.interfaces.stores import HostDir, Primary, StoreConfig
from shared.protocol.command import Command
from shared.protocol.files import DELETE_FILE, DeleteFilePayload, ImageFacts, UploadResult
from shared.protocol.types import FsCapacity, Model

P = TypeVar("P", bound=Model)
PC = TypeVar("PC", bound=StoreConfig)
BC = TypeVar("BC", bound=StoreConfig)
# What an upload command reports of the stored copy.
Stored = TypeVar("Stored", ImageFacts, UploadResult)


class DirectoryConfig(StoreConfig):
    """A store that is a directory on a host's filesystem."""

    path: HostDir


async def delete_file(ctx: JobContext, host: Host, directory: str, name: str,
                      step: str) -> FsCapacity:
    result = await ctx.call(host, DELETE_FILE, DeleteFilePayload(dir=directory, file_name=name),
                            step=step)
    return result.capacity


async def delete_cache_file(ctx: JobContext, driver: PrimaryDataStoreDriver[PC],
                            store: Primary[PC], cache: ImageCache, host: Host) -> FsCapacity:
    """An image cache is a file in the storage's cache directory, whatever the backend."""
    return await delete_file(ctx, host, driver.cache_dir(store), cache.image_id,
                             f"delete-{cache.id}")


class FileCacheMediator(PrimaryToBackupStorageMediator[PC, BC]):
    """What every cell into a file image cache shares (primary types local, nfs and
    iscsi, whose cache is a directory, or an `nfs://` URL, that the chosen host reaches):
    the cache as destination, the verification asked of every copy, and how the agent's
    answer comes back. Subclasses are a backup type's transport."""

    def __init__(self, primary: PrimaryDataStoreDriver[PC]) -> None:
        self._primary = primary

    @staticmethod
    def source(request: DownloadRequest[PC, BC]) -> str:
        """Where the backup storage keeps the image (a path or an object key)."""
        assert request.ref.path
        return request.ref.path

    def cache_target(self, request: DownloadRequest[PC, BC]) -> dict[str, Any]:
        """Where the image lands in the cache, and what it must prove to be."""
        image = request.image
        assert image.sha256 and image.format
        dest_dir, file_name = request.dest or (self._primary.cache_dir(request.primary),
                                               image.id)
        return {"dest_dir": dest_dir, "file_name": file_name,
                "expected_sha256": image.sha256, "expected_format": image.format}

    @staticmethod
    def volume_path(request: UploadRequest[PC, BC]) -> str:
        assert request.volume.path
        return request.volume.path

    @staticmethod
    async def fetch(ctx: JobContext, request: DownloadRequest[PC, BC],
                    command: Command[P, ImageFacts], payload: P) -> ImageFacts:
        return await ctx.call(request.host, command, payload, task_id=request.task_id,
                              span=(0, 50))

    @staticmethod
    async def send(ctx: JobContext, request: UploadRequest[PC, BC],
                   command: Command[P, Stored], payload: P) -> Uploaded:
        result = await ctx.call(request.host, command, payload, task_id=request.task_id,
                                span=(0, 99))
        return Uploaded(result.path, result.size, result.sha256)
