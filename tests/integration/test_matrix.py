"""The primary x backup matrix: a backup type with no mediator for a primary type is a
409 naming the missing cell, for the first request that would need it. The controller
runs in-process here, so the test can register a fake backup type; the agent is real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.app import create_app
from controller.config import ControllerConfig
from controller.db.models import Host, Image, ImageStoreRef
from controller.jobs.engine import JobContext
from controller.plugins.files import DirectoryConfig
from controller.plugins.interfaces.backup import (
    BackupLifeCycle,
    BackupStorageProvider,
    Folder,
    ImageStoreDriver,
)
from controller.plugins.interfaces.stores import Backup
from controller.plugins.matrix import default_registry
from shared.protocol.files import ImageFacts
from shared.protocol.types import FsCapacity
from tests.support.enrol import put_join_token
from tests.support.procs import admin_token, start_agent

SHA = "a" * 64


class FakeLifeCycle(BackupLifeCycle[DirectoryConfig]):
    async def attach(self, ctx: JobContext, store: Backup[DirectoryConfig],
                     host: Host) -> FsCapacity:
        return FsCapacity(total=1 << 40, available=1 << 40)


class FakeDriver(ImageStoreDriver[DirectoryConfig]):
    """A store that takes any image at its word: only the matrix is under test."""

    async def register(self, ctx: JobContext, store: Backup[DirectoryConfig], image: Image,
                       host: Host) -> ImageFacts:
        return ImageFacts(path=f"{store.config.path}/{image.id}", size=1 << 20, sha256=SHA,
                          format="qcow2", virtual_size=1 << 30,
                          capacity=FsCapacity(total=1 << 40, available=1 << 40))

    async def delete(self, ctx: JobContext, store: Backup[DirectoryConfig], ref: ImageStoreRef,
                     host: Host) -> None:
        return None

    async def delete_file(self, ctx: JobContext, store: Backup[DirectoryConfig], folder: Folder,
                          name: str, host: Host) -> None:
        return None


@pytest.fixture
async def inprocess(tmp_path: Path) -> AsyncIterator[tuple[TestClient, str]]:
    """The in-process controller's client, and the URL of a real agent."""
    agent, _ = start_agent(tmp_path / "agent")
    registry = default_registry()
    registry.add_backup_type(BackupStorageProvider(
        type="tape", description="a fake backup type with no mediator",
        config_model=DirectoryConfig, lifecycle=FakeLifeCycle(), driver=FakeDriver()))
    config = ControllerConfig(state_dir=str(tmp_path / "controller"), local_agent=False,
                              storage_roots=[str(tmp_path)])
    client = TestClient(TestServer(create_app(config, registry)))
    await client.start_server()
    client.session.headers["Authorization"] = f"Bearer {admin_token(Path(config.state_dir))}"
    try:
        yield client, agent.url
    finally:
        await client.close()
        agent.stop()


async def wait(api: TestClient, resp: Any) -> dict[str, Any]:
    accepted = await resp.json()
    assert resp.status == 202, accepted
    job: dict[str, Any] = await (await api.get(f"/v1/jobs/{accepted['job_id']}?wait=30")).json()
    assert job["state"] == "succeeded", job
    return job


async def test_missing_cell_is_a_409_naming_it(inprocess: tuple[TestClient, str],
                                               tmp_path: Path) -> None:
    api, agent_url = inprocess
    caps = await (await api.get("/v1/capabilities")).json()
    assert "tape" in [t["type"] for t in caps["backup_storage_types"]]
    assert not [c for c in caps["matrix"] if c["backup"] == "tape"]

    resp = await api.post("/v1/hosts", json={"name": "h", "address": agent_url})
    put_join_token(tmp_path / "agent", (await resp.json())["join_token"])
    host = await wait(api, resp)
    primary = await wait(api, await api.post("/v1/primary-storages", json={
        "name": "p", "type": "local", "config": {"path": str(tmp_path / "p")},
        "hosts": [host["resource_id"]], "overprovision_factor": 4}))
    tape = await wait(api, await api.post("/v1/backup-storages", json={
        "name": "t", "type": "tape", "config": {"path": str(tmp_path / "tape")}}))
    image = await wait(api, await api.post("/v1/images", json={
        "name": "i", "url": "http://example.invalid/i", "backup_storage_id":
        tape["resource_id"]}))

    resp = await api.post("/v1/volumes", json={
        "name": "v", "primary_storage_id": primary["resource_id"],
        "image_id": image["resource_id"]})
    body = await resp.json()
    assert resp.status == 409 and body["code"] == "unsupported_combination", body
    assert "local <- tape, kvm" in body["message"]
    volumes = await (await api.get("/v1/volumes")).json()
    assert volumes["items"] == [], "nothing is allocated for a request that cannot be served"

    vol = await wait(api, await api.post("/v1/volumes", json={
        "name": "d", "primary_storage_id": primary["resource_id"], "size": 1 << 20}))
    resp = await api.post("/v1/images", json={"name": "up", "volume_id": vol["resource_id"],
                                              "backup_storage_id": tape["resource_id"]})
    body = await resp.json()
    assert resp.status == 409 and "local <- tape, kvm" in body["message"], body

    # A snapshot backed up (or made an image) there: the same 409, the volume untouched.
    snap = await wait(api, await api.post(f"/v1/volumes/{vol['resource_id']}/snapshots",
                                          json={"name": "s"}))
    for path, body_json in ((f"/v1/snapshots/{snap['resource_id']}/backups",
                             {"backup_storage_id": tape["resource_id"]}),
                            ("/v1/images", {"name": "of-s", "snapshot_id": snap["resource_id"],
                                            "backup_storage_id": tape["resource_id"]})):
        resp = await api.post(path, json=body_json)
        body = await resp.json()
        assert resp.status == 409 and body["code"] == "unsupported_combination", body
        assert "local <- tape, kvm" in body["message"], body
    shown = await (await api.get(f"/v1/volumes/{vol['resource_id']}")).json()
    assert shown["state"] == "ready"
    backups = await (await api.get("/v1/snapshot-backups")).json()
    assert backups["items"] == []
