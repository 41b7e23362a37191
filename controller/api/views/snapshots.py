"""/v1/snapshots, /v1/volumes/<id>/snapshots, /v1/volumes/<id>/revert and
/v1/snapshot-backups"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.api.keys import SERVICES
from controller.api.request import body, paginate
from controller.api.schemas import (
    SnapshotBackupCreate,
    SnapshotBackupOut,
    SnapshotCreate,
    SnapshotOut,
    VolumeRevert,
)
from controller.api.views.common import accepted, listing, ok, showing
from controller.db.lookup import get_or_404
from controller.db.models import Snapshot, SnapshotBackup, Volume
from controller.services.container import Services

FILTERS = ("name", "state", "volume_id", "parent_id")


async def _snapshots_out(_: Services, session: AsyncSession,
                         snapshots: Sequence[Snapshot]) -> list[SnapshotOut]:
    return [SnapshotOut.model_validate(s) for s in snapshots]


async def list_snapshots(request: web.Request) -> web.Response:
    return await listing(request, Snapshot, FILTERS, _snapshots_out)


async def list_volume_snapshots(request: web.Request) -> web.Response:
    """The snapshots of one volume (a 404 if there is no such volume)."""
    services = request.app[SERVICES]
    async with services.db() as session:
        volume = await get_or_404(session, Volume, request.match_info["id"], "volume")
        page = await paginate(session, request,
                              select(Snapshot).where(Snapshot.volume_id == volume.id),
                              Snapshot, ("name", "state", "parent_id"))
        items = await _snapshots_out(services, session, page.rows)
    return ok(page.page([i.model_dump(mode="json") for i in items]))


async def get_snapshot(request: web.Request) -> web.Response:
    return await showing(request, Snapshot, "snapshot", _snapshots_out)


async def take_snapshot(request: web.Request) -> web.Response:
    req = await body(request, SnapshotCreate)
    _, job = await request.app[SERVICES].snapshots.take(request.match_info["id"], req.name)
    return accepted(job)


async def revert_volume(request: web.Request) -> web.Response:
    req = await body(request, VolumeRevert)
    return accepted(await request.app[SERVICES].snapshots.revert(request.match_info["id"],
                                                                 req.snapshot_id))


async def delete_snapshot(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].snapshots.delete(request.match_info["id"]))


# ---- backups ----------------------------------------------------------------------------

BACKUP_FILTERS = ("state", "snapshot_id", "volume_id", "backup_storage_id")


async def _backups_out(_: Services, session: AsyncSession,
                       backups: Sequence[SnapshotBackup]) -> list[SnapshotBackupOut]:
    return [SnapshotBackupOut.model_validate(b) for b in backups]


async def back_up_snapshot(request: web.Request) -> web.Response:
    req = await body(request, SnapshotBackupCreate)
    _, job = await request.app[SERVICES].backups.backup(request.match_info["id"],
                                                        req.backup_storage_id)
    return accepted(job)


async def list_snapshot_backups(request: web.Request) -> web.Response:
    """The backups of one snapshot (a 404 if there is no such snapshot)."""
    services = request.app[SERVICES]
    async with services.db() as session:
        snapshot = await get_or_404(session, Snapshot, request.match_info["id"], "snapshot")
        page = await paginate(session, request,
                              select(SnapshotBackup).where(
                                  SnapshotBackup.snapshot_id == snapshot.id),
                              SnapshotBackup, ("state", "backup_storage_id"))
        items = await _backups_out(services, session, page.rows)
    return ok(page.page([i.model_dump(mode="json") for i in items]))


async def list_backups(request: web.Request) -> web.Response:
    return await listing(request, SnapshotBackup, BACKUP_FILTERS, _backups_out)


async def get_backup(request: web.Request) -> web.Response:
    return await showing(request, SnapshotBackup, "snapshot backup", _backups_out)


async def delete_backup(request: web.Request) -> web.Response:
    return accepted(await request.app[SERVICES].backups.delete(request.match_info["id"]))
