"""Where a LUN's bytes live on the storage server: a sparse raw file in a directory, or a
logical volume in a volume group. Neither ever overwrites, both remove idempotently."""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import Callable

from agent import fsops
from agent.executor import Executor
from agent.tools import cp
from agent.tools.lvm import Lvm
from agent.tools.qemuimg import QemuImg
from shared.errors import Conflict, NotFound
from shared.protocol.files import BackingFile
from shared.protocol.types import FsCapacity

Progress = Callable[[float], None]


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
            elif not await asyncio.to_thread(os.path.isfile, source.path):
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
        sparse copy where reflinks are not supported), else a sparse convert to raw."""
        if source.format == "raw":
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


def _create_empty(path: str, size: int) -> None:
    """A sparse raw file: no blocks are allocated until written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def lv_name(file_name: str) -> str:
    return "strata-" + file_name.rsplit(".", 1)[0]


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
