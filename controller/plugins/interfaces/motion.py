"""Extension points of data motion: which host's agent executes a step, which strategy
moves bytes between two stores, how an image becomes the base of volumes."""

from __future__ import annotations

import abc
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Host, Image, ImageCache
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.mediator import (
    DownloadRequest,
    RestoreRequest,
    Uploaded,
    UploadRequest,
)
from controller.plugins.interfaces.stores import Backup, Primary
from shared.protocol.files import ImageFacts


class EndPointSelector(abc.ABC):
    """Chooses which host's agent executes a step."""

    @abc.abstractmethod
    async def for_primary(self, session: AsyncSession, store: Primary[Any]) -> Host: ...

    @abc.abstractmethod
    async def for_backup(self, session: AsyncSession, store: Backup[Any],
                         near: Primary[Any] | None = None) -> Host: ...


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
