"""An OpenSSH server (from the OS packages) on a loopback port, for SFTP backup storage:
its own host key, and one client key authorised for root."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.netns import Host
from tests.support.procs import free_port

SSHD = "/usr/sbin/sshd"


def keypair(path: Path) -> tuple[str, str]:
    """(private key, public key `TYPE BASE64`) made by ssh-keygen."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True)
    public = path.with_suffix(".pub").read_text().split()
    return path.read_text(), f"{public[0]} {public[1]}"


class SshServer:
    """With `host`, it runs in that network namespace and listens on its address."""

    def __init__(self, workdir: Path, host: Host | None = None) -> None:
        if not os.path.exists(SSHD):
            raise RuntimeError("sshd is not installed (./dev installs openssh-server)")
        self.dir = workdir
        workdir.mkdir(parents=True)
        _, self.host_key = keypair(workdir / "host_key")
        self.private_key, public = keypair(workdir / "client_key")
        (workdir / "authorized_keys").write_text(public + "\n")
        self.port = free_port()
        self.address = host.address if host else "127.0.0.1"
        config = workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress {self.address}\nHostKey {workdir / 'host_key'}\n"
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {workdir / 'sshd.pid'}\nSubsystem sftp internal-sftp\n")
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        argv = [SSHD, "-D", "-e", "-f", str(config)]
        self.proc = subprocess.Popen(host.argv(argv) if host else argv,
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(workdir / "sshd.log", "wb"))
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"sshd did not start: {self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return (self.dir / "sshd.log").read_text(errors="replace")

    def endpoint(self, **override: object) -> dict[str, object]:
        return {"host": self.address, "port": self.port, "username": "root",
                "host_key": self.host_key, "private_key": self.private_key, **override}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
