"""Where storages may keep their directories on hosts. A storage's directory is where
Strata creates subdirectories and files as root, so it is confined: below one of the
configured roots, clear of every other storage and of Strata's own state directories."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from controller.config import ControllerConfig
from shared.errors import InvalidInput

# The agents' state directory unless configured otherwise.
AGENT_STATE_DIR = "/var/lib/strata/agent"


def _within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def _overlap(a: str, b: str) -> bool:
    return _within(a, b) or _within(b, a)


@dataclass(frozen=True)
class PathPolicy:
    """`roots`: storages sit strictly below one of them; `state_dirs`: directories no
    storage may overlap; `hosting`: a state directory that storages may sit inside
    (embedded defaults seed theirs in the controller's), though never at or above it."""

    roots: tuple[str, ...]
    state_dirs: tuple[str, ...]
    hosting: str | None = None

    def check(self, paths: Iterable[str], taken: Iterable[tuple[str, str]]) -> None:
        """`taken`: (directory, the storage holding it) of every other storage."""
        taken = list(taken)
        for path in paths:
            path = posixpath.normpath(path)
            if not any(path != root and _within(path, root) for root in self.roots):
                raise InvalidInput(f"storage directory {path} is not below an allowed root "
                                   f"({', '.join(self.roots)}; the controller's "
                                   "storage_roots setting)", code="path_not_allowed")
            for state in self.state_dirs:
                inside_host = state == self.hosting and path != state and _within(path, state)
                if _overlap(path, state) and not inside_host:
                    raise InvalidInput(f"storage directory {path} overlaps Strata's state "
                                       f"directory {state}", code="path_not_allowed")
            for other, name in taken:
                if _overlap(path, posixpath.normpath(other)):
                    raise InvalidInput(f"storage directory {path} overlaps {other}, the "
                                       f"directory of storage {name}", code="path_not_allowed")


def path_policy(config: ControllerConfig) -> PathPolicy:
    """Storages stay clear of the state directories: the controller's (though on embedded
    defaults its seeded storages sit inside it), its local agent's, and the agents'
    default one."""
    embedded = config.local_agent
    return PathPolicy(
        roots=(*config.storage_roots, *([config.state_dir] if embedded else [])),
        state_dirs=(config.state_dir, posixpath.join(config.state_dir, "agent"),
                    AGENT_STATE_DIR),
        hosting=config.state_dir if embedded else None)
