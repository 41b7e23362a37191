"""Growing volumes end to end: real controller and agent processes, real qemu-img and
qemu-io on local storage, tgtd and QEMU's libiscsi for iSCSI LUNs; the API's refusals
and the capacity ledger."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli.client import ApiError, Client
from tests.conftest import Stack
from tests.integration.test_end_to_end import qemu_info, register
from tests.integration.test_iscsi import Cloud, cloud, spec  # noqa: F401
from tests.integration.test_iscsi_agent import IQN_A, Site, export, qemu_io, site  # noqa: F401
from tests.integration.test_nfs import nfs_storage
from tests.support.fileserver import FileServer
from tests.support.nfsserver import NfsServer
from tests.support.procs import run_cli

MiB = 1 << 20


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Resizing does not depend on the database beyond compare-and-swap, which
    tests/db covers on both."""
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


def refused(call, status: int, code: str) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call()
    assert (info.value.status, info.value.code) == (status, code), info.value
    assert info.value.message
    return info.value


def io(path: str, *commands: str) -> str:
    argv = ["qemu-io", "-f", "qcow2"]
    for c in commands:
        argv += ["-c", c]
    out = subprocess.run([*argv, path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out
    return out.stdout


def allocated(stack: Stack) -> int:
    return int(stack.api.get(f"/v1/primary-storages/{stack.primary_id}")
               ["capacity"]["allocated"])


def test_grow_a_linked_clone(stack: Stack, file_server: FileServer, image_dir: Path) -> None:
    api = stack.api
    image_id, _ = register(stack, file_server, image_dir, size="16M")
    vid = str(stack.wait(api.post("/v1/volumes", {
        "name": "root", "primary_storage_id": stack.primary_id, "image_id": image_id}))
        ["resource_id"])
    path = str(api.get(f"/v1/volumes/{vid}")["path"])
    io(path, "write -P 0x5a 0 1M")
    before = allocated(stack)

    job = stack.wait(api.post(f"/v1/volumes/{vid}/resize", {"size": 64 * MiB}))
    assert job["kind"] == "volume.resize" and job["result"]["grown"] is True
    vol = api.get(f"/v1/volumes/{vid}")
    assert vol["state"] == "ready" and vol["size"] == 64 * MiB and vol["reason"] is None
    chain = qemu_info(path)
    assert chain[0]["virtual-size"] == 64 * MiB
    assert chain[0]["backing-filename"] == str(stack.primary_path / "imagecache" / image_id)
    io(path, "read -P 0x5a 0 1M", "read -P 0 16M 48M", "write -P 0x6b 60M 1M",
       "read -P 0x6b 60M 1M")
    assert allocated(stack) == before + 48 * MiB, "the ledger holds the new size"

    same = stack.wait(api.post(f"/v1/volumes/{vid}/resize", {"size": 64 * MiB}))
    assert same["result"] == {"size": 64 * MiB, "grown": False}
    assert allocated(stack) == before + 48 * MiB

    refused(lambda: api.post(f"/v1/volumes/{vid}/resize", {"size": 32 * MiB}),
            400, "volume_shrink")
    refused(lambda: api.post(f"/v1/volumes/{vid}/resize", {"size": 64 * MiB + 1}),
            400, "invalid_input")
    refused(lambda: api.post(f"/v1/volumes/{vid}/resize", {"size": -512}), 400, "invalid_input")
    refused(lambda: api.post(f"/v1/volumes/{vid}/resize", {}), 400, "invalid_input")
    refused(lambda: api.post("/v1/volumes/nope/resize", {"size": 512}), 404, "not_found")
    refused(lambda: api.post(f"/v1/volumes/{vid}/resize", {"size": 1 << 50}),
            409, "insufficient_capacity")
    vol = api.get(f"/v1/volumes/{vid}")
    assert vol["state"] == "ready" and vol["size"] == 64 * MiB
    assert allocated(stack) == before + 48 * MiB, "refusals reserve nothing"


def test_a_volume_held_by_a_job_is_409(stack: Stack) -> None:
    """The agent is stopped (SIGSTOP) while a growth waits on it: the volume stays
    `resizing`, and every other change to it is refused until the job ends."""
    api = stack.api
    vid = str(stack.wait(api.post("/v1/volumes", {
        "name": "data", "primary_storage_id": stack.primary_id, "size": 8 * MiB}))
        ["resource_id"])
    stack.agent.popen.send_signal(signal.SIGSTOP)
    try:
        accepted = api.post(f"/v1/volumes/{vid}/resize", {"size": 32 * MiB})
        deadline = time.monotonic() + 10
        while api.get(f"/v1/volumes/{vid}")["state"] != "resizing":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        refused(lambda: api.post(f"/v1/volumes/{vid}/resize", {"size": 64 * MiB}),
                409, "volume_busy")
        refused(lambda: api.post(f"/v1/volumes/{vid}/resize", {"size": 32 * MiB}),
                409, "volume_busy")
        refused(lambda: api.delete(f"/v1/volumes/{vid}"), 409, "conflict")
    finally:
        stack.agent.popen.send_signal(signal.SIGCONT)
    stack.wait(accepted)
    vol = api.get(f"/v1/volumes/{vid}")
    assert vol["state"] == "ready" and vol["size"] == 32 * MiB
    assert qemu_info(str(vol["path"]))[0]["virtual-size"] == 32 * MiB


def test_a_failed_growth_leaves_the_volume_ready(stack: Stack) -> None:
    api = stack.api
    vid = str(stack.wait(api.post("/v1/volumes", {
        "name": "lost", "primary_storage_id": stack.primary_id, "size": 8 * MiB}))
        ["resource_id"])
    path = Path(str(api.get(f"/v1/volumes/{vid}")["path"]))
    before = allocated(stack)
    path.unlink()
    job = stack.wait(api.post(f"/v1/volumes/{vid}/resize", {"size": 16 * MiB}), ok=False)
    assert job["state"] == "failed" and job["error"]["code"] == "not_found"
    vol = api.get(f"/v1/volumes/{vid}")
    assert vol["state"] == "ready" and vol["size"] == 8 * MiB
    assert "resize to" in vol["reason"] and "does not exist" in vol["reason"]
    assert allocated(stack) == before, "the reserved growth went back"


def test_resize_is_for_operators_and_documented(stack: Stack) -> None:
    vid = str(stack.wait(stack.api.post("/v1/volumes", {
        "name": "doc", "primary_storage_id": stack.primary_id, "size": 8 * MiB}))
        ["resource_id"])
    reader = Client(stack.controller.url, str(stack.api.post(
        "/v1/tokens", {"name": "r", "role": "reader"})["token"]))
    refused(lambda: reader.post(f"/v1/volumes/{vid}/resize", {"size": 16 * MiB}),
            403, "forbidden")
    op = stack.api.get("/v1/openapi.json")["paths"]["/v1/volumes/{id}/resize"]["post"]
    assert "operator" in op["description"] and "202" in op["responses"]
    body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/VolumeResize")


def test_cli_resize(stack: Stack) -> None:
    vid = str(stack.wait(stack.api.post("/v1/volumes", {
        "name": "cli", "primary_storage_id": stack.primary_id, "size": 8 * MiB}))
        ["resource_id"])
    out = run_cli(stack.api.base_url, stack.api.token, "volumes", "resize", vid, "24M",
                  "--wait", timeout=60)
    assert out.returncode == 0, out
    assert stack.api.get(f"/v1/volumes/{vid}")["size"] == 24 * MiB
    bad = run_cli(stack.api.base_url, stack.api.token, "volumes", "resize", vid, "8M",
                  timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("strata: volume_shrink:"), bad


def test_grow_an_iscsi_volume(cloud: Cloud) -> None:  # noqa: F811
    api = cloud.api
    vid = str(cloud.wait(api.post("/v1/volumes", {
        "name": "san-data", "primary_storage_id": cloud.primary, "size": 16 * MiB}))
        ["resource_id"])
    uri = str(cloud.wait(api.post(f"/v1/volumes/{vid}/access", {"host_id": cloud.host_a}))
              ["result"]["uri"])
    lun = spec(uri, IQN_A)
    assert qemu_io(lun, "write -P 0x3c 0 1M").returncode == 0
    job = cloud.wait(api.post(f"/v1/volumes/{vid}/resize", {"size": 48 * MiB}))
    assert job["result"]["virtual_size"] == 48 * MiB
    path = Path(str(api.get(f"/v1/volumes/{vid}")["path"]))
    assert path.stat().st_size == 48 * MiB
    out = qemu_io(lun, "read -P 0x3c 0 1M", "write -P 0x4d 40M 1M", "read -P 0x4d 40M 1M")
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "--image-opts",
         "driver=raw," + ",".join(f"file.{k}={v}" for k, v in lun.items())],
        check=True, capture_output=True, text=True).stdout)
    assert info["virtual-size"] == 48 * MiB, "the target serves the new size, grant kept"


def test_resize_lun_on_a_running_target(site: Site) -> None:  # noqa: F811
    """The storage server's agent with tgtd: an initiator that connects after the growth
    sees the new size, and the grants made before still hold."""
    lun = export(site, "grow1")
    target = lun["target"]
    site.server.call("grant_lun", {"target": target["target"], "initiator": IQN_A})
    state, conn = site.host_a.call("connect_volume", {"target": target})
    assert state == "succeeded" and conn["size"] == 64 * MiB
    assert qemu_io(conn["qemu_spec"], "write -P 0x11 63M 1M").returncode == 0
    for _ in range(2):  # the second time finds it grown, and serves it again all the same
        state, grown = site.server.call("resize_lun", {
            "dir": str(site.luns), "file_name": "grow1.raw", "target": target["target"],
            "size": 128 * MiB})
        assert state == "succeeded" and grown["size"] == 128 * MiB, grown
    state, conn = site.host_a.call("connect_volume", {"target": target})
    assert state == "succeeded" and conn["size"] == 128 * MiB
    out = qemu_io(conn["qemu_spec"], "read -P 0x11 63M 1M", "write -P 0x22 127M 1M")
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out
    state, err = site.server.call("resize_lun", {
        "dir": str(site.luns), "file_name": "grow1.raw", "target": target["target"],
        "size": 64 * MiB})
    assert state == "failed" and err["code"] == "volume_shrink"


def test_grow_an_nfs_volume_through_libnfs(stack: Stack, nfs: NfsServer) -> None:
    primary = nfs_storage(stack, nfs, nfs.share("grow"), [stack.host_id])
    vid = str(stack.wait(stack.api.post("/v1/volumes", {
        "name": "nfs-data", "primary_storage_id": primary, "size": 8 * MiB}))["resource_id"])
    url = str(stack.api.get(f"/v1/volumes/{vid}")["path"])
    assert url.startswith("nfs://")
    io(url, "write -P 0x7e 0 1M")
    stack.wait(stack.api.post(f"/v1/volumes/{vid}/resize", {"size": 40 * MiB}))
    assert qemu_info(url)[0]["virtual-size"] == 40 * MiB
    io(url, "read -P 0x7e 0 1M", "write -P 0x1f 39M 1M", "read -P 0x1f 39M 1M")


def test_grow_after_a_snapshot_then_revert(stack: Stack) -> None:
    """Growing resizes the active layer on top of a snapshot; reverting to the snapshot
    keeps the grown size (its data, zeroes past its end), so the row, the ledger and the
    guest's disk agree."""
    api = stack.api
    vid = str(stack.wait(api.post("/v1/volumes", {
        "name": "data", "primary_storage_id": stack.primary_id, "size": 16 * MiB}))
        ["resource_id"])
    io(str(api.get(f"/v1/volumes/{vid}")["path"]), "write -P 0x11 0 1M")
    snap = stack.wait(api.post(f"/v1/volumes/{vid}/snapshots", {"name": "before"}))
    stack.wait(api.post(f"/v1/volumes/{vid}/resize", {"size": 48 * MiB}))
    grown = str(api.get(f"/v1/volumes/{vid}")["path"])
    assert qemu_info(grown)[0]["virtual-size"] == 48 * MiB
    io(grown, "write -P 0x22 0 1M", "write -P 0x33 40M 1M")
    held = allocated(stack)

    stack.wait(api.post(f"/v1/volumes/{vid}/revert", {"snapshot_id": snap["resource_id"]}))
    vol = api.get(f"/v1/volumes/{vid}")
    assert (vol["size"], vol["state"]) == (48 * MiB, "ready")
    assert qemu_info(str(vol["path"]))[0]["virtual-size"] == 48 * MiB
    io(str(vol["path"]), "read -P 0x11 0 1M", "read -P 0 16M 32M")
    assert allocated(stack) == held
