"""Inspection of untrusted images before anything uses them.

A downloaded file could claim to be raw while holding a qcow2 header that points at
`/etc/shadow` as its backing file: so the format is probed, backing files and external
data files are refused, and `qemu-img info` runs under CPU and memory limits.
"""

from __future__ import annotations

from typing import Any

from agent.qemuimg import INSPECT_LIMITS, QemuImg
from shared.errors import UnsafeImage

ALLOWED_FORMATS = ("qcow2", "raw")


async def inspect(qemu_img: QemuImg, path: str, expected_format: str | None) -> dict[str, Any]:
    """Returns qemu-img's facts about `path`, or raises UnsafeImage saying why not."""
    info: dict[str, Any] = await qemu_img.info(path, limits=INSPECT_LIMITS)
    fmt = info.get("format")
    if fmt not in ALLOWED_FORMATS:
        raise UnsafeImage(f"image format {fmt!r} is not accepted (allowed: qcow2, raw)")
    if expected_format and fmt != expected_format:
        raise UnsafeImage(f"image is {fmt}, not {expected_format} as declared")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise UnsafeImage(f"image has a backing file ({info.get('backing-filename')!r})")
    data = info.get("format-specific", {}).get("data", {})
    if data.get("data-file"):
        raise UnsafeImage(f"image has an external data file ({data['data-file']!r})")
    if not isinstance(info.get("virtual-size"), int) or info["virtual-size"] <= 0:
        raise UnsafeImage("image has no valid virtual size")
    return info
