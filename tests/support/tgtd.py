"""A tgtd iSCSI target (userspace, from the OS's `tgt` package) on loopback ports."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time

from tests.support.procs import free_port
from tests.support.workers import share

# tgtd's control "port" only names its local socket (/var/run/tgtd/socket.N, one
# directory for the machine), and must be at most 32767.
CONTROL_PORTS = range(2000, 32768)


def _free_control_port() -> int:
    """One of this worker's share, so that two workers never name the same socket."""
    ports = share(CONTROL_PORTS)
    while True:
        port = random.choice(ports)
        if not os.path.exists(f"/var/run/tgtd/socket.{port}"):
            return port


class Tgtd:
    """`address`: where its portal listens (loopback unless a test's lab says)."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        if shutil.which("tgtd") is None:
            raise RuntimeError("tgtd is not installed (./dev installs the tgt package)")
        self.control_port = _free_control_port()
        self.iscsi_port = free_port()
        self.address = address
        self.portal = f"{address}:{self.iscsi_port}"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["tgtd", "-f", "--control-port", str(self.control_port),
             "--iscsi", f"portal={self.portal}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((self.address, self.iscsi_port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("tgtd did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        # tgtd ignores SIGTERM while targets exist.
        self.proc.kill()
        self.proc.wait()
