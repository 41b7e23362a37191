"""iSCSI primary storage through the API: a controller, a storage-server agent with the
`tgt` driver (tgtd from the OS packages) and two hypervisor agents in `qemu` access mode
(QEMU's libiscsi). The `lio` driver and `kernel` mode run in the real-kernel tier
(tests/kernel/guest_*.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.client import ApiError, Client
from tests.conftest import make_image
from tests.integration.test_iscsi_agent import IQN_A, IQN_B, qemu_io, server_config
from tests.support.enrol import enrol_host
from tests.support.fileserver import FileServer
from tests.support.procs import Proc, run_cli, start_agent, start_controller
from tests.support.tgtd import Tgtd


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


@dataclass
class Cloud:
    api: Client
    server: str
    host_a: str
    host_b: str
    plain: str
    primary: str
    backup: str
    luns: Path
    state: Path

    def wait(self, accepted: dict[str, object], ok: bool = True) -> dict[str, object]:
        job = self.api.wait_job(str(accepted["job_id"]), timeout=120)
        if ok:
            assert job["state"] == "succeeded", job
        return job

    def add_host(self, name: str, proc: Proc, **extra: object) -> str:
        return enrol_host(self.api, name, proc, **extra)


@pytest.fixture
def cloud(tmp_path: Path, db_url: str) -> Iterator[Cloud]:
    tgtd = Tgtd()
    # Agents without initiator_iqn read open-iscsi's file: here one that is not there,
    # whatever this machine's open-iscsi holds.
    nameless = {"initiator_name_file": str(tmp_path / "no-initiatorname.iscsi")}
    procs = [
        start_agent(tmp_path / "server", server_config(tgtd))[0],
        start_agent(tmp_path / "a", {"initiator_iqn": IQN_A, "iscsi_access": "qemu"})[0],
        start_agent(tmp_path / "b", {"iscsi_access": "qemu", **nameless})[0],
        start_agent(tmp_path / "plain", nameless)[0],
    ]
    controller = start_controller(tmp_path / "controller", db_url)
    try:
        c = Cloud(Client(controller.url, controller.token), "", "", "", "", "", "",
                  tmp_path / "iscsi" / "luns", tmp_path)
        c.server = c.add_host("storage-1", procs[0])
        c.host_a = c.add_host("kvm-a", procs[1])
        # B's agent knows no initiator name: the operator gives it.
        c.host_b = c.add_host("kvm-b", procs[2], initiator_iqn=IQN_B)
        c.plain = c.add_host("kvm-no-iqn", procs[3])
        c.primary = str(c.wait(c.api.post("/v1/primary-storages", {
            "name": "san-1", "type": "iscsi", "overprovision_factor": 4.0,
            "config": {"server_host_id": c.server, "path": str(tmp_path / "iscsi"),
                       "portal": tgtd.portal, "target_prefix": "iqn.2026-11.org.strata.test"},
            "hosts": [c.host_a]}))["resource_id"])
        c.wait(c.api.post(f"/v1/primary-storages/{c.primary}/attach", {"host_id": c.host_b}))
        c.backup = str(c.wait(c.api.post("/v1/backup-storages", {
            "name": "images", "type": "dir", "config": {"path": str(tmp_path / "images")}}))
            ["resource_id"])
        yield c
    finally:
        controller.stop()
        for p in procs:
            p.stop()
        tgtd.stop()


def spec(access_uri: str, iqn: str) -> dict[str, object]:
    """What a host's QEMU opens for an iscsi:// URI, with its own initiator name."""
    portal, target, lun = access_uri.removeprefix("iscsi://").split("/")
    return {"driver": "iscsi", "transport": "tcp", "portal": portal, "target": target,
            "lun": lun, "initiator-name": iqn}


def test_volumes_are_luns_granted_per_host(cloud: Cloud, file_server: FileServer,
                                           image_dir: Path) -> None:
    api = cloud.api
    assert api.get(f"/v1/hosts/{cloud.host_a}")["initiator_iqn"] == IQN_A
    assert api.get(f"/v1/hosts/{cloud.host_b}")["initiator_iqn"] == IQN_B
    ps = api.get(f"/v1/primary-storages/{cloud.primary}")
    assert {h["state"] for h in ps["hosts"]} == {"connected"} and ps["capacity"]["total"] > 0

    path, _ = make_image(image_dir, "base.qcow2", size="32M")
    subprocess.run(["qemu-io", "-c", "write -P 0x33 0 64k", str(path)], check=True,
                   capture_output=True)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    image = cloud.wait(api.post("/v1/images", {"name": "base", "url": file_server.url(path.name),
                                               "sha256": sha, "backup_storage_id": cloud.backup}))
    root = cloud.wait(api.post("/v1/volumes", {"name": "root-1", "primary_storage_id":
                                               cloud.primary, "image_id": image["resource_id"]}))
    vol = api.get(f"/v1/volumes/{root['resource_id']}")
    assert vol["state"] == "ready" and vol["format"] == "raw" and vol["access"] == []
    assert vol["export"]["target"] == f"iqn.2026-11.org.strata.test:{vol['id']}"
    assert vol["export"]["lun"] == 1 and vol["export"]["chap"] is False
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", vol["path"]],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["format"] == "raw" and "backing-filename" not in info

    job = cloud.wait(api.post(f"/v1/volumes/{vol['id']}/access", {"host_id": cloud.host_a}))
    uri = job["result"]["uri"]
    assert uri == f"iscsi://{vol['export']['portal']}/{vol['export']['target']}/1"
    vol = api.get(f"/v1/volumes/{vol['id']}")
    assert vol["access"] == [{"host_id": cloud.host_a, "state": "granted", "uri": uri,
                              "reason": None}]
    out = qemu_io(spec(uri, IQN_A), "read -P 0x33 0 64k", "write -P 0x77 1M 64k",
                  "read -P 0x77 1M 64k")
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out
    assert qemu_io(spec(uri, IQN_B), "read 0 4k").returncode != 0, "B was not granted"

    cloud.wait(api.post(f"/v1/volumes/{vol['id']}/access", {"host_id": cloud.host_b}))
    assert qemu_io(spec(uri, IQN_B), "read -P 0x77 1M 64k").returncode == 0
    cloud.wait(api.delete(f"/v1/volumes/{vol['id']}/access/{cloud.host_a}"))
    assert qemu_io(spec(uri, IQN_A), "read 0 4k").returncode != 0, "A was revoked"
    # An image of the LUN: the raw file converted into one qcow2 file, as a guest reads it.
    job = cloud.wait(api.post("/v1/images", {"name": "of-root-1", "volume_id": vol["id"],
                                             "backup_storage_id": cloud.backup}))
    copied = cloud.state / "images" / "images" / str(job["resource_id"])
    assert api.get(f"/v1/images/{job['resource_id']}")["format"] == "qcow2"
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x33 0 64k", "-c",
                          "read -P 0x77 1M 64k", str(copied)], capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out
    assert [a["host_id"] for a in api.get(f"/v1/volumes/{vol['id']}")["access"]] == [
        cloud.host_b]

    # Deleting the volume revokes every grant first, then removes LUN and file.
    cloud.wait(api.delete(f"/v1/volumes/{vol['id']}"))
    assert api.get(f"/v1/volumes/{vol['id']}")["access"] == []
    assert qemu_io(spec(uri, IQN_B), "read 0 4k").returncode != 0
    assert not Path(vol["path"]).exists()


def test_empty_volume_with_chap(cloud: Cloud) -> None:
    api = cloud.api
    chap_ps = cloud.wait(api.post("/v1/primary-storages", {
        "name": "san-chap", "type": "iscsi",
        "config": {"server_host_id": cloud.server,
                   "path": str(cloud.luns.parent.parent / "iscsi-chap"),
                   "portal": api.get(f"/v1/primary-storages/{cloud.primary}")["config"]["portal"],
                   "chap": True},
        "hosts": [cloud.host_a]}))
    vol = cloud.wait(api.post("/v1/volumes", {"name": "data-1", "size": 16 << 20,
                                              "primary_storage_id": chap_ps["resource_id"]}))
    shown = api.get(f"/v1/volumes/{vol['resource_id']}")
    assert shown["export"]["chap"] is True
    assert "password" not in json.dumps(shown) and "password" not in json.dumps(
        api.get("/v1/volumes"))
    job = cloud.wait(api.post(f"/v1/volumes/{shown['id']}/access", {"host_id": cloud.host_a}))
    assert qemu_io(spec(job["result"]["uri"], IQN_A), "read 0 4k").returncode != 0, \
        "without the CHAP secret the login fails"
    # The secret the storage server holds appears in the controller's database only sealed.
    exports = json.loads((cloud.state / "server" / "tgt-exports.json").read_text())
    password = exports[shown["export"]["target"]]["chap"]["password"]
    dump = b"".join(p.read_bytes() for p in (cloud.state / "controller").glob("strata.sqlite*"))
    assert password.encode() not in dump and b"enc:v1:" in dump


def test_bad_access_requests(cloud: Cloud, tmp_path: Path) -> None:
    api = cloud.api

    def refused(call, status: int, code: str) -> str:  # type: ignore[no-untyped-def]
        with pytest.raises(ApiError) as info:
            call()
        assert (info.value.status, info.value.code) == (status, code), info.value
        return info.value.message

    refused(lambda: api.post("/v1/hosts", {"name": "x", "address": "https://127.0.0.1:1",
                                           "initiator_iqn": "iqn.bogus"}), 400, "invalid_input")
    vol = cloud.wait(api.post("/v1/volumes", {"name": "v", "size": 1 << 20,
                                              "primary_storage_id": cloud.primary}))
    message = refused(lambda: api.post(f"/v1/volumes/{vol['resource_id']}/access",
                                       {"host_id": cloud.plain}), 409, "no_initiator")
    assert "kvm-no-iqn" in message
    refused(lambda: api.post(f"/v1/primary-storages/{cloud.primary}/attach",
                             {"host_id": cloud.plain}), 409, "no_initiator")
    refused(lambda: api.delete(f"/v1/volumes/{vol['resource_id']}/access/{cloud.host_a}"),
            404, "no_access")
    local = cloud.wait(api.post("/v1/primary-storages", {
        "name": "local-1", "type": "local", "config": {"path": str(tmp_path / "local")},
        "hosts": [cloud.host_a]}))
    lvol = cloud.wait(api.post("/v1/volumes", {"name": "lv", "size": 1 << 20,
                                               "primary_storage_id": local["resource_id"]}))
    refused(lambda: api.post(f"/v1/volumes/{lvol['resource_id']}/access",
                             {"host_id": cloud.host_a}), 409, "access_not_supported")
    refused(lambda: api.post("/v1/primary-storages", {
        "name": "san-x", "type": "iscsi", "config": {"server_host_id": "nope", "path": "/x",
                                                     "portal": "h:3260"}}), 404, "not_found")
    refused(lambda: api.post("/v1/primary-storages", {
        "name": "san-y", "type": "iscsi", "config": {"server_host_id": cloud.server,
                                                     "path": "/x", "portal": "no port"}}),
            400, "invalid_input")


def test_cli_grants_and_revokes(cloud: Cloud) -> None:
    vol = cloud.wait(cloud.api.post("/v1/volumes", {"name": "cli-vol", "size": 1 << 20,
                                                    "primary_storage_id": cloud.primary}))
    def strata(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(cloud.api.base_url, cloud.api.token, *args, timeout=60)

    assert strata("volumes", "grant", str(vol["resource_id"]), cloud.host_a,
                  "--wait").returncode == 0
    shown = json.loads(strata("--json", "volumes", "show", str(vol["resource_id"])).stdout)
    assert [(a["host_id"], a["state"]) for a in shown["access"]] == [(cloud.host_a, "granted")]
    assert strata("volumes", "revoke", str(vol["resource_id"]), cloud.host_a,
                  "--wait").returncode == 0
    assert json.loads(strata("--json", "volumes", "show",
                             str(vol["resource_id"])).stdout)["access"] == []
    bad = strata("volumes", "grant", str(vol["resource_id"]), cloud.plain)
    assert bad.returncode == 2 and bad.stderr.startswith("strata: no_initiator:")


def test_lun_snapshots_through_the_api(cloud: Cloud) -> None:
    """Take, revert and delete snapshots of an iSCSI volume with the snapshot API, the
    storage server's agent doing the work: a distinct pattern written through libiscsi
    before each snapshot, then the patterns after each revert and after deleting the
    middle one. A revert keeps the volume's size, and the target and its grant."""
    api = cloud.api
    start = api.get(f"/v1/primary-storages/{cloud.primary}")["capacity"]["allocated"]
    made = cloud.wait(api.post("/v1/volumes", {"name": "snapped", "size": 32 << 20,
                                               "primary_storage_id": cloud.primary}))
    vol = api.get(f"/v1/volumes/{made['resource_id']}")
    uri = cloud.wait(api.post(f"/v1/volumes/{vol['id']}/access",
                              {"host_id": cloud.host_a}))["result"]["uri"]

    def io(*commands: str) -> None:
        out = qemu_io(spec(uri, IQN_A), *commands)
        assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out

    def points_read(seen: list[int], every: list[int]) -> None:
        """The last pattern at 0; each pattern's own region holds it only if seen."""
        io(f"read -P {seen[-1]} 0 64k", *(
            f"read -P {p if p in seen else 0} {p % 16}M 64k" for p in every))

    every = [0x11, 0x22, 0x33, 0x44]
    snaps: dict[str, tuple[dict[str, object], list[int]]] = {}
    for i, pattern in enumerate(every[:3], start=1):
        io(f"write -P {pattern} 0 64k", f"write -P {pattern} {pattern % 16}M 64k")
        job = cloud.wait(api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": f"s{i}"}))
        snaps[f"s{i}"] = (api.get(f"/v1/snapshots/{job['resource_id']}"), every[:i])
    io(f"write -P {every[3]} 0 64k", f"write -P {every[3]} {every[3] % 16}M 64k")
    snapshot_dir = cloud.luns.parent / "snapshots"
    assert sorted(p.name for p in snapshot_dir.iterdir()) == sorted(
        f"{vol['id']}.{s['id']}.raw" for s, _ in snaps.values())
    assert api.get(f"/v1/volumes/{vol['id']}")["path"] == vol["path"], "the LUN stays put"
    # Backed up through the upload direction (the storage server's agent converts the
    # raw copy into one qcow2 file, sha256-checked in the dir store), then restored onto a
    # local storage of the server and onto iSCSI (a new LUN filled from the restored
    # file): each restore reads its snapshot's patterns.
    local = str(cloud.wait(api.post("/v1/primary-storages", {
        "name": "local-server", "type": "local", "hosts": [cloud.server],
        "config": {"path": str(cloud.state / "local-server")}}))["resource_id"])

    def reads_points(path: str, fmt: str, seen: list[int]) -> None:
        reads = [f"read -P {seen[-1]} 0 64k",
                 *(f"read -P {p if p in seen else 0} {p % 16}M 64k" for p in every)]
        out = subprocess.run(["qemu-io", "-f", fmt, *(a for r in reads for a in ("-c", r)),
                              path], capture_output=True, text=True)
        assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out

    for name in ("s1", "s2"):
        snap, seen = snaps[name]
        job = cloud.wait(api.post(f"/v1/snapshots/{snap['id']}/backups",
                                  {"backup_storage_id": cloud.backup}))
        backup = api.get(f"/v1/snapshot-backups/{job['resource_id']}")
        stored = cloud.state / "images" / "snapshots" / f"{vol['id']}.{snap['id']}.qcow2"
        assert backup["state"] == "ready" and backup["format"] == "qcow2"
        assert backup["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
        for where, fmt in ((local, "qcow2"), (cloud.primary, "raw")):
            made = cloud.wait(api.post("/v1/volumes", {
                "name": f"of-{name}", "backup_id": backup["id"],
                "primary_storage_id": where}))
            restored = api.get(f"/v1/volumes/{made['resource_id']}")
            assert restored["format"] == fmt and restored["size"] == 32 << 20
            reads_points(restored["path"], fmt, seen)
            cloud.wait(api.delete(f"/v1/volumes/{restored['id']}"))
        cloud.wait(api.delete(f"/v1/snapshot-backups/{backup['id']}"))
    assert not [p for p in cloud.luns.iterdir() if not p.name.startswith(vol["id"])], \
        "no restored file stays beside the LUNs"

    # A volume of a LUN snapshot is a new LUN holding the snapshot's data, and writing to
    # it leaves the snapshot as it was; an image of one is flattened into one qcow2 file.
    first, seen = snaps["s1"]
    job = cloud.wait(api.post("/v1/volumes", {"name": "copy", "snapshot_id": first["id"],
                                              "primary_storage_id": cloud.primary}))
    copy = api.get(f"/v1/volumes/{job['resource_id']}")
    assert copy["path"] != vol["path"] and copy["export"]["target"] != vol["export"]["target"]
    reads_points(copy["path"], "raw", seen)
    assert subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x77 0 64k",
                           copy["path"]], capture_output=True).returncode == 0
    reads_points(str(snapshot_dir / f"{vol['id']}.{first['id']}.raw"), "raw", seen)
    cloud.wait(api.delete(f"/v1/volumes/{copy['id']}"))
    third, seen = snaps["s3"]
    job = cloud.wait(api.post("/v1/images", {"name": "of-lun", "snapshot_id": third["id"],
                                             "backup_storage_id": cloud.backup}))
    image = api.get(f"/v1/images/{job['resource_id']}")
    stored = cloud.state / "images" / "images" / image["id"]
    assert image["state"] == "ready" and image["format"] == "qcow2"
    assert image["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    reads_points(str(stored), "qcow2", seen)
    assert api.get(f"/v1/volumes/{vol['id']}")["state"] == "ready"

    # Grown after its snapshots: reverting keeps the size the volume has.
    cloud.wait(api.post(f"/v1/volumes/{vol['id']}/resize", {"size": 48 << 20}))
    for name in ("s1", "s3", "s2"):
        cloud.wait(api.post(f"/v1/volumes/{vol['id']}/revert",
                            {"snapshot_id": snaps[name][0]["id"]}))
        points_read(snaps[name][1], every)
        shown = api.get(f"/v1/volumes/{vol['id']}")
        assert shown["snapshot_id"] == snaps[name][0]["id"] and shown["size"] == 48 << 20
        assert Path(vol["path"]).stat().st_size == 48 << 20
    assert [a["state"] for a in api.get(f"/v1/volumes/{vol['id']}")["access"]] == ["granted"]

    cloud.wait(api.delete(f"/v1/snapshots/{snaps.pop('s2')[0]['id']}"))
    assert len(list(snapshot_dir.iterdir())) == 2
    for name in ("s3", "s1"):
        cloud.wait(api.post(f"/v1/volumes/{vol['id']}/revert",
                            {"snapshot_id": snaps[name][0]["id"]}))
        points_read(snaps[name][1], every)

    cloud.wait(api.delete(f"/v1/volumes/{vol['id']}?cascade=true"))
    assert list(snapshot_dir.iterdir()) == [] and not Path(vol["path"]).exists()
    assert not [p for p in cloud.luns.iterdir() if p.name.startswith(".strata")]
    assert api.get(f"/v1/primary-storages/{cloud.primary}")["capacity"]["allocated"] == start
