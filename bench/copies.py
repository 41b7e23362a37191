"""Benchmark: an uncached 1 GiB image from each backup type (dir, sftp, s3) into a local
primary storage's image cache and into an NFS one (libnfs mode, nfs-ganesha), through
the API (a root volume request that must fill the cache), next to a reference tool
moving the same file in the same run: `cp` for dir, OpenSSH's `sftp` client for sftp,
`nfs-cp` for an NFS destination. S3 has no reference tool here.

Starts `strata-controller` on embedded defaults, an OpenSSH server, an S3-compatible
server and an NFS server (on the standard NFS ports) in a temporary directory; leaves
nothing running.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.volumes import wait_seeded  # noqa: E402
from cli.client import Client  # noqa: E402
from tests.support.fileserver import FileServer  # noqa: E402
from tests.support.nfsserver import NfsServer  # noqa: E402
from tests.support.procs import free_port, spawn  # noqa: E402
from tests.support.s3server import S3Server  # noqa: E402
from tests.support.sshd import SshServer  # noqa: E402

MiB = 1 << 20


def make_image(path: Path, size: int) -> None:
    """Incompressible data, so no layer can shortcut it."""
    with open(path, "wb") as f:
        for _ in range(size // (64 * MiB)):
            f.write(os.urandom(64 * MiB))


def timed(*argvs: list[str]) -> float:
    """Seconds to run these commands one after another."""
    start = time.perf_counter()
    for argv in argvs:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def cache_fill(api: Client, primary: str, image_id: str, name: str) -> float:
    """Seconds for a root volume whose image is not cached yet: the copy, verification,
    fsync and publish of the cache, then the linked clone."""
    start = time.perf_counter()
    job = api.wait_job(api.post("/v1/volumes", {
        "name": name, "primary_storage_id": primary, "image_id": image_id})["job_id"],
        timeout=1800)
    assert job["state"] == "succeeded", job
    return time.perf_counter() - start


def report(label: str, size: int, seconds: float,
           references: list[tuple[str, float]]) -> None:
    rate = size / seconds / 1e6
    line = f"  {label:12} API {rate:7.1f}"
    for tool, ref_seconds in references:
        ref = size / ref_seconds / 1e6
        line += f"   {tool} {ref:7.1f} (ratio {rate / ref:4.2f})"
    print(line if references else f"{line}   (no reference tool)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--sources", default="dir,sftp,s3",
                   help="backup types to copy from, comma-separated")
    args = p.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="strata-bench-copies-"))
    www = work / "www"
    www.mkdir()
    image = www / "big.raw"
    make_image(image, size)
    server = FileServer(www)
    sshd = SshServer(work / "sshd")
    s3 = S3Server()
    nfs = NfsServer(work / "nfs")
    port = free_port()
    controller = spawn("controller", [
        "--listen", f"127.0.0.1:{port}", "--state-dir", str(work / "state"),
        "--local-agent-listen", f"127.0.0.1:{free_port()}", "--log-level", "WARNING",
    ], work / "controller.log", f"http://127.0.0.1:{port}")
    try:
        api = Client(controller.url, timeout=600)
        primary, dir_store = wait_seeded(api)
        stores = {"dir": dir_store}
        for kind, config in (("sftp", {**sshd.endpoint(), "path": str(work / "sftp-store")}),
                             ("s3", s3.endpoint())):
            job = api.wait_job(api.post("/v1/backup-storages", {
                "name": kind, "type": kind, "config": config})["job_id"])
            assert job["state"] == "succeeded", job
            stores[kind] = job["resource_id"]
        share = nfs.share("primary")
        job = api.wait_job(api.post("/v1/primary-storages", {
            "name": "nfs", "type": "nfs", "hosts": [api.get("/v1/hosts")["items"][0]["id"]],
            "config": {"server": nfs.server, "export": str(share), "mode": "libnfs"}})["job_id"])
        assert job["state"] == "succeeded", job
        nfs_primary = job["resource_id"]

        print(f"{args.size_mib} MiB image into an image cache (MB/s, 1 MB = 10^6 bytes)")
        for kind, store in stores.items():
            if kind not in args.sources.split(","):
                continue
            job = api.wait_job(api.post("/v1/images", {
                "name": f"big-{kind}", "url": server.url(image.name),
                "backup_storage_id": store})["job_id"], timeout=1800)
            assert job["state"] == "succeeded", job
            image_id = job["resource_id"]
            references: list[tuple[str, float]] = []
            if kind == "dir":
                src = work / "state" / "images" / "images" / image_id
                references.append(("cp", timed(["cp", str(src), str(work / "cp-1")])))
                references.append(("cp+sync", timed(["cp", str(src), str(work / "cp-2")],
                                                     ["sync", str(work / "cp-2")])))
            elif kind == "sftp":
                src = work / "sftp-store" / "images" / image_id
                known = work / "known_hosts"
                known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n")
                references.append(("sftp", timed([
                    "sftp", "-q", "-i", str(work / "sshd" / "client_key"),
                    "-P", str(sshd.port), "-o", f"UserKnownHostsFile={known}",
                    "-o", "StrictHostKeyChecking=yes", f"root@127.0.0.1:{src}",
                    str(work / "sftp-copy")])))
            report(f"{kind} -> local", size, cache_fill(api, primary, image_id,
                                                        f"root-{kind}"), references)
            src = work / "state" / "images" / "images" / image_id if kind == "dir" else image
            nfs_ref = [("nfs-cp", timed(["nfs-cp", str(src), nfs.url(share / f"ref-{kind}")]))]
            report(f"{kind} -> nfs", size, cache_fill(api, nfs_primary, image_id,
                                                      f"nfs-root-{kind}"),
                   references[-1:] + nfs_ref)
        print("target: ratio >= 0.8 for dir and sftp")
    finally:
        controller.stop()
        server.close()
        sshd.stop()
        s3.stop()
        nfs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
