"""An nfs-ganesha NFS server (userspace, from the OS packages) with rpcbind, exporting a
directory on loopback.

QEMU's `nfs://` URLs carry no port, so the server takes the standard ones (rpcbind on
111, NFS on 2049): one server per test session, each test in a directory of its own
under the export.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from agent.nfs.libnfs import NfsContext, NfsError

CONFIG = """
NFS_CORE_PARAM {{ Protocols = 3, 4; Bind_addr = 127.0.0.1; }}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; }}
EXPORT {{
    Export_Id = 1; Path = {export}; Pseudo = /strata; Access_Type = RW;
    Squash = No_Root_Squash; Protocols = 3, 4; Transports = TCP; SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"""


def _ensure_rpcbind() -> None:
    if subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True).returncode != 0:
        subprocess.run(["rpcbind", "-w"], check=True)


START_ATTEMPTS = 3


class NfsServer:
    server = "127.0.0.1"

    def __init__(self, workdir: Path) -> None:
        if shutil.which("ganesha.nfsd") is None:
            raise RuntimeError("nfs-ganesha is not installed (./dev installs it)")
        self.dir = workdir
        self.export = workdir / "export"
        self.export.mkdir(parents=True)
        conf = workdir / "ganesha.conf"
        conf.write_text(CONFIG.format(export=self.export))
        _ensure_rpcbind()
        # ganesha binds fixed ports, one of them (rquota, 875) in the range root clients
        # take source ports from: a start that found it briefly taken is tried again.
        for attempt in range(START_ATTEMPTS):
            self.proc = subprocess.Popen(
                ["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(workdir / "ganesha.log"),
                 "-p", str(workdir / "ganesha.pid")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready(last=attempt == START_ATTEMPTS - 1):
                return

    def _wait_ready(self, last: bool) -> bool:
        """True once the export answers; False if ganesha exited and may start again."""
        deadline = time.monotonic() + 30
        while True:
            try:
                NfsContext(self.server, str(self.export), timeout=2).close()
                return True
            except NfsError:
                exited = self.proc.poll() is not None
                if exited and not last:
                    time.sleep(2)
                    return False
                if time.monotonic() > deadline or exited:
                    log = (self.dir / "ganesha.log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"nfs-ganesha did not start:\n{log}") from None
                time.sleep(0.2)

    def share(self, name: str) -> Path:
        """A fresh directory under the export, for one test's storage."""
        path = self.export / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir()
        return path

    def url(self, path: Path) -> str:
        return f"nfs://{self.server}{path}"

    @contextlib.contextmanager
    def hung(self) -> Iterator[None]:
        """The server stops answering (SIGSTOP) until the block ends."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
