"""The `strata` CLI as an operator runs it, against real controller and agent processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Stack, make_image
from tests.support.fileserver import FileServer
from tests.support.procs import ROOT, run_cli


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


def strata(stack: Stack, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = run_cli(stack.controller.url, stack.controller.token, *args)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_tour(stack: Stack, file_server: FileServer, image_dir: Path) -> None:
    """The README's tour: names, not ids, and no JSON to pick apart."""
    path, sha = make_image(image_dir, "base.qcow2")
    out = strata(stack, "images", "register", "base", file_server.url(path.name),
                 "--backup-storage", "store", "--sha256", sha, "--wait")
    assert "100.0%" in out.stderr
    shown = out.stdout.splitlines()
    assert shown[0].split()[:3] == ["ID", "NAME", "STATE"]
    assert shown[1].split()[1:3] == ["base", "ready"]

    made = strata(stack, "volumes", "create", "vm1-root", "--primary-storage", "local-a",
                  "--image", "base", "--wait").stdout.splitlines()
    assert made[1].split()[1:3] == ["vm1-root", "ready"]
    strata(stack, "volumes", "create", "vm1-data", "--primary-storage", "local-a",
           "--size", "32M", "--wait")
    table = strata(stack, "volumes", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "STATE"]
    rows = {line.split()[1]: line.split() for line in table[1:]}
    assert rows["vm1-root"][2] == "ready" and rows["vm1-data"][3] == "32M"
    as_json = json.loads(strata(stack, "--json", "volumes", "list", "name=vm1-data").stdout)
    assert as_json["items"][0]["size"] == 32 << 20
    # A table that does not hold every row says how many there are, and where to go on.
    paged = strata(stack, "volumes", "list", "--limit", "1").stdout.splitlines()
    assert len(paged) == 3 and paged[-1].startswith("(1 of 2; next page: --after ")
    cursor = paged[-1].split("--after ")[1].rstrip(")")
    last = strata(stack, "volumes", "list", "--limit", "1", "--after", cursor).stdout
    assert {paged[1].split()[1], last.splitlines()[1].split()[1]} == {"vm1-root", "vm1-data"}

    volume_path = strata(stack, "volumes", "show", "vm1-root", "--field", "path").stdout
    assert Path(volume_path.strip()).is_file()
    strata(stack, "volumes", "resize", "vm1-data", "64M", "--wait")
    assert strata(stack, "volumes", "show", "vm1-data", "--field", "size").stdout == \
        f"{64 << 20}\n"
    gone = strata(stack, "volumes", "delete", "vm1-data", "--wait").stdout
    assert "done" in gone or "destroyed" in gone

    job = json.loads(strata(stack, "--json", "volumes", "create", "x", "--primary-storage",
                            stack.primary_id, "--size", "1M").stdout)
    assert set(job) == {"job_id", "resource_type", "resource_id"}
    waited = json.loads(strata(stack, "--json", "jobs", "wait", job["job_id"]).stdout)
    assert waited["state"] == "succeeded"


def test_names_capabilities_and_fields(stack: Stack) -> None:
    for _ in range(2):
        strata(stack, "volumes", "create", "twin", "--primary-storage", "local-a",
               "--size", "1M", "--wait")
    ambiguous = strata(stack, "volumes", "show", "twin", ok=False)
    assert ambiguous.returncode == 2
    assert ambiguous.stderr.startswith("strata: ambiguous_name: 2 volumes are named 'twin'")
    ids = json.loads(strata(stack, "--json", "volumes", "list", "name=twin").stdout)["items"]
    assert all(i["id"] in ambiguous.stderr for i in ids)
    by_id = strata(stack, "volumes", "show", ids[0]["id"]).stdout
    assert ids[0]["id"] in by_id

    missing = strata(stack, "--json", "volumes", "show", "no-such-volume", ok=False)
    assert json.loads(missing.stdout)["code"] == "not_found"
    bad_field = strata(stack, "volumes", "show", ids[0]["id"], "--field", "nope", ok=False)
    assert "no field 'nope'" in bad_field.stderr

    tables = strata(stack, "capabilities").stdout
    assert "PRIMARY STORAGE TYPES" in tables and "MATRIX" in tables
    matrix = tables.split("MATRIX", 1)[1].splitlines()
    assert matrix[1].split() == ["PRIMARY", "BACKUP", "HYPERVISOR", "DIRECTIONS"]
    assert any(line.split()[:2] == ["local", "dir"] for line in matrix[2:])


def test_errors_are_one_line_and_exit_non_zero(stack: Stack) -> None:
    bad = strata(stack, "volumes", "create", "../evil", "--primary-storage", stack.primary_id,
                 "--size", "1M", ok=False)
    assert bad.returncode == 2
    assert bad.stderr.startswith("strata: invalid_input:") and "Traceback" not in bad.stderr
    failed = strata(stack, "images", "register", "x", "http://127.0.0.2:1/x.qcow2",
                    "--backup-storage", stack.backup_id, "--wait", ok=False)
    assert failed.returncode == 1 and "download_failed" in failed.stderr
    as_json = strata(stack, "--json", "volumes", "show", "nope", ok=False)
    assert json.loads(as_json.stdout)["code"] == "not_found"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    down = subprocess.run([sys.executable, "-m", "cli", "--url", "http://127.0.0.1:1",
                           "hosts", "list"], capture_output=True, text=True, env=env)
    assert down.returncode == 2 and "cannot reach the controller" in down.stderr
