"""Benchmark: root volumes (linked clones of a cached image) through the API, against raw
`qemu-img create` at the same parallelism, in the same run. Prints both rates and the ratio.

Starts `strata-controller` on embedded defaults (a local agent, seeded storages) in a
temporary state directory, on SQLite or (`--database postgresql`) on a PostgreSQL server
of its own with fsync on; leaves nothing running. `--profile FILE` writes a cProfile of
the controller.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli.client import Client  # noqa: E402
from tests.support import fileserver  # noqa: E402
from tests.support.fileserver import FileServer  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.procs import Proc, admin_token, free_port, spawn  # noqa: E402


def start_embedded(work: Path, db_url: str | None = None, profile: str | None = None) -> Proc:
    """`strata-controller` on embedded defaults (with its local agent) under `work`."""
    port = free_port()
    db = ["--database-url", db_url] if db_url else []

    def wrap(argv: list[str]) -> list[str]:
        return [argv[0], "-m", "cProfile", "-o", profile, *argv[1:]] if profile else argv

    proc = spawn("controller", [
        "--listen", f"127.0.0.1:{port}", "--state-dir", str(work / "state"), *db,
        "--local-agent-listen", f"127.0.0.1:{free_port()}", "--log-level", "WARNING",
        "--local-agent-download-allow", f"{fileserver.HOST}/32",
    ], work / "controller.log", f"http://127.0.0.1:{port}", wrap=wrap)
    proc.token = admin_token(work / "state")
    return proc


def wait_seeded(api: Client, timeout: float = 60) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ps = api.get("/v1/primary-storages?state=ready")["items"]
        bs = api.get("/v1/backup-storages?state=ready")["items"]
        if ps and bs and ps[0]["hosts"] and ps[0]["hosts"][0]["state"] == "connected":
            return ps[0]["id"], bs[0]["id"]
        time.sleep(0.2)
    raise RuntimeError("the embedded controller was not seeded in time")


async def api_rate(base_url: str, token: str, primary: str, image: str, count: int,
                   concurrency: int) -> float:
    """`concurrency` clients on keep-alive connections, each creating volumes one after
    another: POST /v1/volumes, then long-poll its job to the end."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            async with http.post(f"{base_url}/v1/volumes", json={
                    "name": f"bench-{i}", "primary_storage_id": primary,
                    "image_id": image}) as resp:
                accepted = await resp.json()
            async with http.get(f"{base_url}/v1/jobs/{accepted['job_id']}?wait=60") as resp:
                job = await resp.json()
            if job["state"] != "succeeded":
                raise RuntimeError(f"volume {i} failed: {job['error']}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return count / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and its live children (a PostgreSQL server's backends)."""
    pids = [root] + [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                     and _parent(int(p.name)) == root]
    return sum(sum(cpu_seconds(pid)) for pid in pids if Path(f"/proc/{pid}").exists())


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def raw_rate(cache: Path, out: Path, count: int, concurrency: int) -> float:
    out.mkdir()

    def one(i: int) -> None:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(cache), "-F",
                        "qcow2", str(out / f"raw-{i}.qcow2")], check=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--profile", metavar="FILE", help="write a cProfile of the controller")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    www = work / "www"
    www.mkdir()
    server = FileServer(www)
    postgres = PostgresServer(fsync=True) if args.database == "postgresql" else None
    controller = start_embedded(work, postgres.new_database() if postgres else None,
                                args.profile and str(Path(args.profile).resolve()))
    try:
        api = Client(controller.url, controller.token)
        primary, backup = wait_seeded(api)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(www / "base.qcow2"),
                        "1G"], check=True)
        job = api.wait_job(api.post("/v1/images", {
            "name": "bench-base", "url": server.url("base.qcow2"),
            "backup_storage_id": backup})["job_id"])
        image = job["resource_id"]
        warm = api.wait_job(api.post("/v1/volumes", {
            "name": "warm", "primary_storage_id": primary, "image_id": image})["job_id"])
        assert warm["state"] == "succeeded", warm
        cache = work / "state" / "primary" / "imagecache" / image

        agent_pid = int(subprocess.check_output(
            ["pgrep", "-P", str(controller.popen.pid), "-f", "agent"]).split()[0])
        pg_pid = postgres.server_pid() if postgres else None
        before = cpu_seconds(controller.popen.pid), cpu_seconds(agent_pid)
        pg_before = tree_cpu(pg_pid) if pg_pid else 0.0
        client_before = resource.getrusage(resource.RUSAGE_SELF)
        api_per_s = asyncio.run(api_rate(controller.url, controller.token, primary, image,
                                         args.count, args.concurrency))
        client_after = resource.getrusage(resource.RUSAGE_SELF)
        after = cpu_seconds(controller.popen.pid), cpu_seconds(agent_pid)
        pg_cpu = tree_cpu(pg_pid) - pg_before if pg_pid else 0.0
        raw_before = children_cpu()
        raw_per_s = raw_rate(cache, work / "raw", args.count, args.concurrency)
        raw_cpu = children_cpu() - raw_before

        def per_volume(seconds: float) -> str:
            return f"{1000 * seconds / args.count:6.2f} ms"

        print(f"root volumes from a cached image, {args.count} at concurrency "
              f"{args.concurrency}, on {os.cpu_count()} cores, {args.database}")
        print(f"  API (POST /v1/volumes + job wait): {api_per_s:8.1f} volumes/s")
        print(f"  raw qemu-img create:               {raw_per_s:8.1f} volumes/s")
        print(f"  ratio API/raw:                     {api_per_s / raw_per_s:8.2f} (target >= 1.0)")
        print("CPU per volume")
        print(f"  controller:             {per_volume(after[0][0] - before[0][0])}")
        print(f"  agent:                  {per_volume(after[1][0] - before[1][0])}")
        print(f"  qemu-img (via agent):   {per_volume(after[1][1] - before[1][1])}")
        if pg_pid:
            print(f"  PostgreSQL server:      {per_volume(pg_cpu)}")
        client_cpu = (client_after.ru_utime + client_after.ru_stime
                      - client_before.ru_utime - client_before.ru_stime)
        print(f"  benchmark client:       {per_volume(client_cpu)}")
        print(f"  qemu-img (raw):         {per_volume(raw_cpu)}")
        # Where the cores are the limit, ratio 1.0 leaves the whole stack this much.
        cores = os.cpu_count() or 1
        print(f"  budget at ratio 1.0:    {1000 * cores / raw_per_s:6.2f} ms "
              f"(all parts together, on {cores} cores)")
    finally:
        controller.stop()
        server.close()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
