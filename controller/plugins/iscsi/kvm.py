"""KVM backend for iSCSI storage: a volume is a sparse raw file (or a logical volume) on
the storage server, served as LUN 1 of its own target; a root volume starts as a copy of
the image cache (a reflink where the filesystem can), so the image is fetched once per
storage."""

from __future__ import annotations

import secrets

from controller.db.models import Host, ImageCache, Volume
from controller.jobs.engine import JobContext
from controller.plugins.files import delete_cache_file
from controller.plugins.interfaces.backend import (
    PrimaryStorageBackend,
    VolumeCreated,
    VolumeGrown,
)
from controller.plugins.interfaces.stores import Primary
from controller.plugins.iscsi.provider import ISCSI, IscsiConfig, export_of, target_name
from shared.protocol.files import BackingFile
from shared.protocol.iscsi import (
    EXPORT_LUN,
    RESIZE_LUN,
    UNEXPORT_LUN,
    ChapCredentials,
    ExportLunPayload,
    ResizeLunPayload,
    UnexportLunPayload,
)
from shared.protocol.libvirt import VolumeSource
from shared.protocol.types import FsCapacity


def lun_file_name(volume: Volume) -> str:
    return f"{volume.id}.raw"


def new_chap(volume: Volume) -> ChapCredentials:
    return ChapCredentials(user=f"strata-{volume.id[:8]}",
                           password=secrets.token_urlsafe(12)[:16])


class IscsiKvmBackend(PrimaryStorageBackend[IscsiConfig]):
    primary_type = ISCSI.type
    hypervisor = "kvm"

    async def create_volume(self, ctx: JobContext, store: Primary[IscsiConfig], volume: Volume,
                            host: Host, backing: BackingFile | None) -> VolumeCreated:
        payload = ExportLunPayload(
            dir=ISCSI.driver.volume_dir(store), file_name=lun_file_name(volume),
            size=volume.size, target=target_name(store, volume), source=backing,
            chap=new_chap(volume) if store.config.chap else None,
            volume_group=store.config.volume_group,
        )
        result = await ctx.call(host, EXPORT_LUN, payload, step="export-lun",
                                span=(50 if backing else 0, 100))
        return VolumeCreated(result.path, volume.size, result.capacity, format="raw",
                             export=result.target.model_copy(update={"chap": payload.chap}))

    async def delete_volume(self, ctx: JobContext, store: Primary[IscsiConfig], volume: Volume,
                            host: Host) -> FsCapacity:
        payload = UnexportLunPayload(dir=ISCSI.driver.volume_dir(store),
                                     file_name=lun_file_name(volume),
                                     target=target_name(store, volume),
                                     volume_group=store.config.volume_group)
        result = await ctx.call(host, UNEXPORT_LUN, payload, step=f"delete-{volume.id}")
        return result.capacity

    async def delete_cache(self, ctx: JobContext, store: Primary[IscsiConfig],
                           cache: ImageCache, host: Host) -> FsCapacity:
        return await delete_cache_file(ctx, ISCSI.driver, store, cache, host)

    async def resize_volume(self, ctx: JobContext, store: Primary[IscsiConfig],
                            volume: Volume, host: Host, size: int) -> VolumeGrown:
        """On the storage server (`host`): the backing store grows, and its target serves
        the new size to initiators that connect, or rescan, after."""
        payload = ResizeLunPayload(dir=ISCSI.driver.volume_dir(store),
                                   file_name=lun_file_name(volume),
                                   target=target_name(store, volume), size=size,
                                   volume_group=store.config.volume_group)
        result = await ctx.call(host, RESIZE_LUN, payload, step="resize-lun")
        return VolumeGrown(result.size, result.capacity)

    def volume_source(self, ctx: JobContext, store: Primary[IscsiConfig],
                      volume: Volume) -> VolumeSource:
        """The LUN, with its CHAP credentials unsealed for the hypervisor's agent (which
        makes them a libvirt secret object, never part of the domain XML)."""
        target = export_of(volume)
        chap = (volume.export or {}).get("chap")
        if chap:
            target = target.model_copy(update={"chap": ChapCredentials(
                user=chap["user"], password=ctx.secrets.open(chap["password"]))})
        return VolumeSource(iscsi=target, format="raw")


ISCSI_KVM = IscsiKvmBackend()
