"""The systemd units as shipped: `systemd-analyze verify` accepts them (offline, no
systemd needed), and both daemons speak the notify protocol their `Type=notify` units
expect: READY=1 once they serve, then WATCHDOG=1 heartbeats."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config import AgentConfig
from tests.support.procs import ROOT, Proc, start_agent, start_controller

UNITS = ("strata-agent.service", "strata-controller.service")
INSTALLED_BIN = "/opt/strata/.venv/bin"


@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed (./dev installs systemd)")
    text = (ROOT / "systemd" / unit).read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text
    # Its binaries where this checkout's virtualenv has them, so verify finds them.
    copy = tmp_path / unit
    copy.write_text(text.replace(INSTALLED_BIN, str(Path(sys.executable).parent)))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # unknown keys are only warned about


def test_agent_stop_timeout_outlasts_its_shutdown_grace() -> None:
    """systemd kills the agent only after its running tasks had their grace, so they are
    recorded interrupted (with the reason) rather than cut by the kill."""
    text = (ROOT / "systemd" / UNITS[0]).read_text()
    stop = re.search(r"^TimeoutStopSec=(\d+)$", text, re.M)
    assert stop is not None and int(stop.group(1)) > AgentConfig().shutdown_grace + 5


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    copy = tmp_path / UNITS[0]
    text = (ROOT / "systemd" / UNITS[0]).read_text()
    copy.write_text(text.replace(INSTALLED_BIN, str(Path(sys.executable).parent))
                    .replace("WatchdogSec=", "WatchdogSecs="))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    assert "WatchdogSecs" in proc.stderr


def receive(sock: socket.socket, wanted: int, timeout: float = 15) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < wanted and time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            got.append(sock.recv(64))
        except TimeoutError:
            break
    return got


@pytest.mark.parametrize("daemon", ["agent", "controller"])
def test_daemon_says_ready_then_keeps_the_watchdog_fed(
        daemon: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a heartbeat every 0.2 s
        proc: Proc
        if daemon == "agent":
            proc, _ = start_agent(tmp_path / "agent")
        else:
            proc = start_controller(tmp_path / "controller",
                                    f"sqlite:///{tmp_path / 'strata.sqlite'}")
        try:
            got = receive(sock, 4)
        finally:
            proc.stop()
    assert got[:1] == [b"READY=1"], got
    assert got[1:] == [b"WATCHDOG=1"] * 3, got
