"""iSCSI through real agents: a storage-server agent with the `tgt` driver (tgtd from the
OS packages, started by a fixture) and hypervisor agents in `qemu` access mode (QEMU's
libiscsi). The `lio` driver and the `kernel` access mode need configfs, LIO and an
iSCSI initiator in the kernel, which this kernel lacks: they have unit tests
(tests/unit/test_iscsi.py) now and a real-kernel tier later."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agents import Agent, start_test_agent
from tests.support.tgtd import Tgtd

IQN_A = "iqn.2026-11.org.strata.test:host-a"
IQN_B = "iqn.2026-11.org.strata.test:host-b"


@dataclass
class Site:
    tgtd: Tgtd
    server: Agent
    host_a: Agent
    host_b: Agent
    luns: Path
    tmp: Path


def server_config(tgtd: Tgtd) -> dict[str, object]:
    return {"iscsi_target": "tgt", "tgt_control_port": tgtd.control_port,
            "iscsi_portal": tgtd.portal}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    tgtd = Tgtd()
    agents = [start_test_agent(tmp_path / "server", server_config(tgtd)),
              start_test_agent(tmp_path / "a", {"initiator_iqn": IQN_A, "iscsi_access": "qemu"}),
              start_test_agent(tmp_path / "b", {"initiator_iqn": IQN_B, "iscsi_access": "qemu"})]
    site = Site(tgtd, *agents, tmp_path / "luns", tmp_path)
    try:
        yield site
    finally:
        # The site's agents as they are now: a test may have restarted one.
        for agent in (site.server, site.host_a, site.host_b):
            agent.proc.stop()
        tgtd.stop()


def qemu_io(spec: dict[str, object], *commands: str) -> subprocess.CompletedProcess[str]:
    """What a VM's QEMU on that host does: open the LUN through libiscsi and do I/O."""
    argv = ["qemu-io", "--image-opts"]
    for c in commands:
        argv += ["-c", c]
    opts = ",".join(f"file.{k}={v}" for k, v in spec.items())
    return subprocess.run([*argv, f"driver=raw,{opts}"], capture_output=True, text=True,
                          timeout=60)


def export(site: Site, name: str, **extra: object) -> dict[str, object]:
    state, result = site.server.call("export_lun", {
        "dir": str(site.luns), "file_name": f"{name}.raw", "size": 64 << 20,
        "target": f"iqn.2026-11.org.strata.test:{name}", **extra})
    assert state == "succeeded", result
    return result


def test_grant_read_write_refuse_revoke(site: Site) -> None:
    lun = export(site, "vol1")
    target = lun["target"]
    assert Path(str(lun["path"])).stat().st_size == 64 << 20
    assert Path(str(lun["path"])).stat().st_blocks == 0, "volumes are sparse"

    state, err = site.host_a.call("connect_volume", {"target": target})
    assert state == "failed" and err["code"] == "access_denied", "not granted yet"

    state, acl = site.server.call("grant_lun", {"target": target["target"],
                                                "initiator": IQN_A})
    assert state == "succeeded" and acl["initiators"] == [IQN_A]
    state, conn = site.host_a.call("connect_volume", {"target": target})
    assert state == "succeeded", conn
    assert conn["mode"] == "qemu" and conn["size"] == 64 << 20
    spec = conn["qemu_spec"]
    assert spec["initiator-name"] == IQN_A
    out = qemu_io(spec, "write -P 0x5a 1M 1M", "read -P 0x5a 1M 1M")
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out
    assert "read 1048576/1048576" in out.stdout

    state, err = site.host_b.call("connect_volume", {"target": target})
    assert state == "failed" and err["code"] == "access_denied"
    spec_b = {**spec, "initiator-name": IQN_B}
    assert qemu_io(spec_b, "read 0 4k").returncode != 0, "B's initiator must be refused"

    state, acl = site.server.call("revoke_lun", {"target": target["target"],
                                                 "initiator": IQN_A})
    assert state == "succeeded" and acl["initiators"] == []
    state, err = site.host_a.call("connect_volume", {"target": target})
    assert state == "failed" and err["code"] == "access_denied"
    assert qemu_io(spec, "read 0 4k").returncode != 0, "A is refused after revoke"

    state, gone = site.server.call("unexport_lun", {
        "dir": str(site.luns), "file_name": "vol1.raw", "target": target["target"]})
    assert state == "succeeded" and gone["existed"] is True
    assert not Path(str(lun["path"])).exists()


def test_chap(site: Site) -> None:
    chap = {"user": "strata-vol2", "password": "s3cretPassw0rd"}
    lun = export(site, "vol2", chap=chap)
    assert lun["target"]["chap"] is None, "secrets are not echoed into the task log"
    target = {**lun["target"], "chap": chap}
    site.server.call("grant_lun", {"target": target["target"], "initiator": IQN_A})
    state, conn = site.host_a.call("connect_volume", {"target": target})
    assert state == "succeeded", conn
    assert "password" not in json.dumps(conn["qemu_spec"]).replace("password-secret", "")
    wrong = {**target, "chap": {**chap, "password": "wrongPassw0rd1"}}
    state, err = site.host_a.call("connect_volume", {"target": wrong})
    assert state == "failed" and err["code"] == "access_denied"
    no_chap = {**target, "chap": None}
    state, err = site.host_a.call("connect_volume", {"target": no_chap})
    assert state == "failed"


def test_volume_from_image_and_restore_after_restart(site: Site) -> None:
    image = site.tmp / "image.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "32M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x42 0 64k", str(image)], check=True,
                   capture_output=True)
    lun = export(site, "vol3", source={"path": str(image), "format": "qcow2"})
    target = lun["target"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(lun["path"])],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["format"] == "raw" and info["virtual-size"] == 64 << 20
    site.server.call("grant_lun", {"target": target["target"], "initiator": IQN_A})

    # tgtd loses its configuration with its process; the agent puts it back at start.
    site.tgtd.stop()
    site.tgtd.start()
    site.server.proc.stop(signal.SIGTERM)
    site.server = start_test_agent(site.tmp / "server", server_config(site.tgtd))
    state, conn = site.host_a.call("connect_volume", {"target": target})
    assert state == "succeeded", conn
    out = qemu_io(conn["qemu_spec"], "read -P 0x42 0 64k", "read -P 0 64k 64k")
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out


def test_roles_and_names_are_checked(site: Site) -> None:
    state, err = site.host_a.call("export_lun", {
        "dir": str(site.luns), "file_name": "x.raw", "size": 1 << 20,
        "target": "iqn.2026-11.org.strata.test:x"})
    assert state == "failed" and err["code"] == "no_target_role"
    state, err = site.server.call("grant_lun", {"target": "iqn.2026-11.org.strata.test:vol1",
                                                "initiator": "not an iqn"})
    assert state == "rejected" and err["code"] == "invalid_input"
    state, err = site.server.call("grant_lun", {"target": "iqn.2026-11.org.strata.test:none",
                                                "initiator": IQN_A})
    assert state == "failed" and err["code"] == "no_such_target"
