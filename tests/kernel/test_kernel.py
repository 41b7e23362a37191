"""The real-kernel tier: one guest boot runs every guest test (`guest_*.py`) inside a
Debian kernel with NFS, LIO, open-iscsi and device-mapper, and each guest test is
reported here under its own name. A host that cannot boot the guest fails the tier."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernel import vm

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, vm.Outcome]:
    outdir = tmp_path_factory.mktemp("kernel")
    console = vm.boot(outdir, vm.find_kernel())
    (outdir / "console.log").write_text(console)
    report = outdir / vm.REPORT
    if not report.is_file():
        raise vm.KernelUnavailable(f"the guest wrote no test report (console in {outdir}):\n"
                                   f"{console[-6000:]}")
    return vm.read_report(report)


@pytest.mark.parametrize("name", vm.guest_tests())
def test_in_guest(guest: dict[str, vm.Outcome], name: str) -> None:
    outcome = guest.get(name)
    if outcome is None:
        pytest.fail(f"{name} did not run in the guest (see its report: {sorted(guest)})")
    if not outcome.passed:
        pytest.fail(f"{name} failed in the guest:\n{outcome.detail}", pytrace=False)


def test_every_guest_test_is_known(guest: dict[str, vm.Outcome]) -> None:
    """A guest test the source scan missed would run unreported."""
    assert set(guest) <= set(vm.guest_tests())


def test_report_reading(tmp_path: Path) -> None:
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.kernel.guest_lio" name="test_a"/>'
        '<testcase classname="tests.kernel.guest_lio" name="test_b">'
        '<failure message="boom">trace</failure></testcase>'
        '<testcase classname="tests.kernel.guest_nfs" name="test_c">'
        '<skipped message="no server"/></testcase>'
        '</testsuite></testsuites>')
    outcomes = vm.read_report(report)
    assert outcomes["guest_lio.py::test_a"] == vm.Outcome(True, "")
    assert not outcomes["guest_lio.py::test_b"].passed
    assert "boom" in outcomes["guest_lio.py::test_b"].detail
    assert not outcomes["guest_nfs.py::test_c"].passed, "a skip in the guest is no proof"


def test_missing_kernel_is_a_clear_failure(tmp_path: Path) -> None:
    with pytest.raises(vm.KernelUnavailable, match="linux-image-amd64"):
        vm.find_kernel(tmp_path / "boot", tmp_path / "modules")
