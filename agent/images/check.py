"""Inspection of untrusted images before anything uses them (after OpenStack's format
inspector).

A downloaded file could claim to be raw while holding a qcow2 header that points at
`/etc/shadow` as its backing file, or be crafted to make qemu-img misbehave: so its header
is sniffed in Python first (`formats`), and only then do `qemu-img info` and, for qcow2,
`qemu-img check` run, under CPU and memory limits. Sizes are capped, and every refusal is
an UnsafeImage whose reason names no path of this host.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from agent.executor import Limits
from agent.files import FileStores
from agent.images.formats import HEADER_SIZE, sniff
from agent.tools.qemuimg import ImageInfo, QemuImg, QemuImgFailed
from shared.errors import UnsafeImage
from shared.protocol.types import ImageFormat

# A crafted header must not be able to make qemu-img eat the host's memory or CPU.
INSPECT_LIMITS = Limits(cpu_seconds=30, address_space=1 << 30)


@dataclass(frozen=True)
class SafeImage:
    format: ImageFormat
    virtual_size: int


@dataclass(frozen=True)
class Inspector:
    """The tools and the caps (the agent's `max_virtual_size` and `max_image_size`)."""

    qemu_img: QemuImg
    files: FileStores
    max_virtual_size: int
    max_file_size: int

    async def inspect(self, path: str, expected_format: str | None) -> SafeImage:
        """What `path` safely is, or UnsafeImage saying why it is refused."""
        reader = await self.files.open_read(path)
        try:
            header = await reader.read(HEADER_SIZE)
        finally:
            await reader.close()
        if reader.size > self.max_file_size:
            raise UnsafeImage(f"image file is {reader.size} bytes, over the limit of "
                              f"{self.max_file_size}")
        sniffed = sniff(header, reader.size)
        self._check_virtual_size(sniffed.virtual_size)
        if expected_format and sniffed.format != expected_format:
            raise UnsafeImage(f"image is {sniffed.format}, not {expected_format} as declared")
        info = await self._qemu_img_info(path)
        if info.format != sniffed.format:
            raise UnsafeImage(f"qemu-img reads the image as {info.format!r}, its header "
                              f"says {sniffed.format}")
        if info.backing_filename or info.full_backing_filename:
            raise UnsafeImage("image has a backing file")
        if info.data_file:
            raise UnsafeImage("image has an external data file")
        if info.virtual_size <= 0:
            raise UnsafeImage("image has no valid virtual size")
        self._check_virtual_size(info.virtual_size)
        if sniffed.format == "qcow2":
            await self._qemu_img_check(path)
        return SafeImage(sniffed.format, info.virtual_size)

    def _check_virtual_size(self, size: int) -> None:
        if size > self.max_virtual_size:
            raise UnsafeImage(f"image's virtual size is {size} bytes, over the limit of "
                              f"{self.max_virtual_size}")

    async def _qemu_img_info(self, path: str) -> ImageInfo:
        try:
            return await self.qemu_img.info(path, limits=INSPECT_LIMITS)
        except QemuImgFailed as exc:
            raise _unreadable(exc, path) from None

    async def _qemu_img_check(self, path: str) -> None:
        try:
            found = await self.qemu_img.check(path, fmt="qcow2", limits=INSPECT_LIMITS)
        except QemuImgFailed as exc:
            raise _unreadable(exc, path) from None
        if found.corrupt:
            raise UnsafeImage(f"qemu-img check finds the image corrupt "
                              f"({found.corruptions} corruptions)")


def _unreadable(exc: QemuImgFailed, path: str) -> UnsafeImage:
    """qemu-img's own words, with the temporary file's name replaced."""
    detail = exc.result.stderr.strip() or exc.message
    for name in (path, posixpath.basename(path)):
        detail = detail.replace(name, "the image")
    return UnsafeImage(f"qemu-img cannot read the image: {detail}")
