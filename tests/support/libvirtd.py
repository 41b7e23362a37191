"""A private libvirtd (QEMU driver, TCG domains, no network) for tests.

A privileged libvirtd keeps its state in fixed system directories (`/etc/libvirt`,
`/run`, `/var/lib/libvirt`, ...). The fixture gives it a mount namespace of its own, held
by a `sleep` process, where those directories are bind mounts of the test's temporary
directory: the daemon, and the QEMU processes it starts, write nowhere else. The daemon
can be stopped and started again in the same namespace (a libvirtd restart while its
domains keep running), and clients reach it through a socket in the temporary directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

# System directory -> its stand-in below the temporary directory.
_BINDS = {"/etc/libvirt": "etc", "/run": "run", "/var/lib/libvirt": "lib",
          "/var/cache/libvirt": "cache", "/var/log/libvirt": "log"}

# Root QEMU without DAC/SELinux relabelling, cgroups, per-domain /dev namespaces or
# virtlogd: none of them is available (or wanted) in a test's sandbox.
_QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = []
cgroup_controllers = []
stdio_handler = "file"
"""


class Libvirtd:
    """`uri` is what a client (libvirt-python, `virsh -c`) connects to."""

    def __init__(self, root: Path) -> None:
        if shutil.which("libvirtd") is None:
            raise RuntimeError("libvirtd is not installed (./dev installs libvirt-daemon-system)")
        self.root = root
        for sub in _BINDS.values():
            (root / sub).mkdir(parents=True, exist_ok=True)
        # A unix socket's path must fit 108 bytes: a test's directory may be longer.
        self.sock_dir = Path(tempfile.mkdtemp(prefix="strata-lv-"))
        (root / "etc" / "qemu.conf").write_text(_QEMU_CONF)
        (root / "etc" / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.sock_dir}"\n'
            'unix_sock_rw_perms = "0700"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            f'log_outputs = "3:file:{root / "libvirtd.log"}"\n')
        self.socket = self.sock_dir / "libvirt-sock"
        self.uri = f"qemu:///system?socket={self.socket}"
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"])
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self._wait_namespace()
            for target, sub in _BINDS.items():
                self._in_ns(["mount", "--bind", str(root / sub), target])
            self.start()
        except Exception:
            self.stop()
            raise

    def _wait_namespace(self) -> None:
        """Until `unshare` has made the namespace and run `sleep` in it."""
        own = Path("/proc/self/ns/mnt").readlink()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{self.holder.pid}/ns/mnt").readlink() != own:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("the libvirtd mount namespace was not made")

    def _in_ns(self, argv: list[str]) -> None:
        subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", *argv], check=True,
                       capture_output=True, timeout=30)

    def start(self) -> None:
        """libvirtd in the namespace; returns once its socket answers."""
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(self.holder.pid), "-m", "libvirtd",
             "--config", "/etc/libvirt/libvirtd.conf"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"libvirtd exited:\n{self.log()}")
            probe = subprocess.run(["virsh", "-c", self.uri, "version"], capture_output=True,
                                   timeout=30)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"libvirtd did not answer:\n{self.log()}")

    def stop_daemon(self) -> None:
        """libvirtd alone: its domains' QEMU processes keep running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def qemu_pids(self) -> list[int]:
        """The QEMU processes this daemon started, from their pid files."""
        pids = []
        for pidfile in (self.root / "run" / "libvirt" / "qemu").glob("*.pid"):
            if pidfile.name == "driver.pid":  # the daemon's own lock
                continue
            try:
                pids.append(int(pidfile.read_text().strip()))
            except (OSError, ValueError):
                continue
        return pids

    def stop(self) -> None:
        """The daemon, every QEMU it started, then the namespace."""
        self.stop_daemon()
        if self.holder.poll() is None:
            ours = Path(f"/proc/{self.holder.pid}/ns/mnt").readlink()
            for pid in self.qemu_pids():
                try:
                    # A pid file may outlive its process and the pid be reused.
                    if Path(f"/proc/{pid}/ns/mnt").readlink() == ours:
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    continue
        self.holder.kill()
        self.holder.wait()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "libvirtd.log"
        return path.read_text()[-4000:] if path.exists() else ""

