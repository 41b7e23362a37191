"""The foundation path end to end: real controller and agent processes on loopback, real
qemu-img, an image served over HTTP; once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import Stack, make_image
from tests.support.fileserver import FileServer
from tests.support.procs import debug_tasks


def qemu_info(path: str) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", "--force-share",
                          "--backing-chain", path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def register(stack: Stack, server: FileServer, image_dir: Path, name: str = "base",
             fmt: str = "qcow2", size: str = "16M") -> tuple[str, str]:
    path, sha = make_image(image_dir, f"{name}.{fmt}", fmt=fmt, size=size)
    job = stack.wait(stack.api.post("/v1/images", {
        "name": name, "url": server.url(path.name), "backup_storage_id": stack.backup_id,
        "format": fmt, "sha256": sha}))
    return str(job["resource_id"]), sha


def test_register_image_and_linked_clones(stack: Stack, file_server: FileServer,
                                          image_dir: Path) -> None:
    image_id, sha = register(stack, file_server, image_dir)
    image = stack.api.get(f"/v1/images/{image_id}")
    assert image["state"] == "ready"
    assert image["sha256"] == sha and image["format"] == "qcow2"
    assert image["virtual_size"] == 16 << 20
    stored = stack.backup_path / "images" / image_id
    assert stored.is_file()

    volume_ids = []
    for i in range(3):
        job = stack.wait(stack.api.post("/v1/volumes", {
            "name": f"vm{i}-root", "primary_storage_id": stack.primary_id, "image_id": image_id}))
        volume_ids.append(str(job["resource_id"]))
    cache = stack.primary_path / "imagecache" / image_id
    for vid in volume_ids:
        vol = stack.api.get(f"/v1/volumes/{vid}")
        assert vol["state"] == "ready" and vol["size"] == 16 << 20
        chain = qemu_info(vol["path"])
        assert chain[0]["format"] == "qcow2"
        assert chain[0]["backing-filename"] == str(cache)
        assert chain[0]["backing-filename-format"] == "qcow2"
        assert chain[1]["filename"] == str(cache) and chain[1]["format"] == "qcow2"
        assert "backing-filename" not in chain[1]

    listed = stack.api.get(f"/v1/volumes?image_id={image_id}&limit=2&count=true")
    assert listed["total"] == 3 and len(listed["items"]) == 2
    page2 = stack.api.get(f"/v1/volumes?image_id={image_id}&limit=2&offset=2")
    assert len(page2["items"]) == 1
    assert {v["id"] for v in listed["items"] + page2["items"]} == set(volume_ids)

    ps = stack.api.get(f"/v1/primary-storages/{stack.primary_id}")
    image_size = image["size"]
    assert ps["capacity"]["allocated"] == 3 * (16 << 20) + image_size
    assert 0 < ps["capacity"]["available"] <= ps["capacity"]["total"]
    assert [{k: h[k] for k in ("host_id", "state", "reason")} for h in ps["hosts"]] == [
        {"host_id": stack.host_id, "state": "connected", "reason": None}]


def test_a_cache_fill_is_checked_against_the_chunk_manifest(
        stack: Stack, file_server: FileServer, image_dir: Path) -> None:
    """Registration records the image's chunk digests (never shown by the API); the
    cache fill checks the copy chunk by chunk, so a chunk corrupted at rest in the store
    fails it, named, and leaves nothing in the cache."""
    chunk = 64 << 20
    image_id, _ = register(stack, file_server, image_dir, name="big", fmt="raw", size="72M")
    data = (image_dir / "big.raw").read_bytes()
    tasks = debug_tasks(stack.agent_debug)["recent"]
    download = next(t for t in tasks if t["command"] == "download_image")
    assert download["result"]["manifest"] == {"chunk_size": chunk, "chunks": [
        hashlib.sha256(data[i:i + chunk]).hexdigest() for i in range(0, len(data), chunk)]}
    assert not [k for k in stack.api.get(f"/v1/images/{image_id}") if "chunk" in k]

    with open(stack.backup_path / "images" / image_id, "r+b") as stored:
        stored.seek(chunk + 4096)
        stored.write(b"\x01")
    job = stack.wait(stack.api.post("/v1/volumes", {
        "name": "root", "primary_storage_id": stack.primary_id, "image_id": image_id}),
        ok=False)
    assert job["state"] == "failed" and job["error"]["code"] == "checksum_mismatch", job
    assert f"chunk 1 (from byte {chunk})" in job["error"]["message"]
    assert list((stack.primary_path / "imagecache").iterdir()) == []


def test_empty_volume_resize_and_delete(stack: Stack) -> None:
    job = stack.wait(stack.api.post("/v1/volumes", {
        "name": "data1", "primary_storage_id": stack.primary_id, "size": 64 << 20}))
    vol = stack.api.get(f"/v1/volumes/{job['resource_id']}")
    info = qemu_info(vol["path"])[0]
    assert info["virtual-size"] == 64 << 20 and "backing-filename" not in info
    before = stack.api.get(f"/v1/primary-storages/{stack.primary_id}")["capacity"]["allocated"]
    stack.wait(stack.api.delete(f"/v1/volumes/{vol['id']}"))
    assert not Path(vol["path"]).exists()
    assert stack.api.get(f"/v1/volumes/{vol['id']}")["state"] == "destroyed"
    after = stack.api.get(f"/v1/primary-storages/{stack.primary_id}")["capacity"]["allocated"]
    assert before - after == 64 << 20


def test_concurrent_requests_share_one_cache_copy(stack: Stack, file_server: FileServer,
                                                  image_dir: Path) -> None:
    image_id, _ = register(stack, file_server, image_dir, size="64M")
    twenty_root_volumes_one_copy(stack, stack.primary_id, image_id)


def twenty_root_volumes_one_copy(stack: Stack, primary_id: str, image_id: str) -> None:
    """20 concurrent root volumes of one uncached image: one copy into the cache."""

    def create(i: int) -> dict[str, object]:
        return stack.api.post("/v1/volumes", {
            "name": f"c{i}", "primary_storage_id": primary_id, "image_id": image_id})

    with ThreadPoolExecutor(20) as pool:
        accepted = list(pool.map(create, range(20)))
        jobs = list(pool.map(stack.wait, accepted))
    assert all(j["state"] == "succeeded" for j in jobs)
    tasks = debug_tasks(stack.agent_debug)["recent"]
    copies = [t for t in tasks if t["command"] == "copy_image"]
    assert len(copies) == 1, copies
    creates = [t for t in tasks if t["command"] == "create_volume"]
    assert len(creates) == 20


def test_delete_image_refused_while_in_use_then_removes_everything(
        stack: Stack, file_server: FileServer, image_dir: Path) -> None:
    image_id, _ = register(stack, file_server, image_dir)
    vol = stack.wait(stack.api.post("/v1/volumes", {
        "name": "root", "primary_storage_id": stack.primary_id, "image_id": image_id}))
    from cli.client import ApiError

    try:
        stack.api.delete(f"/v1/images/{image_id}")
        raise AssertionError("delete of an image in use was accepted")
    except ApiError as exc:
        assert exc.status == 409 and exc.code == "in_use"
        assert "root" in exc.message
    stack.wait(stack.api.delete(f"/v1/volumes/{vol['resource_id']}"))
    allocated_before = stack.api.get(
        f"/v1/primary-storages/{stack.primary_id}")["capacity"]["allocated"]
    assert allocated_before > 0  # the cache still holds its bytes
    stack.wait(stack.api.delete(f"/v1/images/{image_id}"))
    assert stack.api.get(f"/v1/images/{image_id}")["state"] == "destroyed"
    assert not (stack.primary_path / "imagecache" / image_id).exists()
    assert not (stack.backup_path / "images" / image_id).exists()
    ps = stack.api.get(f"/v1/primary-storages/{stack.primary_id}")
    assert ps["capacity"]["allocated"] == 0


def test_capabilities_and_openapi(stack: Stack) -> None:
    caps = stack.api.get("/v1/capabilities")
    assert [t["type"] for t in caps["primary_storage_types"]] == ["iscsi", "local", "nfs"]
    assert [t["type"] for t in caps["backup_storage_types"]] == ["dir", "s3", "sftp"]
    assert caps["matrix"] == [
        {"primary": p, "backup": b, "hypervisor": "kvm", "directions": ["download", "upload"]}
        for p in ("iscsi", "local", "nfs") for b in ("dir", "s3", "sftp")]
    doc = stack.api.get("/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/hosts", "/v1/primary-storages/{id}/attach", "/v1/backup-storages",
                 "/v1/images", "/v1/volumes", "/v1/jobs/{id}", "/v1/capabilities",
                 "/v1/volumes/{id}/snapshots", "/v1/volumes/{id}/revert", "/v1/snapshots/{id}",
                 "/v1/volumes/{id}/attach", "/v1/volumes/{id}/detach"):
        assert path in doc["paths"], path
    post = doc["paths"]["/v1/volumes"]["post"]
    schema_name = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    volume_create = doc["components"]["schemas"][schema_name.rsplit("/", 1)[1]]
    assert {"name", "primary_storage_id", "image_id", "size"} <= volume_create["properties"].keys()
