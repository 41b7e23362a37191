"""Images into a store or a cache: from an http(s) URL, or from a directory store."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable

import aiohttp

from agent import fsops
from agent.commands.registry import handles
from agent.images import urlpolicy
from agent.images.writer import VerifiedImageWriter
from agent.services import AgentServices
from shared.errors import InvalidInput, OperationFailed
from shared.protocol.files import (
    COPY_IMAGE,
    DOWNLOAD_IMAGE,
    CopyImagePayload,
    DownloadImagePayload,
    ImageFacts,
)
from shared.protocol.types import ImageFormat

CHUNK = 4 << 20


@handles(DOWNLOAD_IMAGE)
async def download_image(
    svc: AgentServices, payload: DownloadImagePayload, progress: Callable[[float], None]
) -> ImageFacts:
    """Only from where the agent's URL policy allows, checked on every redirect hop."""
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=120)
    shown = urlpolicy.redacted(payload.url)
    try:
        async with urlpolicy.get(svc.http, svc.url_policy, payload.url, timeout) as resp:
            if resp.status != 200:
                raise OperationFailed(
                    f"download of {shown} failed: HTTP {resp.status} {resp.reason}",
                    code="download_failed",
                )
            if resp.content_length and resp.content_length > svc.config.max_image_size:
                raise InvalidInput(
                    f"image is {resp.content_length} bytes, over the limit of "
                    f"{svc.config.max_image_size}"
                )
            writer = VerifiedImageWriter(
                svc.inspector, svc.files, payload.dest_dir,
                payload.file_name,
                expected_sha256=payload.expected_sha256,
                expected_format=payload.expected_format,
                expected_size=resp.content_length, progress=progress,
            )
            return await writer.write_all(_limited(resp.content.iter_chunked(CHUNK),
                                                   svc.config.max_image_size))
    except aiohttp.ClientError as exc:
        raise OperationFailed(
            f"download of {shown} failed: {exc}", code="download_failed"
        ) from exc


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise InvalidInput(f"image is larger than the limit of {limit} bytes")
        yield chunk


@handles(COPY_IMAGE)
async def copy_image(
    svc: AgentServices, payload: CopyImagePayload, progress: Callable[[float], None]
) -> ImageFacts:
    async with flattened(svc, payload.src_path, payload.flatten, progress,
                          payload.src_format) as (path, rest):
        src = await svc.files.open_read(path)
        try:
            writer = VerifiedImageWriter(
                svc.inspector, svc.files, payload.dest_dir,
                payload.file_name, expected_sha256=payload.expected_sha256,
                expected_format=payload.expected_format, expected_size=src.size,
                progress=rest, manifest=payload.manifest,
            )
            return await writer.write_all(src.chunks(CHUNK))
        finally:
            await src.close()


STAGING = "staging"


@contextlib.asynccontextmanager
async def flattened(
    svc: AgentServices, path: str, flatten: bool, progress: Callable[[float], None],
    src_format: ImageFormat = "qcow2",
) -> AsyncIterator[tuple[str, Callable[[float], None]]]:
    """`path` as it is, or with `flatten`, one qcow2 file of all its chain reads (a
    snapshot or a linked clone becoming a backup or an image; a raw LUN snapshot, of
    `src_format` raw, one too), made by `qemu-img convert`
    under a temporary name in the agent's staging directory and removed whatever
    happens. Yields the file to read and the progress callback for the rest of the copy
    (the conversion takes the first half)."""
    if not flatten:
        yield path, progress
        return
    staging = os.path.join(svc.config.state_dir, STAGING)
    local = fsops.temp_path(staging, os.path.basename(path))
    files = svc.files.for_path(local)
    try:
        await files.makedirs(staging)
        await svc.qemu_img.convert(path, local, src_fmt=src_format, dest_fmt="qcow2",
                                   progress=lambda pct: progress(pct / 2))
        yield local, lambda pct: progress(50 + pct / 2)
    finally:
        await files.remove(local)


@contextlib.asynccontextmanager
async def staged_download(
    svc: AgentServices, url: str, file_name: str, expected_sha256: str | None,
    expected_format: ImageFormat | None, progress: Callable[[float], None],
) -> AsyncIterator[tuple[str, ImageFacts]]:
    """Downloads and verifies an image in the agent's staging directory (qemu-img inspects
    a local file), for a store that is not a local directory; removed whatever happens."""
    staging = os.path.join(svc.config.state_dir, STAGING)
    local = os.path.join(staging, file_name)
    files = svc.files.for_path(local)
    await files.remove(local)
    facts = await download_image(svc, DownloadImagePayload(
        url=url, dest_dir=staging, file_name=file_name, expected_sha256=expected_sha256,
        expected_format=expected_format), progress)
    try:
        yield local, facts
    finally:
        await files.remove(local)
