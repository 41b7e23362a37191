"""KVM backend for storages whose volumes are qcow2 files that the hosts open by path:
`local` (this package) and `nfs` (which reuses it). Root volumes are linked clones of the
image cache (`qemu-img create -b <cache> -F <fmt>`)."""

from __future__ import annotations

from typing import TypeVar

from controller.db.models import Host, ImageCache, Volume
from controller.jobs.engine import JobContext
from controller.plugins.files import delete_cache_file, delete_file
from controller.plugins.interfaces.backend import (
    PrimaryStorageBackend,
    VolumeCreated,
    VolumeGrown,
)
from controller.plugins.interfaces.primary import PrimaryStorageProvider
from controller.plugins.interfaces.stores import Primary, StoreConfig
from controller.plugins.local.provider import LOCAL
from shared.protocol.files import BackingFile
from shared.protocol.types import FsCapacity
from shared.protocol.volumes import (
    CREATE_VOLUME,
    RESIZE_VOLUME,
    CreateVolumePayload,
    ResizeVolumePayload,
)

C = TypeVar("C", bound=StoreConfig)


def volume_file_name(volume: Volume) -> str:
    return f"{volume.id}.qcow2"


class Qcow2FileBackend(PrimaryStorageBackend[C]):
    hypervisor = "kvm"

    def __init__(self, provider: PrimaryStorageProvider[C]) -> None:
        self.primary_type = provider.type
        self._driver = provider.driver

    async def create_volume(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            host: Host, backing: BackingFile | None) -> VolumeCreated:
        payload = CreateVolumePayload(dest_dir=self._driver.volume_dir(store),
                                      file_name=volume_file_name(volume), size=volume.size,
                                      backing=backing)
        facts = await ctx.call(host, CREATE_VOLUME, payload, step="create-volume",
                               span=(50 if backing else 0, 100))
        return VolumeCreated(facts.path, facts.virtual_size, facts.capacity)

    async def delete_volume(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            host: Host) -> FsCapacity:
        return await delete_file(ctx, host, self._driver.volume_dir(store),
                                 volume_file_name(volume), f"delete-{volume.id}")

    async def delete_cache(self, ctx: JobContext, store: Primary[C], cache: ImageCache,
                           host: Host) -> FsCapacity:
        return await delete_cache_file(ctx, self._driver, store, cache, host)

    async def resize_volume(self, ctx: JobContext, store: Primary[C], volume: Volume,
                            host: Host, size: int) -> VolumeGrown:
        """`qemu-img resize` on any host that reaches the file (a linked clone too: the
        part past its backing file's end reads as zeroes)."""
        payload = ResizeVolumePayload(dir=self._driver.volume_dir(store),
                                      file_name=volume_file_name(volume), size=size)
        result = await ctx.call(host, RESIZE_VOLUME, payload, step="resize-volume")
        return VolumeGrown(result.virtual_size, result.capacity)


LOCAL_KVM = Qcow2FileBackend(LOCAL)
