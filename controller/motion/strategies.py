"""The default data motion strategy: the matrix cell's mediator carries the bytes, both
ways."""

from __future__ import annotations

from typing import Any

from controller.jobs.engine import JobContext
from controller.plugins.interfaces.mediator import (
    Cell,
    DownloadRequest,
    RestoreRequest,
    Uploaded,
    UploadRequest,
)
from controller.plugins.interfaces.motion import DataMotionStrategy
from controller.plugins.registry import PluginRegistry
from shared.protocol.files import ImageFacts

MEDIATOR_BID = 10


class MediatorMotionStrategy(DataMotionStrategy):
    def __init__(self, registry: PluginRegistry) -> None:
        self._registry = registry

    def _cell(self, request: DownloadRequest[Any, Any] | UploadRequest[Any, Any]
              | RestoreRequest[Any, Any]) -> Cell | None:
        primary = request.primary.row
        return self._registry.cells.get((primary.type, request.backup.row.type,
                                         primary.hypervisor))

    def bid_download(self, request: DownloadRequest[Any, Any]) -> int:
        return MEDIATOR_BID if self._cell(request) else 0

    async def download(self, ctx: JobContext, request: DownloadRequest[Any, Any]) -> ImageFacts:
        cell = self._cell(request)
        assert cell is not None
        return await cell.mediator.download(ctx, request)

    def bid_upload(self, request: UploadRequest[Any, Any]) -> int:
        return MEDIATOR_BID if self._cell(request) else 0

    async def upload(self, ctx: JobContext, request: UploadRequest[Any, Any]) -> Uploaded:
        cell = self._cell(request)
        assert cell is not None
        return await cell.mediator.upload(ctx, request)

    def bid_restore(self, request: RestoreRequest[Any, Any]) -> int:
        return MEDIATOR_BID if self._cell(request) else 0

    async def restore(self, ctx: JobContext, request: RestoreRequest[Any, Any]) -> ImageFacts:
        cell = self._cell(request)
        assert cell is not None
        return await cell.mediator.restore(ctx, request)
