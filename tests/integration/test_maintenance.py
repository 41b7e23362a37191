"""Maintenance mode of primary storages against a real controller and agent: a local
storage (on SQLite and PostgreSQL, whose column must hold the longer states), an NFS
one on nfs-ganesha (libnfs mode) and an iSCSI one on tgtd. New work is refused with 409
storage_in_maintenance, the hosts' attachments are released, a maintenance that cannot
drain the running jobs settles back to ready, and cancelling brings the storage back
with its capacity read again."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.integration.test_cli import strata
from tests.integration.test_grow import refused
from tests.integration.test_iscsi import Cloud, cloud, spec  # noqa: F401
from tests.integration.test_iscsi_agent import IQN_A, qemu_io
from tests.integration.test_nfs import nfs_storage, register, volume
from tests.support.fileserver import FileServer
from tests.support.nfsserver import NfsServer

MiB = 1 << 20


def storage(stack: Stack, store_id: str) -> dict[str, Any]:
    return dict(stack.api.get(f"/v1/primary-storages/{store_id}"))


def maintain(stack: Stack, store_id: str, drain_timeout: float = 30,
             ok: bool = True) -> dict[str, Any]:
    return dict(stack.wait(stack.api.post(f"/v1/primary-storages/{store_id}/maintain",
                                          {"drain_timeout": drain_timeout}), ok=ok))


def cancel(stack: Stack, store_id: str) -> dict[str, Any]:
    return dict(stack.wait(stack.api.post(f"/v1/primary-storages/{store_id}/cancel-maintain")))


def new_volume(stack: Stack, store_id: str, name: str) -> dict[str, Any]:
    return stack.api.post("/v1/volumes", {"name": name, "primary_storage_id": store_id,
                                          "size": 4 * MiB})  # type: ignore[no-any-return]


def assert_back(stack: Stack, store_id: str, root: Path, job: dict[str, Any]) -> None:
    """Ready, attached again, and the capacity the hosts reported now."""
    shown = storage(stack, store_id)
    assert shown["state"] == "ready"
    assert [h["state"] for h in shown["hosts"]] == ["connected"]
    st = os.statvfs(root)
    assert job["result"]["capacity_total"] == st.f_blocks * st.f_frsize
    assert shown["capacity"]["total"] == st.f_blocks * st.f_frsize
    assert abs(shown["capacity"]["available"] - st.f_bavail * st.f_frsize) < 256 * MiB


def test_local_storage_maintenance(stack: Stack, file_server: FileServer,
                                   image_dir: Path) -> None:
    api, ps = stack.api, stack.primary_id
    vid = str(stack.wait(new_volume(stack, ps, "data"))["resource_id"])
    # An image whose cache on the storage outlives its only volume.
    image = register(stack, file_server, image_dir, stack.backup_id, "base")
    root = volume(stack, ps, name="root", image_id=image["id"])
    stack.wait(api.delete(f"/v1/volumes/{root['id']}"))

    # A growth held by a stopped agent keeps a job running on the storage: entering
    # maintenance waits for it, refuses new work meanwhile, then gives up naming it.
    stack.agent.popen.send_signal(signal.SIGSTOP)
    try:
        held = api.post(f"/v1/volumes/{vid}/resize", {"size": 8 * MiB})
        entering = api.post(f"/v1/primary-storages/{ps}/maintain", {"drain_timeout": 1})
        assert storage(stack, ps)["state"] == "entering_maintenance"
        error = refused(lambda: new_volume(stack, ps, "late"), 409, "storage_in_maintenance")
        assert "local-a" in error.message
        job = stack.wait(entering, ok=False)
    finally:
        stack.agent.popen.send_signal(signal.SIGCONT)
    assert job["error"]["code"] == "storage_busy"
    assert f"volume.resize {held['job_id']}" in job["error"]["message"]
    assert storage(stack, ps)["state"] == "ready"
    stack.wait(held)

    job = maintain(stack, ps)
    assert job["result"] == {"released": ["host-a"]}
    shown = storage(stack, ps)
    assert shown["state"] == "maintenance"
    assert [(h["host_id"], h["state"]) for h in shown["hosts"]] == [
        (stack.host_id, "maintenance")]
    for call in (lambda: new_volume(stack, ps, "refused"),
                 lambda: api.post(f"/v1/volumes/{vid}/resize", {"size": 16 * MiB}),
                 lambda: api.post(f"/v1/volumes/{vid}/snapshots", {"name": "s"}),
                 lambda: api.delete(f"/v1/volumes/{vid}"),
                 lambda: api.delete(f"/v1/images/{image['id']}"),
                 lambda: api.post(f"/v1/primary-storages/{ps}/reconcile"),
                 lambda: api.post(f"/v1/primary-storages/{ps}/cache-gc/run", {}),
                 lambda: api.post(f"/v1/primary-storages/{ps}/maintain", {})):
        refused(call, 409, "storage_in_maintenance")
    # A host reconnect (what the host monitor does) leaves the storage released.
    stack.wait(api.post(f"/v1/hosts/{stack.host_id}/reconnect"))
    assert [h["state"] for h in storage(stack, ps)["hosts"]] == ["maintenance"]

    assert_back(stack, ps, stack.primary_path, cancel(stack, ps))
    refused(lambda: api.post(f"/v1/primary-storages/{ps}/cancel-maintain"), 409,
            "not_in_maintenance")
    made = stack.wait(new_volume(stack, ps, "after"))
    assert Path(str(api.get(f"/v1/volumes/{made['resource_id']}")["path"])).is_file()
    paths = api.get("/v1/openapi.json")["paths"]
    assert {"/v1/primary-storages/{id}/maintain",
            "/v1/primary-storages/{id}/cancel-maintain"} <= set(paths)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_nfs_storage_maintenance(stack: Stack, nfs: NfsServer) -> None:
    """libnfs mode: nothing is mounted, so releasing is the attachment's state; a
    migration into the storage is refused too."""
    api = stack.api
    share = nfs.share("maint")
    ps = nfs_storage(stack, nfs, share, [stack.host_id])
    local = str(stack.wait(new_volume(stack, stack.primary_id, "mover"))["resource_id"])

    name = f"nfs-{share.name}"
    shown = strata(stack, "ps", "maintain", name, "--wait").stdout.splitlines()
    assert shown[1].split()[1:4] == [name, "nfs", "maintenance"]
    assert storage(stack, ps)["hosts"][0]["state"] == "maintenance"
    refused(lambda: new_volume(stack, ps, "refused"), 409, "storage_in_maintenance")
    refused(lambda: api.post(f"/v1/volumes/{local}/migrate", {"primary_storage_id": ps}),
            409, "storage_in_maintenance")
    assert list((share / "volumes").iterdir()) == []

    job = json.loads(strata(stack, "--json", "ps", "cancel-maintain", name, "--wait").stdout)
    assert_back(stack, ps, share, job)
    made = stack.wait(new_volume(stack, ps, "after"))
    assert [p.name for p in (share / "volumes").iterdir()] == [f"{made['resource_id']}.qcow2"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_iscsi_storage_maintenance(cloud: Cloud) -> None:  # noqa: F811
    """tgtd on the storage server: both hypervisors' attachments are released, a grant
    is refused meanwhile, and a LUN granted before serves its bytes after the cancel,
    whose prepare on the storage server reads the capacity again."""
    api, ps = cloud.api, cloud.primary
    vid = str(cloud.wait(api.post("/v1/volumes", {
        "name": "san-data", "primary_storage_id": ps, "size": 16 * MiB}))["resource_id"])
    lun = spec(str(cloud.wait(api.post(f"/v1/volumes/{vid}/access",
                                       {"host_id": cloud.host_a}))["result"]["uri"]), IQN_A)
    assert qemu_io(lun, "write -P 0x3c 0 1M").returncode == 0

    job = cloud.wait(api.post(f"/v1/primary-storages/{ps}/maintain", {}))
    assert sorted(job["result"]["released"]) == ["kvm-a", "kvm-b"]
    shown = api.get(f"/v1/primary-storages/{ps}")
    assert (shown["state"], {h["state"] for h in shown["hosts"]}) == (
        "maintenance", {"maintenance"})
    refused(lambda: api.post(f"/v1/volumes/{vid}/access", {"host_id": cloud.host_b}), 409,
            "storage_in_maintenance")
    refused(lambda: api.post("/v1/volumes", {"name": "late", "primary_storage_id": ps,
                                             "size": 4 * MiB}), 409, "storage_in_maintenance")

    job = cloud.wait(api.post(f"/v1/primary-storages/{ps}/cancel-maintain"))
    assert sorted(job["result"]["attached"]) == ["kvm-a", "kvm-b"]
    st = os.statvfs(cloud.luns.parent)
    assert job["result"]["capacity_total"] == st.f_blocks * st.f_frsize
    shown = api.get(f"/v1/primary-storages/{ps}")
    assert (shown["state"], {h["state"] for h in shown["hosts"]}) == ("ready", {"connected"})
    out = qemu_io(lun, "read -P 0x3c 0 1M")
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out
    cloud.wait(api.post(f"/v1/volumes/{vid}/access", {"host_id": cloud.host_b}))
