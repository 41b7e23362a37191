"""A standing guard: schemathesis against a real controller and agent on embedded
defaults. It fails on any 5xx, on any response that breaks the OpenAPI document, and on
any resource left in a transitional state once the jobs it started have ended.

The stack and the fuzzer run in a network namespace made for the test (`unshare --net`),
holding only loopback: hosts, image URLs and stores the fuzzer invents can't send a
packet anywhere else."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import ROOT

EXAMPLES = 100


@pytest.mark.fuzz
def test_openapi_fuzzer_finds_no_server_error_and_leaves_nothing_unsettled(
        tmp_path: Path) -> None:
    proc = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-m", "tests.fuzz.runner",
         "--work", str(tmp_path), "--examples", str(EXAMPLES)],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    generated = re.search(r"(\d+) generated", result["summary"])
    print(f"schemathesis made {generated.group(1) if generated else '?'} requests")
    assert result["rc"] == 0, result["summary"] + result["stderr"]
    assert generated and int(generated.group(1)) > 0, result["summary"]
    assert result["jobs_still_running"] == 0
    assert result["stuck"] == []
