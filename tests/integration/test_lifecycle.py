"""Hosts and storages through their lifecycle: attach, detach, reconnect, delete."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cli.client import ApiError
from tests.conftest import Stack


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


def test_detach_and_delete_in_order(stack: Stack) -> None:
    api = stack.api
    vol = stack.wait(api.post("/v1/volumes", {
        "name": "keep", "primary_storage_id": stack.primary_id, "size": 1 << 20}))
    with pytest.raises(ApiError) as refused:
        api.post(f"/v1/primary-storages/{stack.primary_id}/detach", {"host_id": stack.host_id})
    assert refused.value.status == 409 and "keep" in refused.value.message
    with pytest.raises(ApiError) as refused:
        api.delete(f"/v1/primary-storages/{stack.primary_id}")
    assert refused.value.code == "in_use"

    stack.wait(api.post(f"/v1/hosts/{stack.host_id}/reconnect"))
    ps = api.get(f"/v1/primary-storages/{stack.primary_id}")
    assert ps["hosts"][0]["state"] == "connected" and ps["capacity"]["total"] > 0

    stack.wait(api.delete(f"/v1/volumes/{vol['resource_id']}"))
    stack.wait(api.post(f"/v1/primary-storages/{stack.primary_id}/detach",
                        {"host_id": stack.host_id}))
    assert api.get(f"/v1/primary-storages/{stack.primary_id}")["hosts"] == []
    with pytest.raises(ApiError) as refused:
        api.post("/v1/volumes", {"name": "v", "primary_storage_id": stack.primary_id,
                                 "size": 1 << 20})
    assert refused.value.status == 409 and refused.value.code == "no_connected_host"

    stack.wait(api.delete(f"/v1/hosts/{stack.host_id}"))
    assert api.get("/v1/hosts")["items"] == []
    stack.wait(api.delete(f"/v1/primary-storages/{stack.primary_id}"))
    stack.wait(api.delete(f"/v1/backup-storages/{stack.backup_id}"))
    assert api.get("/v1/primary-storages")["items"] == []
    assert api.get("/v1/backup-storages")["items"] == []


def test_a_reconnect_clears_leftovers_on_backup_storage(stack: Stack) -> None:
    """A temporary file a task that no longer runs left in the dir backup storage (an
    image download cut short by the agent's death, say) is removed when the host
    connects again, as it is on the host's primary storages."""
    leftovers = [stack.backup_path / "images" / ".strata-tmp-job-0.download~0123456789ab-img",
                 stack.primary_path / "imagecache" / ".strata-tmp-cache-0-1~0123456789ab-c"]
    for leftover in leftovers:
        leftover.write_bytes(b"half")
    job = stack.wait(stack.api.post(f"/v1/hosts/{stack.host_id}/reconnect"))
    assert job["result"]["storages_failed"] == {}, job
    assert [p for p in leftovers if p.exists()] == []
    assert (stack.backup_path / "images").is_dir()


def test_unreachable_agent_marks_host_disconnected(stack: Stack) -> None:
    """Enrolling waits for the agent at most the agent-unreachable timeout."""
    stack.restart_controller({"agent_unreachable_timeout": 5})
    accepted = stack.api.post("/v1/hosts", {"name": "ghost", "address": "https://127.0.0.1:1"})
    deadline = time.monotonic() + 10
    while not (stack.api.get(f"/v1/jobs/{accepted['job_id']}")["message"] or "").startswith(
            "agent at https://127.0.0.1:1 unreachable"):
        assert time.monotonic() < deadline, "the job never said what it waits on"
        time.sleep(0.1)
    job = stack.wait(accepted, ok=False)
    assert job["state"] == "failed" and job["error"]["code"] == "agent_unreachable"
    host = stack.api.get(f"/v1/hosts/{job['resource_id']}")
    assert host["state"] == "disconnected" and "127.0.0.1:1" in host["reason"]
