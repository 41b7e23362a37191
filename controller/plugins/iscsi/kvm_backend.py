"""KVM backend for iSCSI storage: a volume is a sparse raw file on the storage server,
served as LUN 1 of its own target; a root volume starts as a copy of the image cache
(a reflink where the filesystem can), so the image is fetched once per storage."""

from __future__ import annotations

import secrets

from controller.db.models import Host, ImageCache, PrimaryStorage, Volume
from controller.jobs.engine import JobContext
from controller.plugins.interfaces import (
    PrimaryDataStoreDriver,
    PrimaryStorageBackend,
    VolumeCreated,
)
from controller.plugins.iscsi.provider import target_name
from controller.plugins.kvm_qcow2 import delete_cache_file
from shared.protocol.files import BackingFile
from shared.protocol.iscsi import (
    EXPORT_LUN,
    UNEXPORT_LUN,
    ChapCredentials,
    ExportLunPayload,
    UnexportLunPayload,
)
from shared.protocol.types import FsCapacity


def lun_file_name(volume: Volume) -> str:
    return f"{volume.id}.raw"


def new_chap(volume: Volume) -> ChapCredentials:
    return ChapCredentials(user=f"strata-{volume.id[:8]}",
                           password=secrets.token_urlsafe(12)[:16])


class IscsiKvmBackend(PrimaryStorageBackend):
    primary_type = "iscsi"
    hypervisor = "kvm"

    def __init__(self, driver: PrimaryDataStoreDriver) -> None:
        self._driver = driver

    async def create_volume(self, ctx: JobContext, store: PrimaryStorage, volume: Volume,
                            host: Host, backing: ImageCache | None,
                            backing_format: str | None) -> VolumeCreated:
        payload = ExportLunPayload(
            dir=self._driver.volume_dir(store), file_name=lun_file_name(volume),
            size=volume.size, target=target_name(store, volume),
            source=BackingFile(path=backing.path, format=backing_format)  # type: ignore[arg-type]
            if backing is not None else None,
            chap=new_chap(volume) if store.config.get("chap") else None,
            volume_group=store.config.get("volume_group"),
        )
        result = await ctx.call(host, EXPORT_LUN, payload, step="export-lun",
                                span=(50 if backing else 0, 100))
        return VolumeCreated(result.path, volume.size, result.capacity, format="raw",
                             export=result.target.model_copy(update={"chap": payload.chap}))

    async def delete_volume(self, ctx: JobContext, store: PrimaryStorage, volume: Volume,
                            host: Host) -> FsCapacity:
        payload = UnexportLunPayload(dir=self._driver.volume_dir(store),
                                     file_name=lun_file_name(volume),
                                     target=target_name(store, volume),
                                     volume_group=store.config.get("volume_group"))
        result = await ctx.call(host, UNEXPORT_LUN, payload, step=f"delete-{volume.id}")
        return result.capacity

    async def delete_cache(self, ctx: JobContext, store: PrimaryStorage, cache: ImageCache,
                           host: Host) -> FsCapacity:
        return await delete_cache_file(ctx, self._driver, store, cache, host)
