"""The asyncssh session of an SFTP backup storage: metadata calls and uploads (bulk
reads go through OpenSSH's client, `tools/ssh`).

The server's host key is pinned: a server presenting another key is refused, never
accepted silently. Uploads land under a temporary name, are checked with `sha256sum` on
the server, and only then get their name (SFTP's plain rename does not overwrite).
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import shlex
from collections.abc import AsyncIterator, Callable

import asyncssh

from agent.files import FileStores
from agent.fsops import temp_name
from agent.images.digests import Digest, ManifestHasher
from agent.tools import ssh
from shared.errors import ChecksumMismatch, Conflict, OperationFailed, Timeout
from shared.protocol.sftp import SftpEndpoint
from shared.protocol.types import FsCapacity

CHUNK = 1 << 20


class SftpSession:
    """An open SSH connection with its SFTP channel."""

    def __init__(self, endpoint: SftpEndpoint, conn: asyncssh.SSHClientConnection,
                 sftp: asyncssh.SFTPClient) -> None:
        self.endpoint = endpoint
        self._conn = conn
        self.sftp = sftp

    async def makedirs(self, path: str) -> None:
        await self.sftp.makedirs(path, exist_ok=True)

    async def capacity(self, path: str) -> FsCapacity:
        st = await self.sftp.statvfs(path)
        return FsCapacity(total=st.blocks * st.frsize, available=st.bavail * st.frsize)

    async def exists(self, path: str) -> bool:
        return bool(await self.sftp.exists(path))

    async def size(self, path: str) -> int:
        try:
            return int((await self.sftp.stat(path)).size or 0)
        except asyncssh.SFTPNoSuchFile:
            raise ssh.RemoteFileMissing(path, self.endpoint.host) from None

    async def upload(self, files: FileStores, src_path: str, remote_dir: str, file_name: str,
                     progress: Callable[[float], None] | None = None,
                     ) -> tuple[str, int, Digest]:
        """Returns (remote path, size, digest) once the server holds the verified copy; the
        digest's manifest is made from the bytes sent."""
        final = posixpath.join(remote_dir, file_name)
        if await self.exists(final):
            raise Conflict(f"{final} already exists on {self.endpoint.host}; "
                           "a ready object is never overwritten")
        tmp = posixpath.join(remote_dir, temp_name(file_name))
        size = 0
        src = await files.open_read(src_path)
        hasher = ManifestHasher(src.size)
        try:
            total = max(1, src.size)
            async with await self.sftp.open(tmp, "wb") as dst:
                async for chunk in src.chunks(CHUNK):
                    await asyncio.gather(dst.write(chunk), hasher.update(chunk))
                    size += len(chunk)
                    if progress:
                        progress(min(99.0, 100.0 * size / total))
            digest = await hasher.result()
            remote = await self.sha256(tmp)
            if remote != digest.sha256:
                raise ChecksumMismatch(f"the server holds {remote} for {final}, "
                                       f"sent {digest.sha256}")
            await self.sftp.rename(tmp, final)
        finally:
            await src.close()
            with contextlib.suppress(asyncssh.SFTPError):
                await self.sftp.remove(tmp)
        return final, size, digest

    async def sha256(self, path: str) -> str:
        result = await self._conn.run(shlex.join(["sha256sum", "--", path]), check=False)
        out = str(result.stdout or "")
        if result.exit_status != 0 or not out:
            raise OperationFailed(f"sha256sum of {path} on {self.endpoint.host} failed: "
                                  f"{str(result.stderr or '').strip()}")
        return out.split()[0]

    async def files(self, path: str) -> list[tuple[str, int]]:
        """(name, length) of the regular files directly in directory `path`; none when it
        does not exist. SFTP reports no allocated blocks."""
        try:
            entries = await self.sftp.readdir(path)
        except asyncssh.SFTPNoSuchFile:
            return []
        return [(str(e.filename), int(e.attrs.size or 0)) for e in entries
                if e.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR]

    async def remove(self, path: str) -> bool:
        try:
            await self.sftp.remove(path)
        except asyncssh.SFTPNoSuchFile:
            return False
        return True


@contextlib.asynccontextmanager
async def connect(endpoint: SftpEndpoint) -> AsyncIterator[SftpSession]:
    """Connects with the pinned host key and the client key; errors say which failed."""
    where = ssh.where(endpoint)
    try:
        known_hosts = asyncssh.import_known_hosts(ssh.known_hosts_line(endpoint))
        client_key = asyncssh.import_private_key(endpoint.private_key)
    except (ValueError, asyncssh.KeyImportError) as exc:
        raise OperationFailed(f"unusable SSH key for {where}: {exc}",
                              code="invalid_credentials") from exc
    try:
        conn = await asyncssh.connect(
            endpoint.host, endpoint.port, username=endpoint.username,
            client_keys=[client_key], known_hosts=known_hosts, agent_path=None,
            connect_timeout=ssh.CONNECT_TIMEOUT, login_timeout=ssh.CONNECT_TIMEOUT)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise ssh.HostKeyMismatch(where) from exc
    except asyncssh.PermissionDenied as exc:
        raise ssh.AuthRefused(where, endpoint.username) from exc
    except TimeoutError as exc:
        raise Timeout(f"no SSH answer from {where} within {ssh.CONNECT_TIMEOUT}s") from exc
    except (OSError, asyncssh.Error) as exc:
        raise ssh.Unreachable(where, exc) from exc
    async with conn:
        try:
            async with conn.start_sftp_client() as sftp:
                yield SftpSession(endpoint, conn, sftp)
        except asyncssh.SFTPError as exc:
            raise ssh.SshFailed(f"SFTP on {where} failed: {exc.reason}") from exc
