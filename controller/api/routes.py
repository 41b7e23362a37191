"""The route table: one line per operation, with the role it needs and the models the
OpenAPI document is generated from. Views stay free of routing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from controller.api import schemas as s
from controller.api.auth import requires
from controller.api.views import (
    audit,
    hosts,
    images,
    jobs,
    meta,
    snapshots,
    storages,
    tokens,
    volumes,
)
from controller.auth.tokens import Role
from controller.services.cache_gc import CacheGcOut, CacheGcSettings
from controller.services.reconcile import ReconcileReport
from shared.protocol.host import NetworkFacts

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """`role`: the least role that may call it; reading needs a reader, the rest says."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    query: tuple[str, ...] = ()
    role: Role = Role.READER
    # Answers text (the Prometheus exposition format), not a JSON model.
    text: bool = False


LIST_QUERY = ("limit", "offset", "after", "count")
ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/capabilities", meta.capabilities, "Storage types and the matrix",
          response=s.Capabilities),
    Route("GET", "/metrics", meta.metrics,
          "Prometheus metrics: jobs, image cache lookups, capacity, storage and host state, "
          "storage health",
          text=True),
    Route("GET", "/v1/hosts", hosts.list_hosts, "List hosts", response=s.Page[s.HostOut],
          query=(*LIST_QUERY, "name", "state", "hypervisor")),
    Route("POST", "/v1/hosts", hosts.create_host,
          "Add a host: its join token (shown once) and the job that enrols its agent",
          body=s.HostCreate, response=s.HostAccepted, status=202, role=Role.ADMIN),
    Route("GET", "/v1/hosts/{id}", hosts.get_host, "Show a host", response=s.HostOut),
    Route("POST", "/v1/hosts/{id}/reconnect", hosts.reconnect_host,
          "Reconnect a host and re-attach its storages", response=s.JobAccepted, status=202,
          role=Role.ADMIN),
    Route("POST", "/v1/hosts/{id}/join-token", hosts.create_join_token,
          "Make a new join token for a host (the old one stops working); reconnecting "
          "the host enrols its agent again with it", response=s.JoinTokenOut, status=201,
          role=Role.ADMIN),
    Route("POST", "/v1/hosts/{id}/revoke", hosts.revoke_host,
          "Revoke a host agent's credential: it is locked out until enrolled again",
          response=s.HostOut, role=Role.ADMIN),
    Route("GET", "/v1/hosts/{id}/network", hosts.host_network,
          "A host's interfaces and its routes to its storage servers (and to each `server`)",
          response=NetworkFacts, query=("server",)),
    Route("DELETE", "/v1/hosts/{id}", hosts.delete_host, "Remove a host",
          response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("GET", "/v1/primary-storages", storages.list_primary, "List primary storages",
          response=s.Page[s.PrimaryStorageOut], query=(*LIST_QUERY, "name", "type", "state")),
    Route("POST", "/v1/primary-storages", storages.create_primary,
          "Create a primary storage and attach it to its first hosts",
          body=s.PrimaryStorageCreate, response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("GET", "/v1/primary-storages/{id}", storages.get_primary, "Show a primary storage",
          response=s.PrimaryStorageOut),
    Route("PATCH", "/v1/primary-storages/{id}", storages.update_primary,
          "Change a primary storage's allocation threshold or tags (only the fields given)",
          body=s.PrimaryStorageUpdate, response=s.PrimaryStorageOut, role=Role.ADMIN),
    Route("POST", "/v1/primary-storages/{id}/attach", storages.attach_primary,
          "Attach a primary storage to a host", body=s.HostRef, response=s.JobAccepted,
          status=202, role=Role.ADMIN),
    Route("POST", "/v1/primary-storages/{id}/detach", storages.detach_primary,
          "Detach a primary storage from a host", body=s.HostRef, response=s.JobAccepted,
          status=202, role=Role.ADMIN),
    Route("POST", "/v1/primary-storages/{id}/reconcile", storages.reconcile_primary,
          "Compare what the storage holds with the rows (orphans, missing files, size "
          "mismatches); the report replaces the last one (a running reconcile is answered)",
          response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("GET", "/v1/primary-storages/{id}/reconcile", storages.reconcile_report,
          "The last reconcile report of a primary storage (404 no_report before the first)",
          response=ReconcileReport),
    Route("POST", "/v1/primary-storages/{id}/reconcile/quarantine", storages.quarantine_orphans,
          "Move orphans of the last report into the storage's quarantine directory (never "
          "deleted; each is checked again first; not_an_orphan 400)",
          body=s.QuarantineRequest, response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("GET", "/v1/primary-storages/{id}/cache-gc", storages.cache_gc_show,
          "Image cache collection of a primary storage: its watermarks and its last run",
          response=CacheGcOut),
    Route("PUT", "/v1/primary-storages/{id}/cache-gc", storages.cache_gc_configure,
          "Set the watermarks (percent of the disk used) of image cache collection",
          body=CacheGcSettings, response=CacheGcOut, role=Role.ADMIN),
    Route("POST", "/v1/primary-storages/{id}/cache-gc/run", storages.cache_gc_run,
          "Collect image caches nothing needs, least recently used first, while the disk "
          "is above the high watermark (dry_run: only report what would go)",
          body=s.CacheGcRequest, response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("POST", "/v1/primary-storages/{id}/maintain", storages.maintain_primary,
          "Put a primary storage in maintenance: it takes no new work (409 "
          "storage_in_maintenance), running jobs on it end first (or the job fails with "
          "storage_busy naming them), then every host releases it (NFS unmount); "
          "volumes_attached 409 names the domains using it",
          body=s.MaintainRequest, response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("POST", "/v1/primary-storages/{id}/cancel-maintain", storages.cancel_maintain_primary,
          "End a primary storage's maintenance: every host attaches it again (mount) and "
          "reports its capacity; ready once one host did (not_in_maintenance 409)",
          response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("DELETE", "/v1/primary-storages/{id}", storages.delete_primary,
          "Delete a primary storage", response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("GET", "/v1/backup-storages", storages.list_backup, "List backup storages",
          response=s.Page[s.BackupStorageOut], query=(*LIST_QUERY, "name", "type", "state")),
    Route("POST", "/v1/backup-storages", storages.create_backup, "Add a backup storage",
          body=s.BackupStorageCreate, response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("GET", "/v1/backup-storages/{id}", storages.get_backup, "Show a backup storage",
          response=s.BackupStorageOut),
    Route("POST", "/v1/backup-storages/{id}/reconcile", storages.reconcile_backup,
          "Compare what the backup storage holds with the rows (orphans, missing files, "
          "size mismatches); the report replaces the last one",
          response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("GET", "/v1/backup-storages/{id}/reconcile", storages.reconcile_backup_report,
          "The last reconcile report of a backup storage (404 no_report before the first)",
          response=ReconcileReport),
    Route("DELETE", "/v1/backup-storages/{id}", storages.delete_backup,
          "Delete a backup storage", response=s.JobAccepted, status=202, role=Role.ADMIN),
    Route("GET", "/v1/images", images.list_images, "List images", response=s.Page[s.ImageOut],
          query=(*LIST_QUERY, "name", "state", "format")),
    Route("POST", "/v1/images", images.create_image,
          "Register an image: from a URL, a volume or a snapshot (a chain is flattened)",
          body=s.ImageCreate, response=s.JobAccepted, status=202, role=Role.OPERATOR),
    Route("GET", "/v1/images/{id}", images.get_image, "Show an image", response=s.ImageOut),
    Route("DELETE", "/v1/images/{id}", images.delete_image,
          "Delete an image and its caches (409 while volumes use it)",
          response=s.JobAccepted, status=202, role=Role.OPERATOR),
    Route("GET", "/v1/volumes", volumes.list_volumes, "List volumes",
          response=s.Page[s.VolumeOut],
          query=(*LIST_QUERY, "name", "state", "primary_storage_id", "image_id")),
    Route("POST", "/v1/volumes", volumes.create_volume,
          "Create a root volume (linked clone of an image), an empty volume, a copy of a "
          "snapshot on its storage, or a restore of a snapshot backup",
          body=s.VolumeCreate, response=s.JobAccepted, status=202, role=Role.OPERATOR),
    Route("GET", "/v1/volumes/{id}", volumes.get_volume, "Show a volume", response=s.VolumeOut),
    Route("DELETE", "/v1/volumes/{id}", volumes.delete_volume,
          "Delete a volume (revoking every grant first); 409 while it has snapshots unless "
          "cascade=true, which deletes them too", response=s.JobAccepted, status=202,
          query=("cascade",), role=Role.OPERATOR),
    Route("POST", "/v1/volumes/{id}/resize", volumes.resize_volume,
          "Grow a volume (a smaller size is refused: volume_shrink; 409 while the volume is "
          "not ready)", body=s.VolumeResize, response=s.JobAccepted, status=202,
          role=Role.OPERATOR),
    Route("POST", "/v1/volumes/{id}/migrate", volumes.migrate_volume,
          "Move a volume no host holds to another primary storage, with its snapshots: "
          "copied, verified, then switched; the source is removed last (same_storage 400; "
          "volume_busy, volume_has_snapshots (snapshots that do not move), snapshot_not_ready, "
          "volume_in_use, storage_not_ready, same_directory, no_migration_path 409)",
          body=s.VolumeMigrate, response=s.JobAccepted, status=202, role=Role.OPERATOR),
    Route("POST", "/v1/volumes/{id}/access", volumes.grant_access,
          "Grant a host access to a volume (iSCSI: an ACL for the host's initiator)",
          body=s.HostRef, response=s.JobAccepted, status=202, role=Role.OPERATOR),
    Route("DELETE", "/v1/volumes/{id}/access/{host_id}", volumes.revoke_access,
          "Revoke a host's access to a volume", response=s.JobAccepted, status=202,
          role=Role.OPERATOR),
    Route("POST", "/v1/volumes/{id}/attach", volumes.attach_volume,
          "Attach a volume to a libvirt domain on a host (hot-plugged, live and persistent; "
          "iSCSI: granted to the host first)", body=s.VolumeAttach, response=s.JobAccepted,
          status=202, role=Role.OPERATOR),
    Route("POST", "/v1/volumes/{id}/detach", volumes.detach_volume,
          "Detach a volume from its domain (the host's access is released once the guest "
          "let go)", body=s.VolumeDetach, response=s.JobAccepted, status=202,
          role=Role.OPERATOR),
    Route("GET", "/v1/volumes/{id}/snapshots", snapshots.list_volume_snapshots,
          "List a volume's snapshots", response=s.Page[s.SnapshotOut],
          query=(*LIST_QUERY, "name", "state", "parent_id")),
    Route("POST", "/v1/volumes/{id}/snapshots", snapshots.take_snapshot,
          "Take a snapshot of a volume", body=s.SnapshotCreate, response=s.JobAccepted,
          status=202, role=Role.OPERATOR),
    Route("POST", "/v1/volumes/{id}/revert", snapshots.revert_volume,
          "Revert a volume to one of its snapshots (the others are kept)",
          body=s.VolumeRevert, response=s.JobAccepted, status=202, role=Role.OPERATOR),
    Route("GET", "/v1/snapshots", snapshots.list_snapshots, "List snapshots",
          response=s.Page[s.SnapshotOut], query=(*LIST_QUERY, *snapshots.FILTERS)),
    Route("GET", "/v1/snapshots/{id}", snapshots.get_snapshot, "Show a snapshot",
          response=s.SnapshotOut),
    Route("DELETE", "/v1/snapshots/{id}", snapshots.delete_snapshot,
          "Delete a snapshot, merging its data into the layers that sit on it; of an "
          "attached volume, live by a block commit in its domain (409 "
          "snapshot_has_branches when the files it joins carry other branches)",
          response=s.JobAccepted, status=202, role=Role.OPERATOR),
    Route("POST", "/v1/snapshots/{id}/backups", snapshots.back_up_snapshot,
          "Back up a snapshot (its chain flattened, sha256 verified) to a backup storage; "
          "409 naming the matrix cell when there is none", body=s.SnapshotBackupCreate,
          response=s.JobAccepted, status=202, role=Role.OPERATOR),
    Route("GET", "/v1/snapshots/{id}/backups", snapshots.list_snapshot_backups,
          "List a snapshot's backups", response=s.Page[s.SnapshotBackupOut],
          query=(*LIST_QUERY, "state", "backup_storage_id")),
    Route("GET", "/v1/snapshot-backups", snapshots.list_backups, "List snapshot backups",
          response=s.Page[s.SnapshotBackupOut],
          query=(*LIST_QUERY, *snapshots.BACKUP_FILTERS)),
    Route("GET", "/v1/snapshot-backups/{id}", snapshots.get_backup,
          "Show a snapshot backup", response=s.SnapshotBackupOut),
    Route("DELETE", "/v1/snapshot-backups/{id}", snapshots.delete_backup,
          "Delete a snapshot backup from its backup storage", response=s.JobAccepted,
          status=202, role=Role.OPERATOR),
    Route("GET", "/v1/jobs", jobs.list_jobs, "List jobs", response=s.Page[s.JobOut],
          query=(*LIST_QUERY, "kind", "state", "resource_type", "resource_id")),
    Route("GET", "/v1/jobs/{id}", jobs.get_job, "Show a job; ?wait=N long-polls",
          response=s.JobOut, query=("wait",)),
    Route("DELETE", "/v1/jobs/{id}", jobs.cancel_job,
          "Cancel a running job: its agent tasks stop, its resource is rolled back, and it "
          "fails with `cancelled` (a finished job is a 409 `job_finished`)",
          response=s.JobOut, status=202, role=Role.OPERATOR),
    Route("GET", "/v1/tokens", tokens.list_tokens, "List API tokens (never their secrets)",
          response=s.Page[s.TokenOut], query=(*LIST_QUERY, "name", "role"), role=Role.ADMIN),
    Route("POST", "/v1/tokens", tokens.create_token,
          "Make an API token; the token is in this answer only", body=s.TokenCreate,
          response=s.TokenCreated, status=201, role=Role.ADMIN),
    Route("DELETE", "/v1/tokens/{id}", tokens.revoke_token, "Revoke an API token",
          response=s.TokenOut, role=Role.ADMIN),
    Route("GET", "/v1/audit", audit.list_events, "The audit log of mutating calls",
          response=s.Page[s.AuditEventOut],
          query=(*LIST_QUERY, "token_name", "method", "resource_type", "resource_id"),
          role=Role.ADMIN),
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", meta.healthz)
    app.router.add_get("/v1/openapi.json", meta.openapi)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, requires(route.role, route.handler))
