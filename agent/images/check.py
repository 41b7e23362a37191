"""Inspection of untrusted images before anything uses them.

A downloaded file could claim to be raw while holding a qcow2 header that points at
`/etc/shadow` as its backing file: so the format is probed, backing files and external
data files are refused, and `qemu-img info` runs under CPU and memory limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.executor import Limits
from agent.tools.qemuimg import QemuImg
from shared.errors import UnsafeImage
from shared.protocol.types import ImageFormat

ALLOWED_FORMATS: dict[str, ImageFormat] = {"qcow2": "qcow2", "raw": "raw"}

# A crafted header must not be able to make qemu-img eat the host's memory or CPU.
INSPECT_LIMITS = Limits(cpu_seconds=30, address_space=1 << 30)


@dataclass(frozen=True)
class SafeImage:
    format: ImageFormat
    virtual_size: int


async def inspect(qemu_img: QemuImg, path: str, expected_format: str | None) -> SafeImage:
    """What qemu-img says of `path`, or UnsafeImage saying why it is refused."""
    info = await qemu_img.info(path, limits=INSPECT_LIMITS)
    fmt = ALLOWED_FORMATS.get(info.format)
    if fmt is None:
        raise UnsafeImage(f"image format {info.format!r} is not accepted (allowed: qcow2, raw)")
    if expected_format and fmt != expected_format:
        raise UnsafeImage(f"image is {fmt}, not {expected_format} as declared")
    if info.backing_filename or info.full_backing_filename:
        raise UnsafeImage(f"image has a backing file ({info.backing_filename!r})")
    if info.data_file:
        raise UnsafeImage(f"image has an external data file ({info.data_file!r})")
    if info.virtual_size <= 0:
        raise UnsafeImage("image has no valid virtual size")
    return SafeImage(fmt, info.virtual_size)
