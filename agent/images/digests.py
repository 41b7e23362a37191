"""sha256 of image files: the whole file and its chunk manifest as an image is
registered, or a copy checked chunk by chunk against the manifest it was registered
with.

One sha256 stream runs on one core (a few hundred MB/s without SHA extensions), and a
copy that waits on it runs no faster. A manifest's chunks are independent streams: a
copy checked against it hashes several chunks at once in a small pool of threads
(hashlib releases the GIL), and proves the same bytes as the whole-file sha256 does.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from shared.errors import ChecksumMismatch
from shared.protocol.files import MAX_CHUNKS, ChunkManifest

BASE_CHUNK = 64 << 20
# Threads that check chunks, shared by every copy: at most one per core, and few, since
# the copy's own reads and writes need cores too.
HASH_WORKERS = max(1, min(os.cpu_count() or 1, 4))
# Bytes received but not hashed yet that a check may hold: a chunk being hashed while
# the next arrives; past it the copy waits for the hashing.
MAX_BACKLOG = 256 << 20

_pool = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="chunk-sha256")


def chunk_size_for(size: int | None) -> int:
    """BASE_CHUNK, doubled until an image of `size` bytes has at most MAX_CHUNKS chunks
    (so a manifest stays small at any size); BASE_CHUNK when the size is unknown."""
    chunk = BASE_CHUNK
    while size is not None and size > chunk * MAX_CHUNKS:
        chunk *= 2
    return chunk


@dataclass(frozen=True)
class Digest:
    sha256: str
    manifest: ChunkManifest | None


class ImageHasher(Protocol):
    """What the verified writer feeds the bytes it writes to, in order."""

    async def update(self, data: bytes) -> None: ...

    async def result(self) -> Digest:
        """Once every byte is in: the file's digest, or ChecksumMismatch."""

    async def close(self) -> None:
        """Stops hashing what is left (the copy failed or is done)."""


class _Splitter:
    """Cuts a stream into chunk_size pieces: each slice of the data, and whether it ends
    a chunk."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.filled = 0

    def __call__(self, data: bytes) -> Iterator[tuple[memoryview, bool]]:
        view = memoryview(data)
        while view:
            piece = view[:self.chunk_size - self.filled]
            view = view[len(piece):]
            self.filled += len(piece)
            ends = self.filled == self.chunk_size
            if ends:
                self.filled = 0
            yield piece, ends


class ManifestHasher:
    """The whole-file sha256 and the chunk manifest in one pass, each stream in a thread
    of its own: the manifest takes a second core, not more time. `size`, when announced,
    sets the chunk size; a file of unknown size that outgrows MAX_CHUNKS base-size chunks
    gets no manifest (its copies are checked whole)."""

    def __init__(self, size: int | None) -> None:
        self._whole = hashlib.sha256()
        self._split = _Splitter(chunk_size_for(size))
        self._chunk = hashlib.sha256()
        self._chunks: list[str] | None = []

    async def update(self, data: bytes) -> None:
        if self._chunks is None:
            await asyncio.to_thread(self._whole.update, data)
            return
        await asyncio.gather(asyncio.to_thread(self._whole.update, data),
                             asyncio.to_thread(self._update_chunks, data))

    def _update_chunks(self, data: bytes) -> None:
        for piece, ends in self._split(data):
            self._chunk.update(piece)
            if ends:
                self._end_chunk()
                if self._chunks is None:
                    return

    def _end_chunk(self) -> None:
        assert self._chunks is not None
        self._chunks.append(self._chunk.hexdigest())
        self._chunk = hashlib.sha256()
        if len(self._chunks) > MAX_CHUNKS:
            self._chunks = None

    async def result(self) -> Digest:
        if self._split.filled and self._chunks is not None:
            self._split.filled = 0
            self._end_chunk()
        manifest = (None if self._chunks is None else
                    ChunkManifest(chunk_size=self._split.chunk_size, chunks=self._chunks))
        return Digest(self._whole.hexdigest(), manifest)

    async def close(self) -> None:
        return None


class ManifestChecker:
    """Checks a stream chunk by chunk against `manifest`, several chunks at once: each
    chunk's slices are hashed in order, one after the other, but a chunk starts as soon
    as its bytes arrive, while earlier ones are still being hashed. A chunk that differs
    fails as soon as its hashing ends. Whole, the bytes are the ones registered: their
    digest is `sha256`, the registered file's."""

    def __init__(self, sha256: str, manifest: ChunkManifest) -> None:
        self._sha256 = sha256
        self._manifest = manifest
        self._split = _Splitter(manifest.chunk_size)
        self._index = 0
        self._chunk = hashlib.sha256()
        self._last: asyncio.Future[None] | None = None
        self._steps: deque[tuple[asyncio.Future[None], int]] = deque()
        self._backlog = 0
        self._limit = min(MAX_BACKLOG, max(2, HASH_WORKERS) * manifest.chunk_size)

    async def update(self, data: bytes) -> None:
        for piece, ends in self._split(data):
            if self._index >= len(self._manifest.chunks):
                raise ChecksumMismatch(
                    f"more bytes than the manifest's {len(self._manifest.chunks)} chunks "
                    f"of {self._manifest.chunk_size} hold")
            self._last = asyncio.ensure_future(self._hash(
                self._last, self._chunk, piece, self._index if ends else None))
            self._steps.append((self._last, len(piece)))
            self._backlog += len(piece)
            if ends:
                self._index, self._chunk, self._last = self._index + 1, hashlib.sha256(), None
        while self._backlog > self._limit:
            await self._settle_oldest()

    async def _hash(self, before: asyncio.Future[None] | None, chunk: hashlib._Hash,
                    piece: memoryview, ends: int | None) -> None:
        if before is not None:
            await before
        await asyncio.get_running_loop().run_in_executor(_pool, chunk.update, piece)
        if ends is not None:
            self._check(ends, chunk)

    def _check(self, index: int, chunk: hashlib._Hash) -> None:
        expected, got = self._manifest.chunks[index], chunk.hexdigest()
        if got != expected:
            start = index * self._manifest.chunk_size
            raise ChecksumMismatch(
                f"chunk {index} (from byte {start}) has sha256 {got}, the manifest says "
                f"{expected}")

    async def _settle_oldest(self) -> None:
        step, size = self._steps.popleft()
        self._backlog -= size
        await step

    async def result(self) -> Digest:
        while self._steps:
            await self._settle_oldest()
        if self._split.filled:
            self._check(self._index, self._chunk)
            self._index += 1
        if self._index != len(self._manifest.chunks):
            raise ChecksumMismatch(
                f"received {self._index} chunks of {self._manifest.chunk_size} bytes, the "
                f"manifest has {len(self._manifest.chunks)}")
        return Digest(self._sha256, self._manifest)

    async def close(self) -> None:
        steps = [step for step, _ in self._steps]
        self._steps.clear()
        for step in steps:
            step.cancel()
        await asyncio.gather(*steps, return_exceptions=True)
