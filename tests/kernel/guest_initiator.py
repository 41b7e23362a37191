"""The `kernel` connector (open-iscsi) logging in over loopback to LUNs the `lio` driver
serves, in the guest's own kernel (guest only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.executor import Executor
from agent.iscsi.kernel import KernelInitiator
from agent.iscsi.lio import LioDriver
from agent.tools.iscsiadm import IscsiAuthFailed
from shared.protocol.iscsi import ChapCredentials, IscsiTarget
from tests.kernel.guest_lio import LUN_SIZE, PORTAL, lun_file

pytestmark = pytest.mark.usefixtures("lio_clean", "iscsid")

# The name the agent is configured with; open-iscsi's own file names another one.
HOST = "iqn.2026-11.org.strata:host-kernel"


async def round_trip(tmp_path: Path, name: str, chap: ChapCredentials | None) -> None:
    target = f"iqn.2026-11.org.strata:{name}"
    lio = LioDriver(str(tmp_path / "lio.json"), PORTAL)
    await lio.export(target, lun_file(tmp_path, f"{name}.raw"), chap)
    await lio.grant(target, HOST)
    kernel = KernelInitiator(HOST, Executor())
    where = IscsiTarget(portal=f"{PORTAL[0]}:{PORTAL[1]}", target=target, lun=1, chap=chap)
    result = await kernel.connect(where)
    try:
        assert result.mode == "kernel" and result.size == LUN_SIZE
        assert result.device is not None
        fd = os.open(result.device, os.O_RDWR)
        try:
            os.pwrite(fd, b"strata" * 512, 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        await kernel.disconnect(where)
    assert result.device is not None and not os.path.exists(result.device)
    with open(tmp_path / f"{name}.raw", "rb") as f:
        f.seek(4096)
        assert f.read(6) == b"strata", "the write went through LIO into the LUN's file"
    await lio.unexport(target)


async def test_login_uses_the_configured_initiator_name(tmp_path: Path) -> None:
    """Defect 6: LIO grants the configured name; a login with open-iscsi's default name
    (initiatorname.iscsi) would be refused."""
    await round_trip(tmp_path, "vol-kernel", None)


async def test_login_with_chap(tmp_path: Path) -> None:
    await round_trip(tmp_path, "vol-chap",
                     ChapCredentials(user="strata-chap", password="s3cretPassw0rd12"))


async def test_a_wrong_chap_secret_is_refused(tmp_path: Path) -> None:
    target = "iqn.2026-11.org.strata:vol-badchap"
    lio = LioDriver(str(tmp_path / "lio.json"), PORTAL)
    await lio.export(target, lun_file(tmp_path, "bad.raw"),
                     ChapCredentials(user="strata-chap", password="s3cretPassw0rd12"))
    await lio.grant(target, HOST)
    kernel = KernelInitiator(HOST, Executor())
    wrong = ChapCredentials(user="strata-chap", password="wrongPassw0rd123")
    with pytest.raises(IscsiAuthFailed):
        await kernel.connect(IscsiTarget(portal=f"{PORTAL[0]}:{PORTAL[1]}", target=target,
                                         lun=1, chap=wrong))
    await lio.unexport(target)
