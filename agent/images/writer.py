"""Writes an incoming image under a temporary name, hashing as it goes, and publishes it
only once size, sha256 and the image itself (`check`) have been verified. One piece for every
source (HTTP, a directory store, SFTP, S3) and every destination (a local or mounted
directory, an NFS export through libnfs)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import posixpath
from collections.abc import AsyncIterator, Callable

from agent import fsops
from agent.files import FileStores, FileWriter
from agent.images.check import Inspector
from shared.errors import ChecksumMismatch
from shared.protocol.files import ImageFacts

ProgressCallback = Callable[[float], None]


class VerifiedImageWriter:
    def __init__(
        self, inspector: Inspector, files: FileStores, dest_dir: str, file_name: str, *,
        expected_sha256: str | None, expected_format: str | None,
        expected_size: int | None = None, progress: ProgressCallback | None = None,
    ) -> None:
        self._inspector = inspector
        self._files = files.for_path(dest_dir)
        self.dest_dir = dest_dir
        self.final = posixpath.join(dest_dir, file_name)
        self.tmp = fsops.temp_path(dest_dir, file_name)
        self._expected_sha256 = expected_sha256
        self._expected_format = expected_format
        self.expected_size = expected_size
        self._progress = progress
        self._hash = hashlib.sha256()
        self.size = 0
        self._out: FileWriter | None = None

    async def write_all(self, chunks: AsyncIterator[bytes]) -> ImageFacts:
        """Consumes the source, then verifies and publishes; on any failure the temporary
        file is removed, so nothing half-made is left behind."""
        try:
            await self._files.makedirs(self.dest_dir)
            self._out = await self._files.create(self.tmp)
            await self._pipeline(chunks)
            await self._out.commit()
            return await self._verify_and_publish()
        finally:
            if self._out is not None:
                await self._out.close()
            await self._files.remove(self.tmp)

    async def _pipeline(self, chunks: AsyncIterator[bytes]) -> None:
        """The next chunk is fetched while the current one is written and hashed, each in
        its own thread (file writes and hashlib release the GIL): the copy runs at the
        pace of its slowest stage, not of their sum."""
        source = aiter(chunks)
        pending: asyncio.Future[bytes] = asyncio.ensure_future(anext(source))
        try:
            while True:
                try:
                    chunk = await pending
                except StopAsyncIteration:
                    return
                pending = asyncio.ensure_future(anext(source))
                assert self._out is not None
                await asyncio.gather(self._out.write(chunk),
                                     asyncio.to_thread(self._hash.update, chunk))
                self.size += len(chunk)
                if self._progress and self.expected_size:
                    self._progress(min(99.0, 100.0 * self.size / self.expected_size))
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending

    async def _verify_and_publish(self) -> ImageFacts:
        digest = self._hash.hexdigest()
        if self.expected_size is not None and self.size != self.expected_size:
            raise ChecksumMismatch(
                f"received {self.size} bytes, the source announced {self.expected_size}"
            )
        if self._expected_sha256 and digest != self._expected_sha256:
            raise ChecksumMismatch(
                f"sha256 mismatch: expected {self._expected_sha256}, got {digest}"
            )
        image = await self._inspector.inspect(self.tmp, self._expected_format)
        await self._files.publish(self.tmp, self.final)
        capacity = await self._files.capacity(self.dest_dir)
        return ImageFacts(
            path=self.final, size=self.size, sha256=digest, format=image.format,
            virtual_size=image.virtual_size, capacity=capacity,
        )
