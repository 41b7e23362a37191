"""Where a LUN's bytes live on the storage server: a sparse raw file in a directory, or a
logical volume in a volume group. Neither ever overwrites a store it makes, both remove
idempotently; growing, snapshots and reverting to one are in the second half of each."""

from __future__ import annotations

import abc
import asyncio
import os
import re
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from agent import fsops
from agent.executor import Executor
from agent.tools import cp, reflink
from agent.tools.lvm import LvInfo, Lvm
from agent.tools.qemuimg import QemuImg
from shared.errors import Conflict, InsufficientCapacity, InvalidInput, NotFound
from shared.names import is_nfs_url
from shared.protocol.files import BackingFile
from shared.protocol.types import FsCapacity

Progress = Callable[[float], None]
# Called right before a backing store is replaced: takes the LUN down.
Detach = Callable[[], Awaitable[None]]
SnapshotMethod = Literal["reflink", "copy", "lvm", "lvm-thin"]


@dataclass(frozen=True)
class Snapshot:
    path: str
    size: int
    method: SnapshotMethod


class Backing(abc.ABC):
    @abc.abstractmethod
    async def create(self, name: str, size: int, source: BackingFile | None,
                     progress: Progress) -> str:
        """A new store of `size` bytes, empty or holding `source`'s data; its path."""

    @abc.abstractmethod
    async def remove(self, name: str) -> bool:
        """True when the store existed."""

    @abc.abstractmethod
    async def capacity(self) -> FsCapacity: ...

    @abc.abstractmethod
    def path_of(self, name: str) -> str:
        """Where the store `name` is (or would be)."""

    @abc.abstractmethod
    async def resize(self, name: str, size: int) -> int:
        """Grows the store to at least `size` bytes, never shrinking it; its size now."""

    @abc.abstractmethod
    async def snapshot(self, name: str, snapshot_dir: str, snapshot_name: str) -> Snapshot:
        """A point-in-time copy of the store; the existing one when it was made already."""

    @abc.abstractmethod
    async def revert(self, name: str, snapshot_dir: str, snapshot_name: str,
                     detach: Detach) -> int:
        """Replaces the store's data with the snapshot's, which is kept; calls `detach`
        right before the store changes. The store's size now."""

    @abc.abstractmethod
    async def delete_snapshot(self, snapshot_dir: str, snapshot_name: str) -> bool:
        """True when the snapshot existed."""


def backing_for(directory: str, volume_group: str | None, executor: Executor,
                qemu_img: QemuImg) -> Backing:
    if volume_group is not None:
        return LvBacking(volume_group, Lvm(executor), qemu_img)
    return FileBacking(directory, executor, qemu_img)


class FileBacking(Backing):
    def __init__(self, directory: str, executor: Executor, qemu_img: QemuImg) -> None:
        self._dir = directory
        self._exec = executor
        self._qemu_img = qemu_img

    async def create(self, name: str, size: int, source: BackingFile | None,
                     progress: Progress) -> str:
        final = os.path.join(self._dir, name)
        if await asyncio.to_thread(os.path.lexists, final):
            raise Conflict(f"{final} already exists; a ready object is never overwritten")
        await asyncio.to_thread(os.makedirs, self._dir, exist_ok=True)
        tmp = fsops.temp_path(self._dir, name)
        try:
            if source is None:
                await asyncio.to_thread(_create_empty, tmp, size)
            elif not await readable_source(source):
                raise NotFound(f"source {source.path} does not exist")
            else:
                await self._copy_from(source, tmp, size, progress)
            await asyncio.to_thread(fsops.publish, tmp, final)
        finally:
            await asyncio.to_thread(fsops.remove_quietly, tmp)
        return final

    async def _copy_from(self, source: BackingFile, tmp: str, size: int,
                         progress: Progress) -> None:
        """As cheap a copy as the filesystem allows: a reflink of a raw cache (a plain
        sparse copy where reflinks are not supported), else a sparse convert to raw (which
        also reads a volume on an NFS export by its `nfs://` URL, for a migration)."""
        if source.format == "raw" and not is_nfs_url(source.path):
            await cp.copy_sparse(self._exec, source.path, tmp)
        else:
            await self._qemu_img.convert(source.path, tmp, src_fmt=source.format,
                                         dest_fmt="raw", progress=progress)
        if await asyncio.to_thread(os.path.getsize, tmp) < size:
            await self._qemu_img.resize(tmp, size, fmt="raw")

    async def remove(self, name: str) -> bool:
        path = os.path.join(self._dir, name)
        existed = await asyncio.to_thread(os.path.lexists, path)
        await asyncio.to_thread(fsops.remove_quietly, path)
        return existed

    async def capacity(self) -> FsCapacity:
        return await asyncio.to_thread(fsops.capacity, self._dir)

    def path_of(self, name: str) -> str:
        return os.path.join(self._dir, name)

    async def _size(self, path: str) -> int:
        try:
            return await asyncio.to_thread(os.path.getsize, path)
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist") from None

    async def resize(self, name: str, size: int) -> int:
        """A sparse truncate: the new tail takes no blocks until written."""
        path = self.path_of(name)
        current = await self._size(path)
        if size < current:
            raise InvalidInput(f"{path} is {current} bytes; it is never shrunk to {size}",
                               code="volume_shrink")
        if size > current:
            await asyncio.to_thread(os.truncate, path, size)
        return size

    async def _copy(self, src: str, dest_dir: str, name: str) -> tuple[str, SnapshotMethod]:
        """A temporary copy of `src` in `dest_dir`: a reflink where the filesystem can,
        else a sparse copy. The caller publishes or removes it."""
        tmp = fsops.temp_path(dest_dir, name)
        try:
            if await asyncio.to_thread(reflink.clone, src, tmp):
                return tmp, "reflink"
            await cp.copy_sparse(self._exec, src, tmp)
            return tmp, "copy"
        except BaseException:
            await asyncio.to_thread(fsops.remove_quietly, tmp)
            raise

    async def snapshot(self, name: str, snapshot_dir: str, snapshot_name: str) -> Snapshot:
        """Published by link under its final name only once it is whole."""
        final = os.path.join(snapshot_dir, snapshot_name)
        if await asyncio.to_thread(os.path.lexists, final):
            return Snapshot(final, await self._size(final), "copy")
        source = self.path_of(name)
        await self._size(source)
        await asyncio.to_thread(os.makedirs, snapshot_dir, exist_ok=True)
        tmp, method = await self._copy(source, snapshot_dir, snapshot_name)
        try:
            await asyncio.to_thread(fsops.publish, tmp, final)
        finally:
            await asyncio.to_thread(fsops.remove_quietly, tmp)
        return Snapshot(final, await self._size(final), method)

    async def revert(self, name: str, snapshot_dir: str, snapshot_name: str,
                     detach: Detach) -> int:
        """A copy of the snapshot is made beside the LUN's file, then renamed over it: the
        file is the old data or the snapshot's, never a mix."""
        snapshot = os.path.join(snapshot_dir, snapshot_name)
        final = self.path_of(name)
        await self._size(snapshot)
        await self._size(final)
        tmp, _ = await self._copy(snapshot, self._dir, name)
        try:
            await asyncio.to_thread(fsops.fsync_file, tmp)
            await detach()
            await asyncio.to_thread(os.replace, tmp, final)
            await asyncio.to_thread(fsops.fsync_dir, self._dir)
        finally:
            await asyncio.to_thread(fsops.remove_quietly, tmp)
        return await self._size(final)

    async def delete_snapshot(self, snapshot_dir: str, snapshot_name: str) -> bool:
        path = os.path.join(snapshot_dir, snapshot_name)
        existed = await asyncio.to_thread(os.path.lexists, path)
        await asyncio.to_thread(fsops.remove_quietly, path)
        return existed


def _create_empty(path: str, size: int) -> None:
    """A sparse raw file: no blocks are allocated until written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def lv_name(file_name: str) -> str:
    return "strata-" + file_name.rsplit(".", 1)[0]


async def readable_source(source: BackingFile) -> bool:
    """A file, an `nfs://` URL (its server answers for it), or a raw logical volume of
    a LUN (`is_lun_source`)."""
    if is_nfs_url(source.path) or await asyncio.to_thread(is_lun_source, source):
        return True
    return await asyncio.to_thread(os.path.isfile, source.path)


def is_lun_source(source: BackingFile) -> bool:
    """A LUN's logical volume read raw: never as qcow2, whose header could name any
    file of the host as its backing file."""
    return source.format == "raw" and is_lun_device(source.path)


# A volume group's name as LVM allows it (never `.` or `..`), then a LUN's volume.
LV_PATH = re.compile(r"/dev/(?!\.\.?/)[A-Za-z0-9+_.][A-Za-z0-9+_.-]*/strata-[A-Za-z0-9._-]+")


def is_lun_device(path: str) -> bool:
    """Whether `path` is a logical volume this agent's LUNs are made of (a volume or a
    snapshot in a volume group, `/dev/<vg>/strata-...`): the only block devices a copy
    may read, as a migration's source or a new LUN's."""
    if not LV_PATH.fullmatch(path):
        return False
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


class LvBacking(Backing):
    def __init__(self, volume_group: str, lvm: Lvm, qemu_img: QemuImg) -> None:
        self._vg = volume_group
        self._lvm = lvm
        self._qemu_img = qemu_img

    async def create(self, name: str, size: int, source: BackingFile | None,
                     progress: Progress) -> str:
        """Zeroed, so that nothing of an earlier volume on those extents shows through."""
        lv = lv_name(name)
        await self._lvm.capacity(self._vg)  # a clear NotFound before anything is made
        if await self._lvm.lv_exists(self._vg, lv):
            raise Conflict(f"logical volume {self._vg}/{lv} already exists; it is never "
                           "overwritten")
        path = await self._lvm.lvcreate(self._vg, lv, size)
        try:
            await self._lvm.zero_out(path)
            if source is not None:
                await self._qemu_img.convert(source.path, path, src_fmt=source.format,
                                             dest_fmt="raw", existing_target=True,
                                             progress=progress)
        except BaseException:
            await self.remove(name)
            raise
        return path

    async def remove(self, name: str) -> bool:
        lv = lv_name(name)
        if not await self._lvm.lv_exists(self._vg, lv):
            return False
        await self._lvm.lvremove(self._vg, lv)
        return True

    async def capacity(self) -> FsCapacity:
        return await self._lvm.capacity(self._vg)

    def path_of(self, name: str) -> str:
        return self._lvm.path(self._vg, lv_name(name))

    async def _info(self, lv: str) -> LvInfo:
        return (await self._with_snapshots(lv))[0]

    async def _with_snapshots(self, lv: str) -> tuple[LvInfo, list[str]]:
        """The volume, and the names of its snapshots."""
        rows = await self._lvm.lvs(self._vg)
        info = next((row for row in rows if row.lv_name == lv), None)
        if info is None:
            raise NotFound(f"logical volume {self._vg}/{lv} does not exist")
        return info, [row.lv_name for row in rows if row.origin == lv]

    async def _check_room(self, needed: int, what: str) -> None:
        """Before LVM allocates extents: a clear refusal, not a failed lvcreate."""
        free = (await self._lvm.capacity(self._vg)).available
        if free < needed:
            raise InsufficientCapacity(f"volume group {self._vg} has {free} bytes free; "
                                       f"{what} needs {needed}")

    async def resize(self, name: str, size: int) -> int:
        """LVM rounds up to whole extents, so a volume at least `size` big is done. A thin
        volume takes its pool's blocks only when written; a thick one takes them now, and
        can't grow while it has snapshots."""
        lv = lv_name(name)
        info, snapshots = await self._with_snapshots(lv)
        if info.lv_size >= size:
            return info.lv_size
        if not info.thin:
            if snapshots:
                # LVM resizes a thick origin only while it is inactive, never while served.
                raise Conflict(f"logical volume {self._vg}/{lv} is thick and has snapshots "
                               f"({', '.join(snapshots)}); it can't grow while they exist: "
                               "delete them first", code="origin_has_snapshots")
            await self._check_room(size - info.lv_size, f"growing {lv}")
        await self._lvm.lvextend(self._vg, lv, size)
        return (await self._info(lv)).lv_size

    async def _take(self, origin: LvInfo, snapshot: str) -> Snapshot:
        """A thick snapshot gets as much room for changed blocks as its origin has, so it
        is never invalidated by filling up."""
        if origin.thin:
            path = await self._lvm.snapshot(self._vg, origin.lv_name, snapshot, None)
            return Snapshot(path, origin.lv_size, "lvm-thin")
        await self._check_room(origin.lv_size, f"a snapshot of {origin.lv_name}")
        path = await self._lvm.snapshot(self._vg, origin.lv_name, snapshot, origin.lv_size)
        return Snapshot(path, origin.lv_size, "lvm")

    async def _snapshot_of(self, lv: str, snapshot: str) -> LvInfo | None:
        info = await self._lvm.lv_info(self._vg, snapshot)
        if info is not None and info.origin != lv:
            raise Conflict(f"logical volume {self._vg}/{snapshot} exists and is not a "
                           f"snapshot of {lv}", code="not_a_snapshot")
        return info

    async def snapshot(self, name: str, snapshot_dir: str, snapshot_name: str) -> Snapshot:
        """LVM makes a snapshot whole or not at all; one made already is the answer."""
        lv, snap = lv_name(name), lv_name(snapshot_name)
        origin = await self._info(lv)
        existing = await self._snapshot_of(lv, snap)
        if existing is not None:
            return Snapshot(self._lvm.path(self._vg, snap), existing.lv_size,
                            "lvm-thin" if existing.thin else "lvm")
        return await self._take(origin, snap)

    async def revert(self, name: str, snapshot_dir: str, snapshot_name: str,
                     detach: Detach) -> int:
        """`lvconvert --merge` rolls the volume back and consumes the snapshot, which is
        then taken again of the rolled-back volume: the same data under the same name.
        The merge needs the volume closed, so the LUN is taken down first."""
        lv, snap = lv_name(name), lv_name(snapshot_name)
        await self._info(lv)
        if await self._snapshot_of(lv, snap) is None:
            raise NotFound(f"snapshot {self._vg}/{snap} does not exist")
        await detach()
        await self._lvm.merge(self._vg, snap)
        origin = await self._info(lv)
        await self._take(origin, snap)
        return origin.lv_size

    async def delete_snapshot(self, snapshot_dir: str, snapshot_name: str) -> bool:
        snap = lv_name(snapshot_name)
        if await self._lvm.lv_info(self._vg, snap) is None:
            return False
        await self._lvm.lvremove(self._vg, snap)
        return True
