"""A command of the agent protocol, declared once and used by both sides.

`CREATE_VOLUME = Command("create_volume", CreateVolumePayload, VolumeFacts, timeout=600,
                         idempotent=True)`
is all there is to say about a command: the agent binds its handler to it
(`@handles(CREATE_VOLUME)`), and the controller calls it (`ctx.call(host, CREATE_VOLUME,
payload, step=...)`) and gets a `VolumeFacts` back, both checked by the type checker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from shared.protocol.types import Model

P = TypeVar("P", bound=Model)
R = TypeVar("R", bound=Model)

_DECLARED: dict[str, Command[Any, Any]] = {}


@dataclass(frozen=True, eq=False)
class Command(Generic[P, R]):
    """`timeout`: how long the controller lets the task run unless the call says otherwise.
    `idempotent`: running it again after a run that was cut short (an agent restart or
    shutdown) is safe and does the same work: the cut run left no half-made output
    (temporary names, no-clobber publish) or the command converges on a state (mount,
    grant, delete, read). The controller retries only such steps (`JobContext.call`)."""

    name: str
    payload: type[P]
    result: type[R]
    timeout: float = 3600
    idempotent: bool = False

    def __post_init__(self) -> None:
        if self.name in _DECLARED:
            raise ValueError(f"agent command {self.name!r} is declared twice")
        _DECLARED[self.name] = self


def declared() -> Mapping[str, Command[Any, Any]]:
    """Every command of the protocol by name (the package imports each concern module)."""
    return MappingProxyType(_DECLARED)
