"""Temporary names carry the task that writes them; sweeps and error messages read them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from agent import fsops
from agent.commands.storage import prepare_storage
from agent.tasks import TaskManager, TaskStore, current_task_id
from shared.protocol.files import PrepareStoragePayload
from tests.unit.test_snapshot_commands import no_progress, services


def test_a_temporary_name_carries_its_task_and_its_final_name() -> None:
    assert fsops.temp_name("img-1").startswith(".strata-tmp-")
    token = current_task_id.set("cache-7:1")
    try:
        name = fsops.temp_name("img-1")
    finally:
        current_task_id.reset(token)
    token = current_task_id.set("t" * 128)
    try:
        long = fsops.temp_name("v" * 200)
    finally:
        current_task_id.reset(token)
    assert name.startswith(".strata-tmp-cache-7:1~") and name.endswith("-img-1")
    assert len(long) == fsops.NAME_MAX
    assert not fsops.is_leftover(name, {"cache-7:1"})
    assert fsops.is_leftover(name, {"other"})
    assert fsops.is_leftover(".strata-tmp-0123456789ab-img-1", {"cache-7:1"}), "older names"
    assert fsops.is_leftover(".strata-tmp-write-probe", set())
    assert not fsops.is_leftover("img-1", set())


def test_public_messages_name_final_files_outside_the_state_dir() -> None:
    message = ("qemu-img: Could not open '/srv/p/imagecache/.strata-tmp-t1~0123456789ab-img-1'"
               " and /var/lib/strata/agent/staging/.strata-tmp-0123456789ab-img-2")
    assert fsops.public_message(message, "/var/lib/strata/agent") == (
        "qemu-img: Could not open '/srv/p/imagecache/img-1' and the agent's staging/img-2")


async def test_a_task_body_sees_its_own_id_and_its_errors_are_rewritten(
        tmp_path: Path) -> None:
    manager = TaskManager(TaskStore(str(tmp_path / "t.sqlite")), str.upper)

    async def body(progress: object) -> dict[str, object]:
        await asyncio.sleep(0)
        raise OSError(f"cannot write {fsops.temp_name('vol')}")

    manager.submit("job-1", "cmd", None, body)
    done = await manager.wait("job-1", 5)
    assert done.error is not None and ".STRATA-TMP-JOB-1~" in done.error.message
    assert current_task_id.get() is None


async def test_prepare_spares_what_runs_anywhere_and_not_what_ended_here(
        tmp_path: Path) -> None:
    """A storage prepared again (a host reconnecting) keeps the temporaries of this
    agent's running tasks and of the work the controller says is in flight from other
    hosts (named by task or by job), and removes the rest: among them a step of a job
    still in flight whose attempt ran here and was cut short."""
    log = str(tmp_path / "t.sqlite")
    before = TaskManager(TaskStore(log))
    before.submit("job-2.download", "download_image", None, lambda progress: asyncio.Event().wait())
    manager = TaskManager(TaskStore(log))  # the agent killed and started again
    assert manager.ended("job-2.download") and not manager.ended("job-1.download")
    svc = replace(services(tmp_path), running_tasks=lambda: {"job-3.fill"},
                  task_ended=manager.ended)
    images = tmp_path / "store" / "images"
    images.mkdir(parents=True)
    kept = {".strata-tmp-job-3.fill~0123456789ab-a",       # running here
            ".strata-tmp-job-1.download~0123456789ab-b",   # its job runs elsewhere
            ".strata-tmp-cache-c1-2~0123456789ab-c",       # a cache filled elsewhere
            ".strata-tmp-job-2.download.a2~0123456789ab-d"}  # the next attempt, elsewhere
    removed = {".strata-tmp-job-2.download~0123456789ab-e",  # its attempt ended here
               ".strata-tmp-job-9.upload~0123456789ab-f",    # nothing runs it
               ".strata-tmp-0123456789ab-g"}                 # the older kind
    for name in kept | removed | {"img-1"}:
        (images / name).write_bytes(b"x")
    await prepare_storage(svc, PrepareStoragePayload(
        path=str(tmp_path / "store"), subdirs=["images"],
        in_flight=["job-1", "job-2", "cache-c1-2"]), no_progress)
    assert {p.name for p in images.iterdir()} == kept | {"img-1"}
    await before.shutdown()
