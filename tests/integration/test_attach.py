"""Attaching volumes to libvirt domains through the API and the CLI: a real controller,
a hypervisor agent talking to a real libvirtd (TCG domains, no guest OS), and for iSCSI a
storage-server agent with tgtd and CHAP, opened by QEMU's libiscsi."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import libvirt_qemu
import pytest

from cli.client import ApiError, Client
from tests.integration.test_iscsi_agent import qemu_io, server_config
from tests.integration.test_libvirt_agent import DOMAIN_XML, IQN, block_nodes, open_files
from tests.support.enrol import enrol_host
from tests.support.libvirtd import Libvirtd
from tests.support.procs import Proc, run_cli, start_agent, start_controller
from tests.support.tgtd import Tgtd

# Live merges move 1 MiB/s here, so a test can act while one runs.
MERGE_SPEED = 1 << 20


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


@dataclass
class Site:
    api: Client
    controller: Proc
    host: str
    server: str
    local: str
    san: str
    conn: libvirt.virConnect
    tmp: Path
    libvirtd: Libvirtd

    def wait(self, accepted: dict[str, object], ok: bool = True) -> dict[str, object]:
        job = self.api.wait_job(str(accepted["job_id"]), timeout=120)
        if ok:
            assert job["state"] == "succeeded", job
        return job

    def domain(self, name: str = "vm1") -> libvirt.virDomain:
        dom = self.conn.defineXML(DOMAIN_XML.format(name=name))
        dom.create()
        return dom

    def volume(self, storage: str, name: str) -> dict[str, object]:
        job = self.wait(self.api.post("/v1/volumes", {"name": name, "size": 16 << 20,
                                                      "primary_storage_id": storage}))
        return dict(self.api.get(f"/v1/volumes/{job['resource_id']}"))

    def refused(self, method: str, path: str, body: dict[str, object] | None,
                code: str) -> str:
        with pytest.raises(ApiError) as exc:
            if method == "POST":
                self.api.post(path, body or {})
            else:
                self.api.delete(path)
        assert exc.value.status == 409 and exc.value.code == code, exc.value
        return str(exc.value)


@pytest.fixture
def site(tmp_path: Path, db_url: str, libvirtd: Libvirtd) -> Iterator[Site]:
    tgtd = Tgtd()
    procs = [start_agent(tmp_path / "hyper", {
                 "libvirt_uri": libvirtd.uri, "disk_bus": "scsi", "initiator_iqn": IQN,
                 "iscsi_access": "qemu", "block_job_bandwidth": MERGE_SPEED})[0],
             start_agent(tmp_path / "server", server_config(tgtd))[0]]
    controller = start_controller(tmp_path / "controller", db_url)
    conn = libvirt.open(libvirtd.uri)
    try:
        api = Client(controller.url, controller.token)
        s = Site(api, controller, enrol_host(api, "kvm-1", procs[0]),
                 enrol_host(api, "storage-1", procs[1]), "", "", conn, tmp_path, libvirtd)
        s.local = str(s.wait(api.post("/v1/primary-storages", {
            "name": "local-1", "type": "local", "config": {"path": str(tmp_path / "local")},
            "hosts": [s.host]}))["resource_id"])
        s.san = str(s.wait(api.post("/v1/primary-storages", {
            "name": "san-1", "type": "iscsi", "hosts": [s.host],
            "config": {"server_host_id": s.server, "path": str(tmp_path / "iscsi"),
                       "portal": tgtd.portal, "target_prefix": "iqn.2026-11.org.strata.test",
                       "chap": True}}))["resource_id"])
        yield s
    finally:
        conn.close()
        controller.stop()
        for p in procs:
            p.stop()
        tgtd.stop()


def test_local_volume_attach_refusals_detach(site: Site) -> None:
    api = site.api
    vol = site.volume(site.local, "data-1")
    path = str(vol["path"])
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 0 2M", path], check=True,
                   capture_output=True)
    shutil.copy(path, site.tmp / "before.qcow2")
    dom = site.domain()

    with pytest.raises(ApiError) as exc:
        api.post(f"/v1/volumes/{vol['id']}/attach", {"host_id": site.host,
                                                    "domain": "bad name'"})
    assert exc.value.status == 400
    job = site.wait(api.post(f"/v1/volumes/{vol['id']}/attach",
                             {"host_id": site.host, "domain": "vm1"}))
    assert job["result"] == {"host_id": site.host, "domain": "vm1", "device": "sda"}
    shown = api.get(f"/v1/volumes/{vol['id']}")
    assert shown["attachment"]["domain"] == "vm1" and shown["attachment"]["state"] == "attached"
    assert shown["attachment"]["device"] == "sda" and shown["attachment"]["since"]
    assert f"<serial>{vol['id']}</serial>" in dom.XMLDesc()
    assert path in open_files(block_nodes(dom))

    for method, sub, body in (("DELETE", "", None), ("POST", "/resize", {"size": 32 << 20}),
                              ("POST", "/attach", {"host_id": site.host, "domain": "vm2"}),
                              ("POST", "/migrate", {"primary_storage_id": site.san})):
        message = site.refused(method, f"/v1/volumes/{vol['id']}{sub}", body, "volume_attached")
        assert "vm1" in message, "the 409 names the domain"
    assert api.get(f"/v1/volumes/{vol['id']}")["state"] == "ready"

    out = run_cli(site.controller.url, api.token, "volumes", "detach", str(vol["id"]),
                  "--wait")
    assert out.returncode == 0, out.stderr
    assert api.get(f"/v1/volumes/{vol['id']}")["attachment"] is None
    assert str(vol["id"]) not in dom.XMLDesc() and path not in open_files(block_nodes(dom))
    subprocess.run(["qemu-img", "compare", path, str(site.tmp / "before.qcow2")], check=True,
                   capture_output=True)
    with pytest.raises(ApiError) as exc:
        api.post(f"/v1/volumes/{vol['id']}/detach", {})
    assert exc.value.status == 404 and exc.value.code == "not_attached"
    site.wait(api.delete(f"/v1/volumes/{vol['id']}"))


def test_attach_to_a_missing_domain_fails_cleanly(site: Site) -> None:
    """The iSCSI grant the attach made goes with its failure."""
    vol = site.volume(site.san, "data-2")
    job = site.wait(site.api.post(f"/v1/volumes/{vol['id']}/attach",
                                  {"host_id": site.host, "domain": "nosuchvm"}), ok=False)
    assert job["state"] == "failed" and job["error"]["code"] == "domain_not_found", job  # type: ignore[index]
    shown = site.api.get(f"/v1/volumes/{vol['id']}")
    assert shown["attachment"] is None and shown["access"] == [], shown
    exports = json.loads((site.tmp / "server" / "tgt-exports.json").read_text())
    assert IQN not in json.dumps(exports[vol["export"]["target"]]), "the ACL is gone"  # type: ignore[index]
    site.wait(site.api.delete(f"/v1/volumes/{vol['id']}"))


def test_iscsi_chap_volume_attach_detach(site: Site) -> None:
    api = site.api
    vol = site.volume(site.san, "data-3")
    exports = json.loads((site.tmp / "server" / "tgt-exports.json").read_text())
    target = exports[vol["export"]["target"]]  # type: ignore[index]
    chap = target["chap"]
    spec = {"driver": "iscsi", "transport": "tcp", "portal": vol["export"]["portal"],  # type: ignore[index]
            "target": vol["export"]["target"], "lun": 1,  # type: ignore[index]
            "initiator-name": IQN, "user": chap["user"], "password": chap["password"]}
    site.wait(api.post(f"/v1/volumes/{vol['id']}/access", {"host_id": site.host}))
    assert qemu_io(spec, "write -P 0x7e 0 1M").returncode == 0, "written before the attach"
    dom = site.domain()

    out = run_cli(site.controller.url, api.token, "volumes", "attach", str(vol["id"]),
                  "--host", site.host, "--domain", "vm1", "--wait")
    assert out.returncode == 0, out.stderr
    shown = api.get(f"/v1/volumes/{vol['id']}")
    assert [a["state"] for a in shown["access"]] == ["granted"], "granted inside the job"
    xml = dom.XMLDesc() + dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "protocol='iscsi'" in xml and chap["password"] not in xml
    assert "iscsi" in {str(n["drv"]) for n in block_nodes(dom)}
    jobs = json.dumps(api.get("/v1/jobs"))
    assert chap["password"] not in jobs, "the secret is in no job"

    site.wait(api.post(f"/v1/volumes/{vol['id']}/detach", {"timeout": 20}))
    shown = api.get(f"/v1/volumes/{vol['id']}")
    assert shown["attachment"] is None
    assert [a["state"] for a in shown["access"]] == ["granted"], "the operator's grant stays"
    assert site.conn.listSecrets() == []
    assert "iscsi" not in {str(n["drv"]) for n in block_nodes(dom)}
    out = qemu_io(spec, "read -P 0x7e 0 1M")
    assert out.returncode == 0 and "verification failed" not in out.stdout, out


def test_live_snapshot_of_an_attached_volume(site: Site) -> None:
    """A snapshot of an attached volume is taken by its domain and joins the same tree:
    detached, the volume reverts offline to it."""
    api = site.api
    vol = site.volume(site.local, "data-4")
    path = str(vol["path"])
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x21 0 1M", path], check=True,
                   capture_output=True)
    shutil.copy(path, site.tmp / "before.qcow2")
    dom = site.domain()
    site.wait(api.post(f"/v1/volumes/{vol['id']}/attach", {"host_id": site.host,
                                                          "domain": "vm1"}))
    job = site.wait(api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": "live-1"}))
    snap = api.get(f"/v1/snapshots/{job['resource_id']}")
    assert snap["consistency"] == "crash" and snap["path"] == path, snap
    moved = api.get(f"/v1/volumes/{vol['id']}")
    assert moved["path"] != path and moved["snapshot_id"] == snap["id"]
    assert moved["attachment"]["state"] == "attached"
    assert {moved["path"], path} <= open_files(block_nodes(dom)), "QEMU writes the overlay"
    site.refused("POST", f"/v1/volumes/{vol['id']}/revert", {"snapshot_id": snap["id"]},
                 "volume_attached")

    site.wait(api.post(f"/v1/volumes/{vol['id']}/detach", {}))
    subprocess.run(["qemu-img", "compare", path, str(site.tmp / "before.qcow2")], check=True,
                   capture_output=True)
    subprocess.run(["qemu-img", "compare", str(moved["path"]), path], check=True,
                   capture_output=True)
    site.wait(api.post(f"/v1/volumes/{vol['id']}/revert", {"snapshot_id": snap["id"]}))
    reverted = api.get(f"/v1/volumes/{vol['id']}")
    chain = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(reverted["path"])], check=True,
        capture_output=True, text=True).stdout)
    assert chain["full-backing-filename"] == path, "the tree the database describes"


def io(path: str, *commands: str, fmt: str = "qcow2") -> None:
    """qemu-io on a file no VM has open; every `read -P` must verify."""
    argv = ["qemu-io", "-f", fmt]
    for c in commands:
        argv += ["-c", c]
    out = subprocess.run([*argv, path], check=True, capture_output=True, text=True).stdout
    assert "verification failed" not in out, out


def snapshot(site: Site, vol: dict[str, object], name: str) -> dict[str, object]:
    job = site.wait(site.api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": name}))
    return dict(site.api.get(f"/v1/snapshots/{job['resource_id']}"))


def chains(site: Site, vol_id: str) -> tuple[list[str], list[str]]:
    """The volume's chain on disk (`qemu-img info --backing-chain`), and as the database
    has it: its active layer, then its snapshots' files up the tree."""
    vol = site.api.get(f"/v1/volumes/{vol_id}")
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", "--backing-chain", str(vol["path"])],
        check=True, capture_output=True, text=True).stdout)
    snaps = {s["id"]: s for s in site.api.get(f"/v1/volumes/{vol_id}/snapshots")["items"]
             if s["state"] != "destroyed"}
    db, at = [str(vol["path"])], vol["snapshot_id"]
    while at is not None:
        db.append(str(snaps[at]["path"]))
        at = snaps[at]["parent_id"]
    return [layer["filename"] for layer in info], db


def until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_live_merges_keep_the_data_and_the_tree(site: Site) -> None:
    """Deleting snapshots of an attached volume merges them in the running domain: a
    middle one by a block commit (libvirtd restarted while it runs), the top one by an
    active commit and a pivot. The data, and the chain the database describes, hold."""
    api = site.api
    vol = site.volume(site.local, "data-5")
    vid = str(vol["id"])
    io(str(vol["path"]), "write -P 0x11 0 1M")
    s1 = snapshot(site, vol, "s1")
    io(str(api.get(f"/v1/volumes/{vid}")["path"]), "write -P 0x22 1M 1M")
    s2 = snapshot(site, vol, "s2")
    io(str(api.get(f"/v1/volumes/{vid}")["path"]), "write -P 0x33 2M 3M")
    dom = site.domain()
    site.wait(api.post(f"/v1/volumes/{vid}/attach", {"host_id": site.host, "domain": "vm1"}))
    s3 = snapshot(site, vol, "s3")
    assert s3["consistency"] == "crash"
    # The running VM writes into its active layer (QEMU's own qemu-io, through HMP).
    libvirt_qemu.qemuMonitorCommand(dom, 'qemu-io -d scsi0-0-0-0 "write -P 0x44 5M 1M"',
                                    libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    top_file = str(api.get(f"/v1/volumes/{vid}")["path"])

    accepted = api.delete(f"/v1/snapshots/{s2['id']}")
    until(lambda: bool(dom.blockJobInfo("sda", 0)), "the block commit to start")
    site.libvirtd.stop_daemon()
    site.libvirtd.start()
    conn = libvirt.open(site.libvirtd.uri)
    try:
        site.wait(accepted)
        assert api.get(f"/v1/snapshots/{s2['id']}")["state"] == "destroyed"
        moved = api.get(f"/v1/snapshots/{s3['id']}")
        assert moved["path"] == s2["path"] and moved["parent_id"] == s1["id"], moved
        assert not Path(str(s3["path"])).exists(), "the merged file is removed"

        site.wait(api.delete(f"/v1/snapshots/{s3['id']}"))
        shown = api.get(f"/v1/volumes/{vid}")
        assert shown["path"] == s2["path"] and shown["snapshot_id"] == s1["id"], shown
        assert not Path(top_file).exists()
        dom = conn.lookupByName("vm1")
        assert {str(s2["path"]), str(s1["path"])} == open_files(block_nodes(dom))
        live, db = chains(site, vid)
        assert live == db == [str(s2["path"]), str(s1["path"])]

        site.wait(api.post(f"/v1/volumes/{vid}/detach", {}))
        io(str(shown["path"]), "read -P 0x11 0 1M", "read -P 0x22 1M 1M",
           "read -P 0x33 2M 3M", "read -P 0x44 5M 1M", "read -P 0 6M 10M")
        io(str(s1["path"]), "read -P 0x11 0 1M", "read -P 0 1M 15M")
    finally:
        conn.close()


def same_as_before(path: str, raw: Path) -> None:
    subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", path, str(raw)],
                   check=True, capture_output=True)


def test_domain_that_disappears_during_a_live_merge(site: Site) -> None:
    """The job fails naming the domain; the volume reads as before, and once detached
    the snapshot merges offline."""
    api = site.api
    vol = site.volume(site.local, "data-6")
    vid = str(vol["id"])
    io(str(vol["path"]), "write -P 0x55 0 1M")
    s1 = snapshot(site, vol, "s1")
    active = str(api.get(f"/v1/volumes/{vid}")["path"])
    io(active, "write -P 0x66 1M 8M")
    subprocess.run(["qemu-img", "convert", "-O", "raw", active, str(site.tmp / "before.raw")],
                   check=True)
    dom = site.domain()
    site.wait(api.post(f"/v1/volumes/{vid}/attach", {"host_id": site.host, "domain": "vm1"}))

    job_id = str(api.delete(f"/v1/snapshots/{s1['id']}")["job_id"])
    until(lambda: bool(dom.blockJobInfo("sda", 0)), "the active commit to start")
    dom.destroy()
    dom.undefine()
    job = api.wait_job(job_id, timeout=60)
    assert job["state"] == "failed" and job["error"]["code"] == "domain_vanished", job
    assert "vm1" in job["error"]["message"]
    assert api.get(f"/v1/snapshots/{s1['id']}")["state"] == "error"
    shown = api.get(f"/v1/volumes/{vid}")
    assert shown["state"] == "ready" and shown["path"] == active
    live, db = chains(site, vid)
    assert live == db == [active, str(s1["path"])]
    same_as_before(active, site.tmp / "before.raw")

    assert site.wait(api.post(f"/v1/volumes/{vid}/detach", {}))["result"]["was_attached"] is False  # type: ignore[index]
    site.wait(api.delete(f"/v1/snapshots/{s1['id']}"))
    same_as_before(active, site.tmp / "before.raw")
    live, db = chains(site, vid)
    assert live == db == [active]
