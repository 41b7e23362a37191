"""Filesystem steps that keep data safe: temporary names, no-clobber publish, capacity,
state files replaced atomically."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Collection
from typing import TypeVar

from pydantic import TypeAdapter

from agent.tasks import current_task_id
from shared.errors import Conflict
from shared.names import TEMP_HEAD, TEMP_PREFIX, task_in_flight, temp_task_id
from shared.protocol.types import FsCapacity

T = TypeVar("T")

NAME_MAX = 255


def temp_name(file_name: str) -> str:
    """`.strata-tmp-<task id>~<random>-<file name>`: named by the task that writes it, so
    a sweep can tell a leftover from a file still being written. The final name's tail
    is cut if the whole would pass NAME_MAX; it is there for people to read."""
    task_id = current_task_id.get()
    head = f"{TEMP_PREFIX}{task_id + '~' if task_id else ''}{secrets.token_hex(6)}-"
    return head + file_name[:NAME_MAX - len(head)]


def temp_path(dest_dir: str, file_name: str) -> str:
    """A hidden sibling of the final file: same filesystem, so publishing is a link."""
    return os.path.join(dest_dir, temp_name(file_name))


def is_leftover(name: str, running_tasks: Collection[str], elsewhere: Collection[str] = (),
                ended_here: Callable[[str], bool] | None = None) -> bool:
    """A temporary file no task writes: not one of this agent's `running_tasks`, nor one
    the controller says is in flight `elsewhere` (a task's id, or its job's id for every
    step of the job), unless this agent ran that very task and saw it end (a step cut
    short by a restart, tried again since under a new attempt id). A name of the older
    kind, with no task id, is a leftover."""
    if not name.startswith(TEMP_PREFIX):
        return False
    task_id = temp_task_id(name)
    if task_id is None:
        return True
    if task_id in running_tasks:
        return False
    if ended_here is not None and ended_here(task_id):
        return True
    return not task_in_flight(task_id, elsewhere)


def public_message(text: str, state_dir: str | None = None) -> str:
    """An error message fit for the controller: temporary names become the names of
    the files they were to be, and the agent's state directory is not spelled out."""
    text = TEMP_HEAD.sub("", text)
    if state_dir:
        text = text.replace(state_dir.rstrip("/") + "/", "the agent's ")
    return text


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


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
