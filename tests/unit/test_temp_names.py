"""Temporary names carry the task that writes them; sweeps and error messages read them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent import fsops
from agent.tasks import TaskManager, TaskStore, current_task_id


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
