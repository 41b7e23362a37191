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
    body = ({"name": "p", "type": "local", "config": {"path": path}} if kind == "primary"
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
    made = stack.api.post("/v1/primary-storages", {
        "name": "second", "type": "local", "config": {"path": str(tmp_path / "second")}})
    assert made["config"]["path"] == str(tmp_path / "second")
    assert not (Path("/etc") / "volumes").exists()
