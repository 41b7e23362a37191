"""The data model. Objects in a store follow one state machine (see `ObjectState`); every
transition is a compare-and-swap update made through `controller.db.transitions`."""

from __future__ import annotations

import enum
import time
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.protocol.types import ImageFormat


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, int: BigInteger}


class ObjectState(enum.StrEnum):
    """allocated -> creating -> ready; ready -> copying -> ready;
    ready -> resizing -> ready (a volume being grown);
    ready -> destroying -> destroyed; error from every transitional state. A volume is
    `snapshotting` while a job takes, reverts to or deletes one of its snapshots, and
    `migrating` while a job moves it to another primary storage."""

    ALLOCATED = "allocated"
    CREATING = "creating"
    READY = "ready"
    COPYING = "copying"
    RESIZING = "resizing"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    ERROR = "error"
    SNAPSHOTTING = "snapshotting"
    MIGRATING = "migrating"


TRANSITIONAL = (ObjectState.ALLOCATED, ObjectState.CREATING, ObjectState.COPYING,
                ObjectState.RESIZING, ObjectState.DESTROYING, ObjectState.SNAPSHOTTING,
                ObjectState.MIGRATING)
# Objects that still hold (or will hold) bytes somewhere.
LIVE = (ObjectState.ALLOCATED, ObjectState.CREATING, ObjectState.READY, ObjectState.COPYING,
        ObjectState.RESIZING, ObjectState.DESTROYING, ObjectState.ERROR,
        ObjectState.SNAPSHOTTING, ObjectState.MIGRATING)


class StoreState(enum.StrEnum):
    """creating -> ready; ready -> entering_maintenance -> maintenance (or back to ready
    when entering fails); maintenance -> leaving_maintenance -> ready (or back to
    maintenance when no host attached it again); -> deleting; error."""

    CREATING = "creating"
    READY = "ready"
    ENTERING_MAINTENANCE = "entering_maintenance"
    MAINTENANCE = "maintenance"
    LEAVING_MAINTENANCE = "leaving_maintenance"
    DELETING = "deleting"
    ERROR = "error"


# A storage in these states takes no new work (`services.maintenance.ensure_accepting`) and
# no host attaches it but the cancel of its maintenance.
IN_MAINTENANCE = (StoreState.ENTERING_MAINTENANCE, StoreState.MAINTENANCE,
                  StoreState.LEAVING_MAINTENANCE)


class HostState(enum.StrEnum):
    """enrolling (a join token waits for its agent) -> connecting -> connected;
    disconnected from any of them."""

    ENROLLING = "enrolling"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class AttachState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    DETACHING = "detaching"
    # Released on the host (unmounted) for the storage's maintenance: nothing attaches it
    # again but cancelling the maintenance.
    MAINTENANCE = "maintenance"


class JobState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)


class Timestamps:
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time, onupdate=time.time)


class Host(Timestamps, Base):
    __tablename__ = "hosts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    hypervisor: Mapped[str] = mapped_column(String(32), default="kvm")
    state: Mapped[str] = mapped_column(String(16), default=HostState.CONNECTING)
    reason: Mapped[str | None] = mapped_column(Text)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    # What the agent says it is (a random id it keeps): one host per agent.
    agent_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The start of the agent its last connect found: another one answering means the
    # agent restarted, cutting its tasks short (`services/monitor.py`).
    agent_instance: Mapped[str | None] = mapped_column(String(32))
    initiator_iqn: Mapped[str | None] = mapped_column(String(223))
    # Set by the operator: the agent's report does not replace it.
    initiator_iqn_pinned: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The agent's enrolment: its certificate names it, so clearing it (revocation) makes
    # the controller refuse that certificate, however validly signed.
    enrolment_id: Mapped[str | None] = mapped_column(String(32))
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64))
    cert_serial: Mapped[str | None] = mapped_column(String(64))
    cert_expires_at: Mapped[float | None] = mapped_column(Float)
    # The one-time join token waiting for the agent: only its sealed secret is kept.
    join_token_id: Mapped[str | None] = mapped_column(String(32))
    join_secret_sealed: Mapped[str | None] = mapped_column(Text)
    join_token_expires_at: Mapped[float | None] = mapped_column(Float)


class CertificateAuthority(Base):
    """The controller's CA for the agent channel, shared by every controller on the
    database; its key is sealed like every credential."""

    __tablename__ = "certificate_authorities"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cert_pem: Mapped[str] = mapped_column(Text)
    key_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class PrimaryStorage(Timestamps, Base):
    __tablename__ = "primary_storages"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    hypervisor: Mapped[str] = mapped_column(String(32), default="kvm")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(32), default=StoreState.READY)
    capacity_total: Mapped[int] = mapped_column(default=0)
    capacity_available: Mapped[int] = mapped_column(default=0)
    capacity_allocated: Mapped[int] = mapped_column(default=0)
    overprovision_factor: Mapped[float] = mapped_column(Float, default=1.0)
    # Image cache collection: above the high percentage of the disk used, least recently
    # used caches nothing needs go until the low one would be reached.
    cache_gc_high_watermark: Mapped[float] = mapped_column(Float, default=85.0,
                                                           server_default="85")
    cache_gc_low_watermark: Mapped[float] = mapped_column(Float, default=70.0,
                                                          server_default="70")
    # Allocation: no new bytes are reserved past this percent of the over-provisioned
    # total; the allocator picks among storages by their tags.
    allocation_threshold: Mapped[float] = mapped_column(Float, default=90.0,
                                                        server_default="90")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")


class PrimaryStorageHostRef(Timestamps, Base):
    __tablename__ = "primary_storage_host_refs"
    __table_args__ = (UniqueConstraint("primary_storage_id", "host_id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    primary_storage_id: Mapped[str] = mapped_column(ForeignKey("primary_storages.id"))
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"))
    state: Mapped[str] = mapped_column(String(16), default=AttachState.CONNECTING)
    reason: Mapped[str | None] = mapped_column(Text)
    # The last health probe from this host (a heartbeat in the storage's root): healthy,
    # unhealthy (with the reason) or unknown (the agent did not answer); None before one.
    health: Mapped[str | None] = mapped_column(String(16))
    health_reason: Mapped[str | None] = mapped_column(Text)
    health_checked_at: Mapped[float | None] = mapped_column(Float)


class Health(enum.StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class BackupStorage(Timestamps, Base):
    __tablename__ = "backup_storages"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default=StoreState.CREATING)
    reason: Mapped[str | None] = mapped_column(Text)
    capacity_total: Mapped[int] = mapped_column(default=0)
    capacity_available: Mapped[int] = mapped_column(default=0)
    # The bytes its snapshots' backups hold (the ledger of what Strata put there).
    capacity_allocated: Mapped[int] = mapped_column(default=0, server_default="0")


class Image(Timestamps, Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(Text)
    declared_format: Mapped[ImageFormat | None] = mapped_column(String(16))
    declared_sha256: Mapped[str | None] = mapped_column(String(64))
    format: Mapped[ImageFormat | None] = mapped_column(String(16))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column()
    virtual_size: Mapped[int | None] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default=ObjectState.ALLOCATED)
    reason: Mapped[str | None] = mapped_column(Text)
    # The chunk manifest made at registration (`shared.protocol.files.ChunkManifest`),
    # sent with every cache fill; none for images registered before manifests. The
    # digests (up to ~70 KB) are read only by the fill that sends them, never with the
    # row: touching the attribute raises instead of loading it.
    chunk_size: Mapped[int | None] = mapped_column()
    chunk_sha256s: Mapped[list[str] | None] = mapped_column(
        JSON(none_as_null=True), deferred=True, deferred_raiseload=True)


class ImageStoreRef(Timestamps, Base):
    """An image's copy on a backup storage."""

    __tablename__ = "image_store_refs"
    __table_args__ = (UniqueConstraint("image_id", "backup_storage_id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    backup_storage_id: Mapped[str] = mapped_column(ForeignKey("backup_storages.id"))
    path: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=ObjectState.ALLOCATED)


class ImageCache(Timestamps, Base):
    """An image's copy on a primary storage, the base of its linked clones."""

    __tablename__ = "image_caches"
    __table_args__ = (UniqueConstraint("image_id", "primary_storage_id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    primary_storage_id: Mapped[str] = mapped_column(ForeignKey("primary_storages.id"))
    path: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(default=0)
    attempt: Mapped[int] = mapped_column(default=1)
    state: Mapped[str] = mapped_column(String(16), default=ObjectState.CREATING)
    reason: Mapped[str | None] = mapped_column(Text)

    @property
    def task_id(self) -> str:
        """The agent task filling it: one per attempt, shared by every job waiting on it."""
        return f"cache-{self.id}-{self.attempt}"


class Volume(Timestamps, Base):
    __tablename__ = "volumes"
    # Keyset pages of the list, all, per storage, and per storage and state (whose
    # `total` it also counts without reading the rows): `controller.api.request.paginate`.
    __table_args__ = (Index("ix_volumes_created", "created_at", "id"),
                      Index("ix_volumes_storage_created", "primary_storage_id", "created_at",
                            "id"),
                      Index("ix_volumes_storage_state_created", "primary_storage_id",
                            "state", "created_at", "id"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    primary_storage_id: Mapped[str] = mapped_column(ForeignKey("primary_storages.id"))
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"))
    image_cache_id: Mapped[str | None] = mapped_column(ForeignKey("image_caches.id"))
    size: Mapped[int] = mapped_column()
    path: Mapped[str | None] = mapped_column(Text)
    format: Mapped[ImageFormat] = mapped_column(String(16), default="qcow2")
    state: Mapped[str] = mapped_column(String(16), default=ObjectState.ALLOCATED)
    reason: Mapped[str | None] = mapped_column(Text)
    export: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The snapshot the active layer (`path`, the file a VM opens) sits on; None before the
    # first snapshot. No foreign key: snapshots refer to volumes, not both ways.
    snapshot_id: Mapped[str | None] = mapped_column(String(36))


class Snapshot(Timestamps, Base):
    """A point in time of a volume, a node of its tree (`parent_id`). On a primary storage
    it is held as the frozen file `path` there, of `primary_storage_id`; a copy backed up
    on a backup storage is a row of its own per store (`SnapshotBackup`), as an image's
    are (`ImageStoreRef`). `size` is what it holds in the capacity ledger (0 once given back),
    `virtual_size` the disk size at that point, `actual_size` the file's bytes when
    taken."""

    __tablename__ = "snapshots"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("snapshots.id"))
    primary_storage_id: Mapped[str] = mapped_column(ForeignKey("primary_storages.id"))
    path: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(default=0)
    virtual_size: Mapped[int] = mapped_column()
    actual_size: Mapped[int | None] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default=ObjectState.CREATING)
    reason: Mapped[str | None] = mapped_column(Text)
    # "offline" (no VM had the volume open), "crash" or "quiesced" (taken live).
    consistency: Mapped[str | None] = mapped_column(String(16))


class SnapshotBackup(Timestamps, Base):
    """A snapshot's copy on a backup storage: its chain flattened into one qcow2 file (or
    object) at `path`, verified by `sha256`. It outlives its snapshot and volume, so it
    keeps what a restore needs: the volume it was of, that volume's image (a restore
    onto a storage caching it is rebased onto the cache) and the virtual size. `size` is
    what it holds in the backup storage's capacity ledger (0 until ready and once given
    back)."""

    __tablename__ = "snapshot_backups"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id"), index=True)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"))
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"))
    backup_storage_id: Mapped[str] = mapped_column(ForeignKey("backup_storages.id"))
    path: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(default=0)
    virtual_size: Mapped[int] = mapped_column()
    sha256: Mapped[str | None] = mapped_column(String(64))
    format: Mapped[ImageFormat] = mapped_column(String(16), default="qcow2")
    state: Mapped[str] = mapped_column(String(16), default=ObjectState.CREATING)
    reason: Mapped[str | None] = mapped_column(Text)


class AccessState(enum.StrEnum):
    GRANTING = "granting"
    GRANTED = "granted"
    REVOKING = "revoking"
    ERROR = "error"


class VolumeAccess(Timestamps, Base):
    """A host that may open a volume (an iSCSI ACL entry on the storage server)."""

    __tablename__ = "volume_accesses"
    __table_args__ = (UniqueConstraint("volume_id", "host_id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"))
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"))
    state: Mapped[str] = mapped_column(String(16), default=AccessState.GRANTING)
    uri: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)


class AttachmentState(enum.StrEnum):
    ATTACHING = "attaching"
    ATTACHED = "attached"
    DETACHING = "detaching"


class VolumeAttachment(Timestamps, Base):
    """A volume plugged into a libvirt domain on a host: at most one per volume. While
    it exists the volume is not deleted, shrunk, reverted or snapshotted offline."""

    __tablename__ = "volume_attachments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"), unique=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"))
    domain: Mapped[str] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16), default=AttachmentState.ATTACHING)
    reason: Mapped[str | None] = mapped_column(Text)
    since: Mapped[float | None] = mapped_column(Float)
    # The attach job made the host's grant (iSCSI), so the detach revokes it; a grant
    # the operator made stays.
    owns_grant: Mapped[bool] = mapped_column(default=False, server_default=false())


class Job(Timestamps, Base):
    __tablename__ = "jobs"
    # Every controller looks for running jobs whose lease lapsed, every few seconds.
    __table_args__ = (Index("ix_jobs_state_lease", "state", "lease_expires_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=JobState.RUNNING)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    resource_type: Mapped[str | None] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(36))
    # The API request that made it: its logs, and its agent tasks', carry the same id.
    request_id: Mapped[str | None] = mapped_column(String(64))
    # The controller running it, until its lease lapses (it renews it by heartbeat); a
    # peer then takes the job over by compare-and-swap on these two columns.
    owner: Mapped[str | None] = mapped_column(String(96))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    # Set by `DELETE /v1/jobs/{id}`: the owner stops the job and rolls its resource back.
    cancel_requested_at: Mapped[float | None] = mapped_column(Float)
    # The steps tried again after the agent interrupted them, and the attempt each is on
    # (its agent task `<job>.<step>.a<N>`); a resumed job re-attaches to that attempt.
    attempts: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LeaderLease(Base):
    """Who leads the controllers on SQLite (PostgreSQL uses an advisory lock instead):
    the holder renews `expires_at`; once it lapses another controller takes the row."""

    __tablename__ = "leader_leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(96))
    expires_at: Mapped[float] = mapped_column(Float)


class ApiToken(Timestamps, Base):
    """A bearer token of the API: only an scrypt hash of its secret is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(Text)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class AuditEvent(Base):
    """One mutating API call: who, what, on which resource, and how it ended."""

    __tablename__ = "audit_events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    at: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    token_id: Mapped[str | None] = mapped_column(String(36))
    token_name: Mapped[str | None] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(255))
    resource_type: Mapped[str | None] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[int] = mapped_column(Integer)
    code: Mapped[str | None] = mapped_column(String(64))


class StorageReport(Timestamps, Base):
    """The last report of one kind (`reconcile`) about one storage: a new run replaces
    it. `job_id`: the run that made it (or is making it)."""

    __tablename__ = "storage_reports"
    __table_args__ = (UniqueConstraint("storage_kind", "storage_id", "kind"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    storage_kind: Mapped[str] = mapped_column(String(16))
    storage_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(36))
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
