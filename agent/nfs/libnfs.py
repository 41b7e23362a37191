"""libnfs, QEMU's userspace NFS client, reached through ctypes: files on an NFS export
without a host mount. Classes are named after libnfs's own objects (a context is one
mounted export, a file handle an open file).

Calls block; the caller runs them in a worker thread (ctypes releases the GIL during the
call). Every RPC is bounded by the context's timeout, so a dead server turns into an
`NfsError` with ETIMEDOUT rather than a thread stuck for ever.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
import threading
from typing import Any

_lib: Any = None
_lib_lock = threading.Lock()


def _load() -> Any:
    global _lib
    with _lib_lock:
        if _lib is None:
            name = ctypes.util.find_library("nfs") or "libnfs.so.13"
            try:
                lib = ctypes.CDLL(name, use_errno=True)
            except OSError as exc:
                raise NfsError(errno.ENOSYS, f"libnfs is not installed ({exc})") from None
            _declare(lib)
            _lib = lib
    return _lib


class StatVfs64(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
        "f_favail", "f_fsid", "f_flag", "f_namemax")]


class Stat64(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "nfs_dev", "nfs_ino", "nfs_mode", "nfs_nlink", "nfs_uid", "nfs_gid", "nfs_rdev",
        "nfs_size", "nfs_blksize", "nfs_blocks", "nfs_atime", "nfs_mtime", "nfs_ctime",
        "nfs_atime_nsec", "nfs_mtime_nsec", "nfs_ctime_nsec", "nfs_used")]


class DirEnt(ctypes.Structure):
    """The leading fields of `struct nfsdirent`; only the name is read."""


DirEnt._fields_ = [("next", ctypes.POINTER(DirEnt)), ("name", ctypes.c_char_p)]

_ctx, _fh, _s = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p


def _declare(lib: Any) -> None:
    sig = {
        "nfs_init_context": ([], _ctx),
        "nfs_destroy_context": ([_ctx], None),
        "nfs_get_error": ([_ctx], _s),
        "nfs_set_timeout": ([_ctx, ctypes.c_int], None),
        "nfs_set_autoreconnect": ([_ctx, ctypes.c_int], None),
        "nfs_mount": ([_ctx, _s, _s], ctypes.c_int),
        "nfs_stat64": ([_ctx, _s, ctypes.POINTER(Stat64)], ctypes.c_int),
        "nfs_fstat64": ([_ctx, _fh, ctypes.POINTER(Stat64)], ctypes.c_int),
        "nfs_statvfs64": ([_ctx, _s, ctypes.POINTER(StatVfs64)], ctypes.c_int),
        "nfs_open": ([_ctx, _s, ctypes.c_int, ctypes.POINTER(_fh)], ctypes.c_int),
        "nfs_create": ([_ctx, _s, ctypes.c_int, ctypes.c_int, ctypes.POINTER(_fh)],
                       ctypes.c_int),
        "nfs_close": ([_ctx, _fh], ctypes.c_int),
        "nfs_pread": ([_ctx, _fh, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p],
                      ctypes.c_int),
        "nfs_pwrite": ([_ctx, _fh, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p],
                       ctypes.c_int),
        "nfs_fsync": ([_ctx, _fh], ctypes.c_int),
        "nfs_mkdir2": ([_ctx, _s, ctypes.c_int], ctypes.c_int),
        "nfs_unlink": ([_ctx, _s], ctypes.c_int),
        "nfs_link": ([_ctx, _s, _s], ctypes.c_int),
        "nfs_opendir": ([_ctx, _s, ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int),
        "nfs_readdir": ([_ctx, ctypes.c_void_p], ctypes.POINTER(DirEnt)),
        "nfs_closedir": ([_ctx, ctypes.c_void_p], None),
    }
    for name, (argtypes, restype) in sig.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype


class NfsError(OSError):
    """A failed libnfs call: errno plus libnfs's own message."""


class NfsContext:
    """One export of one server, mounted by libnfs (NFSv3, as QEMU uses it)."""

    def __init__(self, server: str, export: str, timeout: float = 10.0) -> None:
        self._lib = _load()
        self.server, self.export = server, export
        self._ctx = self._lib.nfs_init_context()
        if not self._ctx:
            raise NfsError(errno.ENOMEM, "nfs_init_context failed")
        self._lib.nfs_set_timeout(self._ctx, int(timeout * 1000))
        self._lib.nfs_set_autoreconnect(self._ctx, 0)
        try:
            self._check(self._lib.nfs_mount(self._ctx, server.encode(), export.encode()),
                        "mount")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._ctx:
            self._lib.nfs_destroy_context(self._ctx)
            self._ctx = None

    def __enter__(self) -> NfsContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, rc: int, what: str) -> int:
        if rc < 0:
            detail = self._lib.nfs_get_error(self._ctx) if self._ctx else None
            message = detail.decode(errors="replace") if detail else os.strerror(-rc)
            # libnfs reports an RPC timeout in its message only.
            code = errno.ETIMEDOUT if "timed out" in message else -rc
            raise NfsError(code, f"{what} on nfs://{self.server}{self.export}: {message}")
        return rc

    def is_file(self, path: str) -> bool:
        """Whether `path` is a regular file; NfsError ENOENT when it does not exist."""
        st = Stat64()
        self._check(self._lib.nfs_stat64(self._ctx, path.encode(), ctypes.byref(st)),
                    f"stat {path}")
        return stat.S_ISREG(st.nfs_mode)

    def stat(self, path: str) -> Stat64:
        st = Stat64()
        self._check(self._lib.nfs_stat64(self._ctx, path.encode(), ctypes.byref(st)),
                    f"stat {path}")
        return st

    def statvfs(self, path: str) -> StatVfs64:
        st = StatVfs64()
        self._check(self._lib.nfs_statvfs64(self._ctx, path.encode(), ctypes.byref(st)),
                    f"statvfs {path}")
        return st

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self._check(self._lib.nfs_mkdir2(self._ctx, path.encode(), mode), f"mkdir {path}")

    def unlink(self, path: str) -> None:
        self._check(self._lib.nfs_unlink(self._ctx, path.encode()), f"unlink {path}")

    def link(self, old: str, new: str) -> None:
        """NFS LINK fails with EEXIST when `new` exists: a no-clobber publish."""
        self._check(self._lib.nfs_link(self._ctx, old.encode(), new.encode()),
                    f"link {old} to {new}")

    def listdir(self, path: str) -> list[str]:
        handle = ctypes.c_void_p()
        self._check(self._lib.nfs_opendir(self._ctx, path.encode(), ctypes.byref(handle)),
                    f"opendir {path}")
        names = []
        try:
            while entry := self._lib.nfs_readdir(self._ctx, handle):
                name = entry.contents.name.decode(errors="surrogateescape")
                if name not in (".", ".."):
                    names.append(name)
        finally:
            self._lib.nfs_closedir(self._ctx, handle)
        return names

    def open(self, path: str, flags: int = os.O_RDONLY) -> NfsFileHandle:
        fh = ctypes.c_void_p()
        self._check(self._lib.nfs_open(self._ctx, path.encode(), flags, ctypes.byref(fh)),
                    f"open {path}")
        return NfsFileHandle(self, fh, path)

    def create(self, path: str, mode: int = 0o600) -> NfsFileHandle:
        """An exclusive create: fails with EEXIST when `path` exists."""
        fh = ctypes.c_void_p()
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
        self._check(self._lib.nfs_create(self._ctx, path.encode(), flags, mode,
                                         ctypes.byref(fh)), f"create {path}")
        return NfsFileHandle(self, fh, path)


class NfsFileHandle:
    def __init__(self, ctx: NfsContext, fh: ctypes.c_void_p, path: str) -> None:
        self._ctx, self.path = ctx, path
        self._fh: ctypes.c_void_p | None = fh

    @property
    def size(self) -> int:
        st = Stat64()
        self._ctx._check(self._ctx._lib.nfs_fstat64(self._ctx._ctx, self._fh,
                                                    ctypes.byref(st)), f"stat {self.path}")
        return int(st.nfs_size)

    def pread(self, offset: int, count: int) -> bytes:
        buf = ctypes.create_string_buffer(count)
        got = 0
        while got < count:
            n = self._ctx._check(self._ctx._lib.nfs_pread(
                self._ctx._ctx, self._fh, offset + got, count - got,
                ctypes.byref(buf, got)), f"read {self.path}")
            if n == 0:
                break
            got += n
        return ctypes.string_at(buf, got)

    def pwrite(self, offset: int, data: bytes) -> None:
        done = 0
        view = ctypes.c_char_p(data)
        base = ctypes.cast(view, ctypes.c_void_p).value or 0
        while done < len(data):
            n = self._ctx._check(self._ctx._lib.nfs_pwrite(
                self._ctx._ctx, self._fh, offset + done, len(data) - done,
                ctypes.c_void_p(base + done)), f"write {self.path}")
            if n == 0:
                raise NfsError(errno.EIO, f"write {self.path}: the server wrote nothing")
            done += n

    def fsync(self) -> None:
        self._ctx._check(self._ctx._lib.nfs_fsync(self._ctx._ctx, self._fh),
                         f"fsync {self.path}")

    def close(self) -> None:
        if self._fh:
            fh, self._fh = self._fh, None
            self._ctx._check(self._ctx._lib.nfs_close(self._ctx._ctx, fh),
                             f"close {self.path}")
