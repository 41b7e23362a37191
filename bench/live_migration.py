"""Benchmark: operations on a volume attached to a running VM, through the API, against
the bare tool doing the same on the same data, in the same run:

- live storage migration between two local storages of one host (POST
  /v1/volumes/{id}/migrate + job wait: the destination made, libvirt's block copy of the
  whole disk while the domain runs, the pivot, the row switched, the source removed)
  against `qemu-img convert` of the same data to the other directory; as throughput;
- live snapshot (POST /v1/volumes/{id}/snapshots + job wait: libvirt's external
  disk-only snapshot by the domain) against libvirt-python's `snapshotCreateXML` with
  the same flags on a domain's disk alone; as latency.

The domain has no guest OS (QEMU in TCG mode sitting in its firmware with its disks
open), run by a private libvirtd, beside a controller and an agent started for the run;
leaves nothing running.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import libvirt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.libvirt import disks  # noqa: E402
from agent.libvirt.disks import Layer  # noqa: E402
from agent.libvirt.snapshots import snapshot_xml  # noqa: E402
from bench.migration import raw_converts, write_data  # noqa: E402
from bench.runner import MIB, Bench, run, timed, wait_ok  # noqa: E402
from cli.client import Client  # noqa: E402
from tests.support.enrol import enrol_host  # noqa: E402
from tests.support.libvirtd import Libvirtd  # noqa: E402
from tests.support.procs import start_agent, start_controller  # noqa: E402

DOMAIN_XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><features><acpi/></features>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>"""
SNAPSHOT_FLAGS = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                  | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                  | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)


def start_site(work: Path, cleanup: ExitStack) -> tuple[Client, str, str]:
    """libvirtd, an agent using it (disks on virtio-scsi), a controller, the host and a
    local primary storage and a `dir` backup storage."""
    daemon = Libvirtd(work / "libvirtd")
    cleanup.callback(daemon.stop)
    (work / "uri").write_text(daemon.uri)
    agent, _ = start_agent(work / "agent", {"libvirt_uri": daemon.uri, "disk_bus": "scsi"})
    cleanup.callback(agent.stop)
    controller = start_controller(work / "controller",
                                  f"sqlite:///{work / 'controller' / 'strata.sqlite'}")
    cleanup.callback(controller.stop)
    api = Client(controller.url, controller.token, timeout=600)
    host = enrol_host(api, "kvm-1", agent)
    primary = wait_ok(api, api.post("/v1/primary-storages", {
        "name": "local-a", "type": "local", "hosts": [host],
        "config": {"path": str(work / "primary-a")}}), "local storage")["resource_id"]
    store = wait_ok(api, api.post("/v1/backup-storages", {
        "name": "store", "type": "dir", "config": {"path": str(work / "store")}}),
        "backup storage")["resource_id"]
    return api, str(primary), str(store)


def domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    dom = conn.defineXML(DOMAIN_XML.format(name=name))
    dom.create()
    return dom


def live_migrations(b: Bench, volume: str, mib: int, rounds: int) -> list[float]:
    """Seconds per live migration of the attached volume, back and forth."""
    api = b.api
    host = api.get("/v1/hosts")["items"][0]["id"]
    other = wait_ok(api, api.post("/v1/primary-storages", {
        "name": "local-b", "type": "local", "hosts": [host],
        "config": {"path": str(b.work / "primary-b")}}), "second storage")["resource_id"]
    seconds = []
    for i in range(rounds):
        dest = other if i % 2 == 0 else b.primary

        def move(dest: str = dest) -> None:
            wait_ok(api, api.post(f"/v1/volumes/{volume}/migrate",
                                  {"primary_storage_id": dest}), "live migration")
        seconds.append(timed(move))
    return seconds


def live_snapshots(api: Client, volume: str, count: int) -> list[float]:
    seconds = []
    for i in range(count):
        seconds.append(timed(functools.partial(
            wait_ok, api, api.post(f"/v1/volumes/{volume}/snapshots", {"name": f"live-{i}"}),
            "live snapshot")))
    return seconds


def raw_snapshots(conn: libvirt.virConnect, work: Path, count: int) -> list[float]:
    """libvirt's disk-only snapshot alone, on a disk of another domain."""
    top = str(work / "raw-snap.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", top, "64M"], check=True)
    dom = domain(conn, "bench-raw")
    dom.attachDeviceFlags(disks.scsi_controller_xml(), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    dom.attachDeviceFlags(disks.disk_xml(serial="raw", device="sda", bus="scsi",
                                         chain=[Layer(top, "qcow2")]),
                          libvirt.VIR_DOMAIN_AFFECT_LIVE)
    seconds = []
    for i in range(count):
        xml = snapshot_xml("sda", str(work / f"raw-snap-{i}.qcow2"), [])
        seconds.append(timed(functools.partial(dom.snapshotCreateXML, xml, SNAPSHOT_FLAGS)))
    dom.destroy()
    return seconds


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mib", type=int, default=256, help="data the volume holds")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--snapshots", type=int, default=8)


def figures(b: Bench) -> Iterator[str]:
    api, mib, rounds = b.api, b.args.mib, b.args.rounds
    conn = libvirt.open((b.work / "uri").read_text())
    b.cleanup.callback(conn.close)
    volume = str(wait_ok(api, api.post("/v1/volumes", {
        "name": "bench-live", "size": 2 * mib * MIB, "primary_storage_id": b.primary}),
        "volume")["resource_id"])
    write_data(api.get(f"/v1/volumes/{volume}")["path"], mib)
    domain(conn, "bench-vm")
    host = api.get("/v1/hosts")["items"][0]["id"]
    wait_ok(api, api.post(f"/v1/volumes/{volume}/attach",
                          {"host_id": host, "domain": "bench-vm"}), "attach")

    ours = statistics.median(live_migrations(b, volume, mib, rounds))
    yield (f"live storage migration of an attached volume holding {mib} MiB between two "
           f"local storages; median of {rounds}; API {mib / ours:.1f} MiB/s ({ours:.2f} s)")
    raw = statistics.median(raw_converts(b.work, mib, rounds))
    yield (f"  qemu-img convert      {mib / raw:7.1f} MiB/s ({raw:5.2f} s)   "
           f"ratio raw/API throughput {ours / raw:5.2f}")

    count = b.args.snapshots
    live = statistics.median(live_snapshots(api, volume, count))
    bare = statistics.median(raw_snapshots(conn, b.work, count))
    yield (f"live snapshot of the attached volume, {count} in a row; median latency: API "
           f"{1000 * live:.1f} ms, libvirt snapshotCreateXML alone {1000 * bare:.1f} ms "
           f"(ratio API/raw {live / bare:.2f})")


if __name__ == "__main__":
    run(__doc__ or "", figures, options, start_site)
