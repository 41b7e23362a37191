"""KVM backend for iSCSI storage: a volume is a sparse raw file (or a logical volume) on
the storage server, served as LUN 1 of its own target; a root volume starts as a copy of
the image cache (a reflink where the filesystem can), so the image is fetched once per
storage.

Snapshots are whole point-in-time copies of a LUN's backing store, made, reverted to and
deleted by the storage server's agent: a reflink (or sparse) copy of the file in
`snapshots/`, or an LVM snapshot with a volume group. Unlike qcow2 overlays, none sits on
another, so the volume keeps its one path and deleting a snapshot merges nothing."""

from __future__ import annotations

import posixpath
import secrets
from collections.abc import Sequence
from typing import Any

from controller.db.models import Host, ImageCache, Snapshot, Volume
from controller.jobs.engine import JobContext
from controller.plugins.files import delete_cache_file, delete_file
from controller.plugins.interfaces.backend import (
    Layer,
    PrimaryStorageBackend,
    SnapshotTaken,
    Switch,
    VolumeCreated,
    VolumeGrown,
)
from controller.plugins.interfaces.stores import Primary
from controller.plugins.iscsi.provider import (
    ISCSI,
    SNAPSHOTS,
    IscsiConfig,
    export_of,
    target_name,
)
from shared.errors import OperationFailed
from shared.protocol.files import BackingFile
from shared.protocol.iscsi import (
    DELETE_LUN_SNAPSHOT,
    EXPORT_LUN,
    RESIZE_LUN,
    REVERT_LUN,
    SNAPSHOT_LUN,
    UNEXPORT_LUN,
    ChapCredentials,
    DeleteLunSnapshotPayload,
    ExportLunPayload,
    LunSnapshotPayload,
    ResizeLunPayload,
    RevertLunPayload,
    UnexportLunPayload,
)
from shared.protocol.libvirt import VolumeSource
from shared.protocol.types import FsCapacity
from shared.protocol.volumes import (
    COMPARE_VOLUMES,
    COPY_VOLUME,
    CompareVolumesPayload,
    CopyVolumePayload,
)


def lun_file_name(volume_id: str) -> str:
    return f"{volume_id}.raw"


def snapshot_file_name(volume_id: str, snapshot_id: str) -> str:
    """Named after its volume and itself: a retried job makes (or finds) the same one."""
    return f"{volume_id}.{snapshot_id}.raw"


def snapshot_dir(store: Primary[IscsiConfig]) -> str:
    return posixpath.join(store.config.path, SNAPSHOTS)


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
        """The LUN's file, or its logical volume, read raw on the storage server."""
        if not volume.path:
            return None
        return BackingFile(path=volume.path, format="raw")

    def can_copy(self, store: Primary[IscsiConfig], source: BackingFile,
                 origin: Primary[Any]) -> bool:
        """From qcow2 volumes, and from a LUN of another iSCSI storage whose target
        prefix differs: targets are named after the volume, so with the same prefix the
        copy's target would be the source's own."""
        if source.format == "qcow2":
            return True
        return (origin.row.type == ISCSI.type
                and origin.config.target_prefix != store.config.target_prefix)

    async def copy(self, ctx: JobContext, store: Primary[IscsiConfig], volume: Volume,
                   source: BackingFile, host: Host, backing: BackingFile | None,
                   file_name: str | None = None) -> VolumeCreated:
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

    def carries_snapshots(self, store: Primary[IscsiConfig]) -> bool:
        """Snapshot files move; logical volumes do not."""
        return not store.config.volume_group

    async def copy_snapshot(self, ctx: JobContext, store: Primary[IscsiConfig],
                            volume: Volume, layer: Layer, host: Host,
                            backing: BackingFile | None) -> VolumeCreated:
        """A whole raw copy in the snapshot directory, named as a snapshot taken here
        would be, converted from what the snapshot's file reads and compared with it."""
        payload = CopyVolumePayload(
            source=layer.source, dest_dir=snapshot_dir(store),
            file_name=snapshot_file_name(volume.id, layer.snapshot_id), format="raw")
        facts = await ctx.call(host, COPY_VOLUME, payload,
                               step=f"copy-{layer.snapshot_id}-to-{store.id}", span=(10, 90))
        return VolumeCreated(facts.path, facts.virtual_size, facts.capacity, format="raw")

    async def _export(self, ctx: JobContext, store: Primary[IscsiConfig], volume: Volume,
                      host: Host, backing: BackingFile | None, step: str) -> VolumeCreated:
        payload = ExportLunPayload(
            dir=ISCSI.driver.volume_dir(store), file_name=lun_file_name(volume.id),
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
                                     file_name=lun_file_name(volume.id),
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
                                   file_name=lun_file_name(volume.id),
                                   target=target_name(store, volume), size=size,
                                   volume_group=store.config.volume_group)
        result = await ctx.call(host, RESIZE_LUN, payload, step="resize-lun")
        return VolumeGrown(result.size, result.capacity)

    def check_snapshots(self, store: Primary[IscsiConfig]) -> None:
        return None

    def check_snapshot_copies(self, store: Primary[IscsiConfig]) -> None:
        """A snapshot is a whole raw copy on the storage server, whose agent converts it
        into one qcow2 file on the way up, and fills a new LUN from it or from a restored
        backup (`clone_layer`)."""
        return None

    async def clone_layer(self, ctx: JobContext, store: Primary[IscsiConfig],
                          source: BackingFile, volume: Volume, host: Host,
                          backing: BackingFile | None,
                          drop_source: bool = False) -> VolumeCreated:
        """A new LUN filled from `source` on the storage server, as from an image cache:
        it holds all its data, so `backing` is not used."""
        try:
            return await self._export(ctx, store, volume, host, source, f"clone-{volume.id}")
        finally:
            if drop_source:
                directory, name = posixpath.split(source.path)
                await delete_file(ctx, host, directory, name, f"drop-{name}")

    def _snapshot_payload(self, store: Primary[IscsiConfig], volume_id: str,
                          snapshot: Snapshot) -> LunSnapshotPayload:
        return LunSnapshotPayload(dir=ISCSI.driver.volume_dir(store),
                                  file_name=lun_file_name(volume_id),
                                  snapshot_dir=snapshot_dir(store),
                                  snapshot_name=snapshot_file_name(volume_id, snapshot.id),
                                  volume_group=store.config.volume_group)

    async def take_snapshot(self, ctx: JobContext, store: Primary[IscsiConfig],
                            volume: Volume, snapshot: Snapshot, overlay: str,
                            host: Host) -> SnapshotTaken:
        """On the storage server (`host`); the LUN stays served and the volume's path
        stays its own (`overlay` names nothing here)."""
        payload = self._snapshot_payload(store, volume.id, snapshot)
        facts = await ctx.call(host, SNAPSHOT_LUN, payload, step=f"take-{snapshot.id}")
        return SnapshotTaken(volume.path or "", facts.path, facts.size, facts.capacity)

    async def revert_snapshot(self, ctx: JobContext, store: Primary[IscsiConfig],
                              volume: Volume, snapshot: Snapshot, overlay: str, host: Host,
                              switch: Switch) -> FsCapacity:
        """The target and its grants stay; LUN 1 serves the snapshot's data after. A
        volume grown since the snapshot is grown again to the size its row records, as a
        qcow2 volume keeps its size on a revert."""
        payload = RevertLunPayload(**self._snapshot_payload(store, volume.id, snapshot)
                                   .model_dump(), target=target_name(store, volume))
        result = await ctx.call(host, REVERT_LUN, payload, step=f"revert-{snapshot.id}")
        size, capacity = result.size, result.capacity
        if size < volume.size:
            grown = await self.resize_volume(ctx, store, volume, host, volume.size)
            size, capacity = grown.virtual_size, grown.capacity
        await switch(VolumeCreated(result.path, size, capacity, format="raw"))
        return capacity

    async def delete_snapshot(self, ctx: JobContext, store: Primary[IscsiConfig],
                              snapshot: Snapshot, children: Sequence[str],
                              host: Host) -> FsCapacity:
        """A whole copy: nothing sits on it (`children` read their own data)."""
        place = self._snapshot_payload(store, snapshot.volume_id, snapshot)
        payload = DeleteLunSnapshotPayload(dir=place.dir, snapshot_dir=place.snapshot_dir,
                                           snapshot_name=place.snapshot_name,
                                           volume_group=place.volume_group)
        result = await ctx.call(host, DELETE_LUN_SNAPSHOT, payload,
                                step=f"delete-{snapshot.id}")
        return result.capacity

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
