"""OpenSSH's `ssh` client as the agent drives it for bulk SFTP reads, against a real
sshd: the bytes, a missing file, a changed host key, an unknown client key, and no key
material left on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.executor import Executor
from agent.sftp.keyfiles import clear_leftover_keys, key_dir
from agent.tools.ssh import read_file
from shared.errors import NotFound, OperationFailed
from shared.protocol.sftp import SftpEndpoint
from tests.support.sshd import SshServer, keypair


async def read_all(endpoint: SftpEndpoint, path: Path, workdir: Path) -> bytes:
    async with read_file(Executor(), endpoint, str(path), str(workdir)) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def test_reads_with_pinned_key_and_leaves_no_key_behind(sshd: SshServer,
                                                               tmp_path: Path) -> None:
    data = os.urandom(9 << 20)
    (tmp_path / "blob").write_bytes(data)
    workdir = tmp_path / "ssh"
    endpoint = SftpEndpoint.model_validate(sshd.endpoint())
    assert await read_all(endpoint, tmp_path / "blob", workdir) == data
    assert os.listdir(workdir) == []

    with pytest.raises(NotFound):
        await read_all(endpoint, tmp_path / "missing", workdir)

    other_host_key = keypair(tmp_path / "other")[1]
    with pytest.raises(OperationFailed) as changed:
        await read_all(SftpEndpoint.model_validate(sshd.endpoint(host_key=other_host_key)),
                       tmp_path / "blob", workdir)
    assert changed.value.code == "host_key_mismatch"

    stranger = keypair(tmp_path / "stranger")[0]
    with pytest.raises(OperationFailed) as refused:
        await read_all(SftpEndpoint.model_validate(sshd.endpoint(private_key=stranger)),
                       tmp_path / "blob", workdir)
    assert refused.value.code == "sftp_auth_failed"
    assert os.listdir(workdir) == []


def test_leftover_keys_are_cleared(tmp_path: Path) -> None:
    """A transfer cut short by a crash leaves its key file; the next start removes it."""
    leftover = Path(key_dir(str(tmp_path))) / ".ssh-crashed"
    leftover.mkdir(parents=True)
    (leftover / "id").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    clear_leftover_keys(str(tmp_path))
    assert not Path(key_dir(str(tmp_path))).exists()
