"""Format sniffing in Python, before `qemu-img` parses a byte of an untrusted image (after
OpenStack's format inspector): every known disk format is looked for in the header, a
file that matches more than one is refused, and a qcow2 header is read for what makes an
image unsafe to open: a backing file, an external data file, encryption, an
incompatible feature this code does not know.

Only qcow2 and raw are accepted. A raw disk may carry a partition table (MBR or GPT):
that is content, not another format.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import UnsafeImage
from shared.protocol.types import ImageFormat

# Enough for every signature below (an ISO 9660 volume descriptor sits at 32 KiB).
HEADER_SIZE = 64 << 10

QCOW2_MAGIC = b"QFI\xfb"
# qcow2 v3 incompatible feature bits: dirty, corrupt, external data file, compression
# type, extended L2 entries. Any other bit means "do not open without knowing it".
QCOW2_DIRTY, QCOW2_CORRUPT, QCOW2_DATA_FILE = 1 << 0, 1 << 1, 1 << 2
QCOW2_KNOWN_INCOMPATIBLE = (1 << 5) - 1
QCOW2_EXT_END, QCOW2_EXT_DATA_FILE = 0, 0x44415441


def _at(offset: int, magic: bytes) -> Callable[[bytes], bool]:
    return lambda h: h[offset:offset + len(magic)] == magic


# Formats other than raw, by signature. qemu-img would open several of them.
SIGNATURES: dict[str, Callable[[bytes], bool]] = {
    "qcow2": _at(0, QCOW2_MAGIC),
    "qed": _at(0, b"QED\x00"),
    "vmdk": lambda h: h[:4] == b"KDMV" or h[:21] == b"# Disk DescriptorFile",
    "vhd": _at(0, b"conectix"),
    "vhdx": _at(0, b"vhdxfile"),
    "vdi": _at(0x40, struct.pack("<I", 0xBEDA107F)),
    "luks": _at(0, b"LUKS\xba\xbe"),
    "iso": lambda h: any(h[o:o + 5] == b"CD001" for o in (0x8001, 0x8801, 0x9001)),
    "cloop": _at(0, b"#!/bin/sh\n#V2.0 Format"),
    "parallels": lambda h: h[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt"),
    "dmg": lambda h: h[:4] == b"koly",
    "bochs": _at(0, b"Bochs Virtual HD Image"),
}


@dataclass(frozen=True)
class Sniffed:
    format: ImageFormat
    # What the qcow2 header declares; a raw image's virtual size is its file size.
    virtual_size: int


def sniff(header: bytes, file_size: int) -> Sniffed:
    """The format `header` (the file's first HEADER_SIZE bytes) proves, or UnsafeImage."""
    matched = sorted(name for name, matches in SIGNATURES.items() if matches(header))
    if len(matched) > 1:
        raise UnsafeImage(f"image matches more than one format ({', '.join(matched)}); "
                          "refusing an ambiguous file")
    if not matched:
        return Sniffed("raw", file_size)
    if matched != ["qcow2"]:
        raise UnsafeImage(f"image is {matched[0]}; only qcow2 and raw are accepted")
    return Sniffed("qcow2", _qcow2_virtual_size(header))


def _qcow2_virtual_size(header: bytes) -> int:
    if len(header) < 72:
        raise UnsafeImage("qcow2 header is truncated")
    (version, backing_offset, backing_size, _cluster_bits, size,
     crypt_method) = struct.unpack_from(">IQIIQI", header, 4)
    if version not in (2, 3):
        raise UnsafeImage(f"qcow2 version {version} is not supported")
    if backing_offset or backing_size:
        raise UnsafeImage("image has a backing file")
    if crypt_method:
        raise UnsafeImage("image is encrypted")
    if version == 3:
        if len(header) < 104:
            raise UnsafeImage("qcow2 header is truncated")
        incompatible, = struct.unpack_from(">Q", header, 72)
        header_length, = struct.unpack_from(">I", header, 100)
        unknown = incompatible & ~QCOW2_KNOWN_INCOMPATIBLE
        if unknown:
            raise UnsafeImage(f"image uses unknown qcow2 incompatible features "
                              f"(bits {unknown:#x})")
        if incompatible & QCOW2_DATA_FILE or _has_data_file_extension(header, header_length):
            raise UnsafeImage("image has an external data file")
        if incompatible & QCOW2_CORRUPT:
            raise UnsafeImage("image is marked corrupt")
    return int(size)


def _has_data_file_extension(header: bytes, offset: int) -> bool:
    """Walks the header extensions that follow the header proper (8-byte aligned)."""
    while offset + 8 <= len(header):
        kind, length = struct.unpack_from(">II", header, offset)
        if kind == QCOW2_EXT_END:
            return False
        if kind == QCOW2_EXT_DATA_FILE:
            return True
        offset += 8 + (length + 7) // 8 * 8
    return False
