"""The agent's task manager and durable task log, in process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.tasks import TaskManager, TaskStore
from shared.errors import AgentShuttingDown, Conflict, InvalidInput
from shared.protocol.envelope import TaskState


async def test_one_execution_per_task_id(tmp_path: Path) -> None:
    manager = TaskManager(TaskStore(str(tmp_path / "t.sqlite")))
    runs = 0

    async def body(progress):
        nonlocal runs
        runs += 1
        progress(40)
        await asyncio.sleep(0.05)
        return {"n": runs}

    first = manager.submit("t", "cmd", None, body)
    again = manager.submit("t", "cmd", None, body)
    assert first is again and first.state is TaskState.RUNNING
    done = await manager.wait("t", 5)
    assert done.state is TaskState.SUCCEEDED and done.result == {"n": 1} and runs == 1
    assert manager.submit("t", "cmd", None, body).result == {"n": 1}
    with pytest.raises(Conflict):
        manager.submit("t", "other", None, body)


async def test_failures_keep_code_and_message(tmp_path: Path) -> None:
    store = TaskStore(str(tmp_path / "t.sqlite"))
    manager = TaskManager(store)

    async def bad(progress):
        raise InvalidInput("nope")

    async def crash(progress):
        raise RuntimeError("boom")

    manager.submit("a", "cmd", None, bad)
    manager.submit("b", "cmd", None, crash)
    a, b = await manager.wait("a", 5), await manager.wait("b", 5)
    assert a.state is TaskState.FAILED and a.error and a.error.code == "invalid_input"
    assert b.error and b.error.code == "internal_error" and "boom" in b.error.message
    assert (tmp_path / "t.sqlite").stat().st_mode & 0o777 == 0o600
    # Read back from disk, not from memory.
    stored = store.get("a")
    assert stored and stored.error and stored.error.message == "nope"


async def test_interrupted_tasks_are_marked_at_start(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sqlite")
    manager = TaskManager(TaskStore(path))

    async def forever(progress):
        await asyncio.sleep(3600)
        return {}

    manager.submit("cut", "cmd", None, forever)
    # A second manager on the same file is what a restarted agent sees.
    restarted = TaskManager(TaskStore(path))
    info = restarted.get("cut")
    assert info and info.state is TaskState.FAILED and info.error
    assert info.error.code == "interrupted"
    await manager.shutdown()


async def test_a_drain_lets_tasks_finish_within_the_grace_then_interrupts_the_rest(
        tmp_path: Path) -> None:
    store = TaskStore(str(tmp_path / "t.sqlite"))
    manager = TaskManager(store)

    async def quick(progress):
        await asyncio.sleep(0.1)
        return {"done": True}

    async def forever(progress):
        await asyncio.sleep(3600)
        return {}

    manager.submit("quick", "cmd", None, quick)
    manager.submit("long", "cmd", None, forever)
    drain = asyncio.create_task(manager.drain(0.5))
    await asyncio.sleep(0)
    with pytest.raises(AgentShuttingDown) as refused:
        manager.submit("new", "cmd", None, quick)
    assert refused.value.status == 503 and refused.value.code == "agent_shutting_down"
    # A task it already has is still answered (the controller re-attaching).
    assert manager.submit("long", "cmd", None, forever).state is TaskState.RUNNING
    assert await drain == 1
    quick_info, long_info = store.get("quick"), store.get("long")
    assert quick_info and quick_info.state is TaskState.SUCCEEDED
    assert long_info and long_info.state is TaskState.FAILED and long_info.error
    assert long_info.error.code == "interrupted"
    assert long_info.error.message.startswith("agent shutting down after 0.5s grace")
    assert store.get("new") is None
