"""Starting the real controller and agent as processes on loopback."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.config import ADMIN_TOKEN_FILE
from tests.support import fileserver
from tests.support.netns import Host
from tests.support.workers import share

ROOT = Path(__file__).resolve().parents[2]


# Below the kernel's ephemeral range (32768-60999), which outgoing connections and
# `bind(0)` take from: a port handed out here stays free until its server binds it.
PORTS = range(20000, 32000)
_next_port = itertools.count(random.randrange(len(PORTS)))


def free_port() -> int:
    """A loopback port nothing listens on, from this worker's share of `PORTS` (so the
    workers of one run never pick the same one), taken in turn so that a port is not
    handed out again soon after."""
    ports = share(PORTS)
    for _ in range(len(ports)):
        port = ports[next(_next_port) % len(ports)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this worker's share")


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Until `/healthz` answers; for an agent (https, which may already want a client
    certificate), until it accepts connections, which it does once it is set up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if url.startswith("https://"):
                host, port = url.removeprefix("https://").rsplit(":", 1)
                socket.create_connection((host, int(port)), timeout=2).close()
                return
            with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy after {timeout}s:\n{log.read_text()}")


@dataclass
class Proc:
    """`token`: for a controller, the admin API token its first start made."""

    popen: subprocess.Popen[bytes]
    url: str
    log: Path
    token: str | None = None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(module: str, args: list[str], log: Path, url: str, timeout: float = 30,
          wrap: Callable[[list[str]], list[str]] = list) -> Proc:
    """`wrap`: what runs the argv, e.g. a network namespace's `ip netns exec`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        popen = subprocess.Popen(wrap([sys.executable, "-m", module, *args]), stdout=out,
                                 stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    proc = Proc(popen, url, log)
    try:
        wait_healthy(url, popen, log, timeout)
    except Exception:
        proc.stop(signal.SIGKILL)
        raise
    return proc


def toml_args(state: Path, name: str, config: dict[str, object] | None) -> list[str]:
    """`--config FILE` for the settings that have no flag, written as TOML into `state`."""
    if not config:
        return []
    toml = state / name
    toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
    return ["--config", str(toml)]


def start_agent(state: Path, config: dict[str, object] | None = None,
                port: int | None = None, timeout: float = 30,
                host: Host | None = None) -> tuple[Proc, str]:
    """Returns the agent process (its https URL) and its loopback debug URL. It waits
    for enrolment (see `tests.support.enrol`) unless its state already holds a
    credential. Unless `config` says otherwise, the agent may download from the test
    file server's address only. With `host`, it runs in that namespace and listens on
    its address (its debug URL is then that namespace's loopback)."""
    port, debug_port = port or free_port(), free_port()
    address = host.address if host else "127.0.0.1"
    state.mkdir(parents=True, exist_ok=True)
    config = {"download_allow": [f"{fileserver.HOST}/32"], **(config or {})}
    args = ["--listen", f"{address}:{port}", "--debug-listen", f"127.0.0.1:{debug_port}",
            "--state-dir", str(state), *toml_args(state, "agent.toml", config)]
    proc = spawn("agent", args, state / "agent.log", f"https://{address}:{port}", timeout,
                 host.argv if host else list)
    return proc, f"http://127.0.0.1:{debug_port}"


def start_controller(state: Path, db_url: str, port: int | None = None,
                     config: dict[str, object] | None = None, timeout: float = 30) -> Proc:
    port = port or free_port()
    state.mkdir(parents=True, exist_ok=True)
    # Tests keep storages in their temporary directory, beside the controller's state.
    config = {"storage_roots": [str(state.parent)], **(config or {})}
    proc = spawn("controller", ["--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
                                "--database-url", db_url,
                                "--no-local-agent", *toml_args(state, "controller.toml", config)],
                 state / "controller.log", f"http://127.0.0.1:{port}", timeout)
    proc.token = admin_token(state)
    return proc


def admin_token(state: Path) -> str | None:
    """The bootstrap admin token a controller leaves in its state directory (None when its
    database already had tokens, as a second controller on one database finds)."""
    path = state / ADMIN_TOKEN_FILE
    return path.read_text().strip() if path.exists() else None


def run_cli(url: str, token: str | None, *args: str,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The `strata` CLI as an operator runs it: the URL and token from the environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STRATA_URL": url,
           "STRATA_TOKEN": token or ""}
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def debug_tasks(debug_url: str) -> dict[str, list[dict[str, object]]]:
    with urllib.request.urlopen(debug_url + "/debug/tasks", timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]
