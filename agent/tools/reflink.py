"""The FICLONE ioctl: a copy of a file that shares its blocks until either is written,
where the filesystem supports it (XFS, Btrfs, OCFS2...)."""

from __future__ import annotations

import errno
import fcntl
import os

# _IOW(0x94, 9, int), from linux/fs.h.
FICLONE = 0x40049409
# What a filesystem (or a pair of them) that cannot share blocks answers.
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL,
                          errno.ENOSYS})


def clone(src: str, dest: str) -> bool:
    """Makes `dest` (which must not exist) a reflink of `src`; False, with nothing made,
    where the filesystem cannot."""
    src_fd = os.open(src, os.O_RDONLY)
    try:
        dest_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.ioctl(dest_fd, FICLONE, src_fd)
        except OSError as exc:
            os.close(dest_fd)
            os.unlink(dest)
            if exc.errno in _UNSUPPORTED:
                return False
            raise
        os.close(dest_fd)
        return True
    finally:
        os.close(src_fd)
