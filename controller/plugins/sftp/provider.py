"""The `sftp` backup storage type: lifecycle and image store driver. The client's private
key is a credential: sealed in the database, never returned, handed to an agent only
inside the command that needs it."""

from __future__ import annotations

import posixpath
from typing import Annotated

from pydantic import Field

from controller.db.models import Host, Image, ImageStoreRef
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.backup import (
    IMAGES,
    SNAPSHOTS,
    STORE_DIRS,
    BackupLifeCycle,
    BackupStorageProvider,
    Folder,
    ImageStoreDriver,
)
from controller.plugins.interfaces.stores import SECRET, Backup, StoreConfig
from shared.protocol.files import ImageFacts
from shared.protocol.objects import ObjectList
from shared.protocol.sftp import (
    SFTP_DELETE,
    SFTP_LIST,
    SFTP_PREPARE,
    SFTP_REGISTER,
    SftpDeletePayload,
    SftpEndpoint,
    SftpListPayload,
    SftpPreparePayload,
    SftpRegisterPayload,
)
from shared.protocol.types import AbsPath, FsCapacity, Port, SshHost, SshHostKey, SshUser


class SftpConfig(StoreConfig):
    host: SshHost
    port: Port = 22
    username: SshUser
    path: AbsPath
    host_key: SshHostKey = Field(description="The server's public host key, pinned.")
    private_key: Annotated[str, Field(min_length=1), SECRET] = Field(
        description="The client's private key (secret).")


def endpoint(ctx: JobContext, store: Backup[SftpConfig]) -> SftpEndpoint:
    c = store.config
    return SftpEndpoint(host=c.host, port=c.port, username=c.username, host_key=c.host_key,
                        private_key=ctx.secrets.open(c.private_key))


def folder_dir(store: Backup[SftpConfig], folder: Folder) -> str:
    return posixpath.join(store.config.path, folder)


def image_dir(store: Backup[SftpConfig]) -> str:
    return folder_dir(store, IMAGES)


class SftpLifeCycle(BackupLifeCycle[SftpConfig]):
    async def attach(self, ctx: JobContext, store: Backup[SftpConfig],
                     host: Host) -> FsCapacity:
        payload = SftpPreparePayload(endpoint=endpoint(ctx, store), path=store.config.path,
                                     subdirs=[IMAGES, SNAPSHOTS])
        result = await ctx.call(host, SFTP_PREPARE, payload, step=f"prepare-{store.id}-{host.id}")
        return result.capacity


class SftpDriver(ImageStoreDriver[SftpConfig]):
    async def register(self, ctx: JobContext, store: Backup[SftpConfig], image: Image,
                       host: Host) -> ImageFacts:
        payload = SftpRegisterPayload(
            endpoint=endpoint(ctx, store), url=image.url, remote_dir=image_dir(store),
            file_name=image.id, expected_sha256=image.declared_sha256,
            expected_format=image.declared_format)
        return await ctx.call(host, SFTP_REGISTER, payload, step="download", span=(0, 99))

    async def delete(self, ctx: JobContext, store: Backup[SftpConfig], ref: ImageStoreRef,
                     host: Host) -> None:
        payload = SftpDeletePayload(endpoint=endpoint(ctx, store), remote_dir=image_dir(store),
                                    file_name=ref.image_id)
        await ctx.call(host, SFTP_DELETE, payload, step=f"delete-{ref.id}")

    async def delete_file(self, ctx: JobContext, store: Backup[SftpConfig], folder: Folder,
                          name: str, host: Host) -> None:
        payload = SftpDeletePayload(endpoint=endpoint(ctx, store),
                                    remote_dir=folder_dir(store, folder), file_name=name)
        await ctx.call(host, SFTP_DELETE, payload, step=f"delete-{folder}")

    async def list_objects(self, ctx: JobContext, store: Backup[SftpConfig],
                           host: Host) -> ObjectList:
        payload = SftpListPayload(endpoint=endpoint(ctx, store), root=store.config.path,
                                  dirs=STORE_DIRS)
        return await ctx.call(host, SFTP_LIST, payload, step=f"list-{store.id}")


SFTP = BackupStorageProvider(
    type="sftp", description="a directory on an SSH server, with a pinned host key",
    config_model=SftpConfig, lifecycle=SftpLifeCycle(), driver=SftpDriver(),
)
