"""The upload direction of the matrix (primary -> backup): an image made of a volume, on
a `dir` store and on an `sftp` store (a real OpenSSH server), then used as the base of a
new root volume, which reads back what was written to the original volume."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from cli.client import ApiError
from tests.conftest import Stack
from tests.support.sshd import SshServer


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


def data_volume(stack: Stack, name: str) -> dict[str, object]:
    job = stack.wait(stack.api.post("/v1/volumes", {
        "name": name, "primary_storage_id": stack.primary_id, "size": 8 << 20}))
    volume = stack.api.get(f"/v1/volumes/{job['resource_id']}")
    subprocess.run(["qemu-io", "-c", "write -P 0x6d 0 256k", volume["path"]], check=True,
                   capture_output=True)
    return volume


def image_of(stack: Stack, volume: dict[str, object], store_id: str,
             name: str) -> dict[str, object]:
    job = stack.wait(stack.api.post("/v1/images", {
        "name": name, "volume_id": volume["id"], "backup_storage_id": store_id}))
    assert stack.api.get(f"/v1/volumes/{volume['id']}")["state"] == "ready"
    image = stack.api.get(f"/v1/images/{job['resource_id']}")
    assert image["state"] == "ready" and image["format"] == "qcow2"
    assert image["virtual_size"] == 8 << 20
    assert image["sha256"] == hashlib.sha256(Path(str(volume["path"])).read_bytes()).hexdigest()
    return image


def reads_back(stack: Stack, image: dict[str, object]) -> None:
    root = stack.wait(stack.api.post("/v1/volumes", {
        "name": f"from-{image['name']}", "primary_storage_id": stack.primary_id,
        "image_id": image["id"]}))
    path = stack.api.get(f"/v1/volumes/{root['resource_id']}")["path"]
    out = subprocess.run(["qemu-io", "-c", "read -P 0x6d 0 256k", path], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out


def test_volume_to_dir_store_and_back(stack: Stack) -> None:
    volume = data_volume(stack, "data-dir")
    image = image_of(stack, volume, stack.backup_id, "from-data-dir")
    stored = stack.backup_path / "images" / str(image["id"])
    assert stored.read_bytes() == Path(str(volume["path"])).read_bytes()
    reads_back(stack, image)


def test_volume_to_sftp_store_and_back(stack: Stack, sshd: SshServer, tmp_path: Path) -> None:
    store = stack.wait(stack.api.post("/v1/backup-storages", {
        "name": "sftp", "type": "sftp",
        "config": {**sshd.endpoint(), "path": str(tmp_path / "sftp-store")}}))
    volume = data_volume(stack, "data-sftp")
    image = image_of(stack, volume, str(store["resource_id"]), "from-data-sftp")
    stored = tmp_path / "sftp-store" / "images" / str(image["id"])
    assert stored.read_bytes() == Path(str(volume["path"])).read_bytes()
    reads_back(stack, image)

    # The server goes away mid-way: the job fails, the volume is given back.
    sshd.stop()
    job = stack.wait(stack.api.post("/v1/images", {
        "name": "lost", "volume_id": volume["id"],
        "backup_storage_id": store["resource_id"]}), ok=False)
    assert job["state"] == "failed" and job["error"]["code"] == "sftp_unreachable"
    assert stack.api.get(f"/v1/volumes/{volume['id']}")["state"] == "ready"
    assert stack.api.get(f"/v1/images/{job['resource_id']}")["state"] == "error"


def test_what_cannot_become_an_image(stack: Stack) -> None:
    volume = data_volume(stack, "d")

    def refused(body: dict[str, object], status: int, code: str) -> None:
        with pytest.raises(ApiError) as info:
            stack.api.post("/v1/images", {"name": "x", "backup_storage_id": stack.backup_id,
                                          **body})
        assert (info.value.status, info.value.code) == (status, code), info.value

    refused({"volume_id": volume["id"], "url": "http://x/y"}, 400, "invalid_input")
    refused({}, 400, "invalid_input")
    refused({"volume_id": "nope"}, 404, "not_found")
    refused({"snapshot_id": "nope"}, 404, "not_found")


def test_an_image_of_a_linked_clone_is_flattened(stack: Stack) -> None:
    base = image_of(stack, data_volume(stack, "d"), stack.backup_id, "base")
    clone = stack.wait(stack.api.post("/v1/volumes", {
        "name": "clone", "primary_storage_id": stack.primary_id, "image_id": base["id"]}))
    path = stack.api.get(f"/v1/volumes/{clone['resource_id']}")["path"]
    subprocess.run(["qemu-io", "-c", "write -P 0x6d 256k 256k", path], check=True,
                   capture_output=True)
    job = stack.wait(stack.api.post("/v1/images", {
        "name": "flat", "volume_id": clone["resource_id"],
        "backup_storage_id": stack.backup_id}))
    image = stack.api.get(f"/v1/images/{job['resource_id']}")
    stored = stack.backup_path / "images" / str(image["id"])
    info = subprocess.run(["qemu-img", "info", "--output=json", str(stored)], check=True,
                          capture_output=True, text=True).stdout
    assert "backing-filename" not in info, "the image sits on nothing"
    assert image["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    out = subprocess.run(["qemu-io", "-c", "read -P 0x6d 0 512k", str(stored)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out
