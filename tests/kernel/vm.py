"""Boots a distro kernel under QEMU with virtme-ng and runs pytest inside it.

The host's root is shared read-only into the guest (writes to /etc, /var, /tmp and the
like land on tmpfs overlays), so the guest runs this very interpreter and checkout. The
guest's pytest writes a JUnit report to a directory shared read-write with the host,
the only guest path whose writes reach the host.

Nothing is installed here: `./dev` installs the kernel (`linux-image-amd64`), QEMU and
the guest's tools, and virtme-ng comes with the test extras. A host without them fails
the tier with `KernelUnavailable`, which names what is missing.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

# QEMU's TCG by default: nested KVM is absent or unreliable on CI runners (a hardware
# virtualized guest here hangs before its first console line). STRATA_KERNEL_KVM=1 opts in.
KVM_ENV = "STRATA_KERNEL_KVM"
# Set in the guest; the guest tests refuse to run without it.
GUEST_ENV = "STRATA_KERNEL_GUEST"
MEMORY = "2G"
CPUS = 2
# About 9 minutes alone; up to twice that while the other test worker shares the cores.
BOOT_TIMEOUT = 1800
GUEST_FILES = ("guest_lio.py", "guest_initiator.py", "guest_nfs.py", "guest_lvm.py",
               "guest_stack.py")
HERE = Path(__file__).resolve().parent
REPORT = "junit.xml"


class KernelUnavailable(RuntimeError):
    """No bootable kernel or virtme-ng on this host: the tier fails, naming what is missing."""


@dataclass(frozen=True)
class Kernel:
    image: Path
    version: str


@dataclass(frozen=True)
class Outcome:
    """One guest test's result: passed, or failed with the guest's report of why."""

    passed: bool
    detail: str


def find_kernel(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> Kernel:
    """The newest installed kernel whose modules are installed too."""
    found = []
    for image in boot.glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        if (modules / version / "modules.dep").is_file():
            found.append(Kernel(image, version))
    if not found:
        raise KernelUnavailable(
            f"no kernel with its modules under {boot} and {modules}: install "
            "linux-image-amd64 (./dev does, as root)")
    return max(found, key=lambda k: [int(n) if n.isdigit() else 0
                                     for n in re.split(r"[.-]", k.version)])


def find_vng() -> str:
    """virtme-ng's `vng`, next to this interpreter (the venv) or on PATH."""
    beside = Path(sys.executable).parent / "vng"
    if beside.is_file():
        return str(beside)
    found = shutil.which("vng")
    if found is None:
        raise KernelUnavailable("virtme-ng is not installed (pip install -e '.[test]')")
    return found


def guest_tests() -> list[str]:
    """`file::function` of every guest test, in the order the guest runs them; read from
    the source, so the outer test can be parametrized before the guest boots."""
    names = []
    for file in GUEST_FILES:
        tree = ast.parse((HERE / file).read_text())
        names += [f"{file}::{node.name}" for node in tree.body
                  if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
                  and node.name.startswith("test_")]
    return names


def guest_command(outdir: Path) -> str:
    """The guest's command line. Only pytest_asyncio is loaded, and no conftest: every
    import crosses 9p in an emulated CPU, and the guest tests need neither."""
    pytest_argv = [sys.executable, "-m", "pytest", "-p", "pytest_asyncio.plugin",
                   "--noconftest", "-p", "no:cacheprovider", "-p", "tests.kernel.guestfix",
                   "-o", "python_files=guest_*.py", "-o", "addopts=",
                   "--junitxml", str(outdir / REPORT), "-q", "-rfE", "--durations=5",
                   *(str(HERE / f) for f in GUEST_FILES)]
    return shlex.join(["env", f"{GUEST_ENV}=1", "PYTHONDONTWRITEBYTECODE=1",
                       "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1", *pytest_argv])


def boot(outdir: Path, kernel: Kernel, timeout: float = BOOT_TIMEOUT) -> str:
    """Runs the guest tests in a fresh guest, `outdir` shared read-write: the report is
    left there. Returns the guest's output (stdout, then stderr)."""
    vng = find_vng()
    argv = [vng, "--run", str(kernel.image), "--memory", MEMORY, "--cpus", str(CPUS),
            "--rwdir", str(outdir), "--exec", guest_command(outdir)]
    if os.environ.get(KVM_ENV) != "1":
        argv.insert(1, "--disable-kvm")
    # vng starts its helpers (virtme-run) by name: the venv's bin goes first on PATH.
    env = {**os.environ, "PATH": f"{Path(vng).parent}{os.pathsep}{os.environ['PATH']}"}
    try:
        proc = subprocess.run(argv, cwd=HERE.parent.parent, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace")
    except subprocess.TimeoutExpired as exc:
        raise KernelUnavailable(f"the guest did not finish within {timeout:g}s") from exc
    return proc.stdout + proc.stderr


def read_report(report: Path) -> dict[str, Outcome]:
    """`file::function` -> outcome. A skipped guest test counts as failed: the tier
    proves kernel paths, and a skip would hide that one was not proven."""
    outcomes: dict[str, Outcome] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        name = case.get("name", "").split("[", 1)[0]
        key = f"{module}.py::{name}"
        bad = [child for child in case if child.tag in ("failure", "error", "skipped")]
        detail = "\n".join(f"{c.tag}: {c.get('message', '')}\n{c.text or ''}" for c in bad)
        previous = outcomes.get(key)
        passed = not bad and (previous is None or previous.passed)
        outcomes[key] = Outcome(passed, "\n".join(filter(None, [
            previous.detail if previous else "", detail])))
    return outcomes
