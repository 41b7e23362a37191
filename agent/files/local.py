"""Files in a directory of this host: a local disk, or a kernel NFS mount."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import IO

from agent import fsops
from agent.files.base import HEAD_SIZE, FileStat, FileStore, SyncReader, SyncWriter
from shared.protocol.types import FsCapacity


class LocalReader(SyncReader):
    def __init__(self, path: str) -> None:
        self._f: IO[bytes] = open(path, "rb")
        # Seeking, not fstat: a logical volume is a block device, of size 0 to fstat.
        self.size = self._f.seek(0, os.SEEK_END)
        self._f.seek(0)
        # Read front to back, as cp does: the kernel may read further ahead.
        os.posix_fadvise(self._f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def read(self, n: int) -> bytes:
        return self._f.read(n)

    def close(self) -> None:
        self._f.close()


class LocalWriter(SyncWriter):
    def __init__(self, path: str) -> None:
        self._f: IO[bytes] = open(path, "xb")

    def write(self, data: bytes) -> None:
        self._f.write(data)

    def commit(self) -> None:
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        finally:
            self._f.close()

    def close(self) -> None:
        self._f.close()


class LocalFileStore(FileStore):
    def _makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def _lexists(self, path: str) -> bool:
        return os.path.lexists(path)

    def _is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def _open_read(self, path: str) -> SyncReader:
        return LocalReader(path)

    def _create(self, path: str) -> SyncWriter:
        return LocalWriter(path)

    def _publish(self, tmp: str, final: str) -> None:
        fsops.publish(tmp, final)

    def _move(self, root: str, src: str, dst: str) -> None:
        source = os.path.join(root, src)
        if not stat.S_ISREG(os.lstat(source).st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file", source)
        os.link(source, os.path.join(root, dst), follow_symlinks=False)
        os.unlink(source)
        fsops.fsync_dir(os.path.dirname(os.path.join(root, dst)))
        fsops.fsync_dir(os.path.dirname(source))

    def _remove(self, path: str) -> bool:
        existed = os.path.lexists(path)
        fsops.remove_quietly(path)
        return existed

    def _listdir(self, path: str) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return os.listdir(path)
        return []

    def _capacity(self, path: str) -> FsCapacity:
        return fsops.capacity(path)

    def _scan(self, path: str) -> list[FileStat]:
        found = []
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            return []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    continue
                with open(entry.path, "rb") as f:
                    head = f.read(HEAD_SIZE)
            except FileNotFoundError:
                continue  # removed since it was listed
            found.append(FileStat(entry.name, st.st_size, st.st_blocks * 512, head))
        return found
