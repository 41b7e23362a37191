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
from controller.plugins.iscsi.provider import ISCSI, IscsiConfig, target_name
from shared.errors import OperationFailed
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
from shared.protocol.types import FsCapacity
from shared.protocol.volumes import COMPARE_VOLUMES, CompareVolumesPayload


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
        return await self._export(ctx, store, volume, host, backing, "export-lun")

    def copy_source(self, store: Primary[IscsiConfig], volume: Volume) -> BackingFile | None:
        """A file LUN on the storage server; a logical volume is not read as a file."""
        if store.config.volume_group or not volume.path:
            return None
        return BackingFile(path=volume.path, format="raw")

    def can_copy(self, store: Primary[IscsiConfig], source: BackingFile) -> bool:
        """From qcow2 volumes only: a raw source is another LUN, whose target, on the same
        server with the same prefix, would be the copy's own name."""
        return source.format == "qcow2"

    async def copy(self, ctx: JobContext, store: Primary[IscsiConfig], volume: Volume,
                   source: BackingFile, host: Host,
                   backing: BackingFile | None) -> VolumeCreated:
        """The LUN is filled from `source` as from an image cache (converted under a
        temporary name, then published), then compared with it on the storage server."""
        created = await self._export(ctx, store, volume, host, source, f"copy-to-{store.id}")
        compared = await ctx.call(host, COMPARE_VOLUMES, CompareVolumesPayload(
            first=source, second=BackingFile(path=created.path, format="raw")),
            step=f"verify-{store.id}", span=(90, 95))
        if not compared.same:
            raise OperationFailed(f"the copy of volume {volume.name} on {store.name} differs "
                                  "from its source", code="copy_mismatch")
        return created

    async def _export(self, ctx: JobContext, store: Primary[IscsiConfig], volume: Volume,
                      host: Host, backing: BackingFile | None, step: str) -> VolumeCreated:
        payload = ExportLunPayload(
            dir=ISCSI.driver.volume_dir(store), file_name=lun_file_name(volume),
            size=volume.size, target=target_name(store, volume), source=backing,
            chap=new_chap(volume) if store.config.chap else None,
            volume_group=store.config.volume_group,
        )
        result = await ctx.call(host, EXPORT_LUN, payload, step=step,
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


ISCSI_KVM = IscsiKvmBackend()
