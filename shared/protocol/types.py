"""Field types and validation rules of the protocol, each stated once: both the agent's
payload models and the controller's storage settings use them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.names import (
    validate_abs_path,
    validate_file_name,
    validate_host,
    validate_iqn,
    validate_store_path,
)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class EmptyPayload(Model):
    pass


TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SHA256_RE = r"^[0-9a-f]{64}$"
TaskId = Annotated[str, Field(pattern=TASK_ID_RE.pattern)]

ImageFormat = Literal["qcow2", "raw"]
Sha256 = Annotated[str, Field(pattern=SHA256_RE)]
AbsPath = Annotated[str, AfterValidator(validate_abs_path)]
# A storage file or directory: an absolute path, or an nfs:// URL (libnfs access).
StorePath = Annotated[str, AfterValidator(validate_store_path)]
FileName = Annotated[str, AfterValidator(validate_file_name)]
Iqn = Annotated[str, AfterValidator(validate_iqn)]
HostName = Annotated[str, AfterValidator(validate_host)]
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+[^\s]*$", max_length=4096)]

VolumeGroup = Annotated[str, Field(pattern=r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$")]
IscsiPortal = Annotated[str, Field(pattern=r"^[0-9A-Za-z.\[\]:-]+:\d{1,5}$",
                                   description="HOST:PORT initiators log in at.")]
Port = Annotated[int, Field(ge=1, le=65535)]
SshHost = Annotated[str, Field(pattern=r"^[A-Za-z0-9.:\[\]-]{1,253}$")]
SshUser = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")]
SshHostKey = Annotated[str, Field(pattern=r"^(ssh|ecdsa)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+$",
                                  description="The server's public host key, `TYPE BASE64`.")]
S3Bucket = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
S3Region = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,32}$")]
S3AccessKey = Annotated[str, Field(min_length=1, max_length=128)]


class FsCapacity(Model):
    """What statvfs says of the filesystem holding a storage directory."""

    total: int
    available: int
