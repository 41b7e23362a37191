"""Several hosts on one machine: each agent in a network namespace of its own, with its
own address on a private bridge (tests/support/netns.py), its own initiator name and
its own view of the network. The controller runs beside the test and reaches them over
the lab's network, as it reaches hypervisors in a rack."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.client import ApiError, Client
from tests.support.enrol import enrol_host
from tests.support.netns import Host, Lab, lab
from tests.support.procs import Proc, start_agent, start_controller

IQN = "iqn.2026-11.org.strata.test:{}"
UNROUTED = "10.9.9.9"  # no host of the lab has a route to it


def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@dataclass
class Rack:
    lab: Lab
    api: Client
    hosts: dict[str, Host]
    agents: dict[str, tuple[Proc, str]]
    ids: dict[str, str]


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
            yield Rack(net, api, hosts, agents, ids)
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
                          "disconnected" and h)
        assert lost, api.get(f"/v1/hosts/{a}")
        assert "agent not answering" in lost["reason"]
        assert api.get(f"/v1/hosts/{b}")["state"] == "connected"
    back = eventually(lambda: (h := api.get(f"/v1/hosts/{a}"))["state"] == "connected" and h)
    assert back, api.get(f"/v1/hosts/{a}")
    assert back["reason"] is None
