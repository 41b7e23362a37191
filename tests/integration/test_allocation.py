"""Allocation through the real controller, agent and CLI: two local storages, their
tags, an allocation threshold refusing a volume and a growth, and the allocator's choice
(and its refusal) as the job and the 409 tell it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.client import ApiError
from tests.conftest import Stack
from tests.support.procs import run_cli

MiB = 1 << 20


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Allocation reads rows and reserves in one statement, which tests/db covers on
    both databases: SQLite only here."""
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


def refused(call, status: int, code: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call()
    assert (info.value.status, info.value.code) == (status, code), info.value
    return info.value.message


def cli(stack: Stack, *args: str) -> Any:
    proc = run_cli(stack.controller.url, stack.controller.token, "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def threshold_for(store: dict[str, Any], room: int) -> float:
    """The threshold that leaves `room` bytes above what the storage holds now (its
    total is the real file system's, far larger than these volumes)."""
    cap = store["capacity"]
    return (cap["allocated"] + room) * 100 / (cap["total"] * cap["overprovision_factor"])


def test_thresholds_tags_and_the_allocator(stack: Stack, tmp_path: Path) -> None:
    api = stack.api
    made = cli(stack, "ps", "create", "local-b", "--path", str(tmp_path / "primary-b"),
               "--host", stack.host_id, "--tag", "ssd", "--tag", "fast", "--threshold", "80",
               "--wait")
    assert made["state"] == "succeeded", made
    b_id = str(made["resource_id"])
    b = api.get(f"/v1/primary-storages/{b_id}")
    assert (b["tags"], b["allocation_threshold"]) == (["fast", "ssd"], 80)
    a = cli(stack, "ps", "update", "local-a", "--tag", "hdd")
    assert (a["tags"], a["allocation_threshold"]) == (["hdd"], 90)
    listed = {s["name"]: s["tags"] for s in api.get("/v1/primary-storages")["items"]}
    assert listed == {"local-a": ["hdd"], "local-b": ["fast", "ssd"]}

    # The allocator: tags first, and the job says why it picked the storage.
    job = cli(stack, "volumes", "create", "fast-1", "--tag", "ssd", "--size", "8M", "--wait")
    assert job["state"] == "succeeded", job
    why = job["result"]["allocation"]
    assert why.startswith("picked local-b: tags [ssd] matched, ") and \
        why.endswith("threshold 80%; local-a skipped: lacks tags [ssd]"), why
    vol = api.get(f"/v1/volumes/{job['resource_id']}")
    assert vol["primary_storage_id"] == b_id and vol["state"] == "ready"

    # A threshold leaving 12 MiB on local-b: a 16 MiB volume named there is refused, as is
    # growing the volume past it, and neither reserves anything.
    b = api.get(f"/v1/primary-storages/{b_id}")
    b = api.request("PATCH", f"/v1/primary-storages/{b_id}",
                    {"allocation_threshold": threshold_for(b, 12 * MiB)})
    held = b["capacity"]["allocated"]
    message = refused(lambda: api.post("/v1/volumes", {
        "name": "big", "primary_storage_id": b_id, "size": 16 * MiB}),
        409, "insufficient_capacity")
    assert message.startswith(f"primary storage local-b cannot hold {16 * MiB} more bytes: "
                              "it would be ") and "above its allocation threshold of" in message
    refused(lambda: api.post(f"/v1/volumes/{vol['id']}/resize", {"size": 32 * MiB}),
            409, "insufficient_capacity")
    assert api.get(f"/v1/primary-storages/{b_id}")["capacity"]["allocated"] == held

    # No tags asked: local-b is above its threshold for 16 MiB, so local-a takes it.
    job = stack.wait(api.post("/v1/volumes", {"name": "any-1", "size": 16 * MiB}))
    assert api.get(f"/v1/volumes/{job['resource_id']}")["primary_storage_id"] == \
        stack.primary_id
    assert job["message"] == job["result"]["allocation"]
    assert job["result"]["allocation"].startswith("picked local-a: no tags asked")
    assert "local-b skipped: above threshold (" in job["result"]["allocation"]

    # Nothing fits: the 409 lists each storage with its reason.
    message = refused(lambda: api.post("/v1/volumes", {
        "name": "none", "size": 16 * MiB, "storage_tags": ["ssd"]}), 409, "no_storage_fits")
    assert message.startswith(f"no primary storage can take a volume of {16 * MiB} bytes "
                              "with tags [ssd]: local-a: lacks tags [ssd]; local-b: above "
                              "threshold ("), message
    names = {v["name"] for v in api.get("/v1/volumes")["items"]}
    assert names == {"fast-1", "any-1"}, "refusals leave no volume behind"

    # A snapshot is an allocation too (8 of the 12 MiB left); a copy of it goes on its
    # own storage, where the 4 MiB left are too few, until the threshold is raised.
    snap = stack.wait(api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": "s1"}))
    message = refused(lambda: api.post("/v1/volumes", {
        "name": "copy", "snapshot_id": snap["resource_id"]}), 409, "insufficient_capacity")
    assert message.startswith("primary storage local-b cannot hold"), message
    assert cli(stack, "ps", "update", "local-b", "--threshold", "90")["allocation_threshold"] == 90
    job = stack.wait(api.post("/v1/volumes", {"name": "copy",
                                              "snapshot_id": snap["resource_id"]}))
    assert "allocation" not in job["result"]
    assert api.get(f"/v1/volumes/{job['resource_id']}")["primary_storage_id"] == b_id

    # Bad settings are 400s.
    for bad in ({"allocation_threshold": 0}, {"allocation_threshold": 101},
                {"tags": ["a/b"]}, {"tags": ["x" * 65]}, {"colour": "red"}):
        refused(lambda body=bad: api.request("PATCH", f"/v1/primary-storages/{b_id}", body),
                400, "invalid_input")
    refused(lambda: api.post("/v1/volumes", {"name": "x", "size": MiB, "storage_tags": ["ssd"],
                                             "primary_storage_id": b_id}),
            400, "invalid_input")
