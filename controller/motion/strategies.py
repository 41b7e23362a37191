"""The default data motion strategy: the matrix cell's mediator carries the bytes."""

from __future__ import annotations

from controller.jobs.engine import JobContext
from controller.plugins.interfaces import DataMotionStrategy, MotionRequest
from controller.plugins.registry import PluginRegistry
from shared.protocol.files import ImageFacts

MEDIATOR_BID = 10


class MediatorMotionStrategy(DataMotionStrategy):
    def __init__(self, registry: PluginRegistry) -> None:
        self._registry = registry

    def _key(self, r: MotionRequest) -> tuple[str, str, str]:
        return (r.primary.type, r.backup.type, r.primary.hypervisor)

    def bid(self, request: MotionRequest) -> int:
        return MEDIATOR_BID if self._key(request) in self._registry.mediators else 0

    async def copy(self, ctx: JobContext, request: MotionRequest) -> ImageFacts:
        mediator = self._registry.mediator(*self._key(request))
        return await mediator.download_to_cache(ctx, request)
