"""The agent's copy of a volume onto another storage (`copy_volume`) and the check of a
copy (`compare_volumes`), on real qemu-img and qemu-io in a temporary directory: the copy
sits on the destination's image cache and holds only what differs from it, is compared
before it is published, never overwrites, and leaves no temporary behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.commands.volumes import compare_volumes, copy_volume
from shared.errors import Conflict, NotFound
from shared.protocol.files import BackingFile
from shared.protocol.volumes import CompareVolumesPayload, CopyVolumePayload
from tests.unit.test_snapshot_commands import backing_of, no_progress, qemu_io, services


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, Path]:
    """A linked clone `src/vol.qcow2` of the cache `src/img` (0x5a at 1M), written at 4M,
    and the same image in the destination's cache `dst/img`."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src / "img"), "8M"],
                   check=True)
    qemu_io(src / "img", "write -P 0x5a 1M 1M")
    (dst / "img").write_bytes((src / "img").read_bytes())
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(src / "img"), "-F",
                    "qcow2", str(src / "vol.qcow2"), "32M"], check=True)
    qemu_io(src / "vol.qcow2", "write -P 0x11 4M 512k", "write -P 0x22 20M 64k")
    return src, dst


def payload(src: Path, dst: Path, backing: bool = True) -> CopyVolumePayload:
    return CopyVolumePayload(
        source=BackingFile(path=str(src / "vol.qcow2"), format="qcow2"),
        dest_dir=str(dst / "volumes"), file_name="vol.qcow2",
        backing=BackingFile(path=str(dst / "img"), format="qcow2") if backing else None)


async def test_copy_sits_on_the_destination_cache(tmp_path: Path,
                                                  source: tuple[Path, Path]) -> None:
    src, dst = source
    facts = await copy_volume(services(tmp_path), payload(src, dst), no_progress)
    copy = dst / "volumes" / "vol.qcow2"
    assert facts.path == str(copy) and facts.virtual_size == 32 << 20
    assert backing_of(copy) == str(dst / "img")
    qemu_io(copy, "read -P 0x5a 1M 1M", "read -P 0x11 4M 512k", "read -P 0x22 20M 64k",
            "read -P 0 8M 1M")
    assert copy.stat().st_size < 2 << 20, "the image's data is not copied again"
    assert sorted(p.name for p in (dst / "volumes").iterdir()) == ["vol.qcow2"]
    assert (src / "vol.qcow2").exists(), "the source is only read"

    whole = await copy_volume(services(tmp_path), payload(src, tmp_path / "flat", False),
                              no_progress)
    assert backing_of(Path(whole.path)) is None
    same = await compare_volumes(services(tmp_path), CompareVolumesPayload(
        first=BackingFile(path=whole.path, format="qcow2"),
        second=BackingFile(path=str(copy), format="qcow2")), no_progress)
    assert same.same
    qemu_io(copy, "write -P 0x33 4M 4k")
    differs = await compare_volumes(services(tmp_path), CompareVolumesPayload(
        first=BackingFile(path=whole.path, format="qcow2"),
        second=BackingFile(path=str(copy), format="qcow2")), no_progress)
    assert not differs.same


async def test_copy_never_overwrites_and_leaves_nothing(tmp_path: Path,
                                                        source: tuple[Path, Path]) -> None:
    src, dst = source
    (dst / "volumes").mkdir()
    (dst / "volumes" / "vol.qcow2").write_bytes(b"someone else's")
    with pytest.raises(Conflict):
        await copy_volume(services(tmp_path), payload(src, dst), no_progress)
    assert (dst / "volumes" / "vol.qcow2").read_bytes() == b"someone else's"
    (dst / "volumes" / "vol.qcow2").unlink()
    (dst / "img").unlink()
    with pytest.raises(NotFound):
        await copy_volume(services(tmp_path), payload(src, dst), no_progress)
    assert list((dst / "volumes").iterdir()) == []
