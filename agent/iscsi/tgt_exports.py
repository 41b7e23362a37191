"""What the `tgt` driver has set up, saved after every change: tgtd keeps its
configuration in memory only, so the driver replays this file when the agent starts. It
holds CHAP secrets; `fsops.write_state` keeps it the agent's alone."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import TypeAdapter

from agent import fsops


@dataclass
class Export:
    path: str
    chap: dict[str, str] | None
    initiators: list[str]


Exports = dict[str, Export]  # by target name
_FILE = TypeAdapter(Exports)


def load(path: str) -> Exports:
    return fsops.read_state(path, _FILE, {})


def save(path: str, exports: Exports) -> None:
    fsops.write_state(path, _FILE, exports)
