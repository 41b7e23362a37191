"""The storage path policy against a real controller: storages only below the configured
roots (here the test's directory), never overlapping another storage or a state
directory, in plain characters only."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.client import ApiError
from tests.conftest import Stack


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


def refused(stack: Stack, kind: str, path: str) -> str:
    body = ({"name": "p", "type": "local", "config": {"path": path},
             "hosts": [stack.host_id]} if kind == "primary"
            else {"name": "b", "type": "dir", "config": {"path": path}})
    with pytest.raises(ApiError) as info:
        stack.api.post(f"/v1/{kind}-storages", body)
    assert info.value.status == 400, (kind, path)
    return info.value.code


def test_storage_directories_are_confined(stack: Stack, tmp_path: Path) -> None:
    for kind in ("primary", "backup"):
        for path in ("/etc", "/", "/proc/self", "/var/lib/strata/agent/x", str(tmp_path)):
            assert refused(stack, kind, path) == "path_not_allowed", path
        assert refused(stack, kind, f"{tmp_path}/x;id") == "invalid_input"
        assert refused(stack, kind, f"{tmp_path}/a b") == "invalid_input"
        for taken in (stack.primary_path, stack.backup_path / "sub", tmp_path / "controller",
                      tmp_path / "controller" / "db"):
            assert refused(stack, kind, str(taken)) == "path_not_allowed", taken
    made = stack.wait(stack.api.post("/v1/primary-storages", {
        "name": "second", "type": "local", "config": {"path": str(tmp_path / "second")},
        "hosts": [stack.host_id]}))
    second = stack.api.get(f"/v1/primary-storages/{made['resource_id']}")
    assert (second["config"]["path"], second["state"]) == (str(tmp_path / "second"), "ready")
    assert not (Path("/etc") / "volumes").exists()


def test_a_storage_no_host_could_attach_is_not_ready(stack: Stack, tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the storage's directory should be")
    job = stack.wait(stack.api.post("/v1/primary-storages", {
        "name": "blocked", "type": "local", "config": {"path": str(blocker)},
        "hosts": [stack.host_id]}), ok=False)
    assert job["state"] == "failed", job
    store = stack.api.get(f"/v1/primary-storages/{job['resource_id']}")
    assert store["state"] == "error", store
    assert store["hosts"][0]["state"] == "disconnected" and store["hosts"][0]["reason"]
    with pytest.raises(ApiError) as info:
        stack.api.post("/v1/volumes", {"name": "v", "primary_storage_id": store["id"],
                                       "size": 1 << 20})
    assert (info.value.status, info.value.code) == (409, "storage_not_ready")

    blocker.unlink()
    stack.wait(stack.api.post(f"/v1/primary-storages/{store['id']}/attach",
                              {"host_id": stack.host_id}))
    assert stack.api.get(f"/v1/primary-storages/{store['id']}")["state"] == "ready"
    with pytest.raises(ApiError) as info:
        stack.api.post("/v1/primary-storages", {
            "name": "hostless", "type": "local", "config": {"path": str(tmp_path / "h")}})
    assert (info.value.status, info.value.code) == (400, "invalid_input")
