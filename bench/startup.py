"""Benchmark: cold starts and the agent's idle memory, against the targets of issue 15.

- agent (enrolled, as it runs in production): from exec to an answered
  `https://.../healthz`, then its resident memory after it has been idle for a while;
- controller (SQLite, no local agent): from exec to an answered `/healthz`, on a state
  directory whose database is migrated already (a first start made it).

Each start is measured `--runs` times; the median is printed. Leaves nothing running.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.enrol import provision_agent  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

AGENT_START_TARGET, CONTROLLER_START_TARGET, AGENT_RSS_TARGET = 1.0, 2.0, 60.0


def _healthy(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2, context=context) as resp:
            return resp.status == 200
    except OSError:
        return False


def timed_start(argv: list[str], url: str, log: Path,
                context: ssl.SSLContext | None = None) -> tuple[subprocess.Popen[bytes], float]:
    """The process, and the seconds from exec to its first healthy answer."""
    with open(log, "ab") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    while not _healthy(url, context):
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[2]} exited with {proc.returncode}: {log.read_text()}")
        if time.perf_counter() - start > 60:
            proc.kill()
            raise RuntimeError(f"{argv[2]} not healthy after 60 s: {log.read_text()}")
        time.sleep(0.005)
    return proc, time.perf_counter() - start


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for {pid}")


def agent_runs(work: Path, runs: int, idle: float) -> tuple[list[float], float]:
    starts, rss = [], 0.0
    for i in range(runs):
        state = work / f"agent-{i}"
        context = provision_agent(state).client_context()
        port = free_port()
        argv = [sys.executable, "-m", "agent", "--listen", f"127.0.0.1:{port}",
                "--debug-listen", f"127.0.0.1:{free_port()}", "--state-dir", str(state)]
        proc, seconds = timed_start(argv, f"https://127.0.0.1:{port}", work / "agent.log",
                                    context)
        starts.append(seconds)
        if i == runs - 1:
            time.sleep(idle)
            rss = rss_mb(proc.pid)
        stop(proc)
    return starts, rss


def controller_runs(work: Path, runs: int) -> list[float]:
    state = work / "controller"
    starts = []
    for i in range(runs + 1):
        port = free_port()
        argv = [sys.executable, "-m", "controller", "--listen", f"127.0.0.1:{port}",
                "--state-dir", str(state), "--no-local-agent", "--log-level", "WARNING"]
        proc, seconds = timed_start(argv, f"http://127.0.0.1:{port}", work / "controller.log")
        stop(proc)
        if i:  # the first start migrated the database
            starts.append(seconds)
    return starts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--idle", type=float, default=5.0,
                   help="seconds the agent idles before its memory is read")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    try:
        agent_starts, rss = agent_runs(work, args.runs, args.idle)
        controller_starts = controller_runs(work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    agent_start = statistics.median(agent_starts)
    controller_start = statistics.median(controller_starts)
    print(f"cold starts, median of {args.runs}, and the enrolled agent's memory after "
          f"{args.idle:g} s idle")
    print(f"  agent start to healthy /healthz:   {agent_start:6.2f} s "
          f"(target <= {AGENT_START_TARGET:g} s)")
    print(f"  agent idle RSS:                    {rss:6.1f} MB  "
          f"(target <= {AGENT_RSS_TARGET:g} MB)")
    print(f"  controller start to /healthz:      {controller_start:6.2f} s "
          f"(target <= {CONTROLLER_START_TARGET:g} s, database migrated already)")


if __name__ == "__main__":
    main()
