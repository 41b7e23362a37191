"""The whole stack in the guest: a controller and an agent (real processes) with an NFS
primary storage in `mount` mode, the kernel's NFS client against nfs-ganesha (a root
volume from an image, a snapshot, a revert, maintenance, which unmounts the export until
it is cancelled, deletes, and the storage detached, which unmounts it); and an iSCSI
storage served by LIO, its volumes granted to a host whose kernel initiator logs in,
with and without CHAP, and one on a volume group whose logical volumes are snapshotted,
copied and migrated away (guest only)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cli.client import ApiError, Client
from tests.kernel.guestfix import rts
from tests.support.agents import call_agent
from tests.support.enrol import agent_state, controller_context, enrol_host
from tests.support.fileserver import FileServer
from tests.support.procs import Proc, start_agent, start_controller

# Every Python start crosses 9p in an emulated CPU, which shares the host's cores with
# the other test worker.
START_TIMEOUT = 600
JOB_TIMEOUT = 300


class Cloud:
    def __init__(self, api: Client, host: str, agent: Proc, controller: Path) -> None:
        self.api = api
        self.host = host
        self.agent = agent
        self.controller = controller

    def wait(self, accepted: dict[str, Any]) -> dict[str, Any]:
        job = self.api.wait_job(str(accepted["job_id"]), timeout=JOB_TIMEOUT)
        assert job["state"] == "succeeded", job
        return job

    def agent_call(self, command: str, payload: dict[str, object]) -> dict[str, object]:
        """A command to the host's agent as the controller sends it."""
        context = controller_context(self.controller, agent_state(self.agent))
        state, result = call_agent(self.agent.url, context, command, payload)
        assert state == "succeeded", result
        return result


HOST_IQN = "iqn.2026-11.org.strata:host-stack"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A controller and one agent, enrolled as host kvm-1, shared by this module's tests
    (each start costs a minute here). The agent is an NFS client, the iSCSI storage
    server (LIO) and a kernel-initiator host at once."""
    base = tmp_path_factory.mktemp("stack")
    # LVM makes its device nodes itself (no udev here), as for guest_lvm.py.
    os.environ["DM_DISABLE_UDEV"] = "1"
    config = {"iscsi_target": "lio", "iscsi_portal": "127.0.0.1:3260",
              "initiator_iqn": HOST_IQN, "iscsi_access": "kernel"}
    # Both start at once, on the guest's two CPUs.
    with ThreadPoolExecutor(2) as pool:
        agent_start = pool.submit(start_agent, base / "agent", config, timeout=START_TIMEOUT)
        controller_start = pool.submit(
            start_controller, base / "controller", f"sqlite:///{base / 'strata.sqlite'}",
            # Storages live in the tests' own tmp_path.
            config={"storage_roots": [str(base.parent)]}, timeout=START_TIMEOUT)
    procs: list[Proc] = []
    if agent_start.exception() is None:
        procs.append(agent_start.result()[0])
    if controller_start.exception() is None:
        procs.append(controller_start.result())
    try:
        (agent, _), controller = agent_start.result(), controller_start.result()
        api = Client(controller.url, controller.token)
        yield Cloud(api, enrol_host(api, "kvm-1", agent), agent, base / "controller")
    finally:
        for proc in reversed(procs):
            proc.stop()


def qemu_io(path: str, *commands: str) -> None:
    argv = ["qemu-io"]
    for command in commands:
        argv += ["-c", command]
    out = subprocess.run([*argv, path], capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out


def mounts_at(mount_point: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if line.split()[4] == str(mount_point)]


def test_nfs_mount_mode_through_the_api(ganesha: Any, cloud: Cloud, tmp_path: Path) -> None:
    api = cloud.api
    mount_point = tmp_path / "mnt"
    ps = cloud.wait(api.post("/v1/primary-storages", {
        "name": "nfs-1", "type": "nfs", "hosts": [cloud.host],
        "config": {"server": "127.0.0.1", "export": "/strata", "mode": "mount",
                   "mount_options": ["vers=4.1"], "mount_point": str(mount_point)}}))
    store = api.get(f"/v1/primary-storages/{ps['resource_id']}")
    assert store["state"] == "ready" and [h["state"] for h in store["hosts"]] == ["connected"]
    (found,) = mounts_at(mount_point)
    assert " nfs4 127.0.0.1:/strata " in found, found

    served = tmp_path / "served"
    served.mkdir()
    image = served / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    qemu_io(str(image), "write -P 0x5a 0 64k")
    bs = cloud.wait(api.post("/v1/backup-storages", {
        "name": "images", "type": "dir", "config": {"path": str(tmp_path / "images")}}))
    files = FileServer(served)
    try:
        img = cloud.wait(api.post("/v1/images", {
            "name": "base", "url": files.url(image.name), "backup_storage_id":
            bs["resource_id"], "sha256": hashlib.sha256(image.read_bytes()).hexdigest()}))
    finally:
        files.close()

    made = cloud.wait(api.post("/v1/volumes", {"name": "root", "image_id": img["resource_id"],
                                               "primary_storage_id": ps["resource_id"]}))
    vol = api.get(f"/v1/volumes/{made['resource_id']}")
    assert vol["path"].startswith(f"{mount_point}/")
    exported = ganesha.export / Path(vol["path"]).relative_to(mount_point)
    assert exported.is_file(), "the volume went through the kernel mount into the export"
    qemu_io(vol["path"], "read -P 0x5a 0 64k", "write -P 0x11 1M 64k")
    snap = cloud.wait(api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": "s1"}))
    vol = api.get(f"/v1/volumes/{vol['id']}")
    qemu_io(vol["path"], "write -P 0x22 1M 64k")
    cloud.wait(api.post(f"/v1/volumes/{vol['id']}/revert",
                        {"snapshot_id": snap["resource_id"]}))
    vol = api.get(f"/v1/volumes/{vol['id']}")
    qemu_io(vol["path"], "read -P 0x5a 0 64k", "read -P 0x11 1M 64k")

    # Maintenance unmounts the export on the host; cancelling it mounts it again.
    job = cloud.wait(api.post(f"/v1/primary-storages/{ps['resource_id']}/maintain", {}))
    assert job["result"]["released"] == ["kvm-1"], job
    shown = api.get(f"/v1/primary-storages/{ps['resource_id']}")
    assert (shown["state"], [h["state"] for h in shown["hosts"]]) == (
        "maintenance", ["maintenance"])
    assert mounts_at(mount_point) == [], "maintenance unmounts the export"
    job = cloud.wait(api.post(f"/v1/primary-storages/{ps['resource_id']}/cancel-maintain"))
    assert job["result"]["attached"] == ["kvm-1"], job
    shown = api.get(f"/v1/primary-storages/{ps['resource_id']}")
    assert (shown["state"], [h["state"] for h in shown["hosts"]]) == ("ready", ["connected"])
    (found,) = mounts_at(mount_point)
    assert " nfs4 127.0.0.1:/strata " in found, found
    qemu_io(vol["path"], "read -P 0x5a 0 64k", "read -P 0x11 1M 64k")

    cloud.wait(api.delete(f"/v1/snapshots/{snap['resource_id']}"))
    qemu_io(vol["path"], "read -P 0x11 1M 64k")
    cloud.wait(api.delete(f"/v1/volumes/{vol['id']}"))
    assert not exported.exists()
    cloud.wait(api.delete(f"/v1/images/{img['resource_id']}"))

    cloud.wait(api.post(f"/v1/primary-storages/{ps['resource_id']}/detach",
                        {"host_id": cloud.host}))
    assert mounts_at(mount_point) == [], "detaching the last storage unmounts the export"


@pytest.mark.usefixtures("lio_clean", "iscsid")
def test_iscsi_lio_and_a_kernel_initiator_through_the_api(cloud: Cloud,
                                                          tmp_path: Path) -> None:
    """One agent is both the storage server (LIO) and the host (open-iscsi, the name it
    is configured with). Each volume is exported, granted to the host, logged in to by
    the kernel and written through its block device; CHAP protects the second storage's
    targets (its secret, which the API never shows, read off the kernel's LIO)."""
    api = cloud.api
    assert api.get(f"/v1/hosts/{cloud.host}")["initiator_iqn"] == HOST_IQN
    for chap in (False, True):
        ps = cloud.wait(api.post("/v1/primary-storages", {
            "name": f"san-{chap}", "type": "iscsi", "hosts": [cloud.host],
            "config": {"server_host_id": cloud.host, "path": str(tmp_path / f"san-{chap}"),
                       "portal": "127.0.0.1:3260", "chap": chap}}))
        made = cloud.wait(api.post("/v1/volumes", {
            "name": f"data-{chap}", "size": 16 << 20,
            "primary_storage_id": ps["resource_id"]}))
        vol = api.get(f"/v1/volumes/{made['resource_id']}")
        cloud.wait(api.post(f"/v1/volumes/{vol['id']}/access", {"host_id": cloud.host}))
        target: dict[str, object] = {k: vol["export"][k]
                                     for k in ("portal", "target", "lun")}
        if chap:
            (tpg,) = next(t for t in rts().RTSRoot().targets
                          if t.wwn == target["target"]).tpgs
            target["chap"] = {"user": tpg.chap_userid, "password": tpg.chap_password}
        connected = cloud.agent_call("connect_volume", {"target": target})
        assert connected["mode"] == "kernel" and connected["size"] == 16 << 20
        fd = os.open(str(connected["device"]), os.O_RDWR)
        try:
            os.pwrite(fd, b"strata" * 512, 8192)
            os.fsync(fd)
        finally:
            os.close(fd)
        cloud.agent_call("disconnect_volume", {"target": target})
        with open(vol["path"], "rb") as f:
            f.seek(8192)
            assert f.read(6) == b"strata", "the write went through LIO into the LUN file"
        cloud.wait(api.delete(f"/v1/volumes/{vol['id']}"))
        assert not os.path.exists(vol["path"])
    assert not list(rts().RTSRoot().targets)


def test_lvm_luns_through_the_api(cloud: Cloud, volume_group: str, tmp_path: Path) -> None:
    """An iSCSI storage on a volume group: a LUN written through its logical volume, an
    LVM snapshot taken, a volume made of it (a new logical volume holding the snapshot's
    data), the tree refused for migration (logical volumes don't move as snapshots),
    then, without it, the LUN migrated onto a local storage of the same host, read from
    its logical volume: the qcow2 copy reads the pattern and the logical volume is gone."""
    api = cloud.api
    san = str(cloud.wait(api.post("/v1/primary-storages", {
        "name": "san-lvm", "type": "iscsi", "hosts": [cloud.host],
        "config": {"server_host_id": cloud.host, "path": str(tmp_path / "san-lvm"),
                   "portal": "127.0.0.1:3260", "volume_group": volume_group}}))["resource_id"])
    local = str(cloud.wait(api.post("/v1/primary-storages", {
        "name": "local-lvm", "type": "local", "hosts": [cloud.host],
        "config": {"path": str(tmp_path / "local")}}))["resource_id"])
    made = cloud.wait(api.post("/v1/volumes", {"name": "lv-data", "size": 16 << 20,
                                               "primary_storage_id": san}))
    vol = api.get(f"/v1/volumes/{made['resource_id']}")
    assert vol["path"] == f"/dev/{volume_group}/strata-{vol['id']}"
    raw = "json:{{\"driver\": \"raw\", \"file\": {{\"driver\": \"host_device\", " \
          "\"filename\": \"{}\", \"cache\": {{\"direct\": true}}}}}}"
    qemu_io(raw.format(vol["path"]), "write -P 0x4c 1M 64k")
    snap = cloud.wait(api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": "s1"}))
    qemu_io(raw.format(vol["path"]), "write -P 0x4d 1M 64k")

    copy = cloud.wait(api.post("/v1/volumes", {"name": "lv-copy", "primary_storage_id": san,
                                               "snapshot_id": snap["resource_id"]}))
    copied = api.get(f"/v1/volumes/{copy['resource_id']}")
    qemu_io(raw.format(copied["path"]), "read -P 0x4c 1M 64k")
    cloud.wait(api.delete(f"/v1/volumes/{copied['id']}"))

    with pytest.raises(ApiError) as refused:
        api.post(f"/v1/volumes/{vol['id']}/migrate", {"primary_storage_id": local})
    assert (refused.value.status, refused.value.code) == (409, "volume_has_snapshots")
    assert "s1" in refused.value.message
    cloud.wait(api.delete(f"/v1/snapshots/{snap['resource_id']}"))
    cloud.wait(api.post(f"/v1/volumes/{vol['id']}/migrate", {"primary_storage_id": local}))
    moved = api.get(f"/v1/volumes/{vol['id']}")
    assert moved["primary_storage_id"] == local and moved["format"] == "qcow2"
    qemu_io(moved["path"], "read -P 0x4d 1M 64k")
    assert not os.path.exists(vol["path"]), "the logical volume is removed"
    lvs = subprocess.run(["lvs", "--noheadings", "-o", "lv_name", volume_group],
                         capture_output=True, text=True, check=True).stdout.split()
    assert not [lv for lv in lvs if lv.startswith("strata-")], lvs
    cloud.wait(api.delete(f"/v1/volumes/{vol['id']}"))
