"""The `s3` backup storage type: lifecycle and image driver. The secret key is a
credential: sealed in the database, never returned, handed to an agent only inside the
command that needs it. Object stores report no capacity."""

from __future__ import annotations

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
from shared.protocol.s3 import (
    S3_DELETE,
    S3_PREPARE,
    S3_REGISTER,
    S3DeletePayload,
    S3Endpoint,
    S3PreparePayload,
    S3RegisterPayload,
)
from shared.protocol.types import FsCapacity


class S3Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint_url: str = Field(pattern=r"^https?://[^\s/]+")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    access_key: str = Field(min_length=1, max_length=128)
    secret_key: str = Field(min_length=1, max_length=256, description="Secret; never shown.")
    prefix: str = Field(default="strata/", pattern=r"^([A-Za-z0-9._-]+/)*$",
                        description="Key prefix for everything Strata stores here.")


def endpoint(ctx: JobContext, store: BackupStorage) -> S3Endpoint:
    c = store.config
    return S3Endpoint(endpoint_url=c["endpoint_url"], bucket=c["bucket"], region=c["region"],
                      access_key=c["access_key"], secret_key=ctx.secrets.open(c["secret_key"]))


def object_key(store: BackupStorage, name: str) -> str:
    return f"{store.config['prefix']}images/{name}"


class S3LifeCycle(DataStoreLifeCycle):
    config_model = S3Config
    secret_fields = frozenset({"secret_key"})

    async def attach(self, ctx: JobContext, store: PrimaryStorage | BackupStorage,
                     host: Host) -> FsCapacity:
        assert isinstance(store, BackupStorage)
        result = await ctx.call(host, S3_PREPARE, S3PreparePayload(endpoint=endpoint(ctx, store)),
                                step=f"prepare-{store.id}-{host.id}")
        return result.capacity


class S3Driver(ImageDataStoreDriver):
    def image_dir(self, store: BackupStorage) -> str:
        return object_key(store, "")

    async def register(self, ctx: JobContext, store: BackupStorage, image: Image,
                       host: Host) -> ImageFacts:
        payload = S3RegisterPayload(
            endpoint=endpoint(ctx, store), url=image.url, key=object_key(store, image.id),
            expected_sha256=image.declared_sha256,
            expected_format=image.declared_format,  # type: ignore[arg-type]
        )
        return await ctx.call(host, S3_REGISTER, payload, step="download", span=(0, 99))

    async def delete(self, ctx: JobContext, store: BackupStorage, ref: ImageStoreRef,
                     host: Host) -> None:
        payload = S3DeletePayload(endpoint=endpoint(ctx, store),
                                  key=object_key(store, ref.image_id))
        await ctx.call(host, S3_DELETE, payload, step=f"delete-{ref.id}")


PROVIDER = DataStoreProvider(
    type="s3", role=StorageRole.BACKUP, lifecycle=S3LifeCycle(), driver=S3Driver(),
    description="objects in an S3 bucket (any S3-compatible endpoint)",
)
