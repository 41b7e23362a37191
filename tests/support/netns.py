"""Several "hosts" on one machine: each in a network namespace of its own with one
interface and one address on a private network, made with pyroute2.

The network is a bridge inside a namespace the lab makes (so nothing of it sits in the
machine's own network), and each host's `eth0` is one end of a veth pair whose other
end is a port of that bridge. The test process itself joins with one more veth pair
(the lab's `.1` address), so that a controller and fixtures started as usual reach the
hosts, and the hosts reach them. The subnet is in 10.253.0.0/16, and every packet stays
within the namespaces the lab made and the test's end of its veth: the hosts have no
route anywhere else. Everything is removed on `close`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2 import IPRoute, NetNS, netns

from tests.support.workers import share

BRIDGE = "br0"
SUBNET_BASE = "10.253"
# The third byte of a lab's subnet: each worker of a run has a share of its own.
SUBNETS = range(1, 251)


def _require_root_tools() -> None:
    if shutil.which("ip") is None:
        raise RuntimeError("iproute2's `ip` is needed to run commands in a namespace")


def _subnets_in_use() -> set[int]:
    """Third bytes of the lab subnets that have an address in this namespace."""
    prefix = f"{SUBNET_BASE}."
    with IPRoute() as ipr:
        addresses = [a.get_attr("IFA_ADDRESS") or "" for a in ipr.get_addr(family=socket.AF_INET)]
    return {int(a.split(".")[2]) for a in addresses if a.startswith(prefix)}


@dataclass
class Host:
    """One namespace: `address` is its only address but loopback."""

    name: str
    netns: str
    address: str
    port: str  # its veth end on the bridge, which `unplug` takes down

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


class Lab:
    def __init__(self) -> None:
        _require_root_tools()
        self.tag = secrets.token_hex(3)
        # The test's end of the lab carries a route to its subnet, which must be the only
        # one: a subnet of this worker's share (other workers' labs never meet it) that
        # no lab here uses now (a worker may hold two at once, e.g. the `nfs` fixture's
        # and a test's own).
        free = [n for n in share(SUBNETS) if n not in _subnets_in_use()]
        if not free:
            raise RuntimeError(f"every lab subnet of this worker is in use: {SUBNET_BASE}.*")
        self.subnet = ipaddress.ip_network(f"{SUBNET_BASE}.{secrets.choice(free)}.0/24")
        self.hosts: list[Host] = []
        self.bridge_ns = f"strata-{self.tag}-br"
        self._root_veth = f"st{self.tag}r"
        netns.create(self.bridge_ns)
        try:
            with NetNS(self.bridge_ns) as ns:
                ns.link("add", ifname=BRIDGE, kind="bridge")
                ns.link("set", index=ns.link_lookup(ifname=BRIDGE)[0], state="up")
            self.address = self._plug(None, self._root_veth, 1)
        except Exception:
            self.close()
            raise

    def _address(self, n: int) -> str:
        return str(self.subnet.network_address + n)

    def _plug(self, host_ns: str | None, inner: str, n: int) -> str:
        """A veth pair: `inner` in `host_ns` (None: the test's own namespace) with the
        lab's address number `n`, its peer a port of the bridge."""
        port = f"st{self.tag}p{n}"
        with IPRoute() as ipr:
            ipr.link("add", ifname=port, kind="veth", peer=f"st{self.tag}t{n}")
            ipr.link("set", index=ipr.link_lookup(ifname=port)[0], net_ns_fd=self.bridge_ns)
            end = ipr.link_lookup(ifname=f"st{self.tag}t{n}")[0]
            if host_ns is not None:
                ipr.link("set", index=end, net_ns_fd=host_ns)
            else:
                ipr.link("set", index=end, ifname=inner)
        with NetNS(self.bridge_ns) as ns:
            idx = ns.link_lookup(ifname=port)[0]
            ns.link("set", index=idx, master=ns.link_lookup(ifname=BRIDGE)[0], state="up")
        address = self._address(n)
        with contextlib.ExitStack() as stack:
            ipr2 = stack.enter_context(NetNS(host_ns) if host_ns else IPRoute())
            if host_ns is not None:
                idx = ipr2.link_lookup(ifname=f"st{self.tag}t{n}")[0]
                ipr2.link("set", index=idx, ifname=inner)
                ipr2.link("set", index=ipr2.link_lookup(ifname="lo")[0], state="up")
            idx = ipr2.link_lookup(ifname=inner)[0]
            ipr2.addr("add", index=idx, address=address, prefixlen=self.subnet.prefixlen)
            ipr2.link("set", index=idx, state="up")
        return address

    def add_host(self, name: str) -> Host:
        """A new namespace on the lab's network, `eth0` its address (.2, .3 ...)."""
        n = len(self.hosts) + 2
        host_ns = f"strata-{self.tag}-{name}"
        netns.create(host_ns)
        host = Host(name, host_ns, self._address(n), f"st{self.tag}p{n}")
        self.hosts.append(host)
        self._plug(host_ns, "eth0", n)
        return host

    def set_link(self, host: Host, up: bool) -> None:
        """Plugs the host's cable in or out: its bridge port goes up or down."""
        with NetNS(self.bridge_ns) as ns:
            ns.link("set", index=ns.link_lookup(ifname=host.port)[0],
                    state="up" if up else "down")

    @contextlib.contextmanager
    def unplugged(self, host: Host) -> Iterator[None]:
        self.set_link(host, False)
        try:
            yield
        finally:
            self.set_link(host, True)

    def close(self) -> None:
        """Removes every namespace (and so every veth) the lab made, and its own end."""
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self._root_veth)
            if found:
                ipr.link("del", index=found[0])
        for name in [h.netns for h in self.hosts] + [self.bridge_ns]:
            if name in netns.listnetns():
                netns.remove(name)


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    made = Lab()
    try:
        yield made
    finally:
        made.close()
