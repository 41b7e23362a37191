"""The shape the benchmarks share: parse the options, make a temporary work directory,
start what is measured (by default `strata-controller` on embedded defaults, with its
local agent and seeded storages), print the figures as they come, then stop everything
and remove the directory, whatever happened."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.volumes import start_embedded, wait_seeded
from cli.client import Client

MIB = 1 << 20


@dataclass
class Bench:
    """What a benchmark runs against: a controller (`api`) with a ready local primary
    storage and a `dir` backup storage, its options, and `cleanup` for anything more it
    starts (stopped before the work directory goes)."""

    work: Path
    api: Client
    primary: str
    store: str
    args: argparse.Namespace
    cleanup: ExitStack


# Starts the controller (and whatever it needs) in the work directory, registering how to
# stop it; answers the client, the primary storage and the backup storage.
Start = Callable[[Path, ExitStack], tuple[Client, str, str]]


def embedded(work: Path, cleanup: ExitStack) -> tuple[Client, str, str]:
    controller = start_embedded(work)
    cleanup.callback(controller.stop)
    api = Client(controller.url, controller.token, timeout=600)
    primary, store = wait_seeded(api)
    return api, primary, store


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def wait_ok(api: Client, accepted: dict[str, object], what: str) -> dict[str, object]:
    """The finished job of an accepted request; a failed one stops the benchmark."""
    done = api.wait_job(str(accepted["job_id"]), timeout=600)
    if done["state"] != "succeeded":
        raise RuntimeError(f"{what} failed: {done['error']}")
    return done


def run(doc: str, body: Callable[[Bench], Iterable[str]],
        options: Callable[[argparse.ArgumentParser], None] | None = None,
        start: Start = embedded) -> None:
    parser = argparse.ArgumentParser(description=doc)
    if options is not None:
        options(parser)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        api, primary, store = start(work, cleanup)
        for line in body(Bench(work, api, primary, store, args, cleanup)):
            print(line, flush=True)
