"""Storage files, whatever reaches them; `FileStores.for_path` picks the right store and
the lane its calls run in."""

from __future__ import annotations

from agent.files.base import FileReader, FileStore, FileWriter
from agent.files.lane import Lane
from agent.files.local import LocalFileStore
from agent.files.nfs import NfsFileStore
from shared.names import is_nfs_url, split_nfs_url

__all__ = ["FileReader", "FileStore", "FileStores", "FileWriter"]


class FileStores:
    """Local directories share one lane; each NFS server, and each kernel NFS mount, has
    a lane of its own with a timeout, so one dead server stalls nothing else."""

    def __init__(self, nfs_timeout: float) -> None:
        self.nfs_timeout = nfs_timeout
        self._local = LocalFileStore(Lane("local files", None, workers=8))
        self._servers: dict[str, NfsFileStore] = {}
        self._mounts: dict[str, LocalFileStore] = {}
        self._mount_servers: dict[str, str] = {}

    def for_path(self, path: str) -> FileStore:
        if is_nfs_url(path):
            server = split_nfs_url(path)[0]
            if server not in self._servers:
                lane = Lane(f"NFS server {server}", self.nfs_timeout)
                self._servers[server] = NfsFileStore(lane, rpc_timeout=self.nfs_timeout * 0.8)
            return self._servers[server]
        mount_point = self.mount_point_of(path)
        return self._local if mount_point is None else self._mounts[mount_point]

    def mount_point_of(self, path: str) -> str | None:
        """The kernel NFS mount `path` lies under, if any."""
        for mount_point in self._mounts:
            if path == mount_point or path.startswith(mount_point + "/"):
                return mount_point
        return None

    async def open_read(self, path: str) -> FileReader:
        return await self.for_path(path).open_read(path)

    def add_mount(self, mount_point: str, source: str) -> None:
        """Routes paths under a kernel NFS mount to a lane of their own."""
        if mount_point not in self._mounts:
            lane = Lane(f"NFS mount {source} on {mount_point}", self.nfs_timeout)
            self._mounts[mount_point] = LocalFileStore(lane)
        self._mount_servers[mount_point] = source.partition(":/")[0]

    def remove_mount(self, mount_point: str) -> None:
        store = self._mounts.pop(mount_point, None)
        self._mount_servers.pop(mount_point, None)
        if store is not None:
            store.lane.close()

    def nfs_servers(self) -> set[str]:
        """The NFS servers this agent reaches now, by libnfs or through a mount."""
        return set(self._servers) | set(self._mount_servers.values())

    def close(self) -> None:
        for store in [self._local, *self._servers.values(), *self._mounts.values()]:
            store.lane.close()
