"""Files on an NFS export reached through libnfs, addressed as `nfs://server/path` URLs,
the same URLs QEMU opens volumes and backing files by.

As QEMU does, each call mounts the directory that holds its file (NFSv3 servers let a
client mount any directory under an export), so a path needs no separate export part.
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import stat
from collections.abc import Callable

from agent.files.base import HEAD_SIZE, FileStat, FileStore, SyncReader, SyncWriter
from agent.files.lane import Lane
from agent.nfs.libnfs import NfsContext, NfsError, NfsFileHandle
from shared.names import split_nfs_url
from shared.protocol.types import FsCapacity


class NfsOpenFile:
    """An open file with the context (the mount) it was opened through; both are closed
    together, and the context too when opening fails."""

    def __init__(self, ctx: NfsContext, open_file: Callable[[], NfsFileHandle]) -> None:
        self._ctx = ctx
        try:
            self._fh = open_file()
        except BaseException:
            ctx.close()
            raise
        self._offset = 0

    def close(self) -> None:
        try:
            self._fh.close()
        finally:
            self._ctx.close()


class NfsReader(NfsOpenFile, SyncReader):
    def __init__(self, ctx: NfsContext, name: str) -> None:
        super().__init__(ctx, lambda: ctx.open(name))
        self.size = self._fh.size

    def read(self, n: int) -> bytes:
        data = self._fh.pread(self._offset, n)
        self._offset += len(data)
        return data


class NfsWriter(NfsOpenFile, SyncWriter):
    def __init__(self, ctx: NfsContext, name: str) -> None:
        super().__init__(ctx, lambda: ctx.create(name))

    def write(self, data: bytes) -> None:
        self._fh.pwrite(self._offset, data)
        self._offset += len(data)

    def commit(self) -> None:
        try:
            self._fh.fsync()
        finally:
            self.close()


class NfsFileStore(FileStore):
    def __init__(self, lane: Lane, rpc_timeout: float) -> None:
        super().__init__(lane)
        self._rpc_timeout = rpc_timeout

    def _mount_parent(self, url: str) -> tuple[NfsContext, str]:
        """A context on the directory holding `url`, and the file's name in it."""
        server, path = split_nfs_url(url)
        parent, name = posixpath.split(path)
        return NfsContext(server, parent, timeout=self._rpc_timeout), "/" + name

    def _mount_dir(self, url: str) -> NfsContext:
        server, path = split_nfs_url(url)
        return NfsContext(server, path, timeout=self._rpc_timeout)

    def _makedirs(self, path: str) -> None:
        try:
            ctx, name = self._mount_parent(path)
        except NfsError as exc:
            parent = posixpath.dirname(path)
            if exc.errno != errno.ENOENT or split_nfs_url(parent)[1] == "/":
                raise
            self._makedirs(parent)
            ctx, name = self._mount_parent(path)
        with ctx:
            try:
                ctx.mkdir(name)
            except NfsError as exc:
                if exc.errno != errno.EEXIST:
                    raise

    def _stat(self, path: str) -> tuple[bool, bool]:
        """(exists, is a regular file)."""
        try:
            ctx, name = self._mount_parent(path)
        except NfsError as exc:
            if exc.errno == errno.ENOENT:
                return False, False
            raise
        with ctx:
            try:
                return True, ctx.is_file(name)
            except NfsError as exc:
                if exc.errno == errno.ENOENT:
                    return False, False
                raise

    def _lexists(self, path: str) -> bool:
        return self._stat(path)[0]

    def _is_file(self, path: str) -> bool:
        return self._stat(path)[1]

    def _open_read(self, path: str) -> SyncReader:
        return NfsReader(*self._mount_parent(path))

    def _create(self, path: str) -> SyncWriter:
        return NfsWriter(*self._mount_parent(path))

    def _publish(self, tmp: str, final: str) -> None:
        assert posixpath.dirname(tmp) == posixpath.dirname(final)
        ctx, tmp_name = self._mount_parent(tmp)
        final_name = "/" + posixpath.basename(final)
        with ctx:
            fh = ctx.open(tmp_name)
            try:
                fh.fsync()
            finally:
                fh.close()
            try:
                ctx.link(tmp_name, final_name)
            finally:
                with contextlib.suppress(NfsError):
                    ctx.unlink(tmp_name)

    def _move(self, root: str, src: str, dst: str) -> None:
        with self._mount_dir(root) as ctx:
            if not ctx.is_file("/" + src):
                raise FileNotFoundError(errno.ENOENT, "not a regular file", src)
            ctx.link("/" + src, "/" + dst)
            ctx.unlink("/" + src)

    def _remove(self, path: str) -> bool:
        try:
            ctx, name = self._mount_parent(path)
        except NfsError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        with ctx:
            try:
                ctx.unlink(name)
            except NfsError as exc:
                if exc.errno == errno.ENOENT:
                    return False
                raise
            return True

    def _listdir(self, path: str) -> list[str]:
        with self._mount_dir(path) as ctx:
            return ctx.listdir("/")

    def _capacity(self, path: str) -> FsCapacity:
        with self._mount_dir(path) as ctx:
            st = ctx.statvfs("/")
        return FsCapacity(total=st.f_blocks * st.f_frsize, available=st.f_bavail * st.f_frsize)

    def _scan(self, path: str) -> list[FileStat]:
        """One mount of the directory for all its files; `nfs_used` is what the server
        says the file's blocks take."""
        try:
            ctx = self._mount_dir(path)
        except NfsError:
            # Servers refuse to mount a missing directory (ganesha: MNT3ERR_ACCES).
            if not self._lexists(path):
                return []
            raise
        found = []
        with ctx:
            for name in ctx.listdir("/"):
                try:
                    st = ctx.stat("/" + name)
                    if not stat.S_ISREG(st.nfs_mode):
                        continue
                    fh = ctx.open("/" + name)
                    try:
                        head = fh.pread(0, HEAD_SIZE)
                    finally:
                        fh.close()
                except NfsError as exc:
                    if exc.errno == errno.ENOENT:
                        continue  # removed since it was listed
                    raise
                found.append(FileStat(name, int(st.nfs_size), int(st.nfs_used), head))
        return found
