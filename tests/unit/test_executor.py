"""The command executor, running real programs."""

from __future__ import annotations

import logging

import pytest

from agent.executor import Executor
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
