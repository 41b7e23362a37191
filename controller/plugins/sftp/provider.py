"""The `sftp` backup storage type: lifecycle and image driver. The client's private key
is a credential: sealed in the database, never returned, handed to an agent only
inside the command that needs it."""

from __future__ import annotations

import posixpath

from pydantic import BaseModel, ConfigDict, Field

from controller.db.models import BackupStorage, Host, Image, ImageStoreRef, PrimaryStorage
from controller.jobs.engine import JobContext
from controller.plugins.interfaces import (
    DataStoreLifeCycle,
    DataStoreProvider,
    ImageDataStoreDriver,
    StorageRole,
)
from shared.protocol.files import ImageFacts
from shared.protocol.sftp import (
    SFTP_DELETE,
    SFTP_PREPARE,
    SFTP_REGISTER,
    SftpDeletePayload,
    SftpEndpoint,
    SftpPreparePayload,
    SftpRegisterPayload,
)
from shared.protocol.types import AbsPath, FsCapacity

IMAGES = "images"


class SftpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field(pattern=r"^[A-Za-z0-9.:\[\]-]{1,253}$")
    port: int = Field(default=22, ge=1, le=65535)
    username: str = Field(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")
    path: AbsPath
    host_key: str = Field(pattern=r"^(ssh|ecdsa)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+$",
                          description="The server's public host key (`TYPE BASE64`), pinned.")
    private_key: str = Field(min_length=1, description="The client's private key (secret).")


def endpoint(ctx: JobContext, store: BackupStorage) -> SftpEndpoint:
    c = store.config
    return SftpEndpoint(host=c["host"], port=c["port"], username=c["username"],
                        host_key=c["host_key"], private_key=ctx.secrets.open(c["private_key"]))


def image_dir(store: BackupStorage) -> str:
    return posixpath.join(store.config["path"], IMAGES)


class SftpLifeCycle(DataStoreLifeCycle):
    config_model = SftpConfig
    secret_fields = frozenset({"private_key"})

    async def attach(self, ctx: JobContext, store: PrimaryStorage | BackupStorage,
                     host: Host) -> FsCapacity:
        assert isinstance(store, BackupStorage)
        payload = SftpPreparePayload(endpoint=endpoint(ctx, store), path=store.config["path"],
                                     subdirs=[IMAGES])
        result = await ctx.call(host, SFTP_PREPARE, payload, step=f"prepare-{store.id}-{host.id}")
        return result.capacity


class SftpDriver(ImageDataStoreDriver):
    def image_dir(self, store: BackupStorage) -> str:
        return image_dir(store)

    async def register(self, ctx: JobContext, store: BackupStorage, image: Image,
                       host: Host) -> ImageFacts:
        payload = SftpRegisterPayload(
            endpoint=endpoint(ctx, store), url=image.url, remote_dir=image_dir(store),
            file_name=image.id, expected_sha256=image.declared_sha256,
            expected_format=image.declared_format,  # type: ignore[arg-type]
        )
        return await ctx.call(host, SFTP_REGISTER, payload, step="download", span=(0, 99))

    async def delete(self, ctx: JobContext, store: BackupStorage, ref: ImageStoreRef,
                     host: Host) -> None:
        payload = SftpDeletePayload(endpoint=endpoint(ctx, store), remote_dir=image_dir(store),
                                    file_name=ref.image_id)
        await ctx.call(host, SFTP_DELETE, payload, step=f"delete-{ref.id}")


PROVIDER = DataStoreProvider(
    type="sftp", role=StorageRole.BACKUP, lifecycle=SftpLifeCycle(), driver=SftpDriver(),
    description="a directory on an SSH server, with a pinned host key",
)
