"""The storage health probe against real processes: a local storage and an NFS storage
on nfs-ganesha (libnfs), both attached to one host. The server is stopped (SIGSTOP):
the NFS storage shows unhealthy on that host, in the API and in the metrics, within a
bounded time, with the agent answering meanwhile and the local storage healthy; once
the server runs again, healthy again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.integration.test_metrics import scrape, value
from tests.integration.test_nfs import nfs_storage
from tests.support.nfsserver import NfsServer

TIMEOUT = 2.0
# A round every half second, each probe bounded by TIMEOUT: any change shows within
# interval + timeout + the time to record it; 10 s leaves room for a loaded machine.
BOUND = 10.0


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


def attachment(stack: Stack, store_id: str) -> dict[str, Any]:
    (ref,) = stack.api.get(f"/v1/primary-storages/{store_id}")["hosts"]
    return dict(ref)


def within(bound: float, ready: Callable[[], bool], what: str) -> float:
    """Seconds until `ready()`; fails past `bound`."""
    started = time.monotonic()
    while not ready():
        assert time.monotonic() - started < bound, what
        time.sleep(0.1)
    return time.monotonic() - started


def test_a_stopped_nfs_server_shows_unhealthy(stack: Stack, nfs: NfsServer) -> None:
    stack.restart_controller({"storage_probe_interval": 0.5,
                              "storage_probe_timeout": TIMEOUT})
    share = nfs.share("health")
    nfs_id = nfs_storage(stack, nfs, share, [stack.host_id])
    metrics = f"{stack.controller.url}/metrics"

    def health(store_id: str) -> str | None:
        return attachment(stack, store_id)["health"]

    within(BOUND, lambda: health(nfs_id) == health(stack.primary_id) == "healthy",
           "both storages proven healthy")
    labels = {"storage_kind": "primary", "id": nfs_id, "name": f"nfs-{share.name}",
              "host_id": stack.host_id}
    # A scrape reads the rows anew; a probe slowed by a busy machine may flip them.
    within(BOUND, lambda: value(scrape(metrics, stack.api.token), "strata_storage_health",
                                **labels) == 1, "the gauge shows the storage healthy")

    with nfs.hung():
        took = within(BOUND, lambda: health(nfs_id) == "unhealthy", "unhealthy in time")
        ref = attachment(stack, nfs_id)
        assert "heartbeat" in ref["health_reason"], ref
        assert value(scrape(metrics, stack.api.token), "strata_storage_health",
                     **labels) == 0
        # Later rounds find the first heartbeat still blocked and take no second thread.
        within(BOUND, lambda: "blocked for" in (attachment(stack, nfs_id)["health_reason"]
                                                or ""), "no pile-up of probes")
        checked = attachment(stack, stack.primary_id)
        assert checked["health"] == "healthy", "the local storage is not held up"
        within(BOUND, lambda: attachment(stack, stack.primary_id)["health_checked_at"]
               > checked["health_checked_at"], "rounds go on while the server is down")
    back = within(BOUND + 30, lambda: health(nfs_id) == "healthy", "healthy again")
    print(f"unhealthy after {took:.1f}s; healthy again {back:.1f}s after the server ran")
