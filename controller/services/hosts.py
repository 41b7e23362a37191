"""Hosts: registering an agent (with its join token), enrolling and connecting it,
revoking its credential, removing it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from controller.agentchannel import AgentTarget
from controller.db.lookup import get_or_404
from controller.db.models import (
    IN_MAINTENANCE,
    AttachState,
    BackupStorage,
    Host,
    HostState,
    Job,
    PrimaryStorage,
    PrimaryStorageHostRef,
    StoreState,
)
from controller.db.transitions import transition
from controller.jobs.engine import JobContext
from controller.services.backup_storages import BackupStorageService
from controller.services.base import ServiceDeps, ensure_unique_name
from controller.services.commands import AddHost
from controller.services.enrolment import NO_ENROLMENT, NO_JOIN_TOKEN, Enrolment
from controller.services.primary_storages import PrimaryStorageService
from shared.errors import Conflict, InUse, StrataError
from shared.protocol.enrol import JoinToken
from shared.protocol.host import HOST_INFO, NetworkFacts
from shared.protocol.types import EmptyPayload

REVOKED = "credential revoked"


def revoked(host: Host) -> bool:
    """Revoked, and not enrolled again since (nor waiting to be, with a new join token)."""
    return (host.enrolment_id is None and host.join_token_id is None
            and (host.reason or "").startswith(REVOKED))


class HostService:
    def __init__(self, deps: ServiceDeps, primary_storages: PrimaryStorageService,
                 backup_storages: BackupStorageService, enrolment: Enrolment) -> None:
        self._d = deps
        self._primary_storages = primary_storages
        self._backup_storages = backup_storages
        self._enrolment = enrolment
        deps.jobs.register("host.connect", self.run_connect, on_failure=self._fail_connect)
        deps.jobs.register("host.delete", self.run_delete)

    async def add(self, req: AddHost) -> tuple[Host, Job, JoinToken]:
        """The host, waiting for its agent to enrol with the join token returned (shown
        this once), and the connect job that enrols it once the token is on the host."""
        token, token_values = self._enrolment.new_join_token()
        async with self._d.db.begin() as session:
            await ensure_unique_name(session, Host.name, req.name, "host")
            await self._refuse_known_address(session, req.address)
            host = Host(name=req.name, address=req.address, hypervisor=req.hypervisor,
                        state=HostState.ENROLLING, initiator_iqn=req.initiator_iqn,
                        initiator_iqn_pinned=req.initiator_iqn is not None, **token_values)
            session.add(host)
            await session.flush()
            job = self._d.jobs.new_job(session, self.run_connect, resource_type="host",
                                       resource_id=host.id)
        self._d.jobs.start(job)
        return host, job, token

    async def join_token(self, host_id: str) -> tuple[Host, JoinToken]:
        """A new join token for the host (the old one no longer works); the next connect
        enrols its agent again with it."""
        async with self._d.db.begin() as session:
            return await self._enrolment.replace_join_token(session, host_id)

    async def revoke(self, host_id: str) -> Host:
        """Locks the host's agent out at once: the controller no longer accepts its
        certificate, and a new join token is needed to admit it again."""
        async with self._d.db.begin() as session:
            host = await get_or_404(session, Host, host_id, "host")
            await transition(session, Host, host.id, list(HostState), HostState.DISCONNECTED,
                             reason=REVOKED, **NO_ENROLMENT, **NO_JOIN_TOKEN)
        async with self._d.db() as session:
            return await get_or_404(session, Host, host_id, "host")

    @staticmethod
    async def _refuse_known_address(session: AsyncSession, address: str) -> None:
        """One host per agent: a second row for an address would drive one agent twice."""
        wanted = agent_address(address)
        for name, known in (await session.execute(select(Host.name, Host.address))).all():
            if agent_address(known) == wanted:
                raise Conflict(f"host {name} is already registered at {address}",
                               code="address_taken")

    async def _fail_connect(self, ctx: JobContext, reason: str) -> None:
        """Disconnected with the reason; a revoked host's reason still says so first."""
        async with ctx.db.begin() as session:
            host = await session.get(Host, ctx.job.resource_id or "")
            if host is None:
                return
            if revoked(host) and not reason.startswith(REVOKED):
                reason = f"{REVOKED}; {reason}"
            await transition(session, Host, host.id, list(HostState),
                             HostState.DISCONNECTED, reason=reason)

    async def reconnect(self, host_id: str) -> Job:
        async with self._d.db.begin() as session:
            host = await get_or_404(session, Host, host_id, "host")
            job = self._d.jobs.new_job(session, self.run_connect, resource_type="host",
                                       resource_id=host.id)
        self._d.jobs.start(job)
        return job

    async def run_connect(self, ctx: JobContext) -> dict[str, Any]:
        """Enrols the agent if the host has a join token waiting, checks the agent, then
        re-attaches every primary storage the host had and every ready backup storage
        (any host reaches those), reporting capacity. An agent that restarted clears
        the leftovers of its work cut short there."""
        async with ctx.db() as session:
            host = await get_or_404(session, Host, ctx.job.resource_id or "", "host")
        if host.join_token_id is not None:
            host = await self._enrolment.enrol(ctx, host)
        info = await ctx.call(host, HOST_INFO, EmptyPayload(), step="info", span=(0, 20))
        async with ctx.db() as session:
            twin = await session.scalar(select(Host.name).where(
                Host.agent_id == info.agent_id, Host.id != host.id))
        if twin is not None:
            raise Conflict(f"the agent at {host.address} is already registered as host {twin}",
                           code="agent_taken")
        reported: dict[str, Any] = (
            {} if host.initiator_iqn_pinned else {"initiator_iqn": info.initiator_iqn})
        async with ctx.db.begin() as session:
            # Not if the credential this job used was revoked meanwhile.
            if not await transition(session, Host, host.id, list(HostState),
                                    HostState.CONNECTED,
                                    where={"enrolment_id": host.enrolment_id}, reason=None,
                                    agent_version=info.agent_version, agent_id=info.agent_id,
                                    agent_instance=info.instance,
                                    **reported):
                raise Conflict(f"{REVOKED} while host {host.name} was connecting",
                               code="credential_revoked")
            refs = (await session.execute(
                select(PrimaryStorageHostRef, PrimaryStorage)
                .join(PrimaryStorage, PrimaryStorage.id == PrimaryStorageHostRef.primary_storage_id)
                .where(PrimaryStorageHostRef.host_id == host.id,
                       PrimaryStorageHostRef.state.not_in((AttachState.DETACHING,
                                                           AttachState.MAINTENANCE)),
                       PrimaryStorage.state.not_in(IN_MAINTENANCE))
            )).all()
            backups = (await session.scalars(select(BackupStorage).where(
                BackupStorage.state == StoreState.READY))).all()
        failed = {}
        for ref, store in refs:
            try:
                await self._primary_storages.attach_on(
                    ctx, ref, self._d.registry.primary(store), host)
            except StrataError as exc:
                failed[store.name] = exc.message
        for backup in backups:
            try:
                await self._backup_storages.attach_on(ctx, backup, host)
            except StrataError as exc:
                failed[backup.name] = exc.message
        return {"hostname": info.hostname, "qemu_img_version": info.qemu_img_version,
                "storages_failed": failed,
                "network": info.network.model_dump(mode="json") if info.network else None}

    async def network(self, host_id: str, servers: list[str]) -> NetworkFacts:
        """The host agent's network report: its interfaces, and its routes to the
        servers of every storage attached to it and to `servers`."""
        async with self._d.db() as session:
            host = await get_or_404(session, Host, host_id, "host")
            if host.enrolment_id is None:
                raise Conflict(f"host {host.name} has no enrolled agent to ask",
                               code="host_not_enrolled")
            stores = (await session.scalars(
                select(PrimaryStorage)
                .join(PrimaryStorageHostRef,
                      PrimaryStorageHostRef.primary_storage_id == PrimaryStorage.id)
                .where(PrimaryStorageHostRef.host_id == host.id))).all()
        for store in stores:
            servers = [*servers, *self._d.registry.primary(store).config.servers()]
        return await self._d.jobs.agents.network(AgentTarget.of(host), sorted(set(servers)))

    async def delete(self, host_id: str) -> Job:
        async with self._d.db.begin() as session:
            host = await get_or_404(session, Host, host_id, "host")
            attached = (await session.scalars(
                select(PrimaryStorage.name)
                .join(PrimaryStorageHostRef,
                      PrimaryStorageHostRef.primary_storage_id == PrimaryStorage.id)
                .where(PrimaryStorageHostRef.host_id == host.id))).all()
            if attached:
                raise InUse(f"host {host.name} still has primary storage attached: "
                            f"{', '.join(attached)}; detach it first")
            job = self._d.jobs.new_job(session, self.run_delete, resource_type="host",
                                       resource_id=host.id)
        self._d.jobs.start(job)
        return job

    async def run_delete(self, ctx: JobContext) -> None:
        async with ctx.db.begin() as session:
            host = await session.get(Host, ctx.job.resource_id or "")
            if host is not None:
                await session.delete(host)



def agent_address(address: str) -> tuple[str, str, int | None]:
    """An agent URL as compared for sameness: scheme, host and port, case and default
    port aside."""
    url = URL(address)
    return url.scheme.lower(), (url.host or "").lower(), url.port
