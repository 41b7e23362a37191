"""What every service holds, and the unique-name insert they all need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from controller.db.lookup import get_or_404
from controller.db.models import BackupStorage, PrimaryStorage, Volume
from controller.jobs.engine import JobEngine
from controller.motion.service import DataMotionService
from controller.plugins.interfaces.motion import EndPointSelector, TemplateInstallStrategy
from controller.plugins.interfaces.stores import Primary, StoreConfig
from controller.plugins.registry import PluginRegistry
from controller.secrets import SecretBox
from controller.services.paths import PathPolicy
from shared.errors import Conflict


@dataclass
class ServiceDeps:
    db: async_sessionmaker[AsyncSession]
    jobs: JobEngine
    registry: PluginRegistry
    selector: EndPointSelector
    secrets: SecretBox
    motion: DataMotionService
    install: TemplateInstallStrategy
    paths: PathPolicy

    async def store_of(self, session: AsyncSession, volume: Volume) -> Primary[Any]:
        """The primary storage `volume` lives on, with its settings parsed."""
        return self.registry.primary(await get_or_404(
            session, PrimaryStorage, volume.primary_storage_id, "primary storage"))


async def check_store_paths(session: AsyncSession, deps: ServiceDeps,
                            config: StoreConfig) -> None:
    """The path policy, for a new store's directories against every other store's."""
    taken: list[tuple[str, str]] = []
    for primary in (await session.scalars(select(PrimaryStorage))).all():
        taken += [(p, primary.name) for p in deps.registry.primary(primary).config.host_dirs()]
    for backup in (await session.scalars(select(BackupStorage))).all():
        taken += [(p, backup.name) for p in deps.registry.backup(backup).config.host_dirs()]
    deps.paths.check(config.host_dirs(), taken)


async def ensure_unique_name(session: AsyncSession, column: InstrumentedAttribute[str],
                             name: str, what: str) -> None:
    """A friendly 409 before the unique constraint would turn the insert into an error."""
    exists = await session.scalar(select(func.count()).where(column == name))
    if exists:
        raise Conflict(f"a {what} named {name!r} already exists", code="name_taken")
