"""The kernel's network facts over netlink (pyroute2): interfaces with their addresses
and MTU, and the route the kernel would pick to an address (`ip route get`). No policy:
addresses in, typed facts or `NoRoute` out. pyroute2 is imported on first use: it costs
a fifth of a second of every agent's start, and only network reports need it."""

from __future__ import annotations

import errno
from typing import Any

from shared.errors import OperationFailed
from shared.protocol.host import NetInterface, ServerRoute


class NoRoute(OperationFailed):
    """The kernel has no route to the address (or can't use one)."""


def interfaces() -> list[NetInterface]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = {link["index"]: NetInterface(
            name=str(link.get("ifname")), index=int(link["index"]),
            state=str(link.get("operstate") or "UNKNOWN"), mtu=int(link.get("mtu") or 0),
            mac=link.get("address")) for link in ipr.get_links()}
        for addr in ipr.get_addr():
            iface = found.get(addr["index"])
            if iface is not None and addr.get("address"):
                iface.addresses.append(f"{addr.get('address')}/{addr['prefixlen']}")
    return sorted(found.values(), key=lambda i: i.index)


def route_to(address: str) -> ServerRoute:
    """The kernel's choice for packets to `address` (an IP literal): interface, source
    address and gateway. Raises `NoRoute` with the kernel's reason."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            answer: Any = ipr.route("get", dst=address)[0]
        except NetlinkError as exc:
            reason = errno.errorcode.get(exc.code, str(exc.code))
            raise NoRoute(f"no route to {address}: {exc.args[-1] if exc.args else reason}",
                          code="no_route") from exc
        oif = answer.get("oif")
        links = ipr.get_links(oif) if oif else []
    link = links[0] if links else None
    return ServerRoute(
        server=address, address=address,
        interface=str(link.get("ifname")) if link else None,
        source=answer.get("prefsrc"), gateway=answer.get("gateway"),
        mtu=int(link.get("mtu")) if link else None)
