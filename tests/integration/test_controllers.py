"""Two real controller processes on one PostgreSQL server, with one real agent: a job is
cancelled through the controller that does not run it (its agent task stops, no partial
file is left, the image ends in error); then the controller running the other jobs, which
also leads, is killed with SIGKILL mid-download, and the survivor takes the jobs over
(re-attaching to the agent's tasks, never downloading twice) and the leadership."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from cli.client import ApiError, Client
from tests.conftest import make_image
from tests.integration.test_metrics import scrape, value
from tests.support.enrol import enrol_host
from tests.support.fileserver import FileServer
from tests.support.postgres import PostgresServer
from tests.support.procs import Proc, debug_tasks, run_cli, start_agent, start_controller

# Short leases keep the test quick; the defaults (15 s, renewed every 5 s) bound a
# takeover at 20 s the same way.
LEASES = {"lease_ttl": 4, "lease_renew_interval": 1, "host_check_interval": 1}


def poll(what: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.1)


def leads(controller: Proc) -> bool:
    return value(scrape(f"{controller.url}/metrics", controller.token),
                 "strata_controller_leader") == 1


def files(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.is_file()]


def downloading(debug: str) -> int:
    return sum(t["command"] == "download_image" for t in debug_tasks(debug)["running"])


def test_a_peer_takes_over_jobs_and_leadership_and_cancels_across_controllers(
        tmp_path: Path, postgres: PostgresServer, file_server: FileServer,
        image_dir: Path) -> None:
    db_url = postgres.new_database()
    agent, debug = start_agent(tmp_path / "agent")
    first = start_controller(tmp_path / "a", db_url, config=LEASES)
    # The second controller gets the first one's sealed-secret key, as an operator copies it.
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "secret.key", tmp_path / "b" / "secret.key")
    second = start_controller(tmp_path / "b", db_url, config={
        **LEASES, "secret_key_file": str(tmp_path / "b" / "secret.key")})
    try:
        assert second.token is None, "one database, one bootstrap token"
        second.token = first.token
        api_a, api_b = Client(first.url, first.token), Client(second.url, first.token)
        enrol_host(api_a, "host-a", agent)
        backup = api_a.wait_job(api_a.post("/v1/backup-storages", {
            "name": "store", "type": "dir", "config": {"path": str(tmp_path / "backup")}})
            ["job_id"], timeout=60)
        assert backup["state"] == "succeeded", backup
        poll("the first controller leading", lambda: leads(first))
        assert not leads(second)

        accepted = []
        for n, slow in enumerate((15, 15, 30)):
            path, sha = make_image(image_dir, f"slow{n}.raw", fmt="raw", size="4M")
            accepted.append(api_a.post("/v1/images", {
                "name": f"slow{n}", "url": file_server.url(path.name) + f"?slow={slow}",
                "sha256": sha, "backup_storage_id": backup["resource_id"]}))
        poll("three downloads running", lambda: downloading(debug) == 3)
        owner_a = api_b.get(f"/v1/jobs/{accepted[0]['job_id']}")["owner"]
        assert owner_a and all(api_b.get(f"/v1/jobs/{a['job_id']}")["owner"] == owner_a
                               for a in accepted)

        # Cancelled through the other controller: the owner stops it at its next renewal.
        doomed = accepted.pop()
        cancel = run_cli(second.url, first.token, "--json", "jobs", "cancel", "--wait",
                         doomed["job_id"])
        assert cancel.returncode == 0, cancel.stderr
        job = api_b.get(f"/v1/jobs/{doomed['job_id']}")
        assert job["state"] == "failed" and job["error"]["code"] == "cancelled", job
        image = api_b.get(f"/v1/images/{doomed['resource_id']}")
        assert image["state"] == "error"
        tasks = {t["task_id"]: t for t in debug_tasks(debug)["recent"]}
        assert [t["state"] for t in tasks.values() if str(t["task_id"]).startswith(
            doomed["job_id"])] == ["cancelled"]
        left = files(tmp_path / "backup")
        assert not [name for name in left if doomed["resource_id"] in name], \
            f"a cancelled download leaves no file: {left}"
        with pytest.raises(ApiError) as finished:
            api_b.delete(f"/v1/jobs/{doomed['job_id']}")
        assert finished.value.status == 409 and finished.value.code == "job_finished"

        assert downloading(debug) == 2
        first.stop(signal.SIGKILL)
        killed = time.monotonic()
        owners: dict[str, float] = {}

        def taken_over() -> bool:
            for a in accepted:
                job = api_b.get(f"/v1/jobs/{a['job_id']}")
                if job["owner"] not in (owner_a, None) or job["state"] != "running":
                    owners.setdefault(a["job_id"], time.monotonic() - killed)
            return len(owners) == len(accepted)

        poll("the survivor taking the jobs over", taken_over)
        poll("the survivor leading", lambda: leads(second))
        leadership = time.monotonic() - killed
        takeover = max(owners.values())
        print(f"\ntakeover after SIGKILL: jobs {takeover:.1f} s, leadership {leadership:.1f} s "
              f"(lease_ttl {LEASES['lease_ttl']} s, renewed every "
              f"{LEASES['lease_renew_interval']} s)")
        assert takeover <= LEASES["lease_ttl"] + 2 * LEASES["lease_renew_interval"]

        for a in accepted:
            job = api_b.wait_job(a["job_id"], timeout=60)
            assert job["state"] == "succeeded", job
            assert api_b.get(f"/v1/images/{a['resource_id']}")["state"] == "ready"
        downloads = [t for t in debug_tasks(debug)["recent"]
                     if t["command"] == "download_image" and t["state"] == "succeeded"]
        assert len(downloads) == 2, "the survivor re-attaches; nothing is downloaded twice"
        left = files(tmp_path / "backup")
        assert len(left) == 2 and all(any(a["resource_id"] in name for name in left)
                                      for a in accepted), f"only the images are left: {left}"
    finally:
        first.stop()
        second.stop()
        agent.stop()
