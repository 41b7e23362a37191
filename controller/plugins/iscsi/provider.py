"""The `iscsi` primary storage type: lifecycle, and the driver that grants LUNs to hosts."""

from __future__ import annotations

import posixpath

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_or_404
from controller.db.models import Host, Volume
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.primary import (
    PrimaryDataStoreDriver,
    PrimaryLifeCycle,
    PrimaryStorageProvider,
)
from controller.plugins.interfaces.stores import HostDir, Primary, StoreConfig
from shared.errors import Conflict, OperationFailed
from shared.protocol.files import PREPARE_STORAGE, PrepareStoragePayload
from shared.protocol.iscsi import GRANT_LUN, REVOKE_LUN, IscsiTarget, LunAccessPayload
from shared.protocol.objects import LIST_OBJECTS, ListObjectsPayload, ObjectDir, ObjectList
from shared.protocol.types import FsCapacity, Iqn, IscsiPortal, VolumeGroup

LUNS = "luns"
IMAGE_CACHE = "imagecache"
# Snapshots of file-backed LUNs: a sibling of LUNS, on the same filesystem; made, and
# swept of leftovers, when the storage is attached.
SNAPSHOTS = "snapshots"


class IscsiConfig(StoreConfig):
    server_host_id: str = Field(description="The host whose agent runs the iSCSI target.")
    path: HostDir = Field(description="Directory on the server for LUN files and the cache.")
    portal: IscsiPortal
    target_prefix: Iqn = Field(default="iqn.2026-11.org.strata",
                               description="Targets are named PREFIX:VOLUME-ID.")
    chap: bool = Field(default=False, description="Protect every target with CHAP.")
    volume_group: VolumeGroup | None = Field(
        default=None,
        description="Make volumes logical volumes in this LVM volume group, not files.")

    def servers(self) -> list[str]:
        return [self.portal.rpartition(":")[0]]


def target_name(store: Primary[IscsiConfig], volume: Volume) -> str:
    return f"{store.config.target_prefix}:{volume.id}"


def export_of(volume: Volume) -> IscsiTarget:
    """Where the volume is served; its CHAP secret stays sealed in the database."""
    if not volume.export:
        raise Conflict(f"volume {volume.name} is not exported", code="not_exported")
    return IscsiTarget(portal=volume.export["portal"], target=volume.export["target"],
                       lun=volume.export["lun"])


def uri(target: IscsiTarget) -> str:
    return f"iscsi://{target.portal}/{target.target}/{target.lun}"


def require_iqn(host: Host) -> str:
    if not host.initiator_iqn:
        raise Conflict(f"host {host.name} has no iSCSI initiator name: configure "
                       "initiator_iqn on its agent, or give it when adding the host",
                       code="no_initiator")
    return host.initiator_iqn


async def server(ctx: JobContext, store: Primary[IscsiConfig]) -> Host:
    async with ctx.db() as session:
        return await get_or_404(session, Host, store.config.server_host_id, "server host")


class IscsiLifeCycle(PrimaryLifeCycle[IscsiConfig]):
    async def check_config(self, session: AsyncSession, config: IscsiConfig) -> None:
        await get_or_404(session, Host, config.server_host_id, "server host")

    async def can_attach(self, session: AsyncSession, store: Primary[IscsiConfig],
                         host: Host) -> None:
        require_iqn(host)

    async def attach(self, ctx: JobContext, store: Primary[IscsiConfig],
                     host: Host) -> FsCapacity:
        """The storage server prepares the directory and reports capacity; the
        hypervisor only needs an initiator name (sessions come with grants)."""
        require_iqn(host)
        payload = PrepareStoragePayload(path=store.config.path,
                                        subdirs=[LUNS, IMAGE_CACHE, SNAPSHOTS],
                                        volume_group=store.config.volume_group,
                                        in_flight=await ctx.in_flight())
        result = await ctx.call(await server(ctx, store), PREPARE_STORAGE, payload,
                                step=f"prepare-{store.id}-{host.id}")
        return result.capacity


class IscsiDriver(PrimaryDataStoreDriver[IscsiConfig]):
    grants_per_host = True

    def check_grant(self, store: Primary[IscsiConfig], host: Host) -> None:
        require_iqn(host)

    def volume_dir(self, store: Primary[IscsiConfig]) -> str:
        return posixpath.join(store.config.path, LUNS)

    def cache_dir(self, store: Primary[IscsiConfig]) -> str:
        return posixpath.join(store.config.path, IMAGE_CACHE)

    def server_host_id(self, store: Primary[IscsiConfig]) -> str:
        return store.config.server_host_id

    async def list_objects(self, ctx: JobContext, store: Primary[IscsiConfig],
                           host: Host) -> ObjectList:
        """On the storage server, whichever host is given: LUN files (or, with a volume
        group, its `strata-` logical volumes, snapshots among them), the image cache,
        and the snapshots of file-backed LUNs."""
        payload = ListObjectsPayload(
            root=store.config.path, volume_group=store.config.volume_group,
            dirs=[ObjectDir(subdir=LUNS, kind="volume"),
                  ObjectDir(subdir=IMAGE_CACHE, kind="cache"),
                  ObjectDir(subdir=SNAPSHOTS, kind="snapshot")])
        return await ctx.call(await server(ctx, store), LIST_OBJECTS, payload,
                              step=f"list-{store.id}")

    async def grant_access(self, ctx: JobContext, store: Primary[IscsiConfig], volume: Volume,
                           host: Host) -> str:
        target = export_of(volume)
        payload = LunAccessPayload(target=target.target, initiator=require_iqn(host))
        result = await ctx.call(await server(ctx, store), GRANT_LUN, payload,
                                step=f"grant-{host.id}")
        if host.initiator_iqn not in result.initiators:
            raise OperationFailed(f"the target of {volume.name} did not take {host.name}")
        return uri(target)

    async def revoke_access(self, ctx: JobContext, store: Primary[IscsiConfig],
                            volume: Volume, host: Host) -> None:
        if not volume.export or not host.initiator_iqn:
            return
        payload = LunAccessPayload(target=export_of(volume).target, initiator=host.initiator_iqn)
        await ctx.call(await server(ctx, store), REVOKE_LUN, payload, step=f"revoke-{host.id}")


ISCSI = PrimaryStorageProvider(
    type="iscsi", description="LUNs on a storage server, granted to hosts by initiator name",
    config_model=IscsiConfig, lifecycle=IscsiLifeCycle(), driver=IscsiDriver(),
)
