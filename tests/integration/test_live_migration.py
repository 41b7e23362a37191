"""Live storage migration through the API: a real controller, a hypervisor agent talking
to a real libvirtd (TCG domains with no guest OS, disks on virtio-scsi), a local storage
and an NFS storage in libnfs mode (nfs-ganesha). Patterns are written with qemu-io
before the attach; after the detach the volume must read exactly as before."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from cli.client import Client
from tests.conftest import Stack
from tests.integration.test_cli import strata as cli_strata
from tests.integration.test_libvirt_agent import DOMAIN_XML, block_nodes, open_files
from tests.integration.test_migration import allocated, local_storage
from tests.integration.test_nfs import chain, nfs_storage, register, volume
from tests.support.enrol import enrol_host
from tests.support.fileserver import FileServer
from tests.support.libvirtd import Libvirtd
from tests.support.nfsserver import NfsServer
from tests.support.procs import Proc, start_agent, start_controller

# Slow enough that a test sees the copy running (a volume of 12 MiB takes 3 s).
BANDWIDTH = 4 << 20


@dataclass
class Site:
    stack: Stack
    daemon: Libvirtd
    conn: libvirt.virConnect
    nfs: NfsServer
    share: Path
    nfs_id: str
    image: dict[str, Any]
    tmp: Path

    def domain(self, name: str) -> libvirt.virDomain:
        dom = self.conn.defineXML(DOMAIN_XML.format(name=name))
        dom.create()
        return dom

    def attach(self, vol: dict[str, Any], domain: str) -> str:
        job = self.stack.wait(self.stack.api.post(f"/v1/volumes/{vol['id']}/attach", {
            "host_id": self.stack.host_id, "domain": domain}))
        return str(job["result"]["device"])  # type: ignore[index]

    def migrate(self, vol: dict[str, Any], dest: str, ok: bool = True) -> dict[str, Any]:
        accepted = self.stack.api.post(f"/v1/volumes/{vol['id']}/migrate",
                                       {"primary_storage_id": dest})
        return dict(self.stack.wait(accepted, ok=ok))

    def show(self, vol: dict[str, Any]) -> dict[str, Any]:
        return dict(self.stack.api.get(f"/v1/volumes/{vol['id']}"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, nfs: NfsServer) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("live")
    daemon = Libvirtd(tmp / "libvirtd")
    procs: list[Proc] = []
    www = tmp / "www"
    www.mkdir()
    files = FileServer(www)
    try:
        agent, debug = start_agent(tmp / "agent", {
            "libvirt_uri": daemon.uri, "disk_bus": "scsi", "live_copy_bandwidth": BANDWIDTH})
        procs.append(agent)
        db_url = f"sqlite:///{tmp / 'controller' / 'strata.sqlite'}"
        controller = start_controller(tmp / "controller", db_url)
        procs.append(controller)
        api = Client(controller.url, controller.token)
        stack = Stack(controller, agent, debug, api, "", "", "", tmp / "primary",
                      tmp / "backup", tmp, db_url)
        stack.host_id = enrol_host(api, "kvm-1", agent)
        stack.primary_id = local_storage(stack, "local-a", stack.primary_path, stack.host_id)
        stack.backup_id = str(stack.wait(api.post("/v1/backup-storages", {
            "name": "store", "type": "dir", "config": {"path": str(stack.backup_path)}}))
            ["resource_id"])
        share = nfs.share("live")
        image = register(stack, files, www, stack.backup_id, "base")
        nfs_id = nfs_storage(stack, nfs, share, [stack.host_id])
        site = Site(stack, daemon, libvirt.open(daemon.uri), nfs, share, nfs_id, image, tmp)
        try:
            yield site
        finally:
            site.conn.close()
    finally:
        for proc in reversed(procs):
            proc.stop()
        files.close()
        daemon.stop()


def qemu_io(path: str, *commands: str) -> None:
    argv = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        argv += ["-c", command]
    out = subprocess.run([*argv, path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "verification failed" not in out.stdout, out


def flat_copy(path: str, dest: Path) -> Path:
    """What the volume reads now, to compare it with later."""
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", path, str(dest)], check=True,
                   capture_output=True, timeout=60)
    return dest


def same(path: str, expected: Path) -> None:
    out = subprocess.run(["qemu-img", "compare", path, str(expected)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out


def disk_source(dom: libvirt.virDomain, serial: str, inactive: bool = False) -> str:
    """The `<source>` line of the volume's disk in the domain's XML."""
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)
    disk = xml[xml.rindex("<disk", 0, xml.index(f"<serial>{serial}</serial>")):]
    return disk[disk.index("<source"):disk.index(">", disk.index("<source")) + 1]


def test_live_migration_local_to_nfs_and_back(site: Site) -> None:
    """A linked clone moves shallow (only its own layer is copied onto the other side's
    image cache), an empty volume whole; the domain keeps both disks throughout, and
    after the detach each volume reads what was written before the attach."""
    stack = site.stack
    root = volume(stack, stack.primary_id, name="vm-a-root", image_id=site.image["id"])
    data = volume(stack, stack.primary_id, name="vm-a-data", size=16 << 20)
    qemu_io(root["path"], "write -P 0x11 0 1M", "write -P 0x12 3M 1M")
    qemu_io(data["path"], "write -P 0x21 0 2M")
    expect = {v["id"]: flat_copy(v["path"], site.tmp / f"{v['id']}.expected")
              for v in (root, data)}
    dom = site.domain("vm-a")
    assert [site.attach(root, "vm-a"), site.attach(data, "vm-a")] == ["sda", "sdb"]
    before = allocated(stack, stack.primary_id)

    for vol in (root, data):
        job = site.migrate(vol, site.nfs_id)
        moved = site.show(vol)
        assert moved["primary_storage_id"] == site.nfs_id and moved["state"] == "ready"
        assert moved["attachment"]["domain"] == "vm-a", "still attached"
        on_share = site.share / "volumes" / f"{vol['id']}.qcow2"
        assert moved["path"] == site.nfs.url(on_share), moved
        assert job["result"]["path"] == moved["path"]
        name = f"name=\"{on_share}\""
        for inactive in (False, True):
            source = disk_source(dom, vol["id"], inactive)
            assert "protocol=\"nfs\"" in source.replace("'", '"') and \
                name in source.replace("'", '"'), source
        assert not Path(vol["path"]).exists(), "the source is deleted after the pivot"
    assert "nfs" in {str(n["drv"]) for n in block_nodes(dom)}, "QEMU writes over libnfs"
    assert allocated(stack, stack.primary_id) == before - (32 << 20), "both given back"
    cache = site.nfs.url(site.share / "imagecache" / site.image["id"])
    assert chain(site.show(root)["path"])[1:] == [cache], "shallow: on the NFS image cache"
    assert chain(site.show(data)["path"]) == [site.show(data)["path"]], "whole"

    job = site.migrate(root, stack.primary_id)
    back = site.show(root)
    assert back["primary_storage_id"] == stack.primary_id and back["path"] in \
        open_files(block_nodes(dom)), "QEMU has the local file open"
    assert job["progress"] == 100
    assert not list(site.share.rglob(f"{root['id']}*")), "the NFS copy is deleted"

    for vol in (root, data):
        stack.wait(stack.api.post(f"/v1/volumes/{vol['id']}/detach", {}))
        same(site.show(vol)["path"], expect[vol["id"]])
    assert chain(back["path"])[1:] == [
        str(next(stack.primary_path.rglob(f"imagecache/{site.image['id']}")))]
    dom.destroy()


def test_copy_aborted_mid_way_leaves_the_vm_on_the_source(site: Site) -> None:
    """A block job cancelled outside Strata while it copies: the migration fails, the
    domain still writes to the source, the half-made destination is removed."""
    stack = site.stack
    vol = volume(stack, site.nfs_id, name="vm-b-data", size=32 << 20)
    qemu_io(vol["path"], "write -P 0x31 0 12M")
    expect = flat_copy(vol["path"], site.tmp / "vm-b.expected")
    dom = site.domain("vm-b")
    device = site.attach(vol, "vm-b")
    accepted = stack.api.post(f"/v1/volumes/{vol['id']}/migrate",
                              {"primary_storage_id": stack.primary_id})
    deadline = time.monotonic() + 60
    while not dom.blockJobInfo(device, 0).get("cur"):
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.05)
    dom.blockJobAbort(device, 0)
    job = stack.wait(accepted, ok=False)
    assert job["state"] == "failed" and job["error"]["code"] == "block_job_failed", job  # type: ignore[index]

    shown = site.show(vol)
    assert shown["state"] == "ready" and shown["primary_storage_id"] == site.nfs_id
    assert shown["path"] == vol["path"] and shown["attachment"]["domain"] == "vm-b"
    assert "protocol='nfs'" in disk_source(dom, vol["id"]), "the domain stays on NFS"
    assert not list(stack.primary_path.rglob(f"{vol['id']}*")), "destination removed"
    stack.wait(stack.api.post(f"/v1/volumes/{vol['id']}/detach", {}))
    same(vol["path"], expect)
    dom.destroy()


def test_readme_vm_tour(site: Site) -> None:
    """The README's tour of VMs on volumes, with the CLI and virsh: a root volume, a test
    domain, attach, migrate live to another storage, live snapshot, detach, revert."""
    stack, uri = site.stack, site.conn.getURI()

    def strata(*args: str) -> str:
        return cli_strata(stack, *args).stdout

    def virsh(*args: str) -> str:
        return subprocess.run(["virsh", "-c", uri, *args], check=True, capture_output=True,
                              text=True, timeout=60).stdout

    strata("ps", "create", "local-2", "--type", "local", "--path",
           str(site.tmp / "primary-2"), "--host", "kvm-1", "--wait")
    strata("volumes", "create", "vm1-root", "--primary-storage", "local-a", "--image",
           "base", "--wait")
    (site.tmp / "vm1.xml").write_text(DOMAIN_XML.format(name="vm1"))
    virsh("define", str(site.tmp / "vm1.xml"))
    virsh("start", "vm1")
    strata("volumes", "attach", "vm1-root", "--host", "kvm-1", "--domain", "vm1", "--wait")
    old = strata("volumes", "show", "vm1-root", "--field", "path").strip()
    moved = strata("volumes", "migrate", "vm1-root", "local-2", "--wait").splitlines()
    assert moved[1].split()[1:3] == ["vm1-root", "ready"], moved
    path = strata("volumes", "show", "vm1-root", "--field", "path").strip()
    assert path.startswith(str(site.tmp / "primary-2")) and not Path(old).exists()
    listed = [line.split() for line in virsh("domblklist", "vm1").splitlines()]
    assert ["sda", path] in listed, "the domain writes there now"

    strata("snapshots", "take", "vm1-root", "before-upgrade", "--wait")
    assert strata("snapshots", "show", "before-upgrade", "--field",
                  "consistency").strip() == "crash"
    refused = cli_strata(stack, "volumes", "migrate", "vm1-root", "local-a", ok=False)
    assert "volume_has_snapshots" in refused.stderr and "before-upgrade" in refused.stderr
    strata("volumes", "detach", "vm1-root", "--wait")
    strata("volumes", "revert", "vm1-root", "before-upgrade", "--wait")
    reverted = strata("volumes", "show", "vm1-root", "--field", "path").strip()
    assert chain(reverted)[1] == path, "the new active layer sits on the snapshot"
    virsh("destroy", "vm1")


def test_libvirtd_restarted_mid_copy(site: Site) -> None:
    """libvirtd stops and starts again while the copy runs: the agent waits it out, finds
    the job again and pivots; the data is whole on the destination."""
    stack = site.stack
    vol = volume(stack, stack.primary_id, name="vm-c-data", size=32 << 20)
    qemu_io(vol["path"], "write -P 0x41 0 12M")
    expect = flat_copy(vol["path"], site.tmp / "vm-c.expected")
    dom = site.domain("vm-c")
    device = site.attach(vol, "vm-c")
    accepted = stack.api.post(f"/v1/volumes/{vol['id']}/migrate",
                              {"primary_storage_id": site.nfs_id})
    deadline = time.monotonic() + 60
    while not dom.blockJobInfo(device, 0).get("cur"):
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.05)
    site.conn.close()
    site.daemon.stop_daemon()
    site.daemon.start()
    site.conn = libvirt.open(site.daemon.uri)
    stack.wait(accepted)
    shown = site.show(vol)
    assert shown["primary_storage_id"] == site.nfs_id
    dom = site.conn.lookupByName("vm-c")
    assert "protocol='nfs'" in disk_source(dom, vol["id"]), "pivoted onto NFS"
    stack.wait(stack.api.post(f"/v1/volumes/{vol['id']}/detach", {}))
    same(shown["path"], expect)
    dom.destroy()
