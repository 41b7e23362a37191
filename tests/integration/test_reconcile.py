"""Reconcile against a real controller and agent: a local primary storage whose files
were tampered with behind Strata's back (a stray file, a leftover temporary, a volume
file removed, one grown), the report through the API and the CLI, the quarantine of the
orphans the operator names, and the periodic run; a dir backup storage's report."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from cli.client import ApiError
from tests.conftest import Stack
from tests.integration.test_cli import strata
from tests.integration.test_end_to_end import register
from tests.support.fileserver import FileServer

MiB = 1 << 20
LEFTOVER = ".strata-tmp-0b0e0f00-0000-4000-8000-000000000000.create~0123456789ab-x.qcow2"


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


def error_of(call) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def test_reconcile_reports_and_quarantines(stack: Stack, file_server: FileServer,
                                           image_dir: Path) -> None:
    api, ps = stack.api, stack.primary_id
    image_id, _ = register(stack, file_server, image_dir, size="4M")
    (stack.backup_path / "images" / "stray").write_bytes(b"x")
    stack.wait(api.post(f"/v1/backup-storages/{stack.backup_id}/reconcile"))
    store = api.get(f"/v1/backup-storages/{stack.backup_id}/reconcile")
    assert [o["path"] for o in store["orphans"]] == ["images/stray"]
    assert (store["objects"], store["missing"], store["size_mismatches"]) == (2, [], []), \
        "the image is known, its virtual size the recorded one"
    vols = {}
    for name, extra in (("clone", {"image_id": image_id}), ("empty", {"size": 8 * MiB})):
        job = stack.wait(api.post("/v1/volumes", {"name": name, "primary_storage_id": ps,
                                                  **extra}))
        vols[name] = api.get(f"/v1/volumes/{job['resource_id']}")
    err = error_of(lambda: api.get(f"/v1/primary-storages/{ps}/reconcile"))
    assert (err.status, err.code) == (404, "no_report")

    stack.wait(api.post(f"/v1/primary-storages/{ps}/reconcile"))
    clean = api.get(f"/v1/primary-storages/{ps}/reconcile")
    assert (clean["orphans"], clean["missing"], clean["size_mismatches"]) == ([], [], [])
    assert clean["objects"] == 3, "two volumes and the image cache"

    volumes = stack.primary_path / "volumes"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(volumes / "stray.qcow2"),
                    "1M"], check=True)
    (volumes / LEFTOVER).write_bytes(b"half")
    Path(vols["empty"]["path"]).unlink()
    subprocess.run(["qemu-img", "resize", "-q", vols["clone"]["path"], "32M"], check=True)

    job = stack.wait(api.post(f"/v1/primary-storages/{ps}/reconcile"))
    assert job["result"] == {"objects": 4, "orphans": 2, "missing": 1, "size_mismatches": 1}
    report = api.get(f"/v1/primary-storages/{ps}/reconcile")
    assert report["job_id"] == job["id"] and report["host_id"] == stack.host_id
    assert sorted((o["path"], o["kind"]) for o in report["orphans"]) == [
        (f"volumes/{LEFTOVER}", "temporary"), ("volumes/stray.qcow2", "volume")]
    assert report["missing"] == [{
        "resource_type": "volume", "id": vols["empty"]["id"], "name": "empty",
        "path": f"volumes/{Path(vols['empty']['path']).name}"}]
    (mismatch,) = report["size_mismatches"]
    assert (mismatch["id"], mismatch["expected"], mismatch["found"]) == (
        vols["clone"]["id"], vols["clone"]["size"], 32 * MiB)

    out = strata(stack, "ps", "report", "local-a", ok=False)
    assert out.returncode == 1, out.stderr
    assert "ORPHANS: 2" in out.stdout and "stray.qcow2" in out.stdout
    assert "MISSING: 1" in out.stdout and "SIZE MISMATCHES: 1" in out.stdout

    err = error_of(lambda: api.post(f"/v1/primary-storages/{ps}/reconcile/quarantine",
                                    {"paths": ["volumes/" + Path(vols["clone"]["path"]).name]}))
    assert (err.status, err.code) == (400, "not_an_orphan")
    for bad in ("../etc/passwd", "volumes/../../x", "volumes/a/b", "volumes"):
        err = error_of(lambda b=bad: api.post(
            f"/v1/primary-storages/{ps}/reconcile/quarantine", {"paths": [b]}))
        assert (err.status, err.code) == (400, "invalid_input"), bad

    out = strata(stack, "--json", "ps", "quarantine", "local-a", "volumes/stray.qcow2",
                 f"volumes/{LEFTOVER}", "--wait")
    result = json.loads(out.stdout)["result"]
    assert result["moved"] == {"volumes/stray.qcow2": "quarantine/volumes/stray.qcow2",
                               f"volumes/{LEFTOVER}": f"quarantine/volumes/{LEFTOVER}"}
    assert not (volumes / "stray.qcow2").exists()
    quarantine = stack.primary_path / "quarantine" / "volumes"
    assert (quarantine / LEFTOVER).read_bytes() == b"half"
    after = api.get(f"/v1/primary-storages/{ps}/reconcile")
    assert after["orphans"] == [] and len(after["quarantined"]) == 2
    assert len(after["missing"]) == 1, "what is missing stays reported"

    # The periodic run: a new report appears without being asked for.
    stack.restart_controller({"reconcile_interval": 0.5})
    api = stack.api
    deadline = time.monotonic() + 30
    while api.get(f"/v1/primary-storages/{ps}/reconcile")["job_id"] == after["job_id"]:
        assert time.monotonic() < deadline, "no periodic reconcile"
        time.sleep(0.2)
    assert api.get(f"/v1/primary-storages/{ps}/reconcile")["quarantined"] == []
