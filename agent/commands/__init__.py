"""Command handlers, one module per concern; each binds itself to its protocol command
with `@handles` (see `registry`). Importing this package imports them all."""

from agent.commands import host, images, iscsi, nfs, s3, sftp, storage, volumes  # noqa: F401
from agent.commands.registry import HANDLERS, Handler

__all__ = ["HANDLERS", "Handler"]
