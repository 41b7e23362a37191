"""Which pytest-xdist worker this process is, so that machine-wide resources (ports,
lab subnets, tgtd control sockets) are split between the workers of one run instead of
being shared by chance. A run without xdist is worker 0 of 1."""

from __future__ import annotations

import os


def worker_index() -> int:
    """0, 1, ... from `PYTEST_XDIST_WORKER` (`gw0`, `gw1`, ...)."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def worker_count() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def share(choices: range) -> range:
    """This worker's part of `choices`: every `worker_count()`-th one, none of them any
    other worker's."""
    return choices[worker_index() % worker_count()::worker_count()]
