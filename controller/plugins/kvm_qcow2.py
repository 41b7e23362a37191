"""KVM backend for file-based primary storages: volumes are qcow2 files, root volumes are
linked clones of the image cache (`qemu-img create -b <cache> -F <fmt>`)."""

from __future__ import annotations

from controller.db.models import Host, ImageCache, PrimaryStorage, Volume
from controller.jobs.engine import JobContext
from controller.plugins.interfaces import (
    PrimaryDataStoreDriver,
    PrimaryStorageBackend,
    VolumeCreated,
)
from shared.protocol.files import DELETE_FILE, BackingFile, DeleteFilePayload
from shared.protocol.types import FsCapacity
from shared.protocol.volumes import CREATE_VOLUME, CreateVolumePayload


def volume_file_name(volume: Volume) -> str:
    return f"{volume.id}.qcow2"


class KvmQcow2Backend(PrimaryStorageBackend):
    hypervisor = "kvm"

    def __init__(self, primary_type: str, driver: PrimaryDataStoreDriver) -> None:
        self.primary_type = primary_type
        self._driver = driver

    async def create_volume(self, ctx: JobContext, store: PrimaryStorage, volume: Volume,
                            host: Host, backing: ImageCache | None,
                            backing_format: str | None) -> VolumeCreated:
        payload = CreateVolumePayload(
            dest_dir=self._driver.volume_dir(store), file_name=volume_file_name(volume),
            size=volume.size,
            backing=BackingFile(path=backing.path, format=backing_format)  # type: ignore[arg-type]
            if backing is not None else None,
        )
        facts = await ctx.call(host, CREATE_VOLUME, payload, step="create-volume",
                               span=(50 if backing else 0, 100))
        return VolumeCreated(facts.path, facts.virtual_size, facts.capacity)

    async def delete_volume(self, ctx: JobContext, store: PrimaryStorage, volume: Volume,
                            host: Host) -> FsCapacity:
        return await delete_file(ctx, host, self._driver.volume_dir(store),
                                 volume_file_name(volume), f"delete-{volume.id}")

    async def delete_cache(self, ctx: JobContext, store: PrimaryStorage, cache: ImageCache,
                           host: Host) -> FsCapacity:
        return await delete_cache_file(ctx, self._driver, store, cache, host)


async def delete_file(ctx: JobContext, host: Host, directory: str, name: str,
                      step: str) -> FsCapacity:
    result = await ctx.call(host, DELETE_FILE, DeleteFilePayload(dir=directory, file_name=name),
                            step=step)
    return result.capacity


async def delete_cache_file(ctx: JobContext, driver: PrimaryDataStoreDriver,
                            store: PrimaryStorage, cache: ImageCache, host: Host) -> FsCapacity:
    """An image cache is a file in the storage's cache directory, whatever the backend."""
    return await delete_file(ctx, host, driver.cache_dir(store), cache.image_id,
                             f"delete-{cache.id}")
