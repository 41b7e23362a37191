"""The thin tool modules: argv in, a typed result or a named error out (a fake executor
answers where a real tool needs root or kernel features this host lacks)."""

from __future__ import annotations

import pytest

from agent.tools import iscsiadm
from agent.tools.iscsiadm import IscsiadmFailed, IscsiAuthFailed, IscsiPortalUnreachable
from agent.tools.tgtadm import Tgtadm, TgtadmFailed, parse_accounts
from tests.support.fakeexec import FakeExecutor

IQN = "iqn.2026-11.org.strata:vol-1"
PORTAL = "192.0.2.10:3260"


@pytest.mark.parametrize(("rc", "error"), [
    (24, IscsiAuthFailed), (4, IscsiPortalUnreachable), (8, IscsiPortalUnreachable),
    (5, IscsiadmFailed), (19, IscsiadmFailed)])
async def test_iscsiadm_exit_codes_name_the_failure(rc: int, error: type[Exception]) -> None:
    fake = FakeExecutor()
    fake.on(["iscsiadm"], rc=rc, stderr="iscsiadm: it went wrong")
    with pytest.raises(IscsiadmFailed) as info:
        await iscsiadm.login(fake, IQN, PORTAL)
    assert type(info.value) is error and info.value.code == "iscsi_login_failed"
    assert info.value.message == (f"iscsiadm -m node -T {IQN} failed: iscsiadm: it went wrong")
    assert info.value.result.returncode == rc


async def test_an_unreachable_portal_is_no_authentication_failure() -> None:
    fake = FakeExecutor()
    fake.on(["iscsiadm", "-m", "discovery"], rc=4,
            stderr="iscsiadm: cannot make connection to 192.0.2.10: Connection refused")
    with pytest.raises(IscsiPortalUnreachable) as info:
        await iscsiadm.discover(fake, PORTAL)
    assert not isinstance(info.value, IscsiAuthFailed)
    assert "Connection refused" in info.value.message


async def test_iscsiadm_already_so_is_success() -> None:
    fake = FakeExecutor()
    fake.on(["iscsiadm"], rc=15)  # a session exists
    await iscsiadm.login(fake, IQN, PORTAL)
    with pytest.raises(IscsiadmFailed, match="exit code 15"):
        await iscsiadm.logout(fake, IQN, PORTAL)
    fake.on(["iscsiadm"], rc=21)  # no session
    await iscsiadm.logout(fake, IQN, PORTAL)
    node = ["iscsiadm", "-m", "node", "-T", IQN, "-p", PORTAL]
    assert fake.calls == [[*node, "--login"], [*node, "--logout"], [*node, "--logout"]]


async def test_chap_password_is_redacted_and_only_it() -> None:
    fake = FakeExecutor()
    await iscsiadm.set_chap(fake, IQN, PORTAL, "strata-1", "s3cretPassw0rd")
    assert [c[-1] for c in fake.calls] == ["CHAP", "strata-1", "s3cretPassw0rd"]
    assert fake.redacted == {"s3cretPassw0rd"}


def test_tgtadm_account_list() -> None:
    shown = "Account list:\n    strata-1\n    strata-2 (outgoing)\n"
    assert parse_accounts(shown) == ["strata-1", "strata-2"]
    assert parse_accounts("") == []


async def test_tgtadm_argv_and_failure() -> None:
    fake = FakeExecutor()
    tgtadm = Tgtadm(fake, control_port=3261)
    await tgtadm.new_account("strata-1", "s3cretPassw0rd")
    assert fake.calls == [["tgtadm", "-C", "3261", "--lld", "iscsi", "--op", "new", "--mode",
                           "account", "--user", "strata-1", "--password", "s3cretPassw0rd"]]
    assert fake.redacted == {"s3cretPassw0rd"}
    fake.on(["tgtadm"], rc=22, stderr="tgtadm: this target already exists")
    with pytest.raises(TgtadmFailed, match="already exists"):
        await tgtadm.new_target(1, IQN)
