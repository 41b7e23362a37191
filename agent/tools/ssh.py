"""OpenSSH's own `ssh` client, for bulk reads from an SFTP server: its C transport moves
bytes at about twice the rate of asyncssh's Python packet handling. The server's host key
is pinned and only the given client key is used, both handed over in private files that
live only as long as the call.

The named errors serve the asyncssh session (`sftp/session`) too: the causes are the same.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator

from agent.executor import CommandFailed, Executor, Result
from shared.errors import NotFound, OperationFailed, StrataError
from shared.protocol.sftp import SftpEndpoint

CONNECT_TIMEOUT = 20
READ_TIMEOUT = 120  # the longest one read may wait for its chunk
# AES-GCM first: with AES-NI it costs both ends far less CPU than chacha20-poly1305.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
                     "chacha20-poly1305@openssh.com,aes128-ctr")


class HostKeyMismatch(OperationFailed):
    default_code = "host_key_mismatch"

    def __init__(self, where: str) -> None:
        super().__init__(f"the SSH host key of {where} is not the pinned one; refusing to "
                         "connect (if the server's key really changed, update the backup "
                         "storage's host_key)")


class AuthRefused(OperationFailed):
    default_code = "sftp_auth_failed"

    def __init__(self, where: str, username: str) -> None:
        super().__init__(f"{where} refused the client key for {username}")


class Unreachable(OperationFailed):
    default_code = "sftp_unreachable"

    def __init__(self, where: str, detail: object) -> None:
        super().__init__(f"cannot reach SFTP server {where}: {detail}")


class SshFailed(OperationFailed):
    default_code = "sftp_failed"


class RemoteFileMissing(NotFound):
    def __init__(self, path: str, host: str) -> None:
        super().__init__(f"{path} does not exist on {host}")


def where(endpoint: SftpEndpoint) -> str:
    return f"{endpoint.host}:{endpoint.port}"


def known_hosts_line(endpoint: SftpEndpoint) -> str:
    """The pinned host key as a known_hosts line (OpenSSH's format, which asyncssh reads)."""
    host = endpoint.host.strip("[]")
    name = f"[{host}]:{endpoint.port}" if endpoint.port != 22 else host
    return f"{name} {endpoint.host_key}\n"


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")


@contextlib.contextmanager
def _client_argv(endpoint: SftpEndpoint, workdir: str) -> Iterator[list[str]]:
    """`ssh` and the options that pin the host key and use only the client key."""
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    private = tempfile.mkdtemp(dir=workdir, prefix=".ssh-")
    try:
        key, known = os.path.join(private, "id"), os.path.join(private, "known_hosts")
        _write_private(key, endpoint.private_key)
        _write_private(known, known_hosts_line(endpoint))
        yield ["ssh", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
               "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
               "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "LogLevel=ERROR",
               "-o", f"Ciphers={PREFERRED_CIPHERS}",
               "-p", str(endpoint.port), "-l", endpoint.username, endpoint.host.strip("[]")]
    finally:
        shutil.rmtree(private, ignore_errors=True)


@contextlib.asynccontextmanager
async def read_file(executor: Executor, endpoint: SftpEndpoint, path: str,
                    workdir: str) -> AsyncIterator[AsyncIterator[bytes]]:
    """The file's bytes as `cat` on the server sends them, through the executor's
    streaming mode; the caller checks size and sha256. Errors name the cause: the host
    key, the client key, the server, the file. Key files go into `workdir`."""
    with _client_argv(endpoint, workdir) as argv:
        async with executor.stream([*argv, shlex.join(["cat", "--", path])],
                                   timeout=READ_TIMEOUT) as chunks:
            yield _named_errors(chunks, endpoint, path)


async def _named_errors(chunks: AsyncIterator[bytes], endpoint: SftpEndpoint,
                        path: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except CommandFailed as exc:
        raise error_for(endpoint, path, exc.result) from None


def error_for(endpoint: SftpEndpoint, path: str, result: Result) -> StrataError:
    """What a failed `ssh ... cat` means, from its exit code and stderr."""
    stderr, rc = result.stderr.strip(), result.returncode
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION" in stderr:
        return HostKeyMismatch(where(endpoint))
    if "Permission denied" in stderr:
        return AuthRefused(where(endpoint), endpoint.username)
    if rc == 255:
        return Unreachable(where(endpoint), stderr)
    if "No such file" in stderr:
        return RemoteFileMissing(path, endpoint.host)
    return SshFailed(f"reading {path} on {where(endpoint)} failed: "
                     f"{stderr or f'exit code {rc}'}")
