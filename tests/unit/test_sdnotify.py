"""The sd_notify(3) side of the daemons, against a datagram socket the test binds."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from controller.localagent import child_env
from shared import sdnotify


def bound(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return sock


def test_nothing_is_sent_without_a_socket() -> None:
    assert sdnotify.notify("READY=1", {}) is False


def test_abstract_socket_names_start_with_an_at(tmp_path: Path) -> None:
    name = f"strata-test-{os.getpid()}"
    with bound("\0" + name) as sock:
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"READY=1"


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_heartbeats_come_at_half_the_watchdog_interval(
        env: dict[str, str], interval: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == interval


async def test_ready_then_heartbeats_until_cancelled(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with bound(path) as sock:
        sock.setblocking(False)
        task = asyncio.create_task(sdnotify.ready_and_alive(
            {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"}))
        await asyncio.sleep(0.35)
        task.cancel()
        got = []
        while True:
            try:
                got.append(sock.recv(64))
            except BlockingIOError:
                break
    assert got[0] == b"READY=1"
    assert set(got[1:]) == {b"WATCHDOG=1"} and 4 <= len(got) <= 8


async def test_a_broken_socket_is_not_fatal(tmp_path: Path) -> None:
    await sdnotify.ready_and_alive({"NOTIFY_SOCKET": str(tmp_path / "nobody")})


def test_the_local_agent_does_not_inherit_the_controllers_notify_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Readiness and the watchdog are the controller's own: its child agent must not
    speak for it (nor feed its watchdog)."""
    for name in sdnotify.NOTIFY_VARS:
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("STRATA_KEPT", "1")
    env = child_env()
    assert sdnotify.NOTIFY_VARS.isdisjoint(env) and env["STRATA_KEPT"] == "1"
