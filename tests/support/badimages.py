"""Hostile images, built with qemu-img, qemu-io and struct.pack as OpenStack's format
inspector tests build theirs: each must be refused as unsafe_image."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path


def _qcow2(path: Path, size: str = "16M", data: bool = False) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    if data:
        subprocess.run(["qemu-io", "-c", "write -P 0xab 0 4M", str(path)], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def huge(directory: Path) -> Path:
    """A small file declaring a 1 PiB disk."""
    return _qcow2(directory / "huge.qcow2", "1P")


def truncated(directory: Path) -> Path:
    """A qcow2 with data, cut in half: its tables point past the end of the file."""
    path = _qcow2(directory / "truncated.qcow2", data=True)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def corrupt(directory: Path) -> Path:
    """A qcow2 whose header cluster has refcount 0: `qemu-img check` exits 2."""
    path = _qcow2(directory / "corrupt.qcow2", data=True)
    with open(path, "r+b") as f:
        table, = struct.unpack_from(">Q", f.read(56), 48)
        f.seek(table)
        block, = struct.unpack(">Q", f.read(8))
        f.seek(block)
        f.write(struct.pack(">H", 0))
    return path


def polyglot(directory: Path) -> Path:
    """A valid qcow2 that is also an ISO 9660 image (a volume descriptor at 32 KiB)."""
    path = _qcow2(directory / "polyglot.qcow2")
    with open(path, "r+b") as f:
        f.seek(0x8001)
        f.write(b"CD001")
    return path
