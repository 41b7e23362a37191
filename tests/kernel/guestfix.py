"""Fixtures of the guest tests, loaded only by the guest's pytest (`-p`): kernel
modules, LIO's configuration cleared between tests, iscsid, and nfs-ganesha exporting an
ext4 filesystem on a loop device (ganesha's VFS backend cannot export the 9p root)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.vm import GUEST_ENV

MODULES = ("configfs", "loop", "ext4", "dm_mod", "dm_snapshot", "dm_thin_pool", "nfs",
           "nfsv4", "iscsi_tcp", "target_core_mod", "target_core_file",
           "target_core_iblock", "iscsi_target_mod")
CONFIGFS = "/sys/kernel/config"
INITIATOR_NAME_FILE = "/etc/iscsi/initiatorname.iscsi"
# The name open-iscsi's configuration gives this guest: never granted by any test.
DEFAULT_INITIATOR = "iqn.2026-11.org.strata:default-name"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(GUEST_ENV) != "1":
        raise pytest.UsageError("the guest tests change the kernel's configuration: they "
                                "run only inside the guest (tests/kernel/test_kernel.py)")


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session", autouse=True)
def kernel_modules() -> None:
    for module in MODULES:
        run("modprobe", module)
    if not os.path.ismount(CONFIGFS):
        run("mount", "-t", "configfs", "configfs", CONFIGFS)


@pytest.fixture(scope="session", autouse=True)
def an_address() -> None:
    """An address besides loopback, on a dummy link nothing reaches: with loopback alone,
    getaddrinfo(AI_ADDRCONFIG) resolves no IPv4 address at all, 127.0.0.1 included, and
    nfs-ganesha cannot bind."""
    run("ip", "link", "add", "strata0", "type", "dummy")
    run("ip", "addr", "add", "192.0.2.1/32", "dev", "strata0")
    run("ip", "link", "set", "strata0", "up")


def rts() -> Any:
    import rtslib_fb

    return rtslib_fb


@pytest.fixture
def lio_clean() -> Iterator[None]:
    """Each test starts and ends with no LIO target or storage object."""
    yield
    root = rts().RTSRoot()
    for target in list(root.targets):
        target.delete()
    for so in list(root.storage_objects):
        so.delete()


def wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g}s")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def iscsid() -> Iterator[None]:
    """open-iscsi's daemon, its default initiator name written before it starts."""
    Path(INITIATOR_NAME_FILE).write_text(f"InitiatorName={DEFAULT_INITIATOR}\n")
    # A session of its own: iscsid signals its whole process group when it stops.
    proc = subprocess.Popen(["iscsid", "-f"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: subprocess.run(["iscsiadm", "-m", "session"], capture_output=True)
             .returncode in (0, 21), "iscsid did not answer")
    yield
    subprocess.run(["iscsiadm", "-m", "node", "--logoutall=all"], capture_output=True)
    proc.terminate()
    proc.wait()


@pytest.fixture(scope="session")
def ext4_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An ext4 filesystem on a loop device, mounted."""
    base = tmp_path_factory.mktemp("ext4")
    image, mount_point = base / "fs.img", base / "mnt"
    with image.open("wb") as f:
        f.truncate(128 << 20)
    run("mkfs.ext4", "-q", str(image))
    mount_point.mkdir()
    device = run("losetup", "--find", "--show", str(image)).strip()
    run("mount", device, str(mount_point))
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
    subprocess.run(["losetup", "-d", device], capture_output=True)


@pytest.fixture(scope="session")
def ganesha(ext4_dir: Path) -> Iterator[Any]:
    from tests.support.nfsserver import NfsServer

    server = NfsServer(ext4_dir / "ganesha")
    yield server
    server.stop()


VG = "strata-guest"


@pytest.fixture(scope="session")
def lvm_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A volume group on a loop device, with a thin pool. udev may not run in the
    guest: LVM makes its device nodes itself and waits for no udev event."""
    os.environ["DM_DISABLE_UDEV"] = "1"
    image = tmp_path_factory.mktemp("lvm") / "pv.img"
    with image.open("wb") as f:
        f.truncate(512 << 20)
    device = run("losetup", "--find", "--show", str(image)).strip()
    run("pvcreate", "--yes", device)
    run("vgcreate", "--yes", VG, device)
    run("lvcreate", "--yes", "--type", "thin-pool", "-L", "128m", "-n", "pool", VG)
    yield VG
    subprocess.run(["vgremove", "--yes", "--force", VG], capture_output=True)
    subprocess.run(["losetup", "-d", device], capture_output=True)


@pytest.fixture
def volume_group(lvm_device: str) -> Iterator[str]:
    """The group, and after each test none of the `strata-` volumes it made."""
    yield lvm_device
    names = run("lvs", "--noheadings", "-o", "lv_name", lvm_device).split()
    for name in names:
        if name.startswith("strata-"):
            subprocess.run(["lvremove", "--yes", f"{lvm_device}/{name}"], capture_output=True)
