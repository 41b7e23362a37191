"""SFTP backup storage through the API: a real controller and agent, a real OpenSSH
server; an image registered into it becomes the base of root volumes on local storage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Stack, make_image
from tests.support.fileserver import FileServer
from tests.support.procs import run_cli
from tests.support.sshd import SshServer, keypair


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


def sftp_storage(stack: Stack, sshd: SshServer, name: str, path: Path,
                 **override: object) -> dict[str, object]:
    endpoint = sshd.endpoint(**override)
    return stack.wait(stack.api.post("/v1/backup-storages", {
        "name": name, "type": "sftp",
        "config": {**endpoint, "path": str(path)}}),
        ok=False)


def test_images_on_sftp_become_root_volumes(stack: Stack, sshd: SshServer, tmp_path: Path,
                                            file_server: FileServer, image_dir: Path) -> None:
    job = sftp_storage(stack, sshd, "sftp-1", tmp_path / "sftp-store")
    assert job["state"] == "succeeded", job
    store = stack.api.get(f"/v1/backup-storages/{job['resource_id']}")
    assert store["state"] == "ready" and store["capacity_total"] > 0
    assert "private_key" not in store["config"] and store["config"]["host_key"] == sshd.host_key

    path, sha = make_image(image_dir, "base.qcow2")
    image = stack.wait(stack.api.post("/v1/images", {
        "name": "base", "url": file_server.url(path.name), "sha256": sha, "format": "qcow2",
        "backup_storage_id": store["id"]}))
    stored = tmp_path / "sftp-store" / "images" / str(image["resource_id"])
    assert stored.read_bytes() == path.read_bytes()

    vol = stack.wait(stack.api.post("/v1/volumes", {
        "name": "root", "primary_storage_id": stack.primary_id,
        "image_id": image["resource_id"]}))
    volume = stack.api.get(f"/v1/volumes/{vol['resource_id']}")
    cache = stack.primary_path / "imagecache" / str(image["resource_id"])
    assert cache.read_bytes() == path.read_bytes()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", volume["path"]],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["backing-filename"] == str(cache)

    # The private key is never shown, and the database holds it only sealed.
    everything = json.dumps([stack.api.get("/v1/backup-storages"), stack.api.get("/v1/jobs")])
    assert "PRIVATE KEY" not in everything
    dump = b"".join(p.read_bytes() for p in (stack.state / "controller").glob("strata.sqlite*"))
    key_body = sshd.private_key.splitlines()[1].encode()
    assert key_body not in dump and b"enc:v1:" in dump

    stack.wait(stack.api.delete(f"/v1/volumes/{vol['resource_id']}"))
    stack.wait(stack.api.delete(f"/v1/images/{image['resource_id']}"))
    assert not stored.exists() and not cache.exists()


def test_changed_host_key_is_refused(stack: Stack, sshd: SshServer, tmp_path: Path) -> None:
    _, impostor = keypair(tmp_path / "impostor")
    job = sftp_storage(stack, sshd, "sftp-2", tmp_path / "s2", host_key=impostor)
    assert job["state"] == "failed" and job["error"]["code"] == "host_key_mismatch"
    store = stack.api.get(f"/v1/backup-storages/{job['resource_id']}")
    assert store["state"] == "error" and "not the pinned one" in store["reason"]
    assert not (tmp_path / "s2").exists()


def test_cli_sftp_store_and_image_from_volume(stack: Stack, sshd: SshServer,
                                              tmp_path: Path) -> None:
    def strata(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(stack.controller.url, stack.controller.token, *args)

    made = strata("--json", "bs", "create", "sftp-cli", "--type", "sftp",
                  "--path", str(tmp_path / "cli-store"), "--set", "host=127.0.0.1",
                  "--set", f"port={sshd.port}", "--set", "username=root",
                  "--set", f"host_key={sshd.host_key}",
                  "--secret-file", f"private_key={sshd.dir / 'client_key'}", "--wait")
    assert made.returncode == 0, made.stderr
    store = json.loads(made.stdout)["resource_id"]
    vol = stack.wait(stack.api.post("/v1/volumes", {
        "name": "cli-data", "primary_storage_id": stack.primary_id, "size": 4 << 20}))
    up = strata("--json", "images", "register", "cli-img", "--from-volume",
                str(vol["resource_id"]), "--backup-storage", store, "--wait")
    assert up.returncode == 0, up.stderr
    image = json.loads(up.stdout)["resource_id"]
    assert (tmp_path / "cli-store" / "images" / image).is_file()
    bad = strata("bs", "create", "x", "--type", "sftp", "--secret-file", "private_key")
    assert bad.returncode == 2 and "KEY=FILE" in bad.stderr
