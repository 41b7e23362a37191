"""Writes an incoming image under a temporary name, hashing as it goes, and publishes it
only once size, sha256 and the image itself (`check`) have been verified. One piece for every
source (HTTP, a directory store, SFTP, S3) and every destination (a local or mounted
directory, an NFS export through libnfs).

Without a manifest the writer hashes the whole file, and its chunk manifest beside it
(`digests.ManifestHasher`): what a registration records. Given the manifest the image was
registered with, it checks the copy chunk by chunk, several chunks at once
(`digests.ManifestChecker`): what a cache fill sends, faster than one sha256 stream."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import AsyncIterator, Callable

from agent import fsops
from agent.files import FileStores, FileWriter
from agent.images.check import Inspector
from agent.images.digests import Digest, ImageHasher, ManifestChecker, ManifestHasher
from shared.errors import ChecksumMismatch, InvalidInput
from shared.protocol.files import ChunkManifest, ImageFacts

ProgressCallback = Callable[[float], None]


class VerifiedImageWriter:
    """`manifest`: check the copy against it, chunk by chunk, rather than hash it whole;
    it needs `expected_sha256`, the sha256 the manifest was registered with."""

    def __init__(
        self, inspector: Inspector, files: FileStores, dest_dir: str, file_name: str, *,
        expected_sha256: str | None, expected_format: str | None,
        expected_size: int | None = None, progress: ProgressCallback | None = None,
        manifest: ChunkManifest | None = None,
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
        self._hasher: ImageHasher
        if manifest is None:
            self._hasher = ManifestHasher(expected_size)
        elif expected_sha256 is None:
            raise InvalidInput("a chunk manifest checks a copy only with its expected sha256")
        else:
            self._hasher = ManifestChecker(expected_sha256, manifest)
        self.size = 0
        self._out: FileWriter | None = None

    async def write_all(self, chunks: AsyncIterator[bytes]) -> ImageFacts:
        """Consumes the source, then verifies and publishes; on any failure the temporary
        file is removed, so nothing half-made is left behind."""
        try:
            await self._files.makedirs(self.dest_dir)
            self._out = await self._files.create(self.tmp)
            await self._pipeline(chunks)
            self._check_size()
            digest = await self._commit(self._out)
            return await self._verify_and_publish(digest)
        finally:
            await self._hasher.close()
            if self._out is not None:
                await self._out.close()
            await self._files.remove(self.tmp)

    async def _pipeline(self, chunks: AsyncIterator[bytes]) -> None:
        """The next chunk is fetched while the current one is written and hashed, each in
        its own thread (file writes and hashlib release the GIL): the copy runs at the
        pace of its slowest stage, not of their sum. A manifest check may still be
        hashing earlier chunks when this returns."""
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
                await asyncio.gather(self._out.write(chunk), self._hasher.update(chunk))
                self.size += len(chunk)
                if self._progress and self.expected_size:
                    self._progress(min(99.0, 100.0 * self.size / self.expected_size))
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending

    def _check_size(self) -> None:
        if self.expected_size is not None and self.size != self.expected_size:
            raise ChecksumMismatch(
                f"received {self.size} bytes, the source announced {self.expected_size}"
            )

    async def _commit(self, out: FileWriter) -> Digest:
        """Makes the file durable while the last chunks are still being hashed; both
        must succeed."""
        committed, digest = await asyncio.gather(out.commit(), self._hasher.result(),
                                                 return_exceptions=True)
        if isinstance(committed, BaseException):
            raise committed
        if isinstance(digest, BaseException):
            raise digest
        return digest

    async def _verify_and_publish(self, digest: Digest) -> ImageFacts:
        """Checked against a manifest, `digest.sha256` is the expected one, proven chunk
        by chunk rather than computed: what the controller compares it with (the image's
        sha256) holds either way."""
        if self._expected_sha256 and digest.sha256 != self._expected_sha256:
            raise ChecksumMismatch(
                f"sha256 mismatch: expected {self._expected_sha256}, got {digest.sha256}"
            )
        image = await self._inspector.inspect(self.tmp, self._expected_format)
        await self._files.publish(self.tmp, self.final)
        capacity = await self._files.capacity(self.dest_dir)
        return ImageFacts(
            path=self.final, size=self.size, sha256=digest.sha256, format=image.format,
            virtual_size=image.virtual_size, capacity=capacity, manifest=digest.manifest,
        )
