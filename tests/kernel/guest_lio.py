"""The `lio` target driver against the kernel's LIO through rtslib-fb (guest only)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agent.iscsi.lio import LIO_DBROOT, LioDriver
from shared.errors import OperationFailed
from tests.kernel.guestfix import CONFIGFS, rts

pytestmark = pytest.mark.usefixtures("lio_clean")

TARGET = "iqn.2026-11.org.strata:vol-lio"
HOST = "iqn.2026-11.org.strata:host-a"
PORTAL = ("127.0.0.1", 3260)
LUN_SIZE = 64 << 20
# A grant that hangs (a StopIteration raised into asyncio.to_thread's future never
# resolves it) fails the test instead of the tier's whole run.
CALL_TIMEOUT = 20


def tpg_dir(target: str = TARGET) -> Path:
    return Path(CONFIGFS) / "target" / "iscsi" / target / "tpgt_1"


def lun_file(tmp_path: Path, name: str = "lun.raw") -> str:
    path = tmp_path / name
    with path.open("wb") as f:
        f.truncate(LUN_SIZE)
    return str(path)


async def within(coro: object) -> object:
    return await asyncio.wait_for(coro, CALL_TIMEOUT)  # type: ignore[arg-type]


async def test_the_agent_makes_lios_directory(tmp_path: Path) -> None:
    """Defect 5: rtslib-fb sets LIO's dbroot to /etc/target, which must exist. First
    test of the run: the kernel takes the dbroot only before a device registers."""
    assert not os.path.exists(LIO_DBROOT), "precondition: a fresh guest has no /etc/target"
    lio = LioDriver(str(tmp_path / "lio.json"), PORTAL)
    await within(lio.restore())
    assert os.path.isdir(LIO_DBROOT)
    assert (Path(CONFIGFS) / "target" / "dbroot").read_text().strip() == LIO_DBROOT


async def test_a_file_backed_lun_is_exported_and_granted(tmp_path: Path) -> None:
    """Defect 2: a fileio storage object needs its size."""
    lio = LioDriver(str(tmp_path / "lio.json"), PORTAL)
    await within(lio.export(TARGET, lun_file(tmp_path), None))
    await within(lio.export(TARGET, lun_file(tmp_path), None))
    assert (tpg_dir() / "lun" / "lun_1").is_dir()
    assert (tpg_dir() / "np" / "127.0.0.1:3260").is_dir()
    (so,) = rts().RTSRoot().storage_objects
    assert so.plugin == "fileio" and so.size == LUN_SIZE
    assert await within(lio.grant(TARGET, HOST)) == [HOST]
    assert (tpg_dir() / "acls" / HOST / "lun_1").is_dir()
    assert await within(lio.revoke(TARGET, HOST)) == []
    await within(lio.unexport(TARGET))
    assert not tpg_dir().exists() and not list(rts().RTSRoot().storage_objects)


async def test_a_failed_export_leaves_nothing(tmp_path: Path) -> None:
    """Defect 3: a backstore that cannot be made takes the target, TPG and portal with
    it, and a grant then fails with a reason instead of hanging."""
    lio = LioDriver(str(tmp_path / "lio.json"), PORTAL)
    with pytest.raises(OperationFailed) as info:
        await within(lio.export(TARGET, "/dev/strata-no-such-volume", None))
    assert info.value.code == "lio_export_failed"
    assert not list(rts().RTSRoot().targets) and not list(rts().RTSRoot().storage_objects)
    with pytest.raises(OperationFailed) as info:
        await within(lio.grant(TARGET, HOST))
    assert info.value.code == "no_such_target"


async def test_a_grant_on_an_export_without_lun_says_why(tmp_path: Path) -> None:
    """Defect 3: an export left broken (by an older agent, or by hand) has no LUN 1."""
    rtslib = rts()
    target = rtslib.Target(rtslib.FabricModule("iscsi"), wwn=TARGET)
    rtslib.TPG(target, 1)
    lio = LioDriver(str(tmp_path / "lio.json"), PORTAL)
    with pytest.raises(OperationFailed) as info:
        await within(lio.grant(TARGET, HOST))
    assert info.value.code == "export_incomplete"
    assert not (tpg_dir() / "acls" / HOST).exists()


async def test_a_restart_restores_against_live_state(tmp_path: Path) -> None:
    """Defect 4: the agent restarts while the kernel still holds its configuration; the
    restore keeps what is live and brings back only what is missing."""
    save = str(tmp_path / "lio.json")
    first = LioDriver(save, PORTAL)
    await within(first.export(TARGET, lun_file(tmp_path), None))
    await within(first.grant(TARGET, HOST))
    other = "iqn.2026-11.org.strata:vol-other"
    await within(first.export(other, lun_file(tmp_path, "other.raw"), None))

    restarted = LioDriver(save, PORTAL)
    await within(restarted.restore())
    assert (tpg_dir() / "acls" / HOST / "lun_1").is_dir()
    assert len(list(rts().RTSRoot().storage_objects)) == 2

    # The kernel lost one export (a target taken down by hand): restore brings it back.
    for target in rts().RTSRoot().targets:
        if target.wwn == other:
            target.delete()
    await within(LioDriver(save, PORTAL).restore())
    assert (tpg_dir(other) / "lun" / "lun_1").is_dir()
    assert (tpg_dir() / "acls" / HOST / "lun_1").is_dir()
