"""Live storage migration: the data motion strategy that moves an attached volume while
its VM runs. It bids only on volumes a running domain holds (`MigrateRequest.live`),
which the cold strategies never take, and only where the attached host reaches the
destination and both sides are qcow2 file storages.

The destination volume is made first, by the destination's backend, on the attached
host: an overlay on the destination's image cache when the volume is a linked clone and
the cache is there (then only the volume's own layer is copied: a shallow copy), else an
empty volume of the same size (a whole copy). The host's agent then has the domain copy
its disk into it (libvirt's block copy), waits until the copy mirrors every write, and
pivots: the domain writes to the destination from then on. Until the pivot the domain
runs on the source; a failure cancels the copy, and the migration service removes the
half-made destination and leaves the volume where it was."""

from __future__ import annotations

from controller.db.models import Volume
from controller.jobs.engine import JobContext
from controller.motion.migration import VolumeMigrationStrategy
from controller.plugins.interfaces.motion import Migrated, MigrateRequest
from shared.protocol.libvirt import LIVE_COPY, LiveCopyPayload

LIVE_BID = 40


class LiveMigration(VolumeMigrationStrategy):
    def bid_migrate(self, request: MigrateRequest) -> int:
        live = request.live
        if live is None or request.volume.snapshot_id is not None:
            return 0
        source = self._registry.backend_of(request.source)
        dest = self._registry.backend_of(request.dest)
        if not (source.copies_onto_cache and dest.copies_onto_cache):
            return 0
        if live.host.id not in {host.id for host in request.dest_hosts}:
            return 0
        return LIVE_BID

    async def migrate(self, ctx: JobContext, request: MigrateRequest) -> Migrated:
        live = request.live
        assert live is not None
        volume, backing = request.volume, request.backing
        source = self._registry.backend_of(request.source).volume_source(
            ctx, request.source, volume)
        dest = self._registry.backend_of(request.dest)
        created = await dest.create_volume(ctx, request.dest, volume, live.host, backing)
        target = dest.volume_source(ctx, request.dest, Volume(
            id=volume.id, name=volume.name, path=created.path, format=created.format))
        assert source.path is not None
        await ctx.call(live.host, LIVE_COPY, LiveCopyPayload(
            domain=live.domain, serial=volume.id, source=source.path, dest=target,
            shallow=backing is not None), task_id=f"{request.task_prefix}.live",
            span=(10, 95))
        return Migrated(created, on_cache=backing is not None)
