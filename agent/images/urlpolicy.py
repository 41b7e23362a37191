"""Where the agent may download images from. An image URL comes from an API caller, so
without a policy the agent would fetch whatever it names: its own debug listener, a
cloud metadata service, a host on a private network.

The policy is applied to the address actually connected to, after name resolution
(`PolicyResolver`), so a name that resolves, or later re-resolves, to a denied address
gets nowhere; IP literals in any spelling (`127.1`, `0x7f000001`, `2130706433`) are
checked before connecting, since aiohttp does not resolve what looks like an address.
`get` follows redirects itself, checking every hop the same way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from shared.errors import InvalidInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Never a place to download an image from, unless the operator allows it by name.
BUILTIN_DENY: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10",
    "224.0.0.0/4", "ff00::/8", "::ffff:127.0.0.0/104", "::ffff:169.254.0.0/112"))


class UrlRefused(InvalidInput):
    default_code = "url_refused"


@dataclass(frozen=True)
class UrlPolicy:
    """`allow`: if given, the only networks downloads may reach (they win over the built-in
    deny list, so a test may serve images on 127.0.0.2); `deny`: more networks refused
    (private ranges, say); `listeners`: the agent's own (address, port) pairs, refused
    whatever else says; `allow_credentials`: whether `user:pass@` may appear in a URL."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    listeners: frozenset[tuple[Address, int]] = field(default_factory=frozenset)
    allow_credentials: bool = False
    max_redirects: int = 5

    @classmethod
    def build(cls, allow: Iterable[str], deny: Iterable[str],
              listeners: Iterable[tuple[str, int]], allow_credentials: bool) -> UrlPolicy:
        return cls(allow=tuple(ipaddress.ip_network(n) for n in allow),
                   deny=tuple(ipaddress.ip_network(n) for n in deny),
                   listeners=frozenset((ipaddress.ip_address(a), p) for a, p in listeners),
                   allow_credentials=allow_credentials)

    def check_url(self, url: URL) -> None:
        """What can be said before connecting: the scheme and credentials."""
        if url.scheme not in ("http", "https") or not url.host:
            raise UrlRefused("image URLs must be http:// or https:// URLs with a host")
        if (url.user or url.password) and not self.allow_credentials:
            raise UrlRefused("credentials in image URLs are refused (the agent's "
                             "allow_url_credentials setting allows them)")

    def check_address(self, address: str, port: int) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        candidates = [ip, mapped] if mapped else [ip]
        if (any((a, port) in self.listeners for a in candidates)
                or self._is_own_listener(candidates, port)):
            raise UrlRefused(f"image URLs may not point at this agent ({address}:{port})")
        if self.allow:
            if not any(a in n for a in candidates for n in self.allow):
                raise UrlRefused(f"address {address} is not among the allowed download "
                                 "networks")
            return
        if any(a in n for a in candidates for n in (*BUILTIN_DENY, *self.deny)):
            raise UrlRefused(f"address {address} is refused for downloads (loopback, "
                             "link-local, unspecified or a denied network)")

    def _is_own_listener(self, candidates: list[Address], port: int) -> bool:
        """A listener on the unspecified address answers on every address of the host."""
        return any(listener.is_unspecified and listener_port == port
                   for listener, listener_port in self.listeners) and any(
            a.is_loopback or a.is_unspecified or a in _local_addresses() for a in candidates)


def _local_addresses() -> set[Address]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return set()
    return {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}


REDIRECTS = frozenset({301, 302, 303, 307, 308})


@contextlib.asynccontextmanager
async def get(session: aiohttp.ClientSession, policy: UrlPolicy, url: str,
              timeout: aiohttp.ClientTimeout) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET `url` through a session whose connector resolves with PolicyResolver (it sees
    the address of every connection), following at most `max_redirects` redirects."""
    target = _parse(url)
    for _ in range(policy.max_redirects + 1):
        policy.check_url(target)
        assert target.host is not None and target.port is not None
        numeric = numeric_host(target.host)
        if numeric is not None:
            policy.check_address(numeric, target.port)
        async with session.get(target, allow_redirects=False, timeout=timeout) as resp:
            location = resp.headers.get("Location")
            if resp.status not in REDIRECTS or location is None:
                yield resp
                return
        target = target.join(_parse(location))
    raise UrlRefused(f"more than {policy.max_redirects} redirects")


def _parse(url: str) -> URL:
    try:
        return URL(url)
    except ValueError:
        raise UrlRefused("an image URL, or a redirect, is not a valid URL") from None


def redacted(url: str) -> str:
    """`url` without its credentials, for messages."""
    try:
        return str(URL(url).with_user(None))
    except ValueError:
        return "the image URL"


class PolicyResolver(AbstractResolver):
    """Resolves as usual, then keeps only the addresses the policy allows."""

    def __init__(self, policy: UrlPolicy) -> None:
        self._policy = policy
        self._resolver = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        refused: UrlRefused | None = None
        allowed = []
        for result in results:
            try:
                self._policy.check_address(result["host"], result["port"])
            except UrlRefused as exc:
                refused = exc
            else:
                allowed.append(result)
        if not allowed and refused is not None:
            raise refused
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def numeric_host(host: str) -> str | None:
    """The address an IP literal in any spelling stands for; None for a name."""
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None
    return str(infos[0][4][0])
