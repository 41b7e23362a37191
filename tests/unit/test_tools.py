"""The thin tool modules: argv in, a typed result or a named error out (a fake executor
answers where a real tool needs root or kernel features this host lacks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.executor import Executor, Result
from agent.tools import cp, iscsiadm, mount, ssh
from agent.tools.cp import CopyFailed
from agent.tools.iscsiadm import IscsiadmFailed, IscsiAuthFailed, IscsiPortalUnreachable
from agent.tools.lvm import Lvm, LvmFailed, VolumeGroupNotFound
from agent.tools.tgtadm import Tgtadm, TgtadmFailed, parse_accounts
from shared.errors import StrataError, Timeout
from shared.protocol.sftp import SftpEndpoint
from shared.protocol.types import FsCapacity
from tests.support.fakeexec import FakeExecutor, reply

IQN = "iqn.2026-11.org.strata:vol-1"
PORTAL = "192.0.2.10:3260"
IFACE = "strata-0123456789ab"


@pytest.mark.parametrize(("rc", "error"), [
    (24, IscsiAuthFailed), (4, IscsiPortalUnreachable), (8, IscsiPortalUnreachable),
    (5, IscsiadmFailed), (19, IscsiadmFailed)])
async def test_iscsiadm_exit_codes_name_the_failure(rc: int, error: type[Exception]) -> None:
    fake = FakeExecutor()
    fake.on(["iscsiadm"], rc=rc, stderr="iscsiadm: it went wrong")
    with pytest.raises(IscsiadmFailed) as info:
        await iscsiadm.login(fake, IQN, PORTAL, IFACE)
    assert type(info.value) is error and info.value.code == "iscsi_login_failed"
    assert info.value.message == (f"iscsiadm -m node -T {IQN} failed: iscsiadm: it went wrong")
    assert info.value.result.returncode == rc


async def test_an_unreachable_portal_is_no_authentication_failure() -> None:
    fake = FakeExecutor()
    fake.on(["iscsiadm", "-m", "discovery"], rc=4,
            stderr="iscsiadm: cannot make connection to 192.0.2.10: Connection refused")
    with pytest.raises(IscsiPortalUnreachable) as info:
        await iscsiadm.discover(fake, PORTAL, IFACE)
    assert not isinstance(info.value, IscsiAuthFailed)
    assert "Connection refused" in info.value.message


async def test_iscsiadm_already_so_is_success() -> None:
    fake = FakeExecutor()
    fake.on(["iscsiadm"], rc=15)  # a session exists
    await iscsiadm.login(fake, IQN, PORTAL, IFACE)
    with pytest.raises(IscsiadmFailed, match="exit code 15"):
        await iscsiadm.logout(fake, IQN, PORTAL, IFACE)
    fake.on(["iscsiadm"], rc=21)  # no session
    await iscsiadm.logout(fake, IQN, PORTAL, IFACE)
    node = ["iscsiadm", "-m", "node", "-T", IQN, "-p", PORTAL, "-I", IFACE]
    assert fake.calls == [[*node, "--login"], [*node, "--logout"], [*node, "--logout"]]


async def test_chap_password_is_redacted_and_only_it() -> None:
    fake = FakeExecutor()
    await iscsiadm.set_chap(fake, IQN, PORTAL, IFACE, "strata-1", "s3cretPassw0rd")
    assert [c[-1] for c in fake.calls] == ["CHAP", "strata-1", "s3cretPassw0rd"]
    assert fake.redacted == {"s3cretPassw0rd"}


async def test_iface_carries_the_initiator_name() -> None:
    """Made once, updated every time: the name is the configured one, not open-iscsi's."""
    fake = FakeExecutor()
    iface = ["iscsiadm", "-m", "iface", "-I", IFACE]
    fake.on(lambda argv: list(argv) == iface, rc=21)  # no such iface yet
    await iscsiadm.ensure_iface(fake, IFACE, "iqn.2026-11.org.strata:host-a")
    assert fake.calls == [iface, [*iface, "-o", "new"], [
        *iface, "-o", "update", "-n", "iface.initiatorname", "-v",
        "iqn.2026-11.org.strata:host-a"]]


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


async def test_lvm_reports_are_typed() -> None:
    fake = FakeExecutor()
    fake.on(["vgs"], stdout='{"report": [{"vg": [{"vg_size": "107374182400", '
                            '"vg_free": "1000"}]}]}')
    fake.on(["lvs"], stdout='{"report": [{"lv": [{"lv_name": "strata-vol-1"}]}]}')
    lvm = Lvm(fake)
    assert await lvm.capacity("vg-san") == FsCapacity(total=107374182400, available=1000)
    assert await lvm.lv_exists("vg-san", "strata-vol-1")
    assert not await lvm.lv_exists("vg-san", "strata-vol-2")
    assert fake.calls[0] == ["vgs", "-o", "vg_size,vg_free", "vg-san", "--reportformat",
                             "json", "--units", "b", "--nosuffix"]
    fake.on(["vgs"], stdout='{"report": [{"vg": []}]}')
    with pytest.raises(VolumeGroupNotFound, match="vg-san"):
        await lvm.capacity("vg-san")
    fake.on(["lvs"], stdout='{"report": []}')
    with pytest.raises(LvmFailed, match="lvs gave an unreadable report"):
        await lvm.lv_exists("vg-san", "x")
    fake.on(["lvremove"], rc=5, stderr="  Logical volume vg-san/x in use.")
    with pytest.raises(LvmFailed, match="in use"):
        await lvm.lvremove("vg-san", "x")


async def test_cp_copies_sparse_and_names_its_failure(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    with open(src, "wb") as f:
        f.truncate(8 << 20)
        f.write(b"strata")
    await cp.copy_sparse(Executor(), str(src), str(dest))
    assert dest.read_bytes() == src.read_bytes() and dest.stat().st_blocks < 64
    with pytest.raises(CopyFailed, match="cp --reflink=auto failed"):
        await cp.copy_sparse(Executor(), str(tmp_path / "absent"), str(dest))


async def test_mount_tools_name_their_failures() -> None:
    fake = FakeExecutor()
    assert await mount.findmnt(fake, "/mnt/a", timeout=5) is None, "nothing mounted: no output"
    fake.on(["findmnt"], stdout='{"filesystems": [{"target": "/mnt/a", "source": '
                                '"nfs-1:/export", "fstype": "nfs4", "options": "rw,soft"}]}')
    assert await mount.findmnt(fake, "/mnt/a", timeout=5) == mount.MountInfo(
        target="/mnt/a", source="nfs-1:/export", fstype="nfs4", options="rw,soft")

    fake.on(["mount"], rc=32, stderr="mount.nfs: nfs-1:/export is busy or already mounted")
    with pytest.raises(mount.AlreadyMounted) as already:
        await mount.mount_nfs(fake, "nfs-1:/export", "/mnt/a", ["soft"], timeout=5)
    assert already.value.code == "mount_failed"
    assert fake.calls[-1] == ["mount", "-t", "nfs", "-o", "soft", "nfs-1:/export", "/mnt/a"]
    fake.on(["mount"], rc=32, stderr="mount.nfs: access denied by server")
    with pytest.raises(mount.MountFailed) as denied:
        await mount.mount_nfs(fake, "nfs-1:/export", "/mnt/a", [], timeout=5)
    assert not isinstance(denied.value, mount.AlreadyMounted)
    assert denied.value.message == "cannot mount nfs-1:/export on /mnt/a: mount.nfs: access " \
                                   "denied by server"
    fake.on(["mount"], raises=Timeout("mount did not finish within 5s"))
    with pytest.raises(mount.MountTimeout) as hung:
        await mount.mount_nfs(fake, "nfs-1:/export", "/mnt/a", [], timeout=5)
    assert hung.value.code == "mount_timeout" and "nfs-1:/export" in hung.value.message

    fake.on(["umount"], rc=32, stderr="umount: /mnt/a: target is busy.")
    with pytest.raises(mount.UnmountFailed) as busy:
        await mount.umount(fake, "/mnt/a", lazy=True, timeout=5)
    assert busy.value.code == "unmount_failed" and fake.calls[-1] == ["umount", "-l", "/mnt/a"]


ENDPOINT = SftpEndpoint(host="sftp.example", port=2222, username="strata",
                        host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx",
                        private_key="-----BEGIN OPENSSH PRIVATE KEY-----\n")


@pytest.mark.parametrize(("rc", "stderr", "error", "code"), [
    (255, "Host key verification failed.", ssh.HostKeyMismatch, "host_key_mismatch"),
    (255, "strata@sftp.example: Permission denied (publickey).", ssh.AuthRefused,
     "sftp_auth_failed"),
    (255, "ssh: connect to host sftp.example port 2222: Connection refused", ssh.Unreachable,
     "sftp_unreachable"),
    (1, "cat: /srv/x: No such file or directory", ssh.RemoteFileMissing, "not_found"),
    (1, "cat: /srv/x: Is a directory", ssh.SshFailed, "sftp_failed"),
])
async def test_ssh_failures_are_named(tmp_path: Path, rc: int, stderr: str,
                                      error: type[Exception], code: str) -> None:
    fake = FakeExecutor()
    fake.on(["ssh"], rc=rc, stdout="partial", stderr=stderr)
    got = []
    async with ssh.read_file(fake, ENDPOINT, "/srv/x", str(tmp_path)) as chunks:
        with pytest.raises(StrataError) as info:
            async for chunk in chunks:
                got.append(chunk)
    assert got == [b"partial"], "the bytes before the failure arrive"
    assert type(info.value) is error and info.value.code == code
    argv = fake.calls[0]
    assert argv[0] == "ssh" and argv[-3:] == ["strata", "sftp.example", "cat -- /srv/x"]
    assert os.listdir(tmp_path) == [], "the key files live only as long as the call"


async def test_ssh_pins_the_host_key_and_uses_only_the_client_key(tmp_path: Path) -> None:
    fake = FakeExecutor()
    seen: dict[str, str] = {}

    def cat(argv: list[str]) -> Result:
        options = dict(o.split("=", 1) for o in argv if "=" in o)
        seen["known_hosts"] = Path(options["UserKnownHostsFile"]).read_text()
        seen["key"] = Path(argv[argv.index("-i") + 1]).read_text()
        return reply(argv, stdout="bytes")

    fake.on(["ssh"], cat)
    async with ssh.read_file(fake, ENDPOINT, "/srv/x", str(tmp_path)) as chunks:
        assert [c async for c in chunks] == [b"bytes"]
    assert seen == {"known_hosts": "[sftp.example]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx\n",
                    "key": "-----BEGIN OPENSSH PRIVATE KEY-----\n"}
    assert {"IdentitiesOnly=yes", "StrictHostKeyChecking=yes", "BatchMode=yes"} <= set(
        fake.calls[0])
