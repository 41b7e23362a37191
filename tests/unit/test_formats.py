"""The Python format sniffer against images made by qemu-img, and headers patched with
struct.pack where qemu-img won't make the bad case, as OpenStack's inspector tests do."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from agent.images.formats import HEADER_SIZE, Sniffed, sniff
from shared.errors import UnsafeImage


def make(tmp_path: Path, name: str, fmt: str, *extra: str, size: str = "1M") -> Path:
    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *extra, str(path), size],
                   check=True)
    return path


def header(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEADER_SIZE)


def sniff_file(path: Path) -> Sniffed:
    return sniff(header(path), path.stat().st_size)


def patched(path: Path, offset: int, value: bytes) -> Path:
    data = bytearray(path.read_bytes())
    data[offset:offset + len(value)] = value
    path.write_bytes(bytes(data))
    return path


def test_plain_qcow2_and_raw_are_accepted(tmp_path: Path) -> None:
    qcow2 = sniff_file(make(tmp_path, "a.qcow2", "qcow2", size="3M"))
    assert (qcow2.format, qcow2.virtual_size) == ("qcow2", 3 << 20)
    raw = make(tmp_path, "a.raw", "raw", size="2M")
    assert (sniff_file(raw).format, sniff_file(raw).virtual_size) == ("raw", 2 << 20)


def test_a_raw_disk_with_a_partition_table_is_raw(tmp_path: Path) -> None:
    disk = patched(make(tmp_path, "mbr.raw", "raw"), 510, b"\x55\xaa")
    patched(disk, 512, b"EFI PART")
    assert sniff_file(disk).format == "raw"


@pytest.mark.parametrize("fmt", ["vmdk", "vhdx", "vdi", "qed", "vpc"])
def test_other_formats_are_refused(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(UnsafeImage, match="only qcow2 and raw"):
        sniff_file(make(tmp_path, f"x.{fmt}", fmt))


def test_luks_is_refused(tmp_path: Path) -> None:
    path = make(tmp_path, "x.luks", "luks", "--object", "secret,id=s0,data=secret123",
                "-o", "key-secret=s0,iter-time=10")
    with pytest.raises(UnsafeImage, match="luks"):
        sniff_file(path)


def test_backing_file_is_refused(tmp_path: Path) -> None:
    base = make(tmp_path, "base.qcow2", "qcow2")
    with pytest.raises(UnsafeImage, match="backing file"):
        sniff_file(make(tmp_path, "top.qcow2", "qcow2", "-b", str(base), "-F", "qcow2"))


def test_external_data_file_is_refused(tmp_path: Path) -> None:
    path = make(tmp_path, "d.qcow2", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}")
    with pytest.raises(UnsafeImage, match="external data file"):
        sniff_file(path)


def test_encryption_is_refused(tmp_path: Path) -> None:
    path = make(tmp_path, "e.qcow2", "qcow2", "--object", "secret,id=s0,data=secret123",
                "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10")
    with pytest.raises(UnsafeImage, match="encrypted"):
        sniff_file(path)


def test_unknown_incompatible_feature_and_corrupt_bit_are_refused(tmp_path: Path) -> None:
    unknown = patched(make(tmp_path, "u.qcow2", "qcow2"), 72, struct.pack(">Q", 1 << 20))
    with pytest.raises(UnsafeImage, match="unknown qcow2 incompatible features"):
        sniff_file(unknown)
    corrupt = patched(make(tmp_path, "c.qcow2", "qcow2"), 72, struct.pack(">Q", 1 << 1))
    with pytest.raises(UnsafeImage, match="corrupt"):
        sniff_file(corrupt)


def test_a_qcow2_that_is_also_an_iso_is_refused(tmp_path: Path) -> None:
    polyglot = make(tmp_path, "p.qcow2", "qcow2", "-o", "preallocation=metadata")
    patched(polyglot, 0x8001, b"CD001")
    with pytest.raises(UnsafeImage, match="more than one format"):
        sniff_file(polyglot)


def test_truncated_or_unknown_qcow2_headers_are_refused(tmp_path: Path) -> None:
    qcow2 = header(make(tmp_path, "t.qcow2", "qcow2"))
    with pytest.raises(UnsafeImage, match="truncated"):
        sniff(qcow2[:40], 40)
    with pytest.raises(UnsafeImage, match="version 4"):
        sniff(qcow2[:4] + struct.pack(">I", 4) + qcow2[8:], len(qcow2))
