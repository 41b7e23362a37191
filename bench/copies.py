"""Benchmark: an uncached 1 GiB image from each backup type (dir, sftp, s3) into a local
primary storage's image cache and into an NFS one (libnfs mode, nfs-ganesha), through
the API (a root volume request that must fill the cache), next to a reference tool
moving the same file in the same run: `cp` (and `dd`, a user-space copy) for dir,
OpenSSH's `sftp` client for sftp, `nfs-cp` for an NFS destination. S3 has no reference
tool here. Each copy starts from a cold page cache; the summary gives medians. Beside the
dir fill, `sha256` is the time to hash the same number of bytes held in memory on every
core: the ceiling of a copy that checks each byte on this machine.

Starts `strata-controller` on embedded defaults, an OpenSSH server, an S3-compatible
server and an NFS server (on the standard NFS ports) in a temporary directory; leaves
nothing running.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.volumes import start_embedded, wait_seeded  # noqa: E402
from cli.client import Client  # noqa: E402
from tests.support.fileserver import FileServer  # noqa: E402
from tests.support.nfsserver import NfsServer  # noqa: E402
from tests.support.s3server import S3Server  # noqa: E402
from tests.support.sshd import SshServer  # noqa: E402

MiB = 1 << 20


def make_image(path: Path, size: int) -> None:
    """Incompressible data, so no layer can shortcut it."""
    with open(path, "wb") as f:
        for _ in range(size // (64 * MiB)):
            f.write(os.urandom(64 * MiB))


def settle() -> bool:
    """Writes back dirty pages and drops the page cache, so that every copy starts cold
    (the source is read from disk, and no earlier copy is still being written back).
    False when this host does not allow it (not root, or a container that forbids it)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def timed(*argvs: list[str]) -> float:
    """Seconds to run these commands one after another, from a cold cache."""
    settle()
    start = time.perf_counter()
    for argv in argvs:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def cache_fill(api: Client, primary: str, image_id: str, name: str) -> float:
    """Seconds for a root volume whose image is not cached yet: the copy, verification,
    fsync and publish of the cache, then the linked clone."""
    settle()
    start = time.perf_counter()
    job = api.wait_job(api.post("/v1/volumes", {
        "name": name, "primary_storage_id": primary, "image_id": image_id})["job_id"],
        timeout=1800)
    assert job["state"] == "succeeded", job
    return time.perf_counter() - start


Rates = dict[str, list[float]]


def hashing(size: int) -> float:
    """Seconds to sha256 `size` bytes in memory, split over as many threads as cores (as
    the verified copies hash their chunks in parallel); no I/O, no copy."""
    block = os.urandom(4 * MiB)
    workers = os.cpu_count() or 1
    blocks = max(1, size // len(block) // workers)

    def digest(_: int) -> str:
        h = hashlib.sha256()
        for _ in range(blocks):
            h.update(block)
        return h.hexdigest()

    start = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(digest, range(workers)))
    return (time.monotonic() - start) * size / (blocks * workers * len(block))


def report(rates: Rates, label: str, size: int, seconds: float,
           references: list[tuple[str, float]]) -> None:
    """Prints one measurement and keeps it for the summary."""
    rate = size / seconds / 1e6
    rates.setdefault(f"{label}|API", []).append(rate)
    line = f"  {label:13} API {rate:7.1f}"
    for tool, ref_seconds in references:
        ref = size / ref_seconds / 1e6
        rates.setdefault(f"{label}|{tool}", []).append(ref)
        line += f"   {tool} {ref:7.1f} (ratio {rate / ref:4.2f})"
    print(line if references else f"{line}   (no reference tool)")


def summary(rates: Rates) -> None:
    print("median over the rounds (MB/s):")
    labels = dict.fromkeys(key.split("|")[0] for key in rates)
    for label in labels:
        api = statistics.median(rates[f"{label}|API"])
        line = f"  {label:13} API {api:7.1f}"
        for key, values in rates.items():
            name, tool = key.split("|")
            if name == label and tool != "API":
                ref = statistics.median(values)
                line += f"   {tool} {ref:7.1f} (ratio {api / ref:4.2f})"
        print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--sources", default="dir,sftp,s3",
                   help="backup types to copy from, comma-separated")
    p.add_argument("--rounds", type=int, default=3,
                   help="measure each copy this many times (a fresh image each round)")
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
    controller = start_embedded(work)
    try:
        api = Client(controller.url, controller.token, timeout=600)
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

        cache = "cold page cache" if settle() else "warm page cache (cannot drop it here)"
        print(f"{args.size_mib} MiB image into an image cache (MB/s, 1 MB = 10^6 bytes; "
              f"every copy starts with a {cache})")
        rates: Rates = {}
        known = work / "known_hosts"
        known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n")
        copy = work / "reference-copy"
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}")
            for kind, store in stores.items():
                if kind not in args.sources.split(","):
                    continue
                job = api.wait_job(api.post("/v1/images", {
                    "name": f"big-{kind}-{round_}", "url": server.url(image.name),
                    "backup_storage_id": store})["job_id"], timeout=1800)
                assert job["state"] == "succeeded", job
                image_id = job["resource_id"]
                references: list[tuple[str, float]] = []
                if kind == "dir":
                    src = work / "state" / "images" / "images" / image_id
                    references.append(("cp", timed(["cp", str(src), str(copy)])))
                    copy.unlink()
                    references.append(("cp+sync", timed(["cp", str(src), str(copy)],
                                                         ["sync", str(copy)])))
                    copy.unlink()
                    # cp copies in the kernel (copy_file_range); dd moves the bytes through
                    # user space, as any copier that verifies them must.
                    references.append(("dd", timed(["dd", f"if={src}", f"of={copy}", "bs=4M",
                                                    "conv=fsync", "status=none"])))
                    copy.unlink()
                    references.append(("sha256", hashing(size)))
                elif kind == "sftp":
                    src = work / "sftp-store" / "images" / image_id
                    references.append(("sftp", timed([
                        "sftp", "-q", "-i", str(work / "sshd" / "client_key"),
                        "-P", str(sshd.port), "-o", f"UserKnownHostsFile={known}",
                        "-o", "StrictHostKeyChecking=yes", f"root@127.0.0.1:{src}",
                        str(copy)])))
                    copy.unlink()
                report(rates, f"{kind} -> local", size,
                       cache_fill(api, primary, image_id, f"root-{kind}-{round_}"), references)
                src = work / "state" / "images" / "images" / image_id if kind == "dir" else image
                # A new name each time: the server caches names it has seen.
                nfs_copy = share / f"reference-copy-{kind}-{round_}"
                nfs_ref = [("nfs-cp", timed(["nfs-cp", str(src), nfs.url(nfs_copy)]))]
                nfs_copy.unlink()
                report(rates, f"{kind} -> nfs", size,
                       cache_fill(api, nfs_primary, image_id, f"nfs-root-{kind}-{round_}"),
                       [r for r in references if r[0] == "sftp"] + nfs_ref)
        summary(rates)
        print("target: ratio >= 0.9 against cp+sync for dir and against sftp for sftp")
    finally:
        controller.stop()
        server.close()
        sshd.stop()
        s3.stop()
        nfs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
