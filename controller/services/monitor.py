"""Watching the agents, so that the operator need not: a connected host whose agent stops
answering is marked disconnected (jobs then fail fast instead of waiting on it), and
once it answers again it is reconnected, which re-attaches its storages (NFS mounts are
checked and remounted, leftovers of the tasks it cut short swept). So is a host whose
agent restarted between two checks: it answers as another instance than the one its
last connect found, whichever controller ran that. A host whose first connect failed
because its agent was not up yet (a slow start, a host registered before its agent) is
connected, and so enrolled with its join token, as soon as its agent answers. A host
disconnected for another reason (a revoked credential among them) is left to the
operator.

Only the leading controller runs the checks (`controller.leader`), every
`host_check_interval` seconds.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.agentchannel import AgentTarget
from controller.agentclient import AgentClient
from controller.db.models import Host, HostState, Job, JobState
from controller.db.transitions import transition
from controller.jobs.engine import JobEngine
from controller.services.hosts import HostService
from shared.errors import AgentUnreachable

log = logging.getLogger(__name__)

LOST = "agent not answering"
AGENT_UNREACHABLE = AgentUnreachable.default_code


class HostMonitor:
    def __init__(self, db: async_sessionmaker[AsyncSession], jobs: JobEngine,
                 hosts: HostService, agents: AgentClient) -> None:
        self._db = db
        self._jobs = jobs
        self._hosts = hosts
        self._agents = agents
        self._reconnects: dict[str, str] = {}  # host id -> its reconnect job

    async def check_all(self) -> None:
        async with self._db() as session:
            hosts = (await session.scalars(select(Host).where(
                Host.state.in_([HostState.CONNECTED, HostState.DISCONNECTED]),
                or_(Host.enrolment_id.is_not(None),
                    and_(Host.state == HostState.DISCONNECTED,
                         Host.join_token_id.is_not(None)))))).all()
        await asyncio.gather(*(self._check(host) for host in hosts))

    async def _check(self, host: Host) -> None:
        if host.enrolment_id is None:
            await self._check_unenrolled(host)
            return
        health = await self._agents.health(AgentTarget.of(host))
        problem = health.problem
        if host.state == HostState.CONNECTED and problem is not None:
            async with self._db.begin() as session:
                if await transition(session, Host, host.id, HostState.CONNECTED,
                                    HostState.DISCONNECTED, reason=f"{LOST}: {problem}"):
                    log.warning("host %s disconnected: %s", host.name, problem)
            return
        answers_again = (host.state == HostState.DISCONNECTED and problem is None
                         and (host.reason or "").startswith(LOST))
        restarted = (host.state == HostState.CONNECTED
                     and None not in (health.instance, host.agent_instance)
                     and health.instance != host.agent_instance)
        if (answers_again or restarted) and not await self._reconnecting(host):
            await self._reconnect(host, "answers again" if answers_again
                                  else "has a restarted agent")

    async def _check_unenrolled(self, host: Host) -> None:
        """A host waiting to enrol whose last connect found no agent: connected (which
        enrols it) once something answers at its address. A connect that failed for
        another reason (a join token the agent does not hold, say) is not retried."""
        if await self._reconnecting(host):
            return
        async with self._db() as session:
            last = await session.scalar(
                select(Job.error_code).where(Job.kind == "host.connect",
                                             Job.resource_id == host.id)
                .order_by(Job.created_at.desc()).limit(1))
        if last != AGENT_UNREACHABLE:
            return
        if (await self._agents.health(AgentTarget.of(host), enrolment=True)).problem is None:
            await self._reconnect(host, "has its agent answering now")

    async def _reconnect(self, host: Host, why: str) -> None:
        log.info("host %s %s; connecting it", host.name, why)
        self._reconnects[host.id] = (await self._hosts.reconnect(host.id)).id

    async def _reconnecting(self, host: Host) -> bool:
        job_id = self._reconnects.get(host.id)
        if job_id is None:
            return False
        if (await self._jobs.get(job_id)).state == JobState.RUNNING:
            return True
        del self._reconnects[host.id]
        return False
