"""Fault-injection harness: a real controller and agent, two local primary storages and
a dir backup storage, random operations (register an image, clone volumes of it, take,
back up and delete snapshots, migrate and delete volumes) while the agent or the
controller is killed with SIGKILL at random points and started again.

Once every job has settled it checks what no sequence of faults may leave: files no
row knows (the reconcile report of each storage), jobs still `running`, objects shown
`ready` whose bytes do not check out (`qemu-img check` of each ready volume, the
sha256 of each ready image), and a capacity ledger that differs from its
recomputation from the rows. The seed is printed; `--seed` replays a run:

    python -m tests.fault.harness --ops 200 --seed 1234
"""

from __future__ import annotations

import argparse
import hashlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.client import ApiError, Client
from tests.support.enrol import enrol_host
from tests.support.fileserver import FileServer
from tests.support.procs import start_agent, start_controller

MiB = 1 << 20
SETTLE_TIMEOUT = 120.0
# Checks frequent enough to see a restarted agent within the harness's patience.
CONFIG: dict[str, object] = {"host_check_interval": 1}
WEIGHTS = {"register_image": 1, "create_volume": 4, "snapshot": 3, "delete_snapshot": 2,
           "backup_snapshot": 1, "delete_volume": 2, "migrate": 2}


@dataclass
class Report:
    seed: int
    ops: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stuck_jobs: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    ledger_drift: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (self.leaks or self.missing or self.stuck_jobs or self.unverified
                    or self.ledger_drift)

    def summary(self) -> str:
        return (f"seed={self.seed} ops={self.ops} kills={dict(self.kills)} "
                f"leaks={len(self.leaks)} missing={len(self.missing)} "
                f"stuck_jobs={len(self.stuck_jobs)} unverified={len(self.unverified)} "
                f"ledger_drift={len(self.ledger_drift)} seconds={self.seconds:.0f}\n"
                f"outcomes={dict(sorted(self.outcomes.items()))}\n"
                + "".join(f"  {line}\n" for line in (self.leaks + self.missing
                                                     + self.stuck_jobs + self.unverified
                                                     + self.ledger_drift)))


class Harness:
    """One run in `root`: `run(ops, kills)` returns the report."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root, self.rng = root, random.Random(seed)
        self.report = Report(seed)
        self.db_url = f"sqlite:///{root / 'controller' / 'strata.sqlite'}"
        self.www = root / "www"
        self.www.mkdir(parents=True, exist_ok=True)
        self.files = FileServer(self.www)
        self.agent, _ = start_agent(root / "agent")
        self.controller = start_controller(root / "controller", self.db_url, config=CONFIG)
        self.api = Client(self.controller.url, self.controller.token)
        self.host_id = enrol_host(self.api, "host-a", self.agent)
        self.primaries = [self._add("/v1/primary-storages", {
            "name": f"local-{n}", "type": "local", "config": {"path": str(root / n)},
            "hosts": [self.host_id], "overprovision_factor": 4.0}) for n in ("a", "b")]
        self.backup = self._add("/v1/backup-storages", {
            "name": "store", "type": "dir", "config": {"path": str(root / "backup")}})
        self.jobs: list[str] = []
        self.images = 0

    def close(self) -> None:
        for proc in (self.controller, self.agent):
            proc.stop()
        self.files.close()

    def _add(self, path: str, body: dict[str, Any]) -> str:
        job = self.api.wait_job(self.api.post(path, body)["job_id"], timeout=60)
        assert job["state"] == "succeeded", job
        return str(job["resource_id"])

    # --- operations -------------------------------------------------------------------

    def _ready(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api.get(f"{path}?limit=500")["items"]
        return [i for i in items if i["state"] == "ready"]

    def _pick(self, path: str) -> dict[str, Any]:
        ready = self._ready(path)
        if not ready:
            raise LookupError(path)
        return self.rng.choice(ready)

    def register_image(self) -> dict[str, Any]:
        self.images += 1
        name = f"img{self.images}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(self.www / name),
                        "4M"], check=True)
        sha = hashlib.sha256((self.www / name).read_bytes()).hexdigest()
        return self.api.post("/v1/images", {  # type: ignore[no-any-return]
            "name": f"img{self.images}", "url": self.files.url(name), "sha256": sha,
            "format": "qcow2", "backup_storage_id": self.backup})

    def create_volume(self) -> dict[str, Any]:
        image = self._pick("/v1/images")
        return self.api.post("/v1/volumes", {  # type: ignore[no-any-return]
            "name": "vol", "primary_storage_id": self.rng.choice(self.primaries),
            "image_id": image["id"]})

    def snapshot(self) -> dict[str, Any]:
        volume = self._pick("/v1/volumes")
        return self.api.post(  # type: ignore[no-any-return]
            f"/v1/volumes/{volume['id']}/snapshots", {"name": "snap"})

    def delete_snapshot(self) -> dict[str, Any]:
        return self.api.delete(  # type: ignore[no-any-return]
            f"/v1/snapshots/{self._pick('/v1/snapshots')['id']}")

    def backup_snapshot(self) -> dict[str, Any]:
        return self.api.post(  # type: ignore[no-any-return]
            f"/v1/snapshots/{self._pick('/v1/snapshots')['id']}/backups",
            {"backup_storage_id": self.backup})

    def delete_volume(self) -> dict[str, Any]:
        volume = self._pick("/v1/volumes")
        return self.api.delete(  # type: ignore[no-any-return]
            f"/v1/volumes/{volume['id']}?cascade=true")

    def migrate(self) -> dict[str, Any]:
        volume = self._pick("/v1/volumes")
        dest = next(p for p in self.primaries if p != volume["primary_storage_id"])
        return self.api.post(  # type: ignore[no-any-return]
            f"/v1/volumes/{volume['id']}/migrate", {"primary_storage_id": dest})

    def operations(self) -> dict[str, Callable[[], dict[str, Any]]]:
        return {"register_image": self.register_image, "create_volume": self.create_volume,
                "snapshot": self.snapshot, "delete_snapshot": self.delete_snapshot,
                "backup_snapshot": self.backup_snapshot,
                "delete_volume": self.delete_volume, "migrate": self.migrate}

    # --- faults -----------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL of the agent or the controller, then the same one started again on
        its port and state, and the host connected again (after an agent's restart, by
        a new connect, which sweeps what its tasks left)."""
        which = self.rng.choice(["agent", "controller"])
        self.report.kills[which] += 1
        connects = self._connects()
        proc = self.agent if which == "agent" else self.controller
        proc.stop(signal.SIGKILL)
        port = int(proc.url.rsplit(":", 1)[1])
        if which == "agent":
            self.agent, _ = start_agent(self.root / "agent", port=port)
        else:
            self.controller = start_controller(self.root / "controller", self.db_url,
                                               config=CONFIG,
                                               port=port)
            self.api = Client(self.controller.url, self.api.token)
        self._wait_connected(connects if which == "agent" else None)

    def _connects(self) -> list[dict[str, Any]]:
        return self.api.get(  # type: ignore[no-any-return]
            f"/v1/jobs?kind=host.connect&resource_id={self.host_id}&limit=500")["items"]

    def _wait_connected(self, before: list[dict[str, Any]] | None) -> None:
        """Until the host is connected and, given the connect jobs `before` a restart, a
        new one has ended."""
        deadline = time.monotonic() + 60
        while (self.api.get(f"/v1/hosts/{self.host_id}")["state"] != "connected"
               or (before is not None and not self._connected_since(before))):
            if time.monotonic() > deadline:
                raise RuntimeError("the host did not connect again after a restart")
            time.sleep(0.2)

    def _connected_since(self, before: list[dict[str, Any]]) -> bool:
        known = {job["id"] for job in before}
        new = [job for job in self._connects() if job["id"] not in known]
        return bool(new) and all(job["state"] != "running" for job in new)

    # --- the run ----------------------------------------------------------------------

    def run(self, ops: int, kills: int, weights: dict[str, int] | None = None) -> Report:
        """`weights`: how often each operation is picked, over WEIGHTS."""
        started = time.monotonic()
        self.settle(self.register_image())
        kill_at = set(self.rng.sample(range(1, ops), min(kills, ops - 1)))
        operations = self.operations()
        weights = {**WEIGHTS, **(weights or {})}
        names = sorted(operations)
        for n in range(ops):
            name = self.rng.choices(names, [weights[k] for k in names])[0]
            try:
                accepted = operations[name]()
                self.jobs.append(str(accepted["job_id"]))
                self.report.outcomes[f"{name}: accepted"] += 1
            except LookupError:
                self.report.outcomes[f"{name}: nothing to act on"] += 1
            except ApiError as exc:
                self.report.outcomes[f"{name}: {exc.status} {exc.code}"] += 1
            self.report.ops += 1
            if n in kill_at:
                self._into_a_job()
                self.kill()
            if len(self._running()) >= 3:
                self.settle()
        self.settle()
        self.check()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _into_a_job(self) -> None:
        """A random moment while some job runs (if one starts within a few seconds)."""
        deadline = time.monotonic() + 3
        while not self._running() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(self.rng.uniform(0, 0.3))

    def _running(self) -> list[dict[str, Any]]:
        return self.api.get("/v1/jobs?state=running&limit=500")[  # type: ignore[no-any-return]
            "items"]

    def settle(self, accepted: dict[str, Any] | None = None) -> None:
        """Until no job runs (those left after SETTLE_TIMEOUT are reported stuck)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while running := self._running():
            if time.monotonic() > deadline:
                self.report.stuck_jobs += [f"job {j['id']} ({j['kind']}) still running"
                                           for j in running]
                return
            time.sleep(0.1)

    # --- the checks -------------------------------------------------------------------

    def check(self) -> None:
        r = self.report
        for ps in self.primaries:
            job = self.api.wait_job(self.api.post(
                f"/v1/primary-storages/{ps}/reconcile")["job_id"], timeout=60)
            assert job["state"] == "succeeded", job
            rep = self.api.get(f"/v1/primary-storages/{ps}/reconcile")
            r.leaks += [f"orphan {ps}: {o['path']} ({o['kind']})" for o in rep["orphans"]]
            r.missing += [f"missing {m['resource_type']} {m['id']}: {m['path']}"
                          for m in rep["missing"]]
            r.leaks += [f"in progress with no job running {ps}: {p}"
                        for p in rep["in_progress"]]
            if rep["capacity_allocated"] != rep["capacity_recomputed"]:
                r.ledger_drift.append(f"ledger {ps}: allocated {rep['capacity_allocated']}"
                                      f" != recomputed {rep['capacity_recomputed']}")
        job = self.api.wait_job(self.api.post(
            f"/v1/backup-storages/{self.backup}/reconcile")["job_id"], timeout=60)
        rep = self.api.get(f"/v1/backup-storages/{self.backup}/reconcile")
        r.leaks += [f"orphan backup: {o['path']}" for o in rep["orphans"]]
        r.missing += [f"missing {m['resource_type']} {m['id']}" for m in rep["missing"]]
        for volume in self._ready("/v1/volumes"):
            checked = subprocess.run(["qemu-img", "check", "-q", volume["path"]],
                                     capture_output=True, text=True)
            if checked.returncode != 0:
                r.unverified.append(f"volume {volume['id']} at {volume['path']}: "
                                    f"{checked.stderr.strip()}")
        for image in self._ready("/v1/images"):
            stored = self.root / "backup" / "images" / image["id"]
            if not stored.exists() or hashlib.sha256(
                    stored.read_bytes()).hexdigest() != image["sha256"]:
                r.unverified.append(f"image {image['id']}: its bytes are not its sha256")


def run(root: Path, seed: int, ops: int, kills: int,
        weights: dict[str, int] | None = None) -> Report:
    harness = Harness(root, seed)
    try:
        return harness.run(ops, kills, weights)
    finally:
        harness.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--kills", type=int, default=None,
                        help="SIGKILLs spread over the run (default: one per 20 ops)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"seed={seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="strata-fault-") as tmp:
        report = run(Path(tmp), seed, args.ops,
                     args.kills if args.kills is not None else max(1, args.ops // 20))
    print(report.summary(), flush=True)
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
