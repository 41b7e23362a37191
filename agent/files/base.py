"""The file operations commands need on a storage, whatever reaches it: a local (or
kernel-mounted) directory, or an NFS export through libnfs.

Implementations supply blocking primitives; `FileStore` runs them in the storage's lane
and turns OS errors into Strata errors that name the path.
"""

from __future__ import annotations

import abc
import asyncio
import errno
import os
import posixpath
import secrets
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from agent import fsops
from agent.files.lane import Lane
from shared.errors import Conflict, NotFound, OperationFailed, StrataError, Timeout
from shared.protocol.types import FsCapacity

T = TypeVar("T")


class SyncReader(abc.ABC):
    size: int

    @abc.abstractmethod
    def read(self, n: int) -> bytes: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class SyncWriter(abc.ABC):
    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None:
        """Makes what was written durable and closes."""

    @abc.abstractmethod
    def close(self) -> None:
        """Closes without a promise of durability (the file is being abandoned)."""


def storage_error(exc: OSError, what: str) -> StrataError:
    detail = f"{what}: {exc.strerror or exc}"
    if exc.errno == errno.ENOENT:
        return NotFound(detail)
    if exc.errno == errno.EEXIST:
        return Conflict(detail)
    if exc.errno == errno.ETIMEDOUT:
        return OperationFailed(detail, code="storage_unresponsive")
    return OperationFailed(detail, code="storage_error")


# Enough of a file's head to read a qcow2 header's magic and virtual size.
HEAD_SIZE = 32


@dataclass(frozen=True)
class FileStat:
    """A regular file found in a directory: its length, the bytes its blocks take, and
    its first HEAD_SIZE bytes."""

    name: str
    size: int
    allocated: int
    head: bytes


class FileStore(abc.ABC):
    """A storage's files. Paths are what the controller sends: absolute paths, or
    `nfs://` URLs for a storage reached through libnfs."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        # Directories whose heartbeat is in a thread now, and since when.
        self._beating: dict[str, float] = {}

    async def _run(self, what: str, fn: Callable[..., T], *args: object) -> T:
        try:
            return await self.lane.run(fn, *args)
        except OSError as exc:
            raise storage_error(exc, what) from None

    # Blocking primitives.
    @abc.abstractmethod
    def _makedirs(self, path: str) -> None: ...

    @abc.abstractmethod
    def _lexists(self, path: str) -> bool: ...

    @abc.abstractmethod
    def _is_file(self, path: str) -> bool: ...

    @abc.abstractmethod
    def _open_read(self, path: str) -> SyncReader: ...

    @abc.abstractmethod
    def _create(self, path: str) -> SyncWriter: ...

    @abc.abstractmethod
    def _publish(self, tmp: str, final: str) -> None:
        """Makes `tmp` durable and visible as `final`, never overwriting; removes `tmp`."""

    @abc.abstractmethod
    def _move(self, root: str, src: str, dst: str) -> None:
        """Moves regular file `src` to `dst` (both relative to `root`, on one filesystem),
        never overwriting: a hard link, then the old name removed. A missing `src`, or
        one that is no regular file, is NotFound."""

    @abc.abstractmethod
    def _remove(self, path: str) -> bool: ...

    @abc.abstractmethod
    def _listdir(self, path: str) -> list[str]: ...

    @abc.abstractmethod
    def _capacity(self, path: str) -> FsCapacity: ...

    @abc.abstractmethod
    def _scan(self, path: str) -> list[FileStat]:
        """The regular files directly in directory `path` (none if it is missing)."""

    # What commands call.
    async def makedirs(self, path: str) -> None:
        await self._run(f"cannot create directory {path}", self._makedirs, path)

    async def lexists(self, path: str) -> bool:
        return await self._run(f"cannot look up {path}", self._lexists, path)

    async def is_file(self, path: str) -> bool:
        return await self._run(f"cannot look up {path}", self._is_file, path)

    async def open_read(self, path: str) -> FileReader:
        return FileReader(self, await self._run(f"cannot open {path}", self._open_read, path),
                          path)

    async def create(self, path: str) -> FileWriter:
        return FileWriter(self, await self._run(f"cannot create {path}", self._create, path),
                          path)

    async def publish(self, tmp: str, final: str) -> None:
        try:
            await self._run(f"cannot publish {final}", self._publish, tmp, final)
        except Conflict:
            raise Conflict(f"{final} already exists; a ready object is never "
                           "overwritten") from None

    async def publish_bytes(self, tmp: str, final: str, data: bytes) -> None:
        """Writes a small file whole at `tmp` and publishes it as `final` (durably, never
        overwriting), in one trip to the storage's lane; `tmp` is gone either way."""

        def write_and_publish() -> None:
            writer = self._create(tmp)
            try:
                writer.write(data)
            finally:
                writer.close()
            try:
                self._publish(tmp, final)
            finally:
                self._remove(tmp)

        try:
            await self._run(f"cannot publish {final}", write_and_publish)
        except Conflict:
            raise Conflict(f"{final} already exists; a ready object is never "
                           "overwritten") from None

    async def read_small(self, path: str, limit: int) -> bytes | None:
        """A whole file of at most `limit` bytes, or None when it is larger."""

        def read() -> bytes | None:
            reader = self._open_read(path)
            try:
                if reader.size > limit:
                    return None
                data = bytearray()
                while len(data) <= limit and (chunk := reader.read(limit + 1 - len(data))):
                    data += chunk
                return bytes(data) if len(data) <= limit else None
            finally:
                reader.close()

        return await self._run(f"cannot read {path}", read)

    async def move(self, root: str, src: str, dst: str) -> None:
        await self._run(f"cannot move {src} to {dst}", self._move, root, src, dst)

    async def remove(self, path: str) -> bool:
        """True when the file existed; a missing file is not an error."""
        return await self._run(f"cannot remove {path}", self._remove, path)

    async def capacity(self, path: str) -> FsCapacity:
        return await self._run(f"cannot measure {path}", self._capacity, path)

    async def scan(self, directory: str) -> list[FileStat]:
        return await self._run(f"cannot list {directory}", self._scan, directory)

    async def sweep_temp_files(self, directory: str,
                               running_tasks: Callable[[], Collection[str]],
                               elsewhere: Collection[str] = (),
                               ended_here: Callable[[str], bool] | None = None) -> list[str]:
        """Removes leftovers of interrupted work; called before a storage is (re)used.
        The running tasks are asked after listing: a file listed was made before, so if
        its task is not running then, it has ended and left the file behind. See
        `fsops.is_leftover` for `elsewhere` and `ended_here`."""
        names = await self._run(f"cannot list {directory}", self._listdir, directory)
        running = running_tasks()
        removed = []
        for name in names:
            if fsops.is_leftover(name, running, elsewhere, ended_here):
                path = posixpath.join(directory, name)
                if await self.is_file(path):
                    await self.remove(path)
                    removed.append(path)
        return removed

    async def write_probe(self, directory: str) -> None:
        """Proves the storage takes a durable write here (a heartbeat file)."""
        probe = fsops.temp_path(directory, "write-probe")
        writer = await self.create(probe)
        try:
            await writer.write(b"strata")
            await writer.commit()
        finally:
            await writer.close()
            await self.remove(probe)

    async def heartbeat(self, directory: str, timeout: float,
                        mount_point: str | None = None) -> None:
        """Writes a heartbeat file in `directory`, reads it back and removes it, in one
        thread of the storage's lane, waiting at most `timeout` seconds. A hung server
        keeps that thread blocked: until it returns, another heartbeat of the directory
        fails at once rather than take a second thread, so probes never pile up.
        `mount_point`: the kernel NFS mount `directory` must be on; without it mounted,
        a heartbeat would only prove the bare directory beneath."""
        since = self._beating.get(directory)
        if since is not None:
            raise Timeout(f"{directory}: the last heartbeat has been blocked for "
                          f"{time.monotonic() - since:.0f}s", code="storage_unresponsive")
        self._beating[directory] = time.monotonic()

        def beat() -> None:
            try:
                if mount_point is not None and not os.path.ismount(mount_point):
                    raise OSError(errno.ENOTCONN, f"{mount_point} is not mounted")
                self._beat(fsops.temp_path(directory, "heartbeat"))
            finally:
                self._beating.pop(directory, None)

        future = self.lane.submit(beat)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise Timeout(f"{directory}: no heartbeat within {timeout:g}s; the storage "
                          "may be down or unreachable", code="storage_unresponsive") from None
        except OSError as exc:
            raise storage_error(exc, f"heartbeat in {directory}") from None

    def _beat(self, path: str) -> None:
        token = secrets.token_bytes(16)
        writer = self._create(path)
        try:
            try:
                writer.write(token)
            except BaseException:
                writer.close()
                raise
            writer.commit()
            reader = self._open_read(path)
            try:
                back = reader.read(64)
            finally:
                reader.close()
        finally:
            self._remove(path)
        if back != token:
            raise OSError(errno.EIO, "the heartbeat read back differs from what was written")


class FileReader:
    def __init__(self, store: FileStore, raw: SyncReader, path: str) -> None:
        self._store, self._raw, self.path = store, raw, path
        self.size = raw.size

    async def read(self, n: int) -> bytes:
        return await self._store._run(f"cannot read {self.path}", self._raw.read, n)

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        while chunk := await self.read(size):
            yield chunk

    async def close(self) -> None:
        await self._store._run(f"cannot close {self.path}", self._raw.close)


class FileWriter:
    def __init__(self, store: FileStore, raw: SyncWriter, path: str) -> None:
        self._store, self._raw, self.path = store, raw, path
        self._closed = False

    async def write(self, data: bytes) -> None:
        await self._store._run(f"cannot write {self.path}", self._raw.write, data)

    async def commit(self) -> None:
        self._closed = True
        await self._store._run(f"cannot sync {self.path}", self._raw.commit)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._store._run(f"cannot close {self.path}", self._raw.close)
