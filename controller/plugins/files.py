"""Stores whose data are files that a host reaches by path, or by `nfs://` URL (local,
nfs and iscsi primary storages, dir backup storages): their directory setting, deleting
a file, and the file image cache that every matrix cell on KVM fills."""

from __future__ import annotations

import abc
from typing import Any, TypedDict, TypeVar

from controller.db.models import Host, ImageCache
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.mediator import (
    DownloadRequest,
    PrimaryToBackupStorageMediator,
    RestoreRequest,
    Uploaded,
    UploadRequest,
)
from controller.plugins.interfaces.primary import PrimaryDataStoreDriver
from controller.plugins.interfaces.stores import Backup, HostDir, Primary, StoreConfig
from shared.protocol.command import Command
from shared.protocol.files import (
    DELETE_FILE,
    ChunkManifest,
    DeleteFilePayload,
    ImageFacts,
    UploadResult,
)
from shared.protocol.types import FsCapacity, ImageFormat, Model

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
    the cache (or a volume directory, for a restore) as destination, the verification
    asked of every copy, and how the agent's answer comes back. Subclasses are a backup
    type's transport: the command that fetches a stored file, and the one that stores
    one."""

    def __init__(self, primary: PrimaryDataStoreDriver[PC]) -> None:
        self._primary = primary

    @abc.abstractmethod
    def fetch_command(self, ctx: JobContext, backup: Backup[BC], source: str,
                      target: FetchTarget) -> tuple[Command[Any, ImageFacts], Model]:
        """The agent command (and payload) that copies the stored file `source` (a path
        or an object key) of `backup` to `target`, verified."""

    async def download(self, ctx: JobContext, request: DownloadRequest[PC, BC]) -> ImageFacts:
        image = request.image
        assert image.sha256 and image.format and request.ref.path
        dest_dir, file_name = request.dest or (self._primary.cache_dir(request.primary),
                                               image.id)
        target = FetchTarget(dest_dir=dest_dir, file_name=file_name,
                             expected_sha256=image.sha256, expected_format=image.format,
                             manifest=request.manifest)
        command, payload = self.fetch_command(ctx, request.backup, request.ref.path, target)
        return await ctx.call(request.host, command, payload, task_id=request.task_id,
                              span=(0, 50))

    async def restore(self, ctx: JobContext, request: RestoreRequest[PC, BC]) -> ImageFacts:
        target = FetchTarget(dest_dir=request.dest_dir, file_name=request.file_name,
                             expected_sha256=request.sha256, expected_format=request.format,
                             manifest=None)
        command, payload = self.fetch_command(ctx, request.backup, request.source, target)
        return await ctx.call(request.host, command, payload, task_id=request.task_id,
                              span=(0, 70))

    @staticmethod
    def volume_path(request: UploadRequest[PC, BC]) -> str:
        """The layer to copy up: the one asked for, else the volume's active layer."""
        path = request.source or request.volume.path
        assert path
        return path

    @staticmethod
    async def send(ctx: JobContext, request: UploadRequest[PC, BC],
                   command: Command[P, Stored], payload: P) -> Uploaded:
        result = await ctx.call(request.host, command, payload, task_id=request.task_id,
                                span=(0, 99))
        return Uploaded(result.path, result.size, result.sha256, result.manifest)


class FetchTarget(TypedDict):
    """Where a fetched file lands, and what it must prove to be (the fields every fetch
    payload shares): its sha256, proven chunk by chunk when there is a manifest."""

    dest_dir: str
    file_name: str
    expected_sha256: str
    expected_format: ImageFormat
    manifest: ChunkManifest | None
