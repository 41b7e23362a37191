"""S3 backup storage through the API: a real controller and agent, an S3-compatible
server; images stored as objects become root volumes, volumes become objects."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.integration.test_s3_agent import big_image
from tests.integration.test_upload import data_volume, image_of, reads_back
from tests.support.fileserver import FileServer
from tests.support.s3server import S3Server


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


def test_images_and_volumes_through_s3(stack: Stack, s3: S3Server, file_server: FileServer,
                                       image_dir: Path) -> None:
    store = stack.wait(stack.api.post("/v1/backup-storages", {
        "name": "s3", "type": "s3", "config": {**s3.endpoint(), "prefix": "cloud-1/"}}))
    shown = stack.api.get(f"/v1/backup-storages/{store['resource_id']}")
    assert shown["state"] == "ready" and "secret_key" not in shown["config"]

    path, sha = big_image(image_dir)
    image = stack.wait(stack.api.post("/v1/images", {
        "name": "big", "url": file_server.url(path.name), "sha256": sha,
        "backup_storage_id": store["resource_id"]}))
    key = f"cloud-1/images/{image['resource_id']}"
    assert s3.client().head_object(Bucket=s3.bucket, Key=key)["Metadata"]["sha256"] == sha

    vol = stack.wait(stack.api.post("/v1/volumes", {
        "name": "root", "primary_storage_id": stack.primary_id,
        "image_id": image["resource_id"]}))
    root = stack.api.get(f"/v1/volumes/{vol['resource_id']}")
    out = subprocess.run(["qemu-io", "-c", "read -P 0x21 9M 2M", root["path"]],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out

    data = data_volume(stack, "data-s3")
    up = image_of(stack, data, str(store["resource_id"]), "from-data-s3")
    body = s3.client().get_object(Bucket=s3.bucket, Key=f"cloud-1/images/{up['id']}")["Body"]
    assert hashlib.sha256(body.read()).hexdigest() == up["sha256"]
    reads_back(stack, up)

    everything = json.dumps([stack.api.get("/v1/backup-storages"), stack.api.get("/v1/jobs")])
    assert "strata-test-secret" not in everything
    dump = b"".join(p.read_bytes() for p in (stack.state / "controller").glob("strata.sqlite*"))
    assert b"strata-test-secret" not in dump

    stack.wait(stack.api.delete(f"/v1/volumes/{vol['resource_id']}"))
    stack.wait(stack.api.delete(f"/v1/images/{image['resource_id']}"))
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="cloud-1/images/")
    assert key not in [o["Key"] for o in listed.get("Contents", [])]
