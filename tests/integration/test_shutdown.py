"""An agent stopped with SIGTERM, with real processes: it takes no new task, lets running
tasks finish within its grace, records the rest interrupted with the reason, and exits
within the grace; a job whose idempotent step it cut short succeeds through a second
attempt, which a controller resuming the job after a restart finds."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from cli.client import Client
from tests.conftest import make_image
from tests.integration.test_agent_api import CONTEXT, call
from tests.integration.test_monitor import eventually
from tests.support.enrol import enrol_host, provision_agent
from tests.support.fileserver import FileServer
from tests.support.procs import debug_tasks, start_agent, start_controller

GRACE = 1.5


def test_sigterm_finishes_short_tasks_and_interrupts_long_ones(tmp_path: Path) -> None:
    CONTEXT["controller"] = provision_agent(tmp_path / "state").client_context()
    proc, _ = start_agent(tmp_path / "state", {"shutdown_grace": GRACE, "command_wait": 0})
    try:
        for task, seconds in (("short", 0.5), ("long", 60)):
            status, _ = call(f"{proc.url}/v1/commands/sleep", "POST",
                             {"task_id": task, "payload": {"seconds": seconds}})
            assert status == 202
        stopping = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        late = iter(range(1000))

        def refused() -> dict[str, Any] | None:
            # Sent until the agent has seen the signal; those it still took are instant.
            status, body = call(f"{proc.url}/v1/commands/sleep", "POST",
                                {"task_id": f"late-{next(late)}", "payload": {"seconds": 0}})
            return body if status == 503 else None

        body = eventually(refused, timeout=GRACE)
        assert body and body["code"] == "agent_shutting_down", body
        status, health = call(f"{proc.url}/healthz")
        assert status == 200 and health["status"] == "shutting_down"
        # The controller still reads the ends of running tasks during the grace.
        status, short = call(f"{proc.url}/v1/tasks/short?wait=5")
        assert status == 200 and short["state"] == "succeeded", short
        proc.popen.wait(GRACE + 10)
        assert time.monotonic() - stopping < GRACE + 5
        assert proc.popen.returncode == 0
    finally:
        proc.stop(signal.SIGKILL)
    proc, _ = start_agent(tmp_path / "state")
    try:
        status, long = call(f"{proc.url}/v1/tasks/long")
        assert status == 200 and long["state"] == "failed", long
        assert long["error"] == {
            "code": "interrupted",
            "message": f"agent shutting down after {GRACE:g}s grace; the task was cut short"}
        status, short = call(f"{proc.url}/v1/tasks/short")
        assert short["state"] == "succeeded"
    finally:
        proc.stop()


def test_a_step_cut_short_by_an_agent_restart_succeeds_on_a_second_attempt(
        tmp_path: Path, file_server: FileServer, image_dir: Path) -> None:
    """The agent is stopped mid-download and started again: the job downloads again as
    `<job>.download.a2`; the controller, killed during that attempt, resumes the job on
    that attempt, never a third."""
    agent_config = {"shutdown_grace": 0.2}
    agent, debug = start_agent(tmp_path / "agent", agent_config)
    db_url = f"sqlite:///{tmp_path / 'strata.sqlite'}"
    controller_config = {"step_retry_delay": 0.2}
    controller = start_controller(tmp_path / "controller", db_url, config=controller_config)
    try:
        api = Client(controller.url, controller.token)
        enrol_host(api, "kvm-1", agent)
        store = api.wait_job(api.post("/v1/backup-storages", {
            "name": "store", "type": "dir",
            "config": {"path": str(tmp_path / "backup")}})["job_id"])["resource_id"]
        path, sha = make_image(image_dir, "slow.raw", fmt="raw", size="4M")
        accepted = api.post("/v1/images", {
            "name": "slow", "url": file_server.url(path.name) + "?slow=3", "sha256": sha,
            "backup_storage_id": store})
        job_id = accepted["job_id"]

        def running(task_id: str) -> bool:
            return any(t["task_id"] == task_id for t in debug_tasks(debug)["running"])

        assert eventually(lambda: running(f"{job_id}.download"))
        agent.stop()
        port = int(agent.url.rsplit(":", 1)[1])
        agent, debug = start_agent(tmp_path / "agent", agent_config, port=port)
        assert eventually(lambda: running(f"{job_id}.download.a2"))
        assert api.get(f"/v1/jobs/{job_id}")["attempts"] == {"download": 2}

        controller.stop(signal.SIGKILL)
        port = int(controller.url.rsplit(":", 1)[1])
        controller = start_controller(tmp_path / "controller", db_url, port=port,
                                      config=controller_config)
        job = api.wait_job(job_id, timeout=60)
        assert job["state"] == "succeeded" and job["result"]["sha256"] == sha, job
        assert job["attempts"] == {"download": 2}
        downloads = {t["task_id"]: t for t in debug_tasks(debug)["recent"]
                     if t["command"] == "download_image"}
        assert set(downloads) == {f"{job_id}.download", f"{job_id}.download.a2"}
        first = downloads[f"{job_id}.download"]
        assert first["state"] == "failed" and first["error"]["code"] == "interrupted"
        assert "after 0.2s grace" in first["error"]["message"]
        assert downloads[f"{job_id}.download.a2"]["state"] == "succeeded"
        assert api.get(f"/v1/images/{accepted['resource_id']}")["state"] == "ready"
    finally:
        controller.stop()
        agent.stop()
