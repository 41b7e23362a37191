"""Benchmark: qcow2 snapshots through the API against the bare qemu-img steps they stand
for, on the same chain shape in the same run. Prints each latency and the ratio.

- take: POST /v1/volumes/{id}/snapshots + job wait, against `qemu-img create -b` of
  the next overlay;
- delete: DELETE /v1/snapshots/{id} of the oldest snapshot but the first + job wait
  (Strata rebases its child onto the first), against `qemu-img commit` of the same
  layer into the first plus the unsafe rebase of its child that a bare-tools operator
  would do;
- backup: POST /v1/snapshots/{id}/backups to the `dir` store + job wait (the chain up
  to the snapshot flattened, copied and sha256 verified), against `qemu-img convert` of
  the same snapshot's chain into a file; as throughput of the chain's data.

Each snapshot layer holds `--layer-mib` of its own data, written with qemu-io between
takes on both sides. Starts `strata-controller` on embedded defaults in a temporary
state directory; leaves nothing running.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.runner import MIB, Bench, run, timed, wait_ok  # noqa: E402
from cli.client import Client  # noqa: E402


def write_layer(path: str, index: int, layer_mib: int) -> None:
    """Writes this layer's own data: `layer_mib` MiB of byte `index` at its own offset."""
    offset = index * layer_mib * MIB
    subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                    f"write -P {index % 256} {offset} {layer_mib * MIB}", path],
                   check=True, stdout=subprocess.DEVNULL)


def api_chain(api: Client, primary: str, layers: int, layer_mib: int) -> tuple[
        list[float], list[float]]:
    """(take latencies, delete latencies) through the API, in seconds."""
    size = (layers + 1) * layer_mib * MIB
    job = api.wait_job(api.post("/v1/volumes", {"name": "bench-snap", "size": size,
                                                "primary_storage_id": primary})["job_id"])
    volume = job["resource_id"]
    takes, snapshots = [], []
    for i in range(layers):
        write_layer(api.get(f"/v1/volumes/{volume}")["path"], i, layer_mib)

        def take(i: int = i) -> None:
            done = wait_ok(api, api.post(f"/v1/volumes/{volume}/snapshots",
                                         {"name": f"s{i}"}), f"take s{i}")
            snapshots.append(str(done["resource_id"]))
        takes.append(timed(take))
    deletes = []
    for snapshot in snapshots[1:]:
        def delete(snapshot: str = snapshot) -> None:
            wait_ok(api, api.delete(f"/v1/snapshots/{snapshot}"), f"delete {snapshot}")
        deletes.append(timed(delete))
    return takes, deletes


def raw_chain(work: Path, layers: int, layer_mib: int) -> tuple[list[float], list[float]]:
    """The same chain with bare qemu-img: each take a new overlay, each delete a commit of
    the oldest layer into the base and an unsafe rebase of its child onto the base."""
    work.mkdir()
    size = (layers + 1) * layer_mib * MIB
    files = [str(work / "l0.qcow2")]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", files[0], str(size)],
                   check=True)
    takes = []
    for i in range(layers):
        write_layer(files[-1], i, layer_mib)
        new = str(work / f"l{i + 1}.qcow2")
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", files[-1], "-F", "qcow2", new]
        takes.append(timed(functools.partial(subprocess.run, argv, check=True)))
        files.append(new)
    deletes = []
    base = files[0]
    for layer, child in itertools.pairwise(files[1:]):
        def merge(layer: str = layer, child: str = child) -> None:
            subprocess.run(["qemu-img", "commit", "-q", "-d", layer], check=True)
            subprocess.run(["qemu-img", "rebase", "-q", "-u", "-b", base, "-F", "qcow2",
                            child], check=True)
            Path(layer).unlink()
        deletes.append(timed(merge))
    return takes, deletes


def backup_chain(api: Client, primary: str, store: str, work: Path, layers: int,
                 layer_mib: int) -> tuple[float, float, float]:
    """(API backup seconds, bare `qemu-img convert` seconds, the same then `sync` of the
    file, as the backup's publish does) of one chain of `layers` snapshots, each layer
    `layer_mib` MiB of its own data."""
    size = layers * layer_mib * MIB
    job = api.wait_job(api.post("/v1/volumes", {"name": "bench-backup", "size": size,
                                                "primary_storage_id": primary})["job_id"])
    volume = job["resource_id"]
    snapshot = ""
    for i in range(layers):
        write_layer(api.get(f"/v1/volumes/{volume}")["path"], i, layer_mib)
        snapshot = api.wait_job(api.post(f"/v1/volumes/{volume}/snapshots",
                                         {"name": f"b{i}"})["job_id"])["resource_id"]

    def backup() -> None:
        wait_ok(api, api.post(f"/v1/snapshots/{snapshot}/backups",
                              {"backup_storage_id": store}), "backup")
    ours = timed(backup)
    path = api.get(f"/v1/snapshots/{snapshot}")["path"]

    def convert(name: str, sync: bool) -> None:
        out = str(work / name)
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", path, out],
                       check=True)
        if sync:
            subprocess.run(["sync", out], check=True)
    raw = timed(functools.partial(convert, "converted.qcow2", False))
    synced = timed(functools.partial(convert, "synced.qcow2", True))
    return ours, raw, synced


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", type=int, default=12,
                   help="snapshots taken in a row (at most the chain depth bound, 16)")
    p.add_argument("--layer-mib", type=int, default=16)
    p.add_argument("--backup-layers", type=int, default=4)
    p.add_argument("--backup-layer-mib", type=int, default=48)


def figures(b: Bench) -> Iterator[str]:
    args = b.args
    api_take, api_delete = api_chain(b.api, b.primary, args.layers, args.layer_mib)
    raw_take, raw_delete = raw_chain(b.work / "raw", args.layers, args.layer_mib)
    api_backup, raw_convert, raw_synced = backup_chain(
        b.api, b.primary, b.store, b.work, args.backup_layers, args.backup_layer_mib)

    def line(what: str, ours: list[float], raw: list[float]) -> str:
        a, r = statistics.median(ours), statistics.median(raw)
        return (f"  {what:7} API {1000 * a:8.1f} ms   qemu-img {1000 * r:8.1f} ms   "
                f"ratio API/raw {a / r:6.2f}")

    yield (f"qcow2 snapshots, a chain of {args.layers} layers of {args.layer_mib} MiB "
           "each; median latency")
    yield line("take", api_take, raw_take)
    yield line("delete", api_delete, raw_delete)
    data = args.backup_layers * args.backup_layer_mib
    yield (f"backup of a chain of {args.backup_layers} layers of {args.backup_layer_mib} "
           "MiB to dir; throughput of its data")
    yield f"  API {data / api_backup:7.1f} MiB/s ({api_backup:.2f} s)"
    for what, raw in (("qemu-img convert", raw_convert),
                      ("qemu-img convert + sync", raw_synced)):
        yield (f"  {what:23} {data / raw:7.1f} MiB/s ({raw:.2f} s)   "
               f"ratio raw/API throughput {api_backup / raw:5.2f}")


if __name__ == "__main__":
    run(__doc__ or "", figures, options)
