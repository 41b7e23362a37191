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
    path, sha = make_image(image_dir, "base.qcow2")
    out = strata(stack, "images", "register", "base", file_server.url(path.name),
                 "--backup-storage", stack.backup_id, "--sha256", sha, "--wait")
    assert "done" in out.stdout and "100.0%" in out.stderr
    images = json.loads(strata(stack, "--json", "images", "list", "state=ready").stdout)
    assert [i["name"] for i in images["items"]] == ["base"]
    image_id = images["items"][0]["id"]

    strata(stack, "volumes", "create", "vm1-root", "--primary-storage", stack.primary_id,
           "--image", image_id, "--wait")
    strata(stack, "volumes", "create", "vm1-data", "--primary-storage", stack.primary_id,
           "--size", "32M", "--wait")
    table = strata(stack, "volumes", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "STATE"]
    rows = {line.split()[1]: line.split() for line in table[1:]}
    assert rows["vm1-root"][2] == "ready" and rows["vm1-data"][3] == str(32 << 20)

    job = json.loads(strata(stack, "--json", "volumes", "create", "x", "--primary-storage",
                            stack.primary_id, "--size", "1M").stdout)
    assert set(job) == {"job_id", "resource_type", "resource_id"}
    waited = json.loads(strata(stack, "--json", "jobs", "wait", job["job_id"]).stdout)
    assert waited["state"] == "succeeded"


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
