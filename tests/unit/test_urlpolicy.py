"""The download URL policy: checked on the address connected to, after resolution, in
every spelling of an address. Pure checks and loopback name resolution only: nothing
here opens a connection."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from yarl import URL

from agent.app import url_policy
from agent.config import AgentConfig
from agent.images.urlpolicy import PolicyResolver, UrlPolicy, UrlRefused, numeric_host
from agent.main import parse_args


def test_builtin_deny_list_and_extra_networks() -> None:
    policy = UrlPolicy.build([], ["10.0.0.0/8"], [], allow_credentials=False)
    for address in ("127.0.0.1", "127.0.0.2", "::1", "169.254.169.254", "0.0.0.0",
                    "::ffff:127.0.0.1", "fe80::1%lo", "10.1.2.3"):
        with pytest.raises(UrlRefused):
            policy.check_address(address, 80)
    policy.check_address("192.0.2.10", 80)  # TEST-NET-1: allowed by default, not contacted


def test_an_allow_list_is_the_only_way_in_but_never_to_the_agent_itself() -> None:
    policy = UrlPolicy.build(["127.0.0.2/32"], [], [("127.0.0.2", 8641)],
                             allow_credentials=False)
    policy.check_address("127.0.0.2", 8000)
    with pytest.raises(UrlRefused, match="not among the allowed"):
        policy.check_address("127.0.0.1", 8000)
    with pytest.raises(UrlRefused, match="this agent"):
        policy.check_address("127.0.0.2", 8641)


def test_an_agent_listening_everywhere_is_refused_on_any_local_address() -> None:
    policy = UrlPolicy.build(["127.0.0.0/8"], [], [("0.0.0.0", 8641)], allow_credentials=False)
    with pytest.raises(UrlRefused, match="this agent"):
        policy.check_address("127.0.0.5", 8641)
    policy.check_address("127.0.0.5", 8000)


def test_urls_need_http_and_no_credentials_unless_allowed() -> None:
    strict = UrlPolicy()
    for url in ("file:///etc/passwd", "ftp://h/x", "http:///etc/passwd"):
        with pytest.raises(UrlRefused):
            strict.check_url(URL(url))
    with pytest.raises(UrlRefused, match="credentials"):
        strict.check_url(URL("http://user:pass@images.example/x.qcow2"))
    UrlPolicy(allow_credentials=True).check_url(URL("http://user:pass@images.example/x"))


def test_every_spelling_of_an_address_is_seen_through() -> None:
    assert numeric_host("127.1") == "127.0.0.1"
    assert numeric_host("2130706433") == "127.0.0.1"
    assert numeric_host("0x7f000001") == "127.0.0.1"
    assert numeric_host("images.example") is None


async def test_the_resolver_drops_denied_addresses() -> None:
    resolver = PolicyResolver(UrlPolicy())
    try:
        with pytest.raises(UrlRefused):
            await resolver.resolve("localhost", 80)
        allowed = PolicyResolver(UrlPolicy.build(["127.0.0.0/8"], [], [], False))
        assert [r["host"] for r in await allowed.resolve("127.0.0.1", 80)] == ["127.0.0.1"]
        await allowed.close()
    finally:
        await resolver.close()


def test_the_agent_builds_its_policy_from_settings_and_flags() -> None:
    args = parse_args(["--download-allow", "127.0.0.2/32", "--download-allow", "10.0.0.0/8"])
    config = AgentConfig(debug_listen="localhost:8642", download_allow=args.download_allow)
    policy = url_policy(config)
    policy.check_address("10.1.2.3", 80)
    for address, port in (("127.0.0.1", 8641), ("127.0.0.1", 8642)):
        with pytest.raises(UrlRefused, match="this agent"):
            policy.check_address(address, port)
    with pytest.raises(ValidationError, match="not a network"):
        AgentConfig(download_deny=["10.0.0.0/33"])
