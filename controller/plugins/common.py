"""Pieces several storage plugins share."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.protocol import AbsPath


class DirectoryConfig(BaseModel):
    """A storage that is a directory on a host's filesystem."""

    model_config = ConfigDict(extra="forbid")
    path: AbsPath
