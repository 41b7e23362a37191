"""Attaching volumes to libvirt domains through a real agent and a real libvirtd (QEMU in
TCG mode, a fixture of its own). The test domain has no guest OS: it sits in its
firmware with its disks open, which is all a hot-plug needs.

Disks go on a virtio-scsi controller (`disk_bus = "scsi"`), which QEMU unplugs without
the guest's help; a virtio-blk disk needs the guest to release it, which firmware never
does: that is the detach-timeout test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import libvirt_qemu
import pytest

from tests.integration.test_iscsi_agent import qemu_io
from tests.support.agents import Agent, start_test_agent
from tests.support.libvirtd import Libvirtd
from tests.support.nfsserver import NfsServer
from tests.support.tgtd import Tgtd

IQN = "iqn.2026-11.org.strata.test:hyper"
DOMAIN_XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><features><acpi/></features>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>"""
VOLUME_ID = "0b6f2c7e-1d7a-4c1e-9f55-5a4f3f2a7c10"


@dataclass
class Host:
    libvirtd: Libvirtd
    agent: Agent
    conn: libvirt.virConnect
    tmp: Path

    def domain(self, name: str = "vm1") -> libvirt.virDomain:
        dom = self.conn.defineXML(DOMAIN_XML.format(name=name))
        dom.create()
        return dom


def start_host(tmp: Path, daemon: Libvirtd, **config: object) -> Agent:
    return start_test_agent(tmp, {"libvirt_uri": daemon.uri, "disk_bus": "scsi",
                                  "initiator_iqn": IQN, "iscsi_access": "qemu", **config})


@pytest.fixture
def host(tmp_path: Path, libvirtd: Libvirtd) -> Iterator[Host]:
    agent = start_host(tmp_path / "agent", libvirtd)
    conn = libvirt.open(libvirtd.uri)
    try:
        yield Host(libvirtd, agent, conn, tmp_path)
    finally:
        agent.proc.stop()
        conn.close()


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def block_nodes(dom: libvirt.virDomain) -> list[dict[str, object]]:
    """What QEMU itself has open (QMP), whatever the XML says."""
    out = libvirt_qemu.qemuMonitorCommand(dom, '{"execute": "query-named-block-nodes"}', 0)
    return json.loads(out)["return"]  # type: ignore[no-any-return]


def open_files(nodes: list[dict[str, object]]) -> set[str]:
    return {str(n["file"]) for n in nodes}


def chain_with_patterns(top: str, base: str) -> None:
    """A linked clone as Strata makes one, with data in both layers."""
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0xaa 0 1M", base)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0xbb 1M 1M", top)


def disk_of(dom: libvirt.virDomain, inactive: bool = False) -> str:
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)
    return xml if VOLUME_ID in xml else ""


def test_local_file_attach_detach(host: Host) -> None:
    top, base = str(host.tmp / "vol.qcow2"), str(host.tmp / "base.qcow2")
    chain_with_patterns(top, base)
    shutil.copy(top, host.tmp / "before.qcow2")
    dom = host.domain()
    source = {"path": top, "format": "qcow2"}

    # A header naming a file outside the storage's directories never reaches libvirt.
    (host.tmp / "vols").mkdir()
    outside = str(host.tmp / "vols" / "vol.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", outside)
    state, err = host.agent.call("attach_volume", {
        "domain": "vm1", "serial": VOLUME_ID,
        "source": {"path": outside, "format": "qcow2", "dirs": [str(host.tmp / "vols")]}})
    assert state == "failed" and err["code"] == "chain_outside_storage", err
    assert base in str(err["message"]) and disk_of(dom) == "" and disk_of(dom, True) == ""

    state, res = host.agent.call("attach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                   "source": source})
    assert state == "succeeded", res
    assert res["device"] == "sda"
    live = disk_of(dom)
    assert "cache='none'" in live and "discard='unmap'" in live and f"file='{base}'" in live
    assert VOLUME_ID in disk_of(dom, inactive=True), "in the persistent definition too"
    assert {top, base} <= open_files(block_nodes(dom)), "QEMU opened the whole chain"

    state, again = host.agent.call("attach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                     "source": source})
    assert state == "succeeded" and again["device"] == "sda", "attaching twice is once"

    state, res = host.agent.call("detach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                   "source": source})
    assert state == "succeeded" and res["existed"] is True, res
    assert disk_of(dom) == "" and disk_of(dom, inactive=True) == ""
    assert top not in open_files(block_nodes(dom))
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", top, str(host.tmp / "before.qcow2"))
    out = run("qemu-io", "-f", "qcow2", "-c", "read -P 0xaa 0 1M", "-c",
              "read -P 0xbb 1M 1M", top)
    assert "verification failed" not in out

    state, res = host.agent.call("detach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                   "source": source})
    assert state == "succeeded" and res["existed"] is False, "detaching twice is once"


def test_nfs_libnfs_attach_detach(host: Host, nfs: NfsServer) -> None:
    share = nfs.share("libvirt")
    top, base = nfs.url(share / "vol.qcow2"), nfs.url(share / "base.qcow2")
    chain_with_patterns(top, base)
    shutil.copy(share / "vol.qcow2", host.tmp / "before.qcow2")
    dom = host.domain()
    source = {"path": top, "format": "qcow2"}
    state, res = host.agent.call("attach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                   "source": source})
    assert state == "succeeded", res
    live = disk_of(dom)
    assert "protocol='nfs'" in live and f"name='{share / 'base.qcow2'}'" in live
    drivers = {str(n["drv"]) for n in block_nodes(dom)}
    assert "nfs" in drivers, "QEMU reaches the export with libnfs, nothing is mounted"

    state, res = host.agent.call("detach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                   "source": source})
    assert state == "succeeded" and res["existed"] is True, res
    assert "nfs" not in {str(n["drv"]) for n in block_nodes(dom)}
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", top, str(host.tmp / "before.qcow2"))


def test_iscsi_libiscsi_with_chap(host: Host) -> None:
    tgtd = Tgtd()
    server = start_test_agent(host.tmp / "server", {
        "iscsi_target": "tgt", "tgt_control_port": tgtd.control_port,
        "iscsi_portal": tgtd.portal})
    try:
        chap = {"user": "strata-vol", "password": "s3cretPassw0rd"}
        state, lun = server.call("export_lun", {
            "dir": str(host.tmp / "luns"), "file_name": "vol.raw", "size": 16 << 20,
            "target": "iqn.2026-11.org.strata.test:vol", "chap": chap})
        assert state == "succeeded", lun
        target = {**lun["target"], "chap": chap}  # type: ignore[dict-item]
        server.call("grant_lun", {"target": target["target"], "initiator": IQN})
        spec = {"driver": "iscsi", "transport": "tcp", "portal": target["portal"],
                "target": target["target"], "lun": 1, "initiator-name": IQN,
                "user": chap["user"], "password": chap["password"]}
        assert qemu_io(spec, "write -P 0x5a 0 1M").returncode == 0
        dom = host.domain()
        source = {"iscsi": target, "format": "raw"}

        bad = {"iscsi": {**target, "chap": {**chap, "password": "wrongPassw0rd"}},
               "format": "raw"}
        state, err = host.agent.call("attach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                       "source": bad})
        assert state == "failed" and err["code"] == "access_denied", err
        assert host.conn.listSecrets() == [], "a failed attach leaves no secret behind"

        state, res = host.agent.call("attach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                       "source": source})
        assert state == "succeeded", res
        for xml in (disk_of(dom), disk_of(dom, inactive=True)):
            assert "protocol='iscsi'" in xml and "<auth username='strata-vol'>" in xml
            assert chap["password"] not in xml, "the CHAP password is a secret object"
        assert "iscsi" in {str(n["drv"]) for n in block_nodes(dom)}
        assert len(host.conn.listSecrets()) == 1
        sessions = run("tgtadm", "-C", str(tgtd.control_port), "--lld", "iscsi", "--op",
                       "show", "--mode", "target")
        assert IQN in sessions, "QEMU is logged in to the target"

        state, res = host.agent.call("detach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                       "source": source})
        assert state == "succeeded" and res["existed"] is True, res
        assert "iscsi" not in {str(n["drv"]) for n in block_nodes(dom)}
        assert host.conn.listSecrets() == [], "the secret goes with the disk"
        out = qemu_io(spec, "read -P 0x5a 0 1M")
        assert out.returncode == 0 and "verification failed" not in out.stdout
    finally:
        server.proc.stop()
        tgtd.stop()


def test_guest_that_keeps_the_disk(host: Host) -> None:
    """virtio-blk: firmware never acknowledges the unplug."""
    agent = start_host(host.tmp / "blk", host.libvirtd, disk_bus="virtio")
    try:
        top = str(host.tmp / "blk.qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", top, "16M")
        dom = host.domain()
        source = {"path": top, "format": "qcow2"}
        state, res = agent.call("attach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                  "source": source})
        assert state == "succeeded" and res["device"] == "vda", res
        assert "bus='virtio'" in disk_of(dom)
        state, err = agent.call("detach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                  "source": source, "timeout": 2})
        assert state == "failed" and err["code"] == "detach_timeout", err
        assert "did not release" in str(err["message"]) and "vm1" in str(err["message"])
        assert top in open_files(block_nodes(dom)), "the disk stays while the guest has it"
    finally:
        agent.proc.stop()


def test_domain_gone_and_libvirtd_restart(host: Host) -> None:
    top = str(host.tmp / "vol.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", top, "16M")
    dom = host.domain()
    source = {"path": top, "format": "qcow2"}
    assert host.agent.call("attach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                             "source": source})[0] == "succeeded"

    host.libvirtd.stop_daemon()
    state, err = host.agent.call("attach_volume", {"domain": "vm1", "serial": "other",
                                                   "source": source})
    assert state == "failed" and err["code"] == "libvirt_unavailable", err
    host.libvirtd.start()
    conn = libvirt.open(host.libvirtd.uri)
    dom = conn.lookupByName("vm1")
    assert dom.isActive(), "the domain outlived its daemon"
    state, res = host.agent.call("attach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                   "source": source})
    assert state == "succeeded" and res["device"] == "sda", "the agent connected again"

    dom.destroy()
    dom.undefine()
    state, res = host.agent.call("detach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                   "source": source})
    assert state == "succeeded" and res["existed"] is False, res
    state, err = host.agent.call("attach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                   "source": source})
    assert state == "failed" and err["code"] == "domain_not_found", err
    conn.close()


def test_live_snapshot(host: Host) -> None:
    """The frozen file keeps what was written before; the running domain writes to the
    new overlay, which sits on it; a repeat is the same snapshot."""
    top, base = str(host.tmp / "vol.qcow2"), str(host.tmp / "base.qcow2")
    chain_with_patterns(top, base)
    shutil.copy(top, host.tmp / "before.qcow2")
    dom = host.domain()
    source = {"path": top, "format": "qcow2"}
    assert host.agent.call("attach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                             "source": source})[0] == "succeeded"
    payload = {"domain": "vm1", "serial": VOLUME_ID, "dir": str(host.tmp),
               "active": "vol.qcow2", "overlay": "vol.s1.qcow2"}
    state, facts = host.agent.call("live_snapshot", payload)
    assert state == "succeeded", facts
    overlay = str(host.tmp / "vol.s1.qcow2")
    assert facts["path"] == overlay and facts["snapshot_path"] == top
    assert facts["quiesced"] is False, "no guest agent: crash-consistent"
    assert 0 < float(facts["seconds"]) < 10  # type: ignore[arg-type]
    assert {overlay, top, base} <= open_files(block_nodes(dom))
    for xml in (disk_of(dom), disk_of(dom, inactive=True)):
        assert f"file='{overlay}'" in xml and f"file='{top}'" in xml
    assert host.agent.call("live_snapshot", payload)[1]["path"] == overlay, "idempotent"

    state, res = host.agent.call("detach_volume", {"domain": "vm1", "serial": VOLUME_ID,
                                                   "source": {"path": overlay,
                                                              "format": "qcow2"}})
    assert state == "succeeded" and res["existed"] is True, res
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", top, str(host.tmp / "before.qcow2"))
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", overlay, top)
    info = json.loads(run("qemu-img", "info", "--output=json", overlay))
    assert info["full-backing-filename"] == top
