"""Pieces several storage plugins share."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from controller.db.models import BackupStorage, Host, PrimaryStorage
from controller.jobs.engine import JobContext
from controller.plugins.interfaces import DataStoreLifeCycle
from shared.protocol.files import PREPARE_STORAGE, PrepareStoragePayload
from shared.protocol.types import AbsPath, FsCapacity


class DirectoryConfig(BaseModel):
    """A storage that is a directory on a host's filesystem."""

    model_config = ConfigDict(extra="forbid")
    path: AbsPath


class DirectoryLifeCycle(DataStoreLifeCycle):
    """Attaching a directory store: the host's agent creates its subdirectories, proves
    it can write there, clears leftovers of interrupted work and reports capacity."""

    config_model = DirectoryConfig
    subdirs: ClassVar[tuple[str, ...]] = ()

    async def attach(self, ctx: JobContext, store: PrimaryStorage | BackupStorage,
                     host: Host) -> FsCapacity:
        payload = PrepareStoragePayload(path=store.config["path"], subdirs=list(self.subdirs))
        result = await ctx.call(host, PREPARE_STORAGE, payload,
                                step=f"prepare-{store.id}-{host.id}")
        return result.capacity
