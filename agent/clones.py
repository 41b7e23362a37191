"""New qcow2 volumes without a `qemu-img` process each.

`qemu-img create -f qcow2 [-b B -F F] OUT [SIZE]` writes the same bytes whatever OUT is
and whenever it runs: the header names the backing file, and nothing of OUT or of the
time. So once two runs for one (backing, format, size) have been compared equal byte for
byte, later volumes of that key are copies of those bytes: one small write, no process.
A key is proven by this agent's own `qemu-img`; a key whose two runs differ, or whose file
is too large to keep, is never copied and always made by `qemu-img`.
"""

from __future__ import annotations

import posixpath
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from agent import fsops
from agent.files import FileStore
from agent.tools.qemuimg import QemuImg

QCOW2_MAGIC = b"QFI\xfb"
# A new overlay is a few clusters; its L1 table grows with the virtual size (1 MiB of it
# covers 64 TiB), so this bounds what a template may be.
MAX_TEMPLATE = 4 << 20
MAX_TEMPLATES = 256


@dataclass(frozen=True)
class CloneKey:
    """Everything `qemu-img create` is told. The backing file is an image cache, which is
    never rewritten, so its path stands for its contents."""

    backing: str | None
    backing_fmt: str | None
    size: int | None


def qcow2_virtual_size(head: bytes) -> int:
    """The virtual size in a qcow2 header (offset 24, big-endian)."""
    if head[:4] != QCOW2_MAGIC or len(head) < 32:
        raise ValueError("not a qcow2 header")
    size: int = struct.unpack_from(">Q", head, 24)[0]
    return size


class OverlayTemplates:
    """Proven templates, kept compressed (a new overlay is mostly zeros) and bounded in
    number; the least recently used goes first."""

    def __init__(self, qemu_img: QemuImg) -> None:
        self._qemu_img = qemu_img
        self._templates: OrderedDict[CloneKey, bytes] = OrderedDict()
        self._proving: set[CloneKey] = set()

    async def create(self, files: FileStore, final: str, key: CloneKey) -> int | None:
        """Makes the qcow2 file `final` as `qemu-img create` would and publishes it.
        Returns its virtual size when known without asking `qemu-img info`."""
        template = self._templates.get(key)
        tmp = fsops.temp_path(posixpath.dirname(final), posixpath.basename(final))
        if template is not None:
            self._templates.move_to_end(key)
            data = zlib.decompress(template)
            await files.publish_bytes(tmp, final, data)
            return qcow2_virtual_size(data)
        try:
            await self._run_qemu_img(tmp, key)
            size = await self._prove(files, tmp, key) if key not in self._proving else None
            await files.publish(tmp, final)
        finally:
            await files.remove(tmp)
        return size

    async def _run_qemu_img(self, path: str, key: CloneKey) -> None:
        await self._qemu_img.create(path, fmt="qcow2", size=key.size, backing=key.backing,
                                    backing_fmt=key.backing_fmt)

    async def _prove(self, files: FileStore, made: str, key: CloneKey) -> int | None:
        """Runs `qemu-img` once more for `key` and keeps the bytes as the key's template
        when both runs wrote the same. Concurrent creations of a key being proven just
        run `qemu-img`."""
        self._proving.add(key)
        twin = fsops.temp_path(posixpath.dirname(made), "template-proof")
        try:
            await self._run_qemu_img(twin, key)
            first = await files.read_small(made, MAX_TEMPLATE)
            second = await files.read_small(twin, MAX_TEMPLATE)
        finally:
            await files.remove(twin)
            self._proving.discard(key)
        if first is None or first != second:
            return None
        self._templates[key] = zlib.compress(first, 1)
        if len(self._templates) > MAX_TEMPLATES:
            self._templates.popitem(last=False)
        return qcow2_virtual_size(first)
