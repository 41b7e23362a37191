"""The `s3` backup storage type: lifecycle and image store driver. The secret key is a
credential: sealed in the database, never returned, handed to an agent only inside the
command that needs it. Object stores report no capacity."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from controller.db.models import Host, Image, ImageStoreRef
from controller.jobs.engine import JobContext
from controller.plugins.interfaces.backup import (
    IMAGES,
    STORE_DIRS,
    BackupLifeCycle,
    BackupStorageProvider,
    Folder,
    ImageStoreDriver,
)
from controller.plugins.interfaces.stores import SECRET, Backup, StoreConfig
from shared.protocol.files import ImageFacts
from shared.protocol.objects import ObjectList
from shared.protocol.s3 import (
    S3_DELETE,
    S3_LIST,
    S3_PREPARE,
    S3_REGISTER,
    S3DeletePayload,
    S3Endpoint,
    S3ListPayload,
    S3PreparePayload,
    S3RegisterPayload,
)
from shared.protocol.types import FsCapacity, HttpUrl, S3AccessKey, S3Bucket, S3Region


class S3Config(StoreConfig):
    endpoint_url: HttpUrl
    bucket: S3Bucket
    region: S3Region = "us-east-1"
    access_key: S3AccessKey
    secret_key: Annotated[str, Field(min_length=1, max_length=256), SECRET] = Field(
        description="Secret; never shown.")
    prefix: str = Field(default="strata/", pattern=r"^([A-Za-z0-9._-]+/)*$",
                        description="Key prefix for everything Strata stores here.")


def endpoint(ctx: JobContext, store: Backup[S3Config]) -> S3Endpoint:
    c = store.config
    return S3Endpoint(endpoint_url=c.endpoint_url, bucket=c.bucket, region=c.region,
                      access_key=c.access_key, secret_key=ctx.secrets.open(c.secret_key))


def object_key(store: Backup[S3Config], name: str, folder: Folder = IMAGES) -> str:
    return f"{store.config.prefix}{folder}/{name}"


class S3LifeCycle(BackupLifeCycle[S3Config]):
    async def attach(self, ctx: JobContext, store: Backup[S3Config], host: Host) -> FsCapacity:
        result = await ctx.call(host, S3_PREPARE, S3PreparePayload(endpoint=endpoint(ctx, store)),
                                step=f"prepare-{store.id}-{host.id}")
        return result.capacity


class S3Driver(ImageStoreDriver[S3Config]):
    async def register(self, ctx: JobContext, store: Backup[S3Config], image: Image,
                       host: Host) -> ImageFacts:
        payload = S3RegisterPayload(
            endpoint=endpoint(ctx, store), url=image.url, key=object_key(store, image.id),
            expected_sha256=image.declared_sha256, expected_format=image.declared_format)
        return await ctx.call(host, S3_REGISTER, payload, step="download", span=(0, 99))

    async def delete(self, ctx: JobContext, store: Backup[S3Config], ref: ImageStoreRef,
                     host: Host) -> None:
        payload = S3DeletePayload(endpoint=endpoint(ctx, store),
                                  key=object_key(store, ref.image_id))
        await ctx.call(host, S3_DELETE, payload, step=f"delete-{ref.id}")

    async def delete_file(self, ctx: JobContext, store: Backup[S3Config], folder: Folder,
                          name: str, host: Host) -> None:
        payload = S3DeletePayload(endpoint=endpoint(ctx, store),
                                  key=object_key(store, name, folder))
        await ctx.call(host, S3_DELETE, payload, step=f"delete-{folder}")

    async def list_objects(self, ctx: JobContext, store: Backup[S3Config],
                           host: Host) -> ObjectList:
        """Object stores report no capacity: the list's is None."""
        payload = S3ListPayload(endpoint=endpoint(ctx, store), prefix=store.config.prefix,
                                dirs=STORE_DIRS)
        return await ctx.call(host, S3_LIST, payload, step=f"list-{store.id}")


S3 = BackupStorageProvider(
    type="s3", description="objects in an S3 bucket (any S3-compatible endpoint)",
    config_model=S3Config, lifecycle=S3LifeCycle(), driver=S3Driver(),
)
