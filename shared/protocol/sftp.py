"""SFTP backup storage: prepare the store, register images into it, copy images out of
it into a cache, upload files to it, delete from it."""

from __future__ import annotations

from pydantic import Field

from shared.protocol.command import Command
from shared.protocol.files import (
    ChunkManifest,
    DeleteFileResult,
    ImageFacts,
    PrepareStorageResult,
    UploadResult,
)
from shared.protocol.objects import ObjectDir, ObjectList
from shared.protocol.types import (
    AbsPath,
    FileName,
    HttpUrl,
    ImageFormat,
    Model,
    Port,
    Sha256,
    SshHost,
    SshHostKey,
    SshUser,
    StorePath,
)


class SftpEndpoint(Model):
    """An SFTP server: its host key is pinned, a different one is refused."""

    host: SshHost
    port: Port = 22
    username: SshUser
    host_key: SshHostKey
    private_key: str = Field(description="The client's private key (OpenSSH or PEM).")


class SftpPreparePayload(Model):
    endpoint: SftpEndpoint
    path: AbsPath
    subdirs: list[FileName] = Field(default_factory=list)


class SftpRegisterPayload(Model):
    """Download `url`, verify it here, then store it on the SFTP server."""

    endpoint: SftpEndpoint
    url: HttpUrl
    remote_dir: AbsPath
    file_name: FileName
    expected_sha256: Sha256 | None = None
    expected_format: ImageFormat | None = None


class SftpDownloadPayload(Model):
    """Copy a stored image from the SFTP server into `dest_dir`, verified (chunk by chunk
    when given a `manifest`, as in `CopyImagePayload`)."""

    endpoint: SftpEndpoint
    remote_path: AbsPath
    dest_dir: StorePath
    file_name: FileName
    expected_sha256: Sha256
    expected_format: ImageFormat
    manifest: ChunkManifest | None = None


class SftpUploadPayload(Model):
    """Copy a local file to the SFTP server, verified there before it gets its name;
    `flatten` and `src_format` as in `CopyImagePayload`."""

    endpoint: SftpEndpoint
    local_path: StorePath
    remote_dir: AbsPath
    file_name: FileName
    flatten: bool = False
    src_format: ImageFormat = "qcow2"


class SftpDeletePayload(Model):
    endpoint: SftpEndpoint
    remote_dir: AbsPath
    file_name: FileName


SFTP_PREPARE = Command("sftp_prepare", SftpPreparePayload, PrepareStorageResult, timeout=120,
                       idempotent=True)
SFTP_REGISTER = Command("sftp_register", SftpRegisterPayload, ImageFacts, idempotent=True)
SFTP_DOWNLOAD = Command("sftp_download", SftpDownloadPayload, ImageFacts, idempotent=True)
SFTP_UPLOAD = Command("sftp_upload", SftpUploadPayload, UploadResult, idempotent=True)
SFTP_DELETE = Command("sftp_delete", SftpDeletePayload, DeleteFileResult, timeout=300,
                      idempotent=True)


class SftpListPayload(Model):
    """The regular files directly in each of `dirs` under `root` on the server."""

    endpoint: SftpEndpoint
    root: AbsPath
    dirs: list[ObjectDir] = Field(min_length=1, max_length=16)


SFTP_LIST = Command("sftp_list", SftpListPayload, ObjectList, timeout=300, idempotent=True)
