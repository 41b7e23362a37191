"""S3 backup storage commands: check the bucket, register images into it, copy images
out of it into a cache, upload files to it, delete from it; sha256 checked end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.commands.images import flattened, staged_download
from agent.commands.registry import handles
from agent.commands.sftp import span
from agent.images.writer import VerifiedImageWriter
from agent.services import AgentServices
from shared.errors import ChecksumMismatch
from shared.protocol.files import DeleteFileResult, ImageFacts, PrepareStorageResult, UploadResult
from shared.protocol.objects import ObjectList, StoreObject
from shared.protocol.s3 import (
    S3_DELETE,
    S3_DOWNLOAD,
    S3_LIST,
    S3_PREPARE,
    S3_REGISTER,
    S3_UPLOAD,
    S3DeletePayload,
    S3DownloadPayload,
    S3Endpoint,
    S3ListPayload,
    S3PreparePayload,
    S3RegisterPayload,
    S3UploadPayload,
)
from shared.protocol.types import FsCapacity

if TYPE_CHECKING:
    from agent.s3.store import S3Store

Progress = Callable[[float], None]
# S3 reports no capacity: zeros mean "not measured".
UNMEASURED = FsCapacity(total=0, available=0)


def _store(svc: AgentServices, endpoint: S3Endpoint) -> S3Store:
    """Large parts: fewer requests per object; a retried part still costs little. The
    store (and boto3, a third of a second to import) is loaded on first use."""
    from agent.s3.store import S3Store

    return S3Store(endpoint, part_size=svc.config.s3_part_size)


def _uri(store: S3Store, key: str) -> str:
    return f"s3://{store.bucket}/{key}"


@handles(S3_PREPARE)
async def s3_prepare(svc: AgentServices, payload: S3PreparePayload,
                     progress: Progress) -> PrepareStorageResult:
    store = _store(svc, payload.endpoint)
    await store.check()
    return PrepareStorageResult(path=_uri(store, ""), capacity=UNMEASURED)


@handles(S3_REGISTER)
async def s3_register(svc: AgentServices, payload: S3RegisterPayload,
                      progress: Progress) -> ImageFacts:
    store = _store(svc, payload.endpoint)
    async with staged_download(svc, payload.url, payload.key.rsplit("/", 1)[-1],
                               payload.expected_sha256, payload.expected_format,
                               span(progress, 0, 50)) as (local, facts):
        await store.upload(svc.files, local, payload.key,
                           span(progress, 50, 100))
    return facts.model_copy(update={"path": payload.key, "capacity": UNMEASURED})


@handles(S3_DOWNLOAD)
async def s3_download(svc: AgentServices, payload: S3DownloadPayload,
                      progress: Progress) -> ImageFacts:
    store = _store(svc, payload.endpoint)
    size, stored_sha, chunks = await store.read_chunks(payload.key)
    if stored_sha is not None and stored_sha != payload.expected_sha256:
        raise ChecksumMismatch(f"object {payload.key} says sha256 {stored_sha}, "
                               f"expected {payload.expected_sha256}")
    writer = VerifiedImageWriter(
        svc.inspector, svc.files, payload.dest_dir, payload.file_name,
        expected_sha256=payload.expected_sha256, expected_format=payload.expected_format,
        expected_size=size, progress=progress, manifest=payload.manifest)
    return await writer.write_all(chunks)


@handles(S3_UPLOAD)
async def s3_upload(svc: AgentServices, payload: S3UploadPayload,
                    progress: Progress) -> UploadResult:
    async with flattened(svc, payload.local_path, payload.flatten, progress,
                          payload.src_format) as (local, rest):
        size, digest = await _store(svc, payload.endpoint).upload(
            svc.files, local, payload.key, rest)
    return UploadResult(path=payload.key, size=size, sha256=digest.sha256,
                        manifest=digest.manifest, capacity=UNMEASURED)


@handles(S3_DELETE)
async def s3_delete(svc: AgentServices, payload: S3DeletePayload,
                    progress: Progress) -> DeleteFileResult:
    existed = await _store(svc, payload.endpoint).delete(payload.key)
    return DeleteFileResult(existed=existed, capacity=UNMEASURED)


@handles(S3_LIST)
async def s3_list(svc: AgentServices, payload: S3ListPayload,
                  progress: Progress) -> ObjectList:
    """Objects directly under each directory's prefix; paths relative to `prefix`. An
    object's size is its length; its virtual size would cost a read each, so is None."""
    store = _store(svc, payload.endpoint)
    objects = []
    for directory in payload.dirs:
        under = payload.prefix + (f"{directory.subdir}/" if directory.subdir else "")
        for key, size in await store.list_keys(under):
            if "/" not in key[len(under):]:
                objects.append(StoreObject(path=key[len(payload.prefix):], place="object",
                                           kind=directory.kind, size=size))
        objects += [StoreObject(path=key[len(payload.prefix):], place="object",
                                kind="temporary", size=0)
                    for key in await store.unfinished_uploads(under)
                    if "/" not in key[len(under):]]
    return ObjectList(objects=objects, capacity=None)
