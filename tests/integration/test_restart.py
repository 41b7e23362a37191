"""Jobs survive a controller restart: kill -9 the controller mid-download, start it again,
and the job completes by re-attaching to the agent's still-running task."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.conftest import Stack, make_image
from tests.support.fileserver import FileServer
from tests.support.procs import debug_tasks


def test_job_completes_after_controller_is_killed(stack: Stack, file_server: FileServer,
                                                  image_dir: Path) -> None:
    path, sha = make_image(image_dir, "slow.raw", fmt="raw", size="8M")
    accepted = stack.api.post("/v1/images", {
        "name": "slow", "url": file_server.url(path.name) + "?slow=6", "sha256": sha,
        "backup_storage_id": stack.backup_id})
    deadline = time.monotonic() + 20
    while not any(t["command"] == "download_image" for t in
                  debug_tasks(stack.agent_debug)["running"]):
        assert time.monotonic() < deadline, "download never started"
        time.sleep(0.1)
    deadline = time.monotonic() + 20
    while (job := stack.api.get(f"/v1/jobs/{accepted['job_id']}"))["progress"] <= 0:
        assert time.monotonic() < deadline, "no progress reported"
        time.sleep(0.1)
    assert job["state"] == "running" and job["progress"] < 100
    stack.controller.stop(signal.SIGKILL)
    stack.restart_controller()
    job = stack.wait(accepted)
    assert job["result"]["sha256"] == sha
    downloads = [t for t in debug_tasks(stack.agent_debug)["recent"]
                 if t["command"] == "download_image"]
    assert len(downloads) == 1, "the resumed job must re-attach, not download again"
    assert stack.api.get(f"/v1/images/{accepted['resource_id']}")["state"] == "ready"
