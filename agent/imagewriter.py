"""Writes an incoming image under a temporary name, hashing as it goes, and publishes it
only once size, sha256 and `qemu-img info` have been verified. One piece for every
source (HTTP download, a directory store, later SFTP and S3)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from typing import IO

from agent import fsops, imagecheck
from agent.qemuimg import QemuImg
from shared.errors import ChecksumMismatch
from shared.protocol import ImageFacts

ProgressCallback = Callable[[float], None]


class VerifiedImageWriter:
    def __init__(
        self, qemu_img: QemuImg, dest_dir: str, file_name: str, *,
        expected_sha256: str | None, expected_format: str | None,
        expected_size: int | None = None, progress: ProgressCallback | None = None,
    ) -> None:
        self._qemu_img = qemu_img
        self.dest_dir = dest_dir
        self.final = os.path.join(dest_dir, file_name)
        self.tmp = fsops.temp_path(dest_dir, file_name)
        self._expected_sha256 = expected_sha256
        self._expected_format = expected_format
        self.expected_size = expected_size
        self._progress = progress
        self._hash = hashlib.sha256()
        self.size = 0
        self._file: IO[bytes] | None = None

    async def write_all(self, chunks: AsyncIterator[bytes]) -> ImageFacts:
        """Consumes the source, then verifies and publishes; on any failure the temporary
        file is removed, so nothing half-made is left behind."""
        try:
            self._file = await asyncio.to_thread(self._open)
            await self._pipeline(chunks)
            self._file.close()
            return await self._verify_and_publish()
        finally:
            if self._file is not None and not self._file.closed:
                self._file.close()
            await asyncio.to_thread(fsops.remove_quietly, self.tmp)

    def _open(self) -> IO[bytes]:
        os.makedirs(self.dest_dir, exist_ok=True)
        return open(self.tmp, "xb")

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
                assert self._file is not None
                await asyncio.gather(asyncio.to_thread(self._file.write, chunk),
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
        info = await imagecheck.inspect(self._qemu_img, self.tmp, self._expected_format)
        await asyncio.to_thread(fsops.publish, self.tmp, self.final)
        capacity = await asyncio.to_thread(fsops.capacity, self.dest_dir)
        return ImageFacts(
            path=self.final, size=self.size, sha256=digest, format=info["format"],
            virtual_size=info["virtual-size"], capacity=capacity,
        )
