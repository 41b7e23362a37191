"""Filesystem steps that keep data safe: temporary names, no-clobber publish, capacity."""

from __future__ import annotations

import contextlib
import os
import secrets

from shared.errors import Conflict
from shared.protocol.types import FsCapacity

TEMP_PREFIX = ".strata-tmp-"


def temp_path(dest_dir: str, file_name: str) -> str:
    """A hidden sibling of the final file: same filesystem, so publishing is a link."""
    return os.path.join(dest_dir, f"{TEMP_PREFIX}{secrets.token_hex(6)}-{file_name}")


def publish(tmp: str, final: str) -> None:
    """Make `tmp` visible as `final` atomically, never overwriting an existing file."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise Conflict(f"{final} already exists; a ready object is never overwritten") from None
    finally:
        remove_quietly(tmp)
    fsync_dir(os.path.dirname(final))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def capacity(path: str) -> FsCapacity:
    st = os.statvfs(path)
    return FsCapacity(total=st.f_blocks * st.f_frsize, available=st.f_bavail * st.f_frsize)
