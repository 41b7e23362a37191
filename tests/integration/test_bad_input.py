"""Bad input gets a 4xx with {code, message}, or a failed job with a reason, and leaves
nothing half-made. Real controller and agent processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli.client import ApiError
from tests.conftest import Stack, make_image
from tests.support.enrol import enrol_host
from tests.support.fileserver import FileServer
from tests.support.procs import start_agent


def expect_error(call, status: int, code: str | None = None) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call()
    assert info.value.status == status, info.value
    if code:
        assert info.value.code == code, info.value
    assert info.value.message
    return info.value


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Input checks do not depend on the database: SQLite only, to keep the suite quick."""
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


def test_api_refuses_bad_requests(stack: Stack, tmp_path: Path) -> None:
    api, ps, bs = stack.api, stack.primary_id, stack.backup_id
    err = expect_error(lambda: api.post("/v1/primary-storages",
                                        {"name": "x", "type": "ceph", "config": {}}),
                       400, "unknown_storage_type")
    assert "ceph" in err.message and "local" in err.message
    for name in ("../etc", "a/b", "..", ""):
        expect_error(lambda n=name: api.post("/v1/volumes", {
            "name": n, "primary_storage_id": ps, "size": 1 << 20}), 400, "invalid_input")
    expect_error(lambda: api.post("/v1/primary-storages", {
        "name": "p2", "type": "local", "config": {"path": "/srv/../etc"}}), 400, "invalid_input")
    expect_error(lambda: api.post("/v1/primary-storages", {
        "name": "p3", "type": "local", "config": {"path": "relative/dir"}}), 400)
    expect_error(lambda: api.post("/v1/volumes", {
        "name": "neg", "primary_storage_id": ps, "size": -5}), 400, "invalid_input")
    expect_error(lambda: api.post("/v1/volumes", {"name": "nosize", "primary_storage_id": ps}),
                 400, "invalid_input")
    expect_error(lambda: api.post("/v1/volumes", {
        "name": "huge", "primary_storage_id": ps, "size": 1 << 60}), 409, "insufficient_capacity")
    err = expect_error(lambda: api.post("/v1/volumes", {
        "name": "odd", "primary_storage_id": ps, "size": 1000}), 400, "invalid_input")
    assert "512" in err.message, "an LVM-backed LUN takes whole 512-byte sectors only"
    expect_error(lambda: api.post("/v1/volumes", {
        "name": "v", "primary_storage_id": "nope", "size": 512}), 404, "not_found")
    expect_error(lambda: api.post("/v1/images", {
        "name": "i", "url": "file:///etc/passwd", "backup_storage_id": bs}), 400)
    expect_error(lambda: api.post("/v1/images", {
        "name": "i", "url": "http://x/y", "backup_storage_id": bs, "sha256": "xyz"}), 400)
    expect_error(lambda: api.post("/v1/hosts", {"name": "host-a", "address": "https://h:1"}),
                 409, "name_taken")
    expect_error(lambda: api.post("/v1/volumes", {"name": "x", "unknown": 1}), 400)
    expect_error(lambda: api.get("/v1/volumes?limit=0"), 400)
    expect_error(lambda: api.get("/v1/volumes?colour=red"), 400)
    expect_error(lambda: api.get("/v1/jobs/nope?wait=abc"), 400)
    expect_error(lambda: api.get("/v1/nothing-here"), 404)
    expect_error(lambda: api.request("PUT", "/v1/volumes", {}), 405)
    expect_error(lambda: api.post(f"/v1/primary-storages/{ps}/attach", {"host_id": "ghost"}),
                 404)
    # A local storage belongs to one host.
    agent_b, _ = start_agent(tmp_path / "agent-b")
    other = enrol_host(api, "host-b", agent_b)
    expect_error(lambda: api.post(f"/v1/primary-storages/{ps}/attach",
                                  {"host_id": other}), 409, "already_attached")
    expect_error(lambda: api.delete(f"/v1/hosts/{stack.host_id}"), 409, "in_use")
    agent_b.stop()


def test_failed_registrations_leave_nothing_behind(stack: Stack, file_server: FileServer,
                                                   image_dir: Path) -> None:
    path, sha = make_image(image_dir, "ok.qcow2")
    backing_base, _ = make_image(image_dir, "base.qcow2")
    evil, _ = make_image(image_dir, "evil.qcow2", backing=backing_base)
    raw_claim, _ = make_image(image_dir, "claims-raw.qcow2")
    cases = [
        ({"url": "http://127.0.0.2:1/unreachable.qcow2"}, "download_failed"),
        ({"url": "http://127.0.0.1:1/loopback.qcow2"}, "url_refused"),
        ({"url": file_server.url("missing.qcow2")}, "download_failed"),
        ({"url": file_server.url(path.name), "sha256": "0" * 64}, "checksum_mismatch"),
        ({"url": file_server.url(evil.name)}, "unsafe_image"),
        ({"url": file_server.url(raw_claim.name), "format": "raw"}, "unsafe_image"),
    ]
    for i, (extra, code) in enumerate(cases):
        job = stack.wait(stack.api.post("/v1/images", {
            "name": f"bad{i}", "backup_storage_id": stack.backup_id, **extra}), ok=False)
        assert job["state"] == "failed" and job["error"]["code"] == code, job
        image = stack.api.get(f"/v1/images/{job['resource_id']}")
        assert image["state"] == "error" and image["reason"] == job["error"]["message"]
    leftovers = os.listdir(stack.backup_path / "images")
    assert leftovers == [], leftovers
    job = stack.wait(stack.api.post("/v1/images", {
        "name": "good", "url": file_server.url(path.name), "sha256": sha,
        "backup_storage_id": stack.backup_id}))
    assert os.listdir(stack.backup_path / "images") == [job["resource_id"]]
    # An image that is not ready can't be used.
    failed_image = stack.api.get("/v1/images?state=error&limit=1")["items"][0]
    expect_error(lambda: stack.api.post("/v1/volumes", {
        "name": "v", "primary_storage_id": stack.primary_id, "image_id": failed_image["id"]}),
        409, "image_not_ready")


def test_failed_volume_gives_its_capacity_back(stack: Stack) -> None:
    before = stack.api.get(f"/v1/primary-storages/{stack.primary_id}")["capacity"]["allocated"]
    volumes = stack.primary_path / "volumes"
    volumes.rmdir()
    volumes.write_text("not a directory")  # the agent cannot create volumes any more
    job = stack.wait(stack.api.post("/v1/volumes", {
        "name": "doomed", "primary_storage_id": stack.primary_id, "size": 8 << 20}), ok=False)
    assert job["state"] == "failed" and job["error"]["message"]
    volume = stack.api.get(f"/v1/volumes/{job['resource_id']}")
    assert volume["state"] == "error" and volume["reason"] == job["error"]["message"]
    after = stack.api.get(f"/v1/primary-storages/{stack.primary_id}")["capacity"]["allocated"]
    assert after == before
    volumes.unlink()  # the operator repairs the storage, then removes what failed
    volumes.mkdir()
    stack.wait(stack.api.delete(f"/v1/volumes/{volume['id']}"))
    assert stack.api.get(f"/v1/volumes/{volume['id']}")["state"] == "destroyed"
    assert stack.api.get(
        f"/v1/primary-storages/{stack.primary_id}")["capacity"]["allocated"] == before
