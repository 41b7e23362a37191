"""systemd's readiness and watchdog protocol (sd_notify(3)): datagrams to the socket
systemd names in `NOTIFY_SOCKET`. Small enough to need no library, and a no-op when
the daemon was not started by systemd (no `NOTIFY_SOCKET`)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

# What systemd puts in a notifying daemon's environment; not for its children.
NOTIFY_VARS = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})


def notify(message: str, env: Mapping[str, str] = os.environ) -> bool:
    """Sends `message` (e.g. `READY=1`); False when there is no socket to send it to."""
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(path)
        sock.sendall(message.encode())
    return True


def watchdog_interval(env: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between heartbeats, half of `WATCHDOG_USEC` as sd_watchdog_enabled(3)
    advises; None when the watchdog is off or meant for another process."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


async def ready_and_alive(env: Mapping[str, str] = os.environ) -> None:
    """READY=1 now (call it once the daemon serves), then WATCHDOG=1 at half the watchdog
    interval until cancelled: a heartbeat proves the event loop still turns. A socket
    that fails is logged, never fatal."""
    try:
        if not notify("READY=1", env):
            return
        interval = watchdog_interval(env)
        while interval is not None:
            await asyncio.sleep(interval)
            notify("WATCHDOG=1", env)
    except OSError as exc:
        log.warning("systemd notification failed: %s", exc)
