"""An nfs-ganesha NFS server (userspace, from the OS packages) with rpcbind, exporting a
directory on loopback or on a lab host's address.

QEMU's `nfs://` URLs carry no port, so the server takes the standard ones (rpcbind on
111, NFS on 2049), which a network namespace has once: the `nfs` fixture runs one per
test worker in a lab host, each test in a directory of its own under the export.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from agent.nfs.libnfs import NfsContext, NfsError
from tests.support.netns import Host

CONFIG = """
NFS_CORE_PARAM {{ Protocols = 3, 4; Bind_addr = {address}; }}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = {recovery}; }}
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
    """With `host`, it runs in that network namespace on the host's address, with an
    rpcbind of its own: both in a mount namespace whose /run is private, since rpcbind's
    socket lives there and the machine's rpcbind serves the loopback server."""

    def __init__(self, workdir: Path, host: Host | None = None) -> None:
        if shutil.which("ganesha.nfsd") is None:
            raise RuntimeError("nfs-ganesha is not installed (./dev installs it)")
        self.dir = workdir
        self.server = host.address if host else "127.0.0.1"
        self.export = workdir / "export"
        self._shares = 0
        self.export.mkdir(parents=True)
        (workdir / "recovery").mkdir()
        conf = workdir / "ganesha.conf"
        conf.write_text(CONFIG.format(export=self.export, address=self.server,
                                      recovery=workdir / "recovery"))
        ganesha = ["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(workdir / "ganesha.log"),
                   "-p", str(workdir / "ganesha.pid")]
        if host is None:
            _ensure_rpcbind()
        else:
            ganesha = host.argv(["unshare", "--mount", "--propagation", "private",
                                 sys.executable, "-m", "tests.support.nfsserver", *ganesha])
        # ganesha binds fixed ports, one of them (rquota, 875) in the range root clients
        # take source ports from: a start that found it briefly taken is tried again.
        for attempt in range(START_ATTEMPTS):
            self.proc = subprocess.Popen(ganesha, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
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
        """A directory under the export that no earlier test used, for one test's
        storage: nfs-ganesha keeps the handles of directories it has seen, so one removed
        and made again under the same name reads as gone (NFS3ERR_NOENT)."""
        self._shares += 1
        path = self.export / f"{name}-{self._shares}"
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
        """ganesha, and in a namespace its rpcbind too (one process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def main() -> None:
    """Inside a fresh mount namespace: a private /run, an rpcbind there, then ganesha
    (argv) in its place, so that killing the group ends both."""
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.Popen(["rpcbind", "-f", "-w"])  # in the foreground: one of the group
    deadline = time.monotonic() + 10
    while subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True).returncode:
        if time.monotonic() > deadline:
            sys.exit("rpcbind did not start")
        time.sleep(0.1)
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
