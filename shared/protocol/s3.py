"""S3 backup storage: check the bucket, register images into it, copy images out of it
into a cache, upload files to it, delete from it."""

from __future__ import annotations

from typing import Annotated

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
    FileName,
    HttpUrl,
    ImageFormat,
    Model,
    S3AccessKey,
    S3Bucket,
    S3Region,
    Sha256,
    StorePath,
)

S3Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9/._-]{0,900}$")]


class S3Endpoint(Model):
    endpoint_url: HttpUrl
    bucket: S3Bucket
    region: S3Region = "us-east-1"
    access_key: S3AccessKey
    secret_key: str = Field(min_length=1, max_length=256)


class S3PreparePayload(Model):
    endpoint: S3Endpoint


class S3RegisterPayload(Model):
    """Download `url`, verify it here, then store it as object `key`."""

    endpoint: S3Endpoint
    url: HttpUrl
    key: S3Key
    expected_sha256: Sha256 | None = None
    expected_format: ImageFormat | None = None


class S3DownloadPayload(Model):
    """`manifest` as in `CopyImagePayload`."""

    endpoint: S3Endpoint
    key: S3Key
    dest_dir: StorePath
    file_name: FileName
    expected_sha256: Sha256
    expected_format: ImageFormat
    manifest: ChunkManifest | None = None


class S3UploadPayload(Model):
    """`flatten` and `src_format` as in `CopyImagePayload`."""

    endpoint: S3Endpoint
    local_path: StorePath
    key: S3Key
    flatten: bool = False
    src_format: ImageFormat = "qcow2"


class S3DeletePayload(Model):
    endpoint: S3Endpoint
    key: S3Key


S3_PREPARE = Command("s3_prepare", S3PreparePayload, PrepareStorageResult, timeout=120,
                     idempotent=True)
S3_REGISTER = Command("s3_register", S3RegisterPayload, ImageFacts, idempotent=True)
S3_DOWNLOAD = Command("s3_download", S3DownloadPayload, ImageFacts, idempotent=True)
S3_UPLOAD = Command("s3_upload", S3UploadPayload, UploadResult, idempotent=True)
S3_DELETE = Command("s3_delete", S3DeletePayload, DeleteFileResult, timeout=300,
                    idempotent=True)


# ---- what a bucket holds ------------------------------------------------------------------

S3Prefix = Annotated[str, Field(pattern=r"^([A-Za-z0-9._-]+/)*$", max_length=512)]


class S3ListPayload(Model):
    """The objects under `prefix` + each of `dirs` (`strata/` + `images`), and the
    multipart uploads left unfinished there (kind temporary)."""

    endpoint: S3Endpoint
    prefix: S3Prefix = ""
    dirs: list[ObjectDir] = Field(min_length=1, max_length=16)


S3_LIST = Command("s3_list", S3ListPayload, ObjectList, timeout=300, idempotent=True)
