"""Extension points of data motion: which host's agent executes a step, which strategy
moves bytes between two stores, how an image becomes the base of volumes."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Host, Image, ImageCache, Volume
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.backend import Layer, VolumeCreated
from controller.plugins.interfaces.mediator import (
    DownloadRequest,
    RestoreRequest,
    Uploaded,
    UploadRequest,
)
from controller.plugins.interfaces.stores import Backup, Primary
from shared.errors import Unsupported
from shared.protocol.files import BackingFile, ImageFacts


class EndPointSelector(abc.ABC):
    """Chooses which host's agent executes a step."""

    @abc.abstractmethod
    async def for_primary(self, session: AsyncSession, store: Primary[Any]) -> Host: ...

    @abc.abstractmethod
    async def for_backup(self, session: AsyncSession, store: Backup[Any],
                         near: Primary[Any] | None = None) -> Host: ...

    async def reaching(self, session: AsyncSession, store: Primary[Any]) -> list[Host]:
        """Every connected host whose agent reaches `store`'s files; by default the one
        `for_primary` picks."""
        return [await self.for_primary(session, store)]


@dataclass(frozen=True)
class LiveTarget:
    """The running domain on `host` that has the volume attached."""

    host: Host
    domain: str


@dataclass(frozen=True)
class MigrateRequest:
    """Move `volume` from `source` to `dest`. `source_hosts` and `dest_hosts` reach each
    storage's files; `backing` is the destination's image cache the copy sits on (None:
    a whole copy); `staging` the backup storages a copy may pass through; agent tasks
    are named from `task_prefix`. `layers`: the volume's snapshots, parents first; the
    active layer is then copied as `file_name` onto the copy of `active_parent`. `live`:
    the domain holding the volume open, when it is attached (only a live strategy may
    move it then)."""

    volume: Volume
    source: Primary[Any]
    dest: Primary[Any]
    source_hosts: Sequence[Host]
    dest_hosts: Sequence[Host]
    backing: BackingFile | None
    staging: Sequence[Backup[Any]]
    task_prefix: str
    layers: Sequence[Layer] = ()
    file_name: str | None = None
    active_parent: str | None = None
    live: LiveTarget | None = None


@dataclass(frozen=True)
class Migrated:
    """The volume's verified copy on the destination; `on_cache`: it sits on the
    destination's image cache (else it holds all its data); `layers`: each snapshot's
    copy, by snapshot id."""

    created: VolumeCreated
    on_cache: bool
    layers: dict[str, VolumeCreated] = field(default_factory=dict)


class DataMotionStrategy(abc.ABC):
    """Strategies bid on each copy; the highest bid above zero carries it out."""

    @abc.abstractmethod
    def bid_download(self, request: DownloadRequest[Any, Any]) -> int: ...

    @abc.abstractmethod
    async def download(self, ctx: JobContext, request: DownloadRequest[Any, Any]) -> ImageFacts:
        """Copies an image from a backup storage into a primary storage's image cache."""

    @abc.abstractmethod
    def bid_upload(self, request: UploadRequest[Any, Any]) -> int: ...

    @abc.abstractmethod
    async def upload(self, ctx: JobContext, request: UploadRequest[Any, Any]) -> Uploaded:
        """Copies a volume from its primary storage into a backup storage."""

    def bid_restore(self, request: RestoreRequest[Any, Any]) -> int:
        """A strategy that does not restore snapshots' backups bids nothing."""
        return 0

    async def restore(self, ctx: JobContext, request: RestoreRequest[Any, Any]) -> ImageFacts:
        """Copies a snapshot's backup from a backup storage into a volume directory."""
        raise NotImplementedError

    def bid_migrate(self, request: MigrateRequest) -> int:
        """A strategy that does not move volumes between primary storages bids nothing."""
        return 0

    async def migrate(self, ctx: JobContext, request: MigrateRequest) -> Migrated:
        """Makes a verified copy of the volume on the destination; the source is only
        read."""
        raise Unsupported("this data motion strategy does not migrate volumes")

    async def abandon_migrate(self, ctx: JobContext, request: MigrateRequest) -> None:
        """After a failed migration, removes what a `migrate` of this strategy may have
        left besides the destination's copy (the service removes that); idempotent, and
        through whichever hosts of `request` are still there. By default: nothing."""
        return None


class TemplateInstallStrategy(abc.ABC):
    """How an image becomes the base of root volumes on a primary storage, and stops
    being one."""

    @abc.abstractmethod
    async def installed(self, session: AsyncSession, image: Image,
                        store: Primary[Any]) -> ImageCache | None:
        """The ready base of `image` on `store`, if it is there already."""

    @abc.abstractmethod
    async def install(self, ctx: JobContext, image: Image, store: Primary[Any]) -> ImageCache:
        """Returns a ready image cache of `image` on `store`, making it if needed."""

    @abc.abstractmethod
    async def remove(self, ctx: JobContext, store: Primary[Any], cache: ImageCache) -> None:
        """Deletes the image cache `cache` from `store` and gives back what it held."""
