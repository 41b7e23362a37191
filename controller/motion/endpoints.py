"""The default endpoint selector: a connected host attached to the storage; for a backup
storage, the host that will use the bytes when there is one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import AttachState, Host, HostState, PrimaryStorageHostRef
from controller.plugins.interfaces.motion import EndPointSelector
from controller.plugins.interfaces.stores import Backup, Primary
from controller.plugins.registry import PluginRegistry
from shared.errors import Conflict


class ConnectedHostSelector(EndPointSelector):
    def __init__(self, registry: PluginRegistry) -> None:
        self._registry = registry

    async def for_primary(self, session: AsyncSession, store: Primary[Any]) -> Host:
        driver = self._registry.primary_provider(store.row.type).driver
        server_id = driver.server_host_id(store)
        if server_id is not None:
            server = await session.get(Host, server_id)
            if server is None or server.state != HostState.CONNECTED:
                raise Conflict(f"the server of primary storage {store.name} (host "
                               f"{server.name if server else server_id}) is not connected",
                               code="no_connected_host")
            return server
        host = await session.scalar(
            select(Host)
            .join(PrimaryStorageHostRef, PrimaryStorageHostRef.host_id == Host.id)
            .where(PrimaryStorageHostRef.primary_storage_id == store.id,
                   PrimaryStorageHostRef.state == AttachState.CONNECTED,
                   Host.state == HostState.CONNECTED)
            .order_by(Host.name).limit(1)
        )
        if host is None:
            raise Conflict(
                f"primary storage {store.name} has no connected host; attach it to a host "
                "whose agent is connected", code="no_connected_host",
            )
        return host

    async def reaching(self, session: AsyncSession, store: Primary[Any]) -> list[Host]:
        """The storage server alone where one serves the storage; else every connected
        host attached to it. None at all is a 409, as for `for_primary`."""
        first = await self.for_primary(session, store)
        if self._registry.primary_provider(store.row.type).driver.server_host_id(store):
            return [first]
        return list((await session.scalars(
            select(Host)
            .join(PrimaryStorageHostRef, PrimaryStorageHostRef.host_id == Host.id)
            .where(PrimaryStorageHostRef.primary_storage_id == store.id,
                   PrimaryStorageHostRef.state == AttachState.CONNECTED,
                   Host.state == HostState.CONNECTED)
            .order_by(Host.name))).all())

    async def for_backup(self, session: AsyncSession, store: Backup[Any],
                         near: Primary[Any] | None = None) -> Host:
        if near is not None:
            return await self.for_primary(session, near)
        host = await session.scalar(
            select(Host).where(Host.state == HostState.CONNECTED).order_by(Host.name).limit(1)
        )
        if host is None:
            raise Conflict(
                f"no connected host can reach backup storage {store.name}; add a host first",
                code="no_connected_host",
            )
        return host
