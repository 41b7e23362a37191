"""Storage health: each connected host proves each storage it has attached with a
heartbeat file, every `storage_probe_interval` seconds, so a dead NFS server shows as
the storage being unhealthy on that host (API and metrics) before a job touches it.

A probe's cost is bounded on both sides: the agent waits at most `storage_probe_timeout`
per storage and never runs a second heartbeat of a storage whose first is still blocked;
the controller asks each host once per round, all hosts at once, and starts no round
while the last one is still out (the leader runs each periodic step to its end before the next).
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.agentchannel import AgentTarget
from controller.agentclient import AgentClient
from controller.db.models import (
    AttachState,
    Health,
    Host,
    HostState,
    PrimaryStorage,
    PrimaryStorageHostRef,
)
from controller.plugins.registry import PluginRegistry
from shared.errors import StrataError
from shared.protocol.host import MAX_PROBES, ProbeRequest

log = logging.getLogger(__name__)


class StorageHealth:
    def __init__(self, db: async_sessionmaker[AsyncSession], agents: AgentClient,
                 registry: PluginRegistry, timeout: float) -> None:
        self._db = db
        self._agents = agents
        self._registry = registry
        self._timeout = timeout

    async def probe_all(self) -> None:
        """One round: every connected attachment of a connected host. Storages a server
        host serves (iSCSI) are proven by their server's agent, not probed here."""
        async with self._db() as session:
            found = (await session.execute(
                select(PrimaryStorageHostRef, PrimaryStorage, Host)
                .join(PrimaryStorage,
                      PrimaryStorage.id == PrimaryStorageHostRef.primary_storage_id)
                .join(Host, Host.id == PrimaryStorageHostRef.host_id)
                .where(PrimaryStorageHostRef.state == AttachState.CONNECTED,
                       Host.state == HostState.CONNECTED))).all()
        by_host: dict[str, tuple[Host, dict[str, str]]] = {}
        for ref, row, host in found:
            store = self._registry.primary(row)
            driver = self._registry.primary_provider(row.type).driver
            if driver.server_host_id(store) is None:
                roots = by_host.setdefault(host.id, (host, {}))[1]
                roots[ref.id] = driver.object_root(store)
        await asyncio.gather(*(self._probe_host(host, roots)
                               for host, roots in by_host.values()))

    async def _probe_host(self, host: Host, roots: dict[str, str]) -> None:
        """`roots`: attachment id -> the storage root to prove."""
        outcomes: dict[str, tuple[Health, str | None]] = {}
        items = list(roots.items())
        for start in range(0, len(items), MAX_PROBES):
            chunk = items[start:start + MAX_PROBES]
            try:
                results = await self._agents.probe(AgentTarget.of(host), ProbeRequest(
                    paths=sorted({root for _, root in chunk}), timeout=self._timeout))
            except StrataError as exc:
                outcomes |= {ref_id: (Health.UNKNOWN, exc.message) for ref_id, _ in chunk}
                continue
            by_path = {r.path: r for r in results.results}
            for ref_id, root in chunk:
                result = by_path.get(root)
                if result is None:
                    outcomes[ref_id] = (Health.UNKNOWN, "the agent did not report it")
                else:
                    outcomes[ref_id] = (Health.HEALTHY if result.healthy else Health.UNHEALTHY,
                                        result.reason)
        await self._record(host, outcomes)

    async def _record(self, host: Host,
                      outcomes: dict[str, tuple[Health, str | None]]) -> None:
        now = time.time()
        async with self._db.begin() as session:
            for ref_id, (health, reason) in outcomes.items():
                await session.execute(
                    update(PrimaryStorageHostRef).where(PrimaryStorageHostRef.id == ref_id)
                    .values(health=health, health_reason=reason, health_checked_at=now)
                    .execution_options(synchronize_session=False))
        for ref_id, (health, reason) in outcomes.items():
            if health != Health.HEALTHY:
                log.warning("storage probe from host %s (attachment %s): %s: %s",
                            host.name, ref_id, health, reason)
