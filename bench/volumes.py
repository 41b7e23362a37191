"""Benchmark: root volumes (linked clones of a cached image) through the API, against raw
`qemu-img create` at the same parallelism, in the same run. Prints both rates and the ratio.

Starts `strata-controller` on embedded defaults (SQLite, a local agent, seeded storages)
in a temporary state directory; leaves nothing running.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli.client import Client  # noqa: E402
from tests.support.fileserver import FileServer  # noqa: E402
from tests.support.procs import free_port, spawn  # noqa: E402


def wait_seeded(api: Client, timeout: float = 60) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ps = api.get("/v1/primary-storages?state=ready")["items"]
        bs = api.get("/v1/backup-storages?state=ready")["items"]
        if ps and bs and ps[0]["hosts"] and ps[0]["hosts"][0]["state"] == "connected":
            return ps[0]["id"], bs[0]["id"]
        time.sleep(0.2)
    raise RuntimeError("the embedded controller was not seeded in time")


def api_rate(api: Client, primary: str, image: str, count: int, concurrency: int) -> float:
    def one(i: int) -> None:
        accepted = api.post("/v1/volumes", {"name": f"bench-{i}", "primary_storage_id": primary,
                                            "image_id": image})
        job = api.wait_job(accepted["job_id"], timeout=300)
        if job["state"] != "succeeded":
            raise RuntimeError(f"volume {i} failed: {job['error']}")

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - start)


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
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    www = work / "www"
    www.mkdir()
    server = FileServer(www)
    port = free_port()
    controller = spawn("controller", [
        "--listen", f"127.0.0.1:{port}", "--state-dir", str(work / "state"),
        "--local-agent-listen", f"127.0.0.1:{free_port()}", "--log-level", "WARNING",
    ], work / "controller.log", f"http://127.0.0.1:{port}")
    try:
        api = Client(controller.url)
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

        api_per_s = api_rate(api, primary, image, args.count, args.concurrency)
        raw_per_s = raw_rate(cache, work / "raw", args.count, args.concurrency)
        print(f"root volumes from a cached image, {args.count} at concurrency "
              f"{args.concurrency}")
        print(f"  API (POST /v1/volumes + job wait): {api_per_s:8.1f} volumes/s")
        print(f"  raw qemu-img create:               {raw_per_s:8.1f} volumes/s")
        print(f"  ratio API/raw:                     {api_per_s / raw_per_s:8.2f} (target >= 0.8)")
    finally:
        controller.stop()
        server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
