"""Filesystem steps that keep data safe: temporary names, no-clobber publish, capacity,
state files replaced atomically."""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import TypeVar

from pydantic import TypeAdapter

from shared.errors import Conflict
from shared.protocol.types import FsCapacity

T = TypeVar("T")

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


def read_state(path: str, adapter: TypeAdapter[T], default: T) -> T:
    """A state file written by `write_state`, or `default` before the first write."""
    try:
        with open(path, "rb") as f:
            return adapter.validate_json(f.read())
    except FileNotFoundError:
        return default


def write_state(path: str, adapter: TypeAdapter[T], value: T) -> None:
    """Replaces the file whole and durably. Readable by the agent only: state files may
    hold secrets."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(adapter.dump_json(value))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
