"""Command handlers, one module per concern; each binds itself to its protocol command
with `@handles` (see `registry`). Importing this package imports them all."""

from agent.commands import (  # noqa: F401
    host,
    images,
    iscsi,
    libvirt,
    nfs,
    objects,
    s3,
    sftp,
    snapshots,
    storage,
    volumes,
)
from agent.commands.registry import HANDLERS, Handler

__all__ = ["HANDLERS", "Handler"]
