"""OpenSSH's own `ssh` client, for bulk reads from an SFTP backup storage: its C transport
moves bytes at about twice the rate of asyncssh's Python packet handling, while asyncssh
keeps the metadata calls. The same pinned host key and client key are handed over in
private files that live only as long as the transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator

from shared.errors import NotFound, OperationFailed
from shared.protocol.sftp import SftpEndpoint

KEY_DIR = "ssh"  # under the agent's state directory
CHUNK = 4 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# AES-GCM first: with AES-NI it costs both ends far less CPU than chacha20-poly1305.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
                     "chacha20-poly1305@openssh.com,aes128-ctr")
CONNECT_TIMEOUT = 20


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def key_dir(state_dir: str) -> str:
    return os.path.join(state_dir, KEY_DIR)


def clear_leftover_keys(state_dir: str) -> None:
    """Key files of transfers cut short by a crash; called at agent start."""
    shutil.rmtree(key_dir(state_dir), ignore_errors=True)


@contextlib.contextmanager
def ssh_argv(endpoint: SftpEndpoint, workdir: str) -> Iterator[list[str]]:
    """`ssh` and the options that pin the host key and use only the client key."""
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    private = tempfile.mkdtemp(dir=workdir, prefix=".ssh-")
    try:
        host = endpoint.host.strip("[]")
        key, known = os.path.join(private, "id"), os.path.join(private, "known_hosts")
        _write_private(key, endpoint.private_key)
        _write_private(known, f"[{host}]:{endpoint.port} {endpoint.host_key}"
                       if endpoint.port != 22 else f"{host} {endpoint.host_key}")
        yield ["ssh", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
               "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
               "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "LogLevel=ERROR",
               "-o", f"Ciphers={PREFERRED_CIPHERS}",
               "-p", str(endpoint.port), "-l", endpoint.username, host]
    finally:
        shutil.rmtree(private, ignore_errors=True)


async def read_remote_file(endpoint: SftpEndpoint, path: str,
                           workdir: str) -> AsyncIterator[bytes]:
    """The file's bytes as `cat` on the server sends them; the caller checks size and
    sha256. Errors name the cause: the host key, the client key, the file.

    The pipe is read in a worker thread, CHUNK bytes per call, with a larger pipe: far
    fewer wake-ups than the event loop's 64 KiB reads."""
    with ssh_argv(endpoint, workdir) as argv:
        proc = await asyncio.to_thread(
            subprocess.Popen, [*argv, shlex.join(["cat", "--", path])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        with contextlib.suppress(OSError):
            fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
        try:
            while chunk := await asyncio.to_thread(proc.stdout.read, CHUNK):
                yield chunk
            rc = await asyncio.to_thread(proc.wait)
            if rc != 0:
                raise _error(endpoint, path, rc, proc.stderr.read().decode(
                    errors="replace").strip())
        finally:
            if proc.poll() is None:
                proc.kill()
                await asyncio.to_thread(proc.wait)
            proc.stdout.close()
            proc.stderr.close()


def _error(endpoint: SftpEndpoint, path: str, rc: int, stderr: str) -> Exception:
    where = f"{endpoint.host}:{endpoint.port}"
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION" in stderr:
        return OperationFailed(
            f"the SSH host key of {where} is not the pinned one; refusing to connect (if "
            "the server's key really changed, update the backup storage's host_key)",
            code="host_key_mismatch")
    if "Permission denied" in stderr:
        return OperationFailed(f"{where} refused the client key for {endpoint.username}",
                               code="sftp_auth_failed")
    if rc == 255:
        return OperationFailed(f"cannot reach SFTP server {where}: {stderr}",
                               code="sftp_unreachable")
    if "No such file" in stderr:
        return NotFound(f"{path} does not exist on {endpoint.host}")
    return OperationFailed(f"reading {path} on {where} failed: {stderr or f'exit code {rc}'}",
                           code="sftp_failed")
