"""Kernel NFS mounts, counted per mount point by the storages using them and saved, so an
agent restart keeps the count; the tools themselves are in `tools/mount`.

A mount is trusted only after `findmnt` shows the expected source there and a heartbeat
file was written through it. A stale handle is unmounted (lazily: a hung mount cannot be
unmounted cleanly) and mounted again. Unmounting repeats until `findmnt` shows nothing:
a mount helper that finished late may have stacked a second mount on the first.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections import defaultdict
from dataclasses import dataclass

from pydantic import TypeAdapter

from agent import fsops
from agent.executor import Executor
from agent.files import FileStores
from agent.tools import mount
from agent.tools.mount import MountInfo
from shared.errors import Conflict, OperationFailed, Timeout

# Soft mounts with bounded retries: I/O on a dead server fails instead of hanging for
# ever (VDSM's defaults).
DEFAULT_OPTIONS = ("soft", "nosharecache", "timeo=100", "retrans=3")
# Mounts stacked on one mount point that an unmount takes off before giving up.
MAX_STACKED = 8


@dataclass
class _Saved:
    source: str
    users: list[str]


_STATE = TypeAdapter(dict[str, _Saved])  # by mount point


class MountTable:
    def __init__(self, executor: Executor, stores: FileStores, state_file: str,
                 timeout: float = 60) -> None:
        self._exec = executor
        self._stores = stores
        self._state_file = state_file
        self._timeout = timeout
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # mount point -> the storages holding it, and what is mounted there.
        self.users: dict[str, list[str]] = {}
        self._sources: dict[str, str] = {}
        for mount_point, saved in fsops.read_state(state_file, _STATE, {}).items():
            self.users[mount_point] = saved.users
            self._sources[mount_point] = saved.source
            self._stores.add_mount(mount_point, saved.source)

    def _save(self) -> None:
        fsops.write_state(self._state_file, _STATE, {
            mp: _Saved(self._sources[mp], users) for mp, users in self.users.items()})

    async def find(self, mount_point: str) -> MountInfo | None:
        return await mount.findmnt(self._exec, mount_point, timeout=self._timeout)

    async def mount(self, server: str, export: str, mount_point: str, options: list[str],
                    user: str) -> list[str]:
        """Idempotent: mounting for a user that already holds the mount changes nothing
        but checks it again."""
        source = f"{server}:{export}"
        async with self._locks[mount_point]:
            self._stores.add_mount(mount_point, source)
            try:
                await self._ensure_mounted(source, mount_point, options)
            except BaseException:
                if not self.users.get(mount_point):
                    self._stores.remove_mount(mount_point)
                raise
            self._sources[mount_point] = source
            users = self.users.setdefault(mount_point, [])
            if user not in users:
                users.append(user)
                await asyncio.to_thread(self._save)
            return list(users)

    async def _ensure_mounted(self, source: str, mount_point: str, options: list[str]) -> None:
        current = await self.find(mount_point)
        if current is not None and current.source != source:
            raise Conflict(f"{mount_point} already has {current.source} mounted, not "
                           f"{source}", code="mount_point_busy")
        if current is not None and await self._is_stale(mount_point):
            await self._umount_all(mount_point, lazy=True)
            current = None
        if current is None:
            await self._mount(source, mount_point, [*DEFAULT_OPTIONS, *options])
        await self._stores.for_path(mount_point).write_probe(mount_point)

    async def unmount(self, mount_point: str, user: str) -> list[str]:
        """Drops `user`'s hold; the last one out unmounts. Idempotent."""
        async with self._locks[mount_point]:
            users = self.users.get(mount_point, [])
            if user in users:
                users.remove(user)
            if not users:
                if await self.find(mount_point) is not None:
                    await self._umount_all(mount_point,
                                           lazy=await self._is_stale(mount_point))
                self._stores.remove_mount(mount_point)
                self.users.pop(mount_point, None)
                self._sources.pop(mount_point, None)
            await asyncio.to_thread(self._save)
            return list(users)

    async def _mount(self, source: str, mount_point: str, options: list[str]) -> None:
        await asyncio.to_thread(os.makedirs, mount_point, exist_ok=True)
        try:
            await mount.mount_nfs(self._exec, source, mount_point, options,
                                  timeout=self._timeout)
        except mount.AlreadyMounted:
            pass  # another mounter got there first: findmnt says whether it is this source
        found = await self.find(mount_point)
        if found is None or found.source != source:
            raise OperationFailed(f"mount of {source} on {mount_point} reported success but "
                                  "findmnt does not show it", code="mount_failed")

    async def _umount_all(self, mount_point: str, lazy: bool) -> None:
        for _ in range(MAX_STACKED):
            if await self.find(mount_point) is None:
                return
            await self._umount(mount_point, lazy)
        if await self.find(mount_point) is not None:
            raise OperationFailed(f"{mount_point} is still mounted after {MAX_STACKED} "
                                  "unmounts", code="unmount_failed")

    async def _umount(self, mount_point: str, lazy: bool) -> None:
        try:
            await mount.umount(self._exec, mount_point, lazy=lazy, timeout=self._timeout)
        except mount.UnmountFailed:
            if await self.find(mount_point) is not None:
                raise

    async def _is_stale(self, mount_point: str) -> bool:
        """A stale file handle, or a server that does not answer a stat in time."""
        try:
            await self._stores.for_path(mount_point).lane.run(os.stat, mount_point)
        except Timeout:
            return True
        except OSError as exc:
            return exc.errno in (errno.ESTALE, errno.EIO)
        return False
