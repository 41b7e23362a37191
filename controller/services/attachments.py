"""AttachmentService: plugging a volume into a libvirt domain on a host, and unplugging
it. The attach job grants the host access first where the storage has grants (iSCSI),
and hands the hypervisor's agent what it opens (CHAP credentials unsealed only for that
call); the detach job revokes the grant only once the agent reports the disk gone, and
only a grant the attach job made (`VolumeAttachment.owns_grant`), as a failed attach
does: one the operator made stays.

While a volume is attached, operations that would change its files under the running
VM are refused (`refuse_attached`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.lookup import get_or_404
from controller.db.models import (
    AttachmentState,
    AttachState,
    Host,
    HostState,
    Job,
    ObjectState,
    PrimaryStorageHostRef,
    Volume,
    VolumeAccess,
    VolumeAttachment,
)
from controller.db.transitions import transition
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.stores import Primary
from controller.services.base import ServiceDeps
from controller.services.maintenance import ensure_reachable
from shared.errors import Conflict, NotFound
from shared.protocol.libvirt import (
    ATTACH_VOLUME,
    DETACH_VOLUME,
    AttachVolumePayload,
    DetachVolumePayload,
)

if TYPE_CHECKING:
    from controller.services.volumes import VolumeService


async def refuse_attached(session: AsyncSession, volume: Volume, what: str) -> None:
    """A 409 naming the domain when the volume is attached (call it after the volume's
    own compare-and-swap, so an attach committed meanwhile is seen)."""
    found = (await session.execute(
        select(VolumeAttachment, Host).join(Host, Host.id == VolumeAttachment.host_id)
        .where(VolumeAttachment.volume_id == volume.id))).first()
    if found is not None:
        attachment, host = found
        raise Conflict(f"volume {volume.name} is attached to domain {attachment.domain} on "
                       f"host {host.name}; detach it (or stop the VM) before it can be "
                       f"{what}", code="volume_attached")


async def live_target(session: AsyncSession, volume: Volume) -> dict[str, str] | None:
    """Where a live operation on the volume runs (its host and domain), None when it is
    not attached; a 409 while it is being attached or detached."""
    attachment = await session.scalar(select(VolumeAttachment).where(
        VolumeAttachment.volume_id == volume.id))
    if attachment is None:
        return None
    if attachment.state != AttachmentState.ATTACHED:
        raise Conflict(f"volume {volume.name} is {attachment.state} to domain "
                       f"{attachment.domain}; try again when it settles", code="volume_busy")
    return {"host_id": attachment.host_id, "domain": attachment.domain}


class AttachmentService:
    def __init__(self, deps: ServiceDeps, volumes: VolumeService) -> None:
        self._d = deps
        self._volumes = volumes
        deps.jobs.register("volume.attach", self.run_attach, on_failure=self._fail_attach)
        deps.jobs.register("volume.detach", self.run_detach, on_failure=self._fail_detach)

    async def attach(self, volume_id: str, host_id: str, domain: str) -> Job:
        """Checks up front that the host reaches the volume's storage; the volume's
        compare-and-swap (ready to ready) orders this against a concurrent delete."""
        async with self._d.db.begin() as session:
            volume = await get_or_404(session, Volume, volume_id, "volume")
            host = await get_or_404(session, Host, host_id, "host")
            store = await self._d.store_of(session, volume)
            ensure_reachable(store.row)
            driver = self._d.registry.primary_provider(store.row.type).driver
            if driver.grants_per_host:
                driver.check_grant(store, host)
            await self._check_reaches(session, store, host)
            if not await transition(session, Volume, volume.id, ObjectState.READY,
                                    ObjectState.READY):
                raise Conflict(f"volume {volume.name} is {volume.state}; it can be attached "
                               "when ready", code="volume_busy")
            await refuse_attached(session, volume, "attached again")
            owns_grant = driver.grants_per_host and await session.scalar(
                select(VolumeAccess.id).where(VolumeAccess.volume_id == volume.id,
                                              VolumeAccess.host_id == host.id)) is None
            session.add(VolumeAttachment(volume_id=volume.id, host_id=host.id, domain=domain,
                                         state=AttachmentState.ATTACHING,
                                         owns_grant=owns_grant))
            if driver.grants_per_host:
                await self._volumes.mark_granting(session, volume, host)
            job = self._d.jobs.new_job(session, self.run_attach, resource_type="volume",
                                       resource_id=volume.id)
        self._d.jobs.start(job)
        return job

    @staticmethod
    async def _check_reaches(session: AsyncSession, store: Primary[Any], host: Host) -> None:
        if host.state != HostState.CONNECTED:
            raise Conflict(f"host {host.name} is {host.state}, not connected",
                           code="host_not_connected")
        ref = await session.scalar(select(PrimaryStorageHostRef).where(
            PrimaryStorageHostRef.primary_storage_id == store.id,
            PrimaryStorageHostRef.host_id == host.id,
            PrimaryStorageHostRef.state == AttachState.CONNECTED))
        if ref is None:
            raise Conflict(f"primary storage {store.name} is not attached to host "
                           f"{host.name}", code="storage_not_attached")

    async def _load(self, ctx: JobContext) -> tuple[Primary[Any], Volume, Host,
                                                    VolumeAttachment]:
        async with ctx.db() as session:
            volume = await get_or_404(session, Volume, ctx.job.resource_id or "", "volume")
            store = await self._d.store_of(session, volume)
            attachment = await session.scalar(select(VolumeAttachment).where(
                VolumeAttachment.volume_id == volume.id))
            if attachment is None:
                raise NotFound(f"volume {volume.name} is not attached", code="not_attached")
            host = await get_or_404(session, Host, attachment.host_id, "host")
        return store, volume, host, attachment

    async def run_attach(self, ctx: JobContext) -> dict[str, Any]:
        store, volume, host, attachment = await self._load(ctx)
        driver = self._d.registry.primary_provider(store.row.type).driver
        if driver.grants_per_host:
            uri = await driver.grant_access(ctx, store, volume, host)
            async with ctx.db.begin() as session:
                await self._volumes.mark_granted(session, volume.id, host.id, uri)
        source = self._d.registry.backend_of(store).volume_source(ctx, store, volume)
        attached = await ctx.call(host, ATTACH_VOLUME, AttachVolumePayload(
            domain=attachment.domain, serial=volume.id, source=source), step="attach")
        result = {"host_id": host.id, "domain": attachment.domain, "device": attached.device}
        async with ctx.db.begin() as session:
            await transition(session, VolumeAttachment, attachment.id,
                             AttachmentState.ATTACHING, AttachmentState.ATTACHED,
                             device=attached.device, since=time.time(), reason=None)
            await ctx.succeed(session, result)
        return result

    async def _fail_attach(self, ctx: JobContext, reason: str) -> None:
        """Nothing stays attached (the agent unplugs and releases what it did on a
        failure), nor the grant this attach made; one the operator made stays."""
        store, volume, host, attachment = await self._load(ctx)
        if attachment.state != AttachmentState.ATTACHING:
            return
        try:
            if attachment.owns_grant:
                await self._revoke(ctx, store, volume, host)
        finally:
            async with ctx.db.begin() as session:
                await session.execute(delete(VolumeAttachment).where(
                    VolumeAttachment.id == attachment.id,
                    VolumeAttachment.state == AttachmentState.ATTACHING))

    async def _revoke(self, ctx: JobContext, store: Primary[Any], volume: Volume,
                      host: Host) -> None:
        async with ctx.db() as session:
            access = await session.scalar(select(VolumeAccess).where(
                VolumeAccess.volume_id == volume.id, VolumeAccess.host_id == host.id))
        if access is not None:
            await self._volumes.revoke_grant(ctx, store, volume, access, host)

    async def detach(self, volume_id: str, timeout: float) -> Job:
        async with self._d.db.begin() as session:
            volume = await get_or_404(session, Volume, volume_id, "volume")
            attachment = await session.scalar(select(VolumeAttachment).where(
                VolumeAttachment.volume_id == volume.id))
            if attachment is None:
                raise NotFound(f"volume {volume.name} is not attached", code="not_attached")
            if not await transition(session, Volume, volume.id, ObjectState.READY,
                                    ObjectState.READY):
                raise Conflict(f"volume {volume.name} is {volume.state}; it can be detached "
                               "when ready", code="volume_busy")
            if not await transition(session, VolumeAttachment, attachment.id,
                                    (AttachmentState.ATTACHED, AttachmentState.DETACHING),
                                    AttachmentState.DETACHING):
                raise Conflict(f"volume {volume.name} is still being attached; try again "
                               "when it settles", code="volume_busy")
            job = self._d.jobs.new_job(session, self.run_detach, resource_type="volume",
                                       resource_id=volume.id, params={"timeout": timeout})
        self._d.jobs.start(job)
        return job

    async def run_detach(self, ctx: JobContext) -> dict[str, Any]:
        store, volume, host, attachment = await self._load(ctx)
        source = self._d.registry.backend_of(store).volume_source(ctx, store, volume)
        timeout = float(ctx.params["timeout"])
        detached = await ctx.call(host, DETACH_VOLUME, DetachVolumePayload(
            domain=attachment.domain, serial=volume.id, source=source, timeout=timeout),
            step="detach", timeout=timeout + 120)
        if attachment.owns_grant:
            await self._revoke(ctx, store, volume, host)
        result = {"host_id": host.id, "domain": attachment.domain,
                  "was_attached": detached.existed}
        async with ctx.db.begin() as session:
            await session.execute(delete(VolumeAttachment).where(
                VolumeAttachment.id == attachment.id))
            await ctx.succeed(session, result)
        return result

    async def _fail_detach(self, ctx: JobContext, reason: str) -> None:
        """Still attached (a guest that did not let go keeps the disk), with the reason."""
        async with ctx.db.begin() as session:
            await session.execute(
                update(VolumeAttachment)
                .where(VolumeAttachment.volume_id == ctx.job.resource_id,
                       VolumeAttachment.state == AttachmentState.DETACHING)
                .values(state=AttachmentState.ATTACHED, reason=f"detach failed: {reason}")
                .execution_options(synchronize_session=False))

