"""The controller-agent protocol: the command envelope, task records and every command's
payload and result models. One definition, used by both sides.

`POST /v1/commands/<name>` takes a `CommandEnvelope`; the agent answers `200` with a
finished `TaskInfo` or `202` with a running one; `GET /v1/tasks/<id>?wait=N` long-polls,
`DELETE /v1/tasks/<id>` cancels. The task id is the idempotency key.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from shared.names import (
    validate_abs_path,
    validate_file_name,
    validate_host,
    validate_iqn,
    validate_store_path,
)

TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SHA256_RE = r"^[0-9a-f]{64}$"

ImageFormat = Literal["qcow2", "raw"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(Model):
    code: str
    message: str


class TaskState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self is not TaskState.RUNNING


class CommandEnvelope(Model):
    task_id: str
    deadline: float | None = Field(
        default=None, description="Unix time after which the agent gives up the task."
    )
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("task_id")
    @classmethod
    def _task_id(cls, v: str) -> str:
        if not TASK_ID_RE.fullmatch(v):
            raise ValueError("task_id must be 1-128 characters of [A-Za-z0-9._:-]")
        return v


class TaskInfo(Model):
    task_id: str
    command: str
    state: TaskState
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None
    created_at: float
    updated_at: float


# ---- payloads and results -------------------------------------------------------------

AbsPath = Annotated[str, AfterValidator(validate_abs_path)]
# A storage file or directory: an absolute path, or an nfs:// URL (libnfs access).
StorePath = Annotated[str, AfterValidator(validate_store_path)]
FileName = Annotated[str, AfterValidator(validate_file_name)]
Iqn = Annotated[str, AfterValidator(validate_iqn)]
HostName = Annotated[str, AfterValidator(validate_host)]


class FsCapacity(Model):
    """What statvfs says of the filesystem holding a storage directory."""

    total: int
    available: int


class HostInfoResult(Model):
    hostname: str
    agent_version: str
    qemu_img_version: str
    initiator_iqn: Iqn | None = Field(
        default=None, description="The host's iSCSI initiator name, if it has one.")


VG_NAME = r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$"


class PrepareStoragePayload(Model):
    """`volume_group`: volumes live there, so it is its capacity that counts."""

    path: StorePath
    subdirs: list[FileName] = Field(default_factory=list)
    volume_group: str | None = Field(default=None, pattern=VG_NAME)


class PrepareStorageResult(Model):
    path: str
    capacity: FsCapacity


class ImageFacts(Model):
    """What was verified of an image file that now sits at `path`."""

    path: str
    size: int
    sha256: str
    format: ImageFormat
    virtual_size: int
    capacity: FsCapacity


class DownloadImagePayload(Model):
    url: str
    dest_dir: StorePath
    file_name: FileName
    expected_sha256: str | None = Field(default=None, pattern=SHA256_RE)
    expected_format: ImageFormat | None = None


    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("url must be http:// or https://")
        return v


class CopyImagePayload(Model):
    """Copy an image file (or a volume becoming one) between two places the agent reaches,
    verifying as it goes; without expectations, the result says what was copied."""

    src_path: StorePath
    dest_dir: StorePath
    file_name: FileName
    expected_sha256: str | None = Field(default=None, pattern=SHA256_RE)
    expected_format: ImageFormat | None = None



class BackingFile(Model):
    path: StorePath
    format: ImageFormat


class CreateVolumePayload(Model):
    """A qcow2 volume: a linked clone of `backing`, or empty of `size` bytes."""

    dest_dir: StorePath
    file_name: FileName
    size: int | None = Field(default=None, gt=0)
    backing: BackingFile | None = None



class VolumeFacts(Model):
    path: str
    virtual_size: int
    capacity: FsCapacity


class DeleteFilePayload(Model):
    dir: StorePath
    file_name: FileName


class DeleteFileResult(Model):
    existed: bool
    capacity: FsCapacity


class ChapCredentials(Model):
    user: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    password: str = Field(min_length=12, max_length=16, pattern=r"^[A-Za-z0-9._-]+$",
                          description="RFC 3720 secrets are 12 to 16 octets.")


class IscsiTarget(Model):
    """Where a LUN is served: the portal, the target name, the LUN number."""

    portal: str = Field(pattern=r"^[0-9A-Za-z.\[\]:-]+:\d{1,5}$")
    target: Iqn
    lun: int = Field(default=1, ge=0, le=255)
    chap: ChapCredentials | None = None


class ExportLunPayload(Model):
    """Create the LUN's backing store (empty of `size`, or a copy of `source`) and serve it
    as the single LUN of its own target: a sparse file `dir/file_name`, or, with
    `volume_group`, a logical volume named after the file."""

    dir: AbsPath
    file_name: FileName
    size: int = Field(gt=0)
    source: BackingFile | None = None
    target: Iqn
    chap: ChapCredentials | None = None
    volume_group: str | None = Field(default=None, pattern=VG_NAME)


class ExportLunResult(Model):
    path: str
    target: IscsiTarget
    capacity: FsCapacity


class UnexportLunPayload(Model):
    """Remove the target (and so every grant), then the backing file or volume."""

    dir: AbsPath
    file_name: FileName
    target: Iqn
    volume_group: str | None = Field(default=None, pattern=VG_NAME)


class LunAccessPayload(Model):
    target: Iqn
    initiator: Iqn


class LunAccessResult(Model):
    target: Iqn
    initiators: list[str]


class ConnectVolumePayload(Model):
    target: IscsiTarget


class ConnectVolumeResult(Model):
    """How this host's QEMU opens the volume: a device path (kernel mode) or a QEMU
    block-driver spec (qemu mode)."""

    mode: Literal["kernel", "qemu"]
    device: str | None = None
    qemu_spec: dict[str, Any] | None = None
    size: int


class SftpEndpoint(Model):
    """An SFTP server: its host key is pinned, a different one is refused."""

    host: str = Field(pattern=r"^[A-Za-z0-9.:\[\]-]{1,253}$")
    port: int = Field(default=22, ge=1, le=65535)
    username: str = Field(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")
    host_key: str = Field(pattern=r"^(ssh|ecdsa)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+$",
                          description="The server's public host key, `TYPE BASE64`.")
    private_key: str = Field(description="The client's private key (OpenSSH or PEM).")


class SftpPreparePayload(Model):
    endpoint: SftpEndpoint
    path: AbsPath
    subdirs: list[FileName] = Field(default_factory=list)


class SftpRegisterPayload(Model):
    """Download `url`, verify it here, then store it on the SFTP server."""

    endpoint: SftpEndpoint
    url: str = Field(pattern=r"^https?://[^\s/]+")
    remote_dir: AbsPath
    file_name: FileName
    expected_sha256: str | None = Field(default=None, pattern=SHA256_RE)
    expected_format: ImageFormat | None = None


class SftpDownloadPayload(Model):
    """Copy a stored image from the SFTP server into `dest_dir`, verified."""

    endpoint: SftpEndpoint
    remote_path: AbsPath
    dest_dir: StorePath
    file_name: FileName
    expected_sha256: str = Field(pattern=SHA256_RE)
    expected_format: ImageFormat


class SftpUploadPayload(Model):
    """Copy a local file to the SFTP server, verified there before it gets its name."""

    endpoint: SftpEndpoint
    local_path: StorePath
    remote_dir: AbsPath
    file_name: FileName


class UploadResult(Model):
    path: str
    size: int
    sha256: str
    capacity: FsCapacity


class SftpDeletePayload(Model):
    endpoint: SftpEndpoint
    remote_dir: AbsPath
    file_name: FileName


S3_KEY = r"^[A-Za-z0-9][A-Za-z0-9/._-]{0,900}$"


class S3Endpoint(Model):
    endpoint_url: str = Field(pattern=r"^https?://[^\s/]+")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    access_key: str = Field(min_length=1, max_length=128)
    secret_key: str = Field(min_length=1, max_length=256)


class S3PreparePayload(Model):
    endpoint: S3Endpoint


class S3RegisterPayload(Model):
    """Download `url`, verify it here, then store it as object `key`."""

    endpoint: S3Endpoint
    url: str = Field(pattern=r"^https?://[^\s/]+")
    key: str = Field(pattern=S3_KEY)
    expected_sha256: str | None = Field(default=None, pattern=SHA256_RE)
    expected_format: ImageFormat | None = None


class S3DownloadPayload(Model):
    endpoint: S3Endpoint
    key: str = Field(pattern=S3_KEY)
    dest_dir: StorePath
    file_name: FileName
    expected_sha256: str = Field(pattern=SHA256_RE)
    expected_format: ImageFormat


class S3UploadPayload(Model):
    endpoint: S3Endpoint
    local_path: StorePath
    key: str = Field(pattern=S3_KEY)


class S3DeletePayload(Model):
    endpoint: S3Endpoint
    key: str = Field(pattern=S3_KEY)


MountOption = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+(=[A-Za-z0-9_.:-]+)?$")]


class NfsMountPayload(Model):
    """Mount `server:export` on `mount_point` with the kernel NFS client for `user` (a
    storage): mounts are counted per export, and the last user's unmount unmounts."""

    server: HostName
    export: AbsPath
    mount_point: AbsPath
    options: list[MountOption] = Field(default_factory=list)
    user: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")


class NfsMountResult(Model):
    mount_point: str
    users: list[str]


class NfsUnmountPayload(Model):
    mount_point: AbsPath
    user: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")


class SleepPayload(Model):
    """A task that only waits: lets operators and tests check the task machinery."""

    seconds: float = Field(ge=0, le=3600)


class Command:
    """The protocol's command table: name -> (payload model, result model)."""

    HOST_INFO = "host_info"
    PREPARE_STORAGE = "prepare_storage"
    DOWNLOAD_IMAGE = "download_image"
    COPY_IMAGE = "copy_image"
    CREATE_VOLUME = "create_volume"
    DELETE_FILE = "delete_file"
    SLEEP = "sleep"
    EXPORT_LUN = "export_lun"
    UNEXPORT_LUN = "unexport_lun"
    GRANT_LUN = "grant_lun"
    REVOKE_LUN = "revoke_lun"
    CONNECT_VOLUME = "connect_volume"
    DISCONNECT_VOLUME = "disconnect_volume"
    SFTP_PREPARE = "sftp_prepare"
    SFTP_REGISTER = "sftp_register"
    SFTP_DOWNLOAD = "sftp_download"
    SFTP_UPLOAD = "sftp_upload"
    SFTP_DELETE = "sftp_delete"
    S3_PREPARE = "s3_prepare"
    S3_REGISTER = "s3_register"
    S3_DOWNLOAD = "s3_download"
    S3_UPLOAD = "s3_upload"
    S3_DELETE = "s3_delete"
    NFS_MOUNT = "nfs_mount"
    NFS_UNMOUNT = "nfs_unmount"


class EmptyPayload(Model):
    pass


class SleepResult(Model):
    slept: float


COMMAND_MODELS: dict[str, tuple[type[Model], type[Model]]] = {
    Command.HOST_INFO: (EmptyPayload, HostInfoResult),
    Command.PREPARE_STORAGE: (PrepareStoragePayload, PrepareStorageResult),
    Command.DOWNLOAD_IMAGE: (DownloadImagePayload, ImageFacts),
    Command.COPY_IMAGE: (CopyImagePayload, ImageFacts),
    Command.CREATE_VOLUME: (CreateVolumePayload, VolumeFacts),
    Command.DELETE_FILE: (DeleteFilePayload, DeleteFileResult),
    Command.SLEEP: (SleepPayload, SleepResult),
    Command.EXPORT_LUN: (ExportLunPayload, ExportLunResult),
    Command.UNEXPORT_LUN: (UnexportLunPayload, DeleteFileResult),
    Command.GRANT_LUN: (LunAccessPayload, LunAccessResult),
    Command.REVOKE_LUN: (LunAccessPayload, LunAccessResult),
    Command.CONNECT_VOLUME: (ConnectVolumePayload, ConnectVolumeResult),
    Command.DISCONNECT_VOLUME: (ConnectVolumePayload, EmptyPayload),
    Command.SFTP_PREPARE: (SftpPreparePayload, PrepareStorageResult),
    Command.SFTP_REGISTER: (SftpRegisterPayload, ImageFacts),
    Command.SFTP_DOWNLOAD: (SftpDownloadPayload, ImageFacts),
    Command.SFTP_UPLOAD: (SftpUploadPayload, UploadResult),
    Command.SFTP_DELETE: (SftpDeletePayload, DeleteFileResult),
    Command.S3_PREPARE: (S3PreparePayload, PrepareStorageResult),
    Command.S3_REGISTER: (S3RegisterPayload, ImageFacts),
    Command.S3_DOWNLOAD: (S3DownloadPayload, ImageFacts),
    Command.S3_UPLOAD: (S3UploadPayload, UploadResult),
    Command.S3_DELETE: (S3DeletePayload, DeleteFileResult),
    Command.NFS_MOUNT: (NfsMountPayload, NfsMountResult),
    Command.NFS_UNMOUNT: (NfsUnmountPayload, NfsMountResult),
}
