"""Several hosts on one machine: each agent in a network namespace of its own, with its
own address on a private bridge (tests/support/netns.py), its own initiator name and
its own view of the network. The controller runs beside the test and reaches them over
the lab's network, as it reaches hypervisors in a rack."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.client import ApiError, Client
from tests.integration.test_iscsi import spec
from tests.integration.test_iscsi_agent import server_config
from tests.support.enrol import enrol_host
from tests.support.netns import Host, Lab, lab
from tests.support.nfsserver import NfsServer
from tests.support.procs import Proc, start_agent, start_controller
from tests.support.tgtd import Tgtd
from tests.support.waiting import eventually

IQN = "iqn.2026-11.org.strata.test:{}"
UNROUTED = "10.9.9.9"  # no host of the lab has a route to it


@dataclass
class Rack:
    lab: Lab
    api: Client
    hosts: dict[str, Host]
    agents: dict[str, tuple[Proc, str]]
    ids: dict[str, str]
    tmp: Path

    def wait(self, accepted: dict[str, Any]) -> dict[str, Any]:
        job: dict[str, Any] = self.api.wait_job(str(accepted["job_id"]), timeout=120)
        assert job["state"] == "succeeded", job
        return job


@pytest.fixture
def rack(tmp_path: Path) -> Iterator[Rack]:
    with lab() as net:
        hosts = {name: net.add_host(name) for name in ("a", "b")}
        agents: dict[str, tuple[Proc, str]] = {}
        controller = None
        try:
            for name, host in hosts.items():
                agents[name] = start_agent(tmp_path / name, {"initiator_iqn": IQN.format(name),
                                                             "iscsi_access": "qemu"}, host=host)
            controller = start_controller(tmp_path / "controller",
                                          f"sqlite:///{tmp_path / 'strata.sqlite'}",
                                          config={"host_check_interval": 0.5})
            api = Client(controller.url, controller.token)
            ids = {name: enrol_host(api, f"kvm-{name}", proc)
                   for name, (proc, _) in agents.items()}
            yield Rack(net, api, hosts, agents, ids, tmp_path)
        finally:
            for proc, _ in agents.values():
                proc.stop()
            if controller is not None:
                controller.stop()


def test_each_host_has_its_own_address_and_initiator(rack: Rack) -> None:
    for name, host_id in rack.ids.items():
        host = rack.api.get(f"/v1/hosts/{host_id}")
        assert host["address"].startswith(f"https://{rack.hosts[name].address}:")
        assert host["initiator_iqn"] == IQN.format(name)


def test_network_report_names_interfaces_and_routes_to_servers(rack: Rack) -> None:
    a, b = rack.hosts["a"], rack.hosts["b"]
    report = rack.api.get(f"/v1/hosts/{rack.ids['a']}/network?server={b.address}"
                          f"&server={UNROUTED}&server=localhost")
    by_name = {i["name"]: i for i in report["interfaces"]}
    assert set(by_name) == {"lo", "eth0"}
    assert by_name["eth0"]["addresses"][0] == f"{a.address}/{rack.lab.subnet.prefixlen}"
    assert by_name["eth0"]["state"] == "UP" and by_name["eth0"]["mtu"] == 1500
    routes = {r["server"]: r for r in report["routes"]}
    assert routes[b.address] | {"mtu": None} == {
        "server": b.address, "address": b.address, "interface": "eth0",
        "source": a.address, "gateway": None, "mtu": None, "error": None}
    assert routes["localhost"]["interface"] == "lo"
    assert routes[UNROUTED]["interface"] is None
    assert "unreachable" in routes[UNROUTED]["error"].lower()

    # B sees itself from its side; the connect job carried the same facts.
    other = rack.api.get(f"/v1/hosts/{rack.ids['b']}/network")
    assert [i["addresses"][0].split("/")[0] for i in other["interfaces"]
            if i["name"] == "eth0"] == [b.address]


def test_network_report_refuses_bad_servers(rack: Rack) -> None:
    host = rack.ids["a"]
    for bad in ("a%20b", "-x", "x" * 300, "nfs;rm"):
        with pytest.raises(ApiError) as err:
            rack.api.get(f"/v1/hosts/{host}/network?server={bad}")
        assert err.value.status == 400, bad
    many = "&".join(f"server=10.0.0.{i}" for i in range(40))
    with pytest.raises(ApiError) as err:
        rack.api.get(f"/v1/hosts/{host}/network?{many}")
    assert err.value.status == 400


def test_operator_on_the_host_reads_the_report_on_loopback(rack: Rack) -> None:
    a = rack.hosts["a"]
    _, debug = rack.agents["a"]
    code = ("import json,sys,urllib.request;"
            "print(urllib.request.urlopen(sys.argv[1]).read().decode())")
    out = subprocess.run(a.argv([sys.executable, "-c", code,
                                 f"{debug}/debug/network?server={rack.lab.address}"]),
                         capture_output=True, text=True, timeout=30, check=True).stdout
    route = json.loads(out)["routes"][0]
    assert (route["server"], route["source"]) == (rack.lab.address, a.address)


def test_host_losing_its_network_is_disconnected_then_reconnected(rack: Rack) -> None:
    api, a, b = rack.api, rack.ids["a"], rack.ids["b"]
    with rack.lab.unplugged(rack.hosts["a"]):
        lost = eventually(lambda: (h := api.get(f"/v1/hosts/{a}"))["state"] ==
                          "disconnected" and h, timeout=30)
        assert lost, api.get(f"/v1/hosts/{a}")
        assert "agent not answering" in lost["reason"]
        assert api.get(f"/v1/hosts/{b}")["state"] == "connected"
    back = eventually(lambda: (h := api.get(f"/v1/hosts/{a}"))["state"] == "connected"
                      and h, timeout=30)
    assert back, api.get(f"/v1/hosts/{a}")
    assert back["reason"] is None


def reads(host: Host, uri: str, iqn: str) -> bool:
    """Whether QEMU on `host` (from its address) opens the LUN as `iqn` and reads it."""
    opts = ",".join(f"file.{k}={v}" for k, v in spec(uri, iqn).items())
    proc = subprocess.run(host.argv(["qemu-io", "--image-opts", "-c", "read 0 4k",
                                     f"driver=raw,{opts}"]),
                          capture_output=True, text=True, timeout=60)
    return proc.returncode == 0 and "read 4096/4096" in proc.stdout


def test_iscsi_grants_are_per_host(rack: Rack) -> None:
    """The storage server's tgtd listens on the lab's network and each host logs in from
    its own address with its own initiator name: only the hosts granted get in, and a
    revoked one no longer does while the other keeps its grant. (tgtd's address ACLs
    admit any name from a bound address, so grants stay by initiator name.)"""
    tgtd = Tgtd(rack.lab.address)
    server, _ = start_agent(rack.tmp / "server", server_config(tgtd))
    try:
        api, a, b = rack.api, rack.hosts["a"], rack.hosts["b"]
        store = rack.wait(api.post("/v1/primary-storages", {
            "name": "san-1", "type": "iscsi",
            "config": {"server_host_id": enrol_host(api, "storage-1", server),
                       "path": str(rack.tmp / "iscsi"), "portal": tgtd.portal},
            "hosts": [rack.ids["a"], rack.ids["b"]]}))["resource_id"]
        vol = rack.wait(api.post("/v1/volumes", {"name": "v1", "primary_storage_id": store,
                                                 "size": 4 << 20}))["resource_id"]
        uri = rack.wait(api.post(f"/v1/volumes/{vol}/access",
                                 {"host_id": rack.ids["a"]}))["result"]["uri"]
        iqn_a, iqn_b = IQN.format("a"), IQN.format("b")
        assert reads(a, uri, iqn_a)
        assert not reads(b, uri, iqn_b), "B was not granted"

        rack.wait(api.post(f"/v1/volumes/{vol}/access", {"host_id": rack.ids["b"]}))
        assert reads(b, uri, iqn_b)
        rack.wait(api.delete(f"/v1/volumes/{vol}/access/{rack.ids['a']}"))
        assert not reads(a, uri, iqn_a), "A was revoked"
        assert reads(b, uri, iqn_b), "B keeps its grant"
    finally:
        server.stop()
        tgtd.stop()


def test_two_hosts_share_an_nfs_export(rack: Rack) -> None:
    """nfs-ganesha on a third host of the lab, in libnfs mode (no kernel NFS client is
    needed): a volume made through the storage is read by QEMU on both hosts, each from
    its own address, and each host's network report shows its route to the server."""
    nfs = NfsServer(rack.tmp / "nfs", rack.lab.add_host("nfs"))
    try:
        api = rack.api
        store = rack.wait(api.post("/v1/primary-storages", {
            "name": "nfs-1", "type": "nfs",
            "config": {"server": nfs.server, "export": str(nfs.share("ps")), "mode": "libnfs"},
            "hosts": [rack.ids["a"], rack.ids["b"]]}))["resource_id"]
        # The request's job is the first host's attach; the second's runs beside it.
        assert eventually(lambda: {h["state"] for h in api.get(
            f"/v1/primary-storages/{store}")["hosts"]} == {"connected"}, timeout=30), \
            api.get(f"/v1/primary-storages/{store}")["hosts"]
        vol = rack.wait(api.post("/v1/volumes", {"name": "v1", "primary_storage_id": store,
                                                 "size": 16 << 20}))["resource_id"]
        path = api.get(f"/v1/volumes/{vol}")["path"]
        assert path.startswith(f"nfs://{nfs.server}/")
        for name, host in rack.hosts.items():
            info = subprocess.run(host.argv(["qemu-img", "info", "--output=json", path]),
                                  capture_output=True, text=True, timeout=60)
            assert info.returncode == 0, (name, info.stderr)
            assert json.loads(info.stdout)["virtual-size"] == 16 << 20
            report = api.get(f"/v1/hosts/{rack.ids[name]}/network")
            route = next(r for r in report["routes"] if r["server"] == nfs.server)
            assert (route["interface"], route["source"]) == ("eth0", host.address)
    finally:
        nfs.stop()
