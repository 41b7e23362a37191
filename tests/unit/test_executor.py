"""The command executor, running real programs."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from agent.executor import CHUNK, CommandFailed, Executor
from shared.errors import OperationFailed, Timeout


async def test_secrets_stay_out_of_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.executor")
    result = await Executor().run(["echo", "--password", "s3cretPassw0rd"], timeout=10,
                                  redact=("s3cretPassw0rd",))
    assert result.stdout.strip() == "--password s3cretPassw0rd"
    assert "echo" in caplog.text and "***" in caplog.text
    assert "s3cretPassw0rd" not in caplog.text


async def test_failures_and_timeouts_say_what_ran() -> None:
    with pytest.raises(OperationFailed) as failed:
        await Executor().run(["ls", "/nonexistent-strata-path"], timeout=10)
    assert "ls" in failed.value.message and "nonexistent" in failed.value.message
    with pytest.raises(Timeout) as slow:
        await Executor().run(["sleep", "5"], timeout=0.2)
    assert "sleep" in slow.value.message


def _running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0


async def test_timeout_kills_what_the_child_started() -> None:
    """`mount` killed alone would leave its `mount.nfs` behind: the whole group goes."""
    with pytest.raises(Timeout):
        await Executor().run(["sh", "-c", "sleep 33.1415 & wait"], timeout=0.3)
    assert not _running("sleep 33.1415")


async def test_stream_reads_whole_chunks(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.executor")
    data = os.urandom(2 * CHUNK + 12345)
    blob = str(tmp_path / "blob")
    (tmp_path / "blob").write_bytes(data)
    async with Executor().stream(["cat", blob], timeout=10, redact=(blob,)) as chunks:
        got = [chunk async for chunk in chunks]
    assert b"".join(got) == data and [len(c) for c in got] == [CHUNK, CHUNK, 12345]
    assert "cat" in caplog.text and blob not in caplog.text


async def test_stream_failure_carries_stderr() -> None:
    async with Executor().stream(["sh", "-c", "printf abc; echo oops >&2; exit 3"],
                                 timeout=10) as chunks:
        got = b""
        with pytest.raises(CommandFailed) as failed:
            async for chunk in chunks:
                got += chunk
    assert got == b"abc" and failed.value.result.returncode == 3
    assert "oops" in failed.value.message and failed.value.result.stderr.strip() == "oops"


async def test_stream_timeout_and_early_exit_kill_the_child(tmp_path: Path) -> None:
    with pytest.raises(Timeout) as slow:
        async with Executor().stream(["sh", "-c", "sleep 34.1415 & wait"],
                                     timeout=0.3) as chunks:
            async for _ in chunks:
                pass
    assert "sh" in slow.value.message and not _running("sleep 34.1415")
    (tmp_path / "blob").write_bytes(os.urandom(CHUNK))
    async with Executor().stream(["sh", "-c", 'cat "$0"; sleep 35.1415',
                                  str(tmp_path / "blob")], timeout=10) as chunks:
        assert len(await anext(aiter(chunks))) == CHUNK
        assert _running("sleep 35.1415")
    assert not _running("sleep 35.1415"), "leaving the block ends the child"
