"""Request and response bodies of the API. The OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from controller.auth.tokens import Role
from shared.names import validate_name
from shared.protocol.libvirt import DomainName
from shared.protocol.objects import ObjectPath
from shared.protocol.types import SHA256_RE, HttpUrl, ImageFormat, Iqn

Name = Annotated[str, AfterValidator(validate_name)]
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                           description="A storage tag: 1-64 letters, digits, '.', '_' or '-'.")]
Tags = Annotated[list[Tag], Field(max_length=32)]
Threshold = Annotated[float, Field(
    gt=0, le=100, description="Percent of the over-provisioned total past which no new "
    "allocation (volume, growth, snapshot, image cache, migration) is accepted: 409.")]
# Far above any disk, and below what a 64-bit database column holds with room to add.
MAX_VOLUME_SIZE = 1 << 62
T = TypeVar("T")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Error(BaseModel):
    code: str
    message: str


# ---- requests ---------------------------------------------------------------------------


class HostCreate(Request):
    name: Name
    address: str = Field(description="Base URL of the host's agent, e.g. https://10.0.0.5:8641 "
                                     "(agents serve HTTPS only).")
    hypervisor: Literal["kvm"] = "kvm"
    initiator_iqn: Iqn | None = Field(
        default=None, description="The host's iSCSI initiator name; default: what its agent "
                                  "reports.")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v.startswith("http://"):
            raise ValueError("agents serve HTTPS only: the address must be an https:// URL "
                             "(the controller authenticates the agent by its certificate)")
        if not v.startswith("https://") or " " in v:
            raise ValueError("address must be an https:// URL of the agent")
        return v.rstrip("/")


class PrimaryStorageCreate(Request):
    name: Name
    type: str = Field(description="A primary storage type from /v1/capabilities.")
    config: dict[str, Any] = Field(default_factory=dict,
                                   description="Type-specific settings, e.g. {path} for local.")
    overprovision_factor: float = Field(default=1.0, gt=0, le=100)
    hosts: list[str] = Field(
        default_factory=list,
        description="Host ids to attach at once (at least one): the storage is ready once "
        "one of them has attached it, and in error if none could.")
    allocation_threshold: Threshold = 90.0
    tags: Tags = Field(default_factory=list, description="Tags volume requests that name no "
                       "storage can ask for (storage_tags).")


class PrimaryStorageUpdate(Request):
    """Only the fields given change. A threshold below what is allocated already refuses
    new allocations only; nothing allocated is taken back."""

    allocation_threshold: Threshold | None = None
    tags: Tags | None = Field(default=None, description="The storage's tags (replaces them).")


class HostRef(Request):
    host_id: str


class BackupStorageCreate(Request):
    name: Name
    type: str = Field(description="A backup storage type from /v1/capabilities.")
    config: dict[str, Any] = Field(default_factory=dict)


class ImageCreate(Request):
    """From a URL (downloaded and verified), or from a volume (copied up from its primary
    storage: the upload direction of the matrix)."""

    name: Name
    url: HttpUrl | None = Field(default=None,
                                description="http(s) URL to download the image from.")
    volume_id: str | None = Field(default=None, description="A volume to make the image of "
                                  "(a linked clone, or one on snapshots, is flattened).")
    snapshot_id: str | None = Field(default=None, description="A snapshot to make the image "
                                    "of (its chain flattened).")
    backup_storage_id: str
    format: ImageFormat | None = Field(default=None, description="Declared format, checked.")
    sha256: str | None = Field(default=None, pattern=SHA256_RE,
                               description="Expected sha256 (lowercase hex), checked.")

    @model_validator(mode="after")
    def _one_source(self) -> ImageCreate:
        if [self.url, self.volume_id, self.snapshot_id].count(None) != 2:
            raise ValueError("give exactly one of url, volume_id and snapshot_id")
        return self


class VolumeCreate(Request):
    name: Name
    primary_storage_id: str | None = Field(
        default=None, description="Where the volume goes; without it the allocator picks a "
        "ready storage carrying storage_tags with the most room below its allocation "
        "threshold (a snapshot's copy goes on the snapshot's storage), and the job's "
        "message and result say why.")
    storage_tags: Tags = Field(default_factory=list,
                               description="Tags the allocator's pick must carry (only "
                               "without primary_storage_id).")
    image_id: str | None = Field(default=None, description="Make a root volume of this image.")
    snapshot_id: str | None = Field(
        default=None, description="Make a copy of this snapshot (on its own storage).")
    backup_id: str | None = Field(
        default=None, description="Restore this snapshot backup onto the storage.")
    size: int | None = Field(default=None, gt=0, le=MAX_VOLUME_SIZE, multiple_of=512,
                             description="Bytes, a multiple of 512; required for an empty "
                                         "volume, not given with a snapshot or a backup.")

    @model_validator(mode="after")
    def _one_source(self) -> VolumeCreate:
        if [self.image_id, self.snapshot_id, self.backup_id].count(None) < 2:
            raise ValueError("give at most one of image_id, snapshot_id and backup_id")
        if self.size is not None and (self.snapshot_id or self.backup_id):
            raise ValueError("a volume of a snapshot or a backup has its size")
        if self.storage_tags and self.primary_storage_id is not None:
            raise ValueError("storage_tags choose a storage: give them only without "
                             "primary_storage_id")
        if self.storage_tags and self.snapshot_id:
            raise ValueError("a snapshot's copy goes on the snapshot's storage: give no "
                             "storage_tags with snapshot_id")
        return self


class SnapshotBackupCreate(Request):
    backup_storage_id: str = Field(description="The backup storage to copy the snapshot to.")


class SnapshotCreate(Request):
    name: Name


class VolumeRevert(Request):
    snapshot_id: str = Field(description="A snapshot of this volume to go back to.")


class VolumeResize(Request):
    size: int = Field(gt=0, le=MAX_VOLUME_SIZE, multiple_of=512,
                      description="The new size in bytes (a multiple of 512): larger than "
                                  "the volume's, or equal (nothing to do); never smaller.")


class VolumeAttach(Request):
    host_id: str
    domain: DomainName = Field(description="The libvirt domain on that host.")


class VolumeDetach(Request):
    timeout: float = Field(default=30, gt=0, le=600,
                           description="Seconds the guest has to release the disk.")


class VolumeMigrate(Request):
    primary_storage_id: str = Field(description="The primary storage to move the volume "
                                                "to (ready, of the same hypervisor).")


class TokenCreate(Request):
    name: Name
    role: Role = Field(description="admin: hosts, storages, tokens; operator: images, "
                                   "volumes, attachments; reader: GET only.")


# ---- responses --------------------------------------------------------------------------


class TokenOut(Out):
    id: str
    name: str
    role: str
    created_at: float
    revoked_at: float | None


class TokenCreated(TokenOut):
    token: str = Field(description="The bearer token: shown this once, stored nowhere.")


class AuditEventOut(Out):
    id: str
    at: float
    token_name: str | None
    method: str
    route: str
    resource_type: str | None
    resource_id: str | None
    status: int
    code: str | None


class HostOut(Out):
    id: str
    name: str
    address: str
    hypervisor: str
    state: str
    reason: str | None
    agent_version: str | None
    initiator_iqn: str | None
    enrolled: bool = Field(default=False,
                           description="Whether the host's agent holds a live credential.")
    cert_fingerprint: str | None = Field(
        default=None, description="sha256 of the certificate its agent was enrolled with.")
    cert_expires_at: float | None = None
    join_token_expires_at: float | None = Field(
        default=None, description="When the join token waiting for the agent expires.")
    created_at: float


class JoinTokenOut(BaseModel):
    host_id: str
    join_token: str = Field(description="Put it in the agent's join-token file (mode 0600): "
                                        "shown this once, one use.")
    join_token_expires_at: float


class AttachmentOut(Out):
    host_id: str
    state: str
    reason: str | None
    health: str | None = Field(description="The last storage probe from this host: healthy, "
                                            "unhealthy (see health_reason) or unknown (the "
                                            "agent did not answer); null before the first.")
    health_reason: str | None
    health_checked_at: float | None


class Capacity(BaseModel):
    total: int
    available: int
    allocated: int
    overprovision_factor: float


class PrimaryStorageOut(Out):
    id: str
    name: str
    type: str
    hypervisor: str
    config: dict[str, Any]
    state: str
    capacity: Capacity
    allocation_threshold: float = Field(description="Percent of the over-provisioned total "
                                        "past which new allocations are refused.")
    tags: list[str]
    hosts: list[AttachmentOut]
    created_at: float


class BackupStorageOut(Out):
    id: str
    name: str
    type: str
    config: dict[str, Any]
    state: str
    reason: str | None
    capacity_total: int
    capacity_available: int
    capacity_allocated: int = Field(description="Bytes its snapshots' backups hold.")
    created_at: float


class ImageOut(Out):
    id: str
    name: str
    url: str
    state: str
    reason: str | None
    format: str | None
    declared_format: str | None
    sha256: str | None
    size: int | None
    virtual_size: int | None
    backup_storage_ids: list[str]
    created_at: float


class ExportOut(BaseModel):
    """Where an exported volume is served (CHAP credentials are never shown)."""

    portal: str
    target: str
    lun: int
    chap: bool


class AccessOut(Out):
    host_id: str
    state: str
    uri: str | None
    reason: str | None


class VolumeAttachmentOut(Out):
    host_id: str
    domain: str
    device: str | None
    state: str
    reason: str | None
    since: float | None


class VolumeOut(Out):
    id: str
    name: str
    primary_storage_id: str
    image_id: str | None
    size: int
    format: str
    path: str | None
    state: str
    reason: str | None
    export: ExportOut | None
    access: list[AccessOut]
    snapshot_id: str | None = Field(description="The snapshot the active layer sits on.")
    attachment: VolumeAttachmentOut | None = Field(
        default=None, description="The libvirt domain the volume is plugged into.")
    created_at: float


class SnapshotOut(Out):
    id: str
    name: str
    volume_id: str
    parent_id: str | None
    primary_storage_id: str
    path: str | None = Field(description="The frozen file on the primary storage.")
    size: int = Field(description="Bytes it holds in the capacity ledger.")
    virtual_size: int
    actual_size: int | None
    state: str
    reason: str | None
    created_at: float
    consistency: str | None = Field(
        default=None, description="offline (no VM had the volume open), or taken live: "
                                  "crash (crash-consistent) or quiesced (guest agent).")


class SnapshotBackupOut(Out):
    id: str
    snapshot_id: str
    volume_id: str
    image_id: str | None = Field(description="The volume's image: a restore onto a storage "
                                             "caching it is rebased onto the cache.")
    backup_storage_id: str
    path: str | None = Field(description="Where the backup storage holds it.")
    size: int = Field(description="Bytes it holds in the backup storage's ledger.")
    virtual_size: int
    sha256: str | None
    format: str
    state: str
    reason: str | None
    created_at: float


class JobOut(Out):
    id: str
    kind: str
    state: str
    progress: float
    message: str | None
    resource_type: str | None
    resource_id: str | None
    result: dict[str, Any] | None
    error: Error | None
    request_id: str | None = Field(description="The X-Request-Id of the API call that "
                                   "made it, in its log lines and its agent tasks' too.")
    owner: str | None = Field(description="The controller instance running it while it "
                                          "runs (host-pid-random).")
    attempts: dict[str, int] = Field(
        description="The steps tried again after their agent was interrupted (it restarted "
                    "or shut down), each with the attempt it reached; attempt N runs as "
                    "the agent task `<job id>.<step>.aN`.")
    created_at: float
    updated_at: float


class QuarantineRequest(Request):
    paths: list[ObjectPath] = Field(
        min_length=1, max_length=1000,
        description="Orphans of the last reconcile report (their `path`), to move into the "
                    "storage's quarantine directory.")


class MaintainRequest(Request):
    drain_timeout: float = Field(
        default=300.0, ge=0, le=3600,
        description="Seconds to wait for the jobs running on the storage to end (no new "
                    "one starts meanwhile); jobs still running then fail the maintenance "
                    "with storage_busy, naming them, and the storage is ready again.")


class CacheGcRequest(Request):
    dry_run: bool = Field(default=False,
                          description="Only report what would be removed, removing nothing.")


class JobAccepted(BaseModel):
    job_id: str
    resource_type: str | None
    resource_id: str | None


class HostAccepted(JobAccepted):
    """The new host's connect job, which enrols its agent once the join token is on the
    host, and that token: shown this once."""

    join_token: str
    join_token_expires_at: float


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int | None = Field(description="Every matching row, counted on `?count=true` "
                                          "(at the cost of reading them); null "
                                          "otherwise.")
    limit: int
    offset: int
    # Pass as `?after=` for the next page (keyset paging); null on the last page.
    next: str | None = None


class StorageType(BaseModel):
    type: str
    description: str


class MatrixCell(BaseModel):
    primary: str
    backup: str
    hypervisor: str
    directions: list[str]


class Backend(BaseModel):
    primary: str
    hypervisor: str


class Capabilities(BaseModel):
    primary_storage_types: list[StorageType]
    backup_storage_types: list[StorageType]
    hypervisors: list[str]
    backends: list[Backend]
    matrix: list[MatrixCell]
