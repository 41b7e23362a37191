"""NFS primary storage in `libnfs` mode, end to end: a real controller, two real agents
(two processes, two state directories) and an nfs-ganesha server. QEMU and the agents
reach the export through libnfs (`nfs://` URLs); nothing is mounted, since this kernel
has no NFS client. The kernel `mount` mode is covered by tests/unit/test_mount.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cli.client import ApiError
from tests.conftest import Stack, make_image
from tests.integration.test_cli import strata
from tests.integration.test_end_to_end import twenty_root_volumes_one_copy
from tests.support.enrol import agent_state, controller_context, enrol_host
from tests.support.fileserver import FileServer
from tests.support.nfsserver import NfsServer
from tests.support.procs import start_agent
from tests.support.s3server import S3Server
from tests.support.sshd import SshServer


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


def nfs_storage(stack: Stack, nfs: NfsServer, share: Path, hosts: list[str]) -> str:
    job = stack.wait(stack.api.post("/v1/primary-storages", {
        "name": f"nfs-{share.name}", "type": "nfs", "hosts": hosts,
        "config": {"server": nfs.server, "export": str(share), "mode": "libnfs"}}))
    return str(job["resource_id"])


def register(stack: Stack, file_server: FileServer, image_dir: Path, store_id: str,
             name: str) -> dict[str, Any]:
    path, sha = make_image(image_dir, f"{name}.qcow2")
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 1M 1M", str(path)], check=True,
                   capture_output=True)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    job = stack.wait(stack.api.post("/v1/images", {
        "name": name, "url": file_server.url(path.name), "sha256": sha,
        "backup_storage_id": store_id}))
    return dict(stack.api.get(f"/v1/images/{job['resource_id']}"))


def volume(stack: Stack, primary: str, **body: Any) -> dict[str, Any]:
    job = stack.wait(stack.api.post("/v1/volumes", {"primary_storage_id": primary, **body}))
    return dict(stack.api.get(f"/v1/volumes/{job['resource_id']}"))


def qemu_io(cmd: str, path: str) -> None:
    out = subprocess.run(["qemu-io", "-c", cmd, path], capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out


def chain(path: str) -> list[str]:
    out = subprocess.run(["qemu-img", "info", "--output=json", "--backing-chain", path],
                         check=True, capture_output=True, text=True).stdout
    return [layer["filename"] for layer in json.loads(out)]


def test_nfs_storage_shared_by_two_hosts(stack: Stack, nfs: NfsServer, file_server: FileServer,
                                         image_dir: Path, tmp_path: Path) -> None:
    share = nfs.share("shared")
    primary = nfs_storage(stack, nfs, share, [stack.host_id])
    shown = stack.api.get(f"/v1/primary-storages/{primary}")
    assert [h["state"] for h in shown["hosts"]] == ["connected"]
    assert shown["capacity"]["total"] > 0
    assert (share / "volumes").is_dir() and (share / "imagecache").is_dir()

    # Image cache and a linked clone, through host A.
    image = register(stack, file_server, image_dir, stack.backup_id, "base")
    root_a = volume(stack, primary, name="root-a", image_id=image["id"])
    cache_url = nfs.url(share / "imagecache" / image["id"])
    assert root_a["path"] == nfs.url(share / "volumes" / f"{root_a['id']}.qcow2")
    assert chain(root_a["path"]) == [root_a["path"], cache_url]
    qemu_io("read -P 0x5a 1M 1M", root_a["path"])
    assert hashlib.sha256((share / "imagecache" / image["id"]).read_bytes()).hexdigest() \
        == image["sha256"]

    # An empty volume, written through libnfs.
    data = volume(stack, primary, name="data-a", size=8 << 20)
    qemu_io("write -P 0x6d 0 256k", data["path"])

    # Host B joins; host A leaves. Everything made through A now works through B.
    agent_b, _ = start_agent(tmp_path / "agent-b")
    try:
        host_b = enrol_host(stack.api, "host-b", agent_b)
        stack.wait(stack.api.post(f"/v1/primary-storages/{primary}/attach",
                                  {"host_id": host_b}))
        stack.wait(stack.api.post(f"/v1/primary-storages/{primary}/detach",
                                  {"host_id": stack.host_id}))
        shown = stack.api.get(f"/v1/primary-storages/{primary}")
        assert [(h["host_id"], h["state"]) for h in shown["hosts"]] == [(host_b, "connected")]

        root_b = volume(stack, primary, name="root-b", image_id=image["id"])
        assert chain(root_b["path"]) == [root_b["path"], cache_url]
        assert sorted(p.name for p in (share / "imagecache").iterdir()) == [image["id"]]

        # A's data volume becomes an image through B, and is the same bytes.
        job = stack.wait(stack.api.post("/v1/images", {
            "name": "from-data-a", "volume_id": data["id"],
            "backup_storage_id": stack.backup_id}))
        made = stack.api.get(f"/v1/images/{job['resource_id']}")
        stored = stack.backup_path / "images" / made["id"]
        assert stored.read_bytes() == (share / "volumes" / f"{data['id']}.qcow2").read_bytes()
        assert made["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()

        for vol in (root_a, root_b, data):
            stack.wait(stack.api.delete(f"/v1/volumes/{vol['id']}"))
        assert list((share / "volumes").iterdir()) == []
        stack.wait(stack.api.delete(f"/v1/images/{image['id']}"))
        assert list((share / "imagecache").iterdir()) == []
        allocated = stack.api.get(f"/v1/primary-storages/{primary}")["capacity"]["allocated"]
        assert allocated == 0
    finally:
        agent_b.stop()


def test_nfs_cells_with_sftp_and_s3(stack: Stack, nfs: NfsServer, sshd: SshServer, s3: S3Server,
                                    file_server: FileServer, image_dir: Path,
                                    tmp_path: Path) -> None:
    """(nfs <-> sftp) and (nfs <-> s3), both directions; (nfs <-> dir) is above."""
    share = nfs.share("cells")
    primary = nfs_storage(stack, nfs, share, [stack.host_id])
    stores = {
        "sftp": {**sshd.endpoint(), "path": str(tmp_path / "sftp-store")},
        "s3": s3.endpoint(),
    }
    for kind, config in stores.items():
        store = str(stack.wait(stack.api.post("/v1/backup-storages", {
            "name": kind, "type": kind, "config": config}))["resource_id"])
        image = register(stack, file_server, image_dir, store, f"img-{kind}")
        root = volume(stack, primary, name=f"root-{kind}", image_id=image["id"])
        qemu_io("read -P 0x5a 1M 1M", root["path"])

        data = volume(stack, primary, name=f"data-{kind}", size=8 << 20)
        qemu_io("write -P 0x33 0 64k", data["path"])
        job = stack.wait(stack.api.post("/v1/images", {
            "name": f"up-{kind}", "volume_id": data["id"], "backup_storage_id": store}))
        made = stack.api.get(f"/v1/images/{job['resource_id']}")
        sent = (share / "volumes" / f"{data['id']}.qcow2").read_bytes()
        assert made["sha256"] == hashlib.sha256(sent).hexdigest()
        back = volume(stack, primary, name=f"back-{kind}", image_id=made["id"])
        qemu_io("read -P 0x33 0 64k", back["path"])


def test_hung_nfs_server(stack: Stack, nfs: NfsServer, tmp_path: Path) -> None:
    """A stopped server: the agent stays responsive, local storage keeps working, NFS
    calls fail in bounded time with a reason, and the attachment says so."""
    agent, _ = start_agent(tmp_path / "agent-n", {"nfs_timeout": 6})
    try:
        host = enrol_host(stack.api, "host-n", agent)
        share = nfs.share("hung")
        primary = nfs_storage(stack, nfs, share, [host])
        with nfs.hung():
            accepted = stack.api.post("/v1/volumes", {
                "name": "stuck", "primary_storage_id": primary, "size": 1 << 20})
            started = time.monotonic()
            time.sleep(0.5)
            t0 = time.monotonic()
            context = controller_context(stack.state / "controller", agent_state(agent))
            with urllib.request.urlopen(agent.url + "/healthz", timeout=5,
                                        context=context) as resp:
                assert resp.status == 200
            # An event loop blocked on the hung call would answer only when the call
            # timed out, 5.5 s from here; the margin absorbs a loaded machine.
            assert time.monotonic() - t0 < 3.0

            local = volume(stack, stack.primary_id, name="still-fine", size=1 << 20)
            assert local["state"] == "ready"

            job = stack.wait(accepted, ok=False)
            assert time.monotonic() - started < 30
            assert job["state"] == "failed"
            assert job["error"]["code"] == "storage_unresponsive", job["error"]
            assert nfs.server in job["error"]["message"]

            stack.wait(stack.api.post(f"/v1/hosts/{host}/reconnect"))
            ref = stack.api.get(f"/v1/primary-storages/{primary}")["hosts"][0]
            assert ref["state"] == "disconnected" and ref["reason"]
        stack.wait(stack.api.post(f"/v1/hosts/{host}/reconnect"))
        ref = stack.api.get(f"/v1/primary-storages/{primary}")["hosts"][0]
        assert ref["state"] == "connected" and ref["reason"] is None
        assert volume(stack, primary, name="after", size=1 << 20)["state"] == "ready"
    finally:
        agent.stop()


def test_twenty_root_volumes_one_copy_into_nfs(stack: Stack, nfs: NfsServer,
                                               file_server: FileServer, image_dir: Path) -> None:
    share = nfs.share("twenty")
    primary = nfs_storage(stack, nfs, share, [stack.host_id])
    image = register(stack, file_server, image_dir, stack.backup_id, "twenty")
    twenty_root_volumes_one_copy(stack, primary, image["id"])
    assert len(list((share / "volumes").iterdir())) == 20


def test_cli_creates_an_nfs_storage(stack: Stack, nfs: NfsServer) -> None:
    share = nfs.share("cli")
    strata(stack, "ps", "create", "nfs-cli", "--type", "nfs", "--set", f"server={nfs.server}",
           "--set", f"export={share}", "--set", "mode=libnfs", "--host", stack.host_id,
           "--wait")
    listed = json.loads(strata(stack, "--json", "ps", "list", "type=nfs").stdout)["items"]
    assert [(s["name"], s["config"]["mode"]) for s in listed] == [("nfs-cli", "libnfs")]
    assert [h["state"] for h in listed[0]["hosts"]] == ["connected"]


def test_bad_nfs_settings_are_refused(stack: Stack) -> None:
    for config, field in (
        ({"export": "/srv/nfs"}, "server"),
        ({"server": "10.0.0.8", "export": "/srv/../etc"}, "export"),
        ({"server": "10.0.0.8;reboot", "export": "/srv/nfs"}, "server"),
        ({"server": "10.0.0.8", "export": "/srv/nfs", "mount_options": ["rw;reboot"]},
         "mount_options"),
        ({"server": "10.0.0.8", "export": "/srv/nfs", "mode": "fuse"}, "mode"),
    ):
        with pytest.raises(ApiError) as info:
            stack.api.post("/v1/primary-storages", {"name": "bad", "type": "nfs",
                                                    "config": config})
        assert info.value.status == 400 and field in str(info.value), (config, info.value)


def test_mount_mode_reports_why_it_cannot_mount(stack: Stack, nfs: NfsServer,
                                                tmp_path: Path) -> None:
    """The real agent runs the real mount(8); this kernel has no NFS client, so the mount
    fails, and the attachment says why. Successful kernel mounts are covered by
    tests/unit/test_mount.py with a fake executor, and by a real-kernel tier later."""
    if "\tnfs\n" in Path("/proc/filesystems").read_text():
        pytest.skip("this kernel has an NFS client: the real-kernel tier covers mount mode")
    share = nfs.share("mounted")
    job = stack.wait(stack.api.post("/v1/primary-storages", {
        "name": "nfs-mount", "type": "nfs", "hosts": [stack.host_id],
        "config": {"server": nfs.server, "export": str(share),
                   "mount_point": str(tmp_path / "mnt")}}), ok=False)
    assert job["state"] == "failed" and job["error"]["code"] == "mount_failed", job
    assert f"{nfs.server}:{share}" in job["error"]["message"]
    ref = stack.api.get(f"/v1/primary-storages/{job['resource_id']}")["hosts"][0]
    assert ref["state"] == "disconnected" and "mount" in ref["reason"]
