"""Benchmark: cold migration of a volume between two local storages of one host through
the API (POST /v1/volumes/{id}/migrate + job wait: copy, compare, switch, remove the
source) against a bare `qemu-img convert` of the same file to the other directory, and
against convert plus the checks a migration makes (`qemu-img compare`, `sync`), in the
same run. Prints each throughput and the ratio.

The volume holds `--mib` MiB of data written with qemu-io; it is moved back and forth
`--rounds` times and the median counts. Starts `strata-controller` on embedded defaults
in a temporary state directory; leaves nothing running.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.runner import MIB, Bench, run, timed, wait_ok  # noqa: E402
from cli.client import Client  # noqa: E402


def write_data(path: str, mib: int) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5c 0 {mib * MIB}", path],
                   check=True, stdout=subprocess.DEVNULL)


def api_migrations(api: Client, work: Path, primary: str, mib: int,
                   rounds: int) -> list[float]:
    """Seconds per migration, the volume going from one local storage to the other."""
    host = api.get("/v1/hosts")["items"][0]["id"]
    job = api.wait_job(api.post("/v1/primary-storages", {
        "name": "bench-b", "type": "local", "hosts": [host],
        "config": {"path": str(work / "state" / "primary-b")}})["job_id"])
    other = job["resource_id"]
    job = api.wait_job(api.post("/v1/volumes", {"name": "bench-mig", "size": 2 * mib * MIB,
                                                "primary_storage_id": primary})["job_id"])
    volume = job["resource_id"]
    write_data(api.get(f"/v1/volumes/{volume}")["path"], mib)
    seconds = []
    for i in range(rounds):
        dest = other if i % 2 == 0 else primary

        def move(dest: str = dest) -> None:
            wait_ok(api, api.post(f"/v1/volumes/{volume}/migrate",
                                  {"primary_storage_id": dest}), "migration")
        seconds.append(timed(move))
    return seconds


def raw_converts(work: Path, mib: int, rounds: int,
                 checked: bool = False) -> list[float]:
    """The same volume with bare qemu-img: convert to the other directory (`checked`:
    then `qemu-img compare` and `sync`, the checks a migration makes), remove the
    source."""
    a, b = work / f"raw-a-{checked}", work / f"raw-b-{checked}"
    a.mkdir()
    b.mkdir()
    src = a / "vol.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), str(2 * mib * MIB)],
                   check=True)
    write_data(str(src), mib)
    seconds = []
    for i in range(rounds):
        dest = (b if i % 2 == 0 else a) / "vol.qcow2"
        steps = [["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(src), str(dest)]]
        if checked:
            steps += [["qemu-img", "compare", "-q", str(src), str(dest)], ["sync"]]
        seconds.append(timed(functools.partial(run_all, steps)))
        src.unlink()
        src = dest
    return seconds


def run_all(steps: list[list[str]]) -> None:
    for argv in steps:
        subprocess.run(argv, check=True)


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mib", type=int, default=512, help="data the volume holds")
    p.add_argument("--rounds", type=int, default=4)


def figures(b: Bench) -> Iterator[str]:
    mib, rounds = b.args.mib, b.args.rounds
    ours = statistics.median(api_migrations(b.api, b.work, b.primary, mib, rounds))
    yield (f"cold migration of a volume holding {mib} MiB between two local storages; "
           f"median of {rounds}; API {mib / ours:.1f} MiB/s ({ours:.2f} s)")
    for what, checked in (("qemu-img convert", False), ("convert+compare+sync", True)):
        raw = statistics.median(raw_converts(b.work, mib, rounds, checked))
        yield (f"  {what:21} {mib / raw:7.1f} MiB/s ({raw:5.2f} s)   "
               f"ratio raw/API throughput {ours / raw:5.2f}")


if __name__ == "__main__":
    run(__doc__ or "", figures, options)
