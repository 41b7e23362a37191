"""The agent protocol against a real agent process: authentication, idempotent task ids,
long-poll, cancel, deadlines, a task log that survives a restart, loopback-only debug."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import Proc, start_agent

TOKEN = "agent-test-token"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Proc, str, Path]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    proc, debug = start_agent(tmp_path / "state", token_file)
    yield proc, debug, token_file
    proc.stop()


def call(url: str, method: str = "GET", body: object = None,
         token: str | None = TOKEN) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_commands_need_the_controller_token(agent: tuple[Proc, str, Path]) -> None:
    proc, _, _ = agent
    body = {"task_id": "t1", "payload": {"seconds": 0}}
    for token in (None, "wrong"):
        status, err = call(f"{proc.url}/v1/commands/sleep", "POST", body, token=token)
        assert status == 401 and err["code"] == "unauthorized"
    status, _ = call(f"{proc.url}/v1/tasks/t1", token=None)
    assert status == 401
    status, health = call(f"{proc.url}/healthz", token=None)
    assert status == 200 and health["status"] == "ok"


def test_same_task_id_is_one_execution(agent: tuple[Proc, str, Path]) -> None:
    proc, debug, _ = agent
    body = {"task_id": "idem-1", "payload": {"seconds": 0.5}}
    first = call(f"{proc.url}/v1/commands/sleep", "POST", body)
    second = call(f"{proc.url}/v1/commands/sleep", "POST", body)
    assert first[0] == second[0] == 200
    assert first[1]["created_at"] == second[1]["created_at"]
    with urllib.request.urlopen(f"{debug}/debug/tasks") as resp:
        recent = json.loads(resp.read())["recent"]
    assert [t["task_id"] for t in recent].count("idem-1") == 1
    status, err = call(f"{proc.url}/v1/commands/host_info", "POST",
                       {"task_id": "idem-1", "payload": {}})
    assert status == 409 and err["code"] == "task_id_reused"


def test_long_poll_cancel_and_deadline(agent: tuple[Proc, str, Path]) -> None:
    proc, _, _ = agent
    # command_wait is 2s by default: a 30s sleep answers 202 (running).
    status, info = call(f"{proc.url}/v1/commands/sleep", "POST",
                        {"task_id": "long", "payload": {"seconds": 30}})
    assert status == 202 and info["state"] == "running"
    status, info = call(f"{proc.url}/v1/tasks/long?wait=1")
    assert status == 202 and 0 < info["progress"] < 100
    status, info = call(f"{proc.url}/v1/tasks/long", "DELETE")
    assert status == 200 and info["state"] == "cancelled"
    status, info = call(f"{proc.url}/v1/commands/sleep", "POST",
                        {"task_id": "late", "deadline": time.time() + 0.5,
                         "payload": {"seconds": 5}})
    assert info["state"] == "failed" and info["error"]["code"] == "timeout"
    status, err = call(f"{proc.url}/v1/tasks/nope")
    assert status == 404
    status, err = call(f"{proc.url}/v1/commands/format_disk", "POST",
                       {"task_id": "x", "payload": {}})
    assert status == 404 and err["code"] == "unknown_command"
    status, err = call(f"{proc.url}/v1/commands/delete_file", "POST",
                       {"task_id": "x", "payload": {"dir": "/tmp/../etc", "file_name": "passwd"}})
    assert status == 400 and err["code"] == "invalid_input"
    status, err = call(f"{proc.url}/v1/commands/delete_file", "POST",
                       {"task_id": "bad id!", "payload": {}})
    assert status == 400


def test_task_log_survives_restart(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    proc, _ = start_agent(tmp_path / "state", token_file)
    try:
        call(f"{proc.url}/v1/commands/sleep", "POST",
             {"task_id": "done", "payload": {"seconds": 0}})
        status, _ = call(f"{proc.url}/v1/commands/sleep", "POST",
                         {"task_id": "cut", "payload": {"seconds": 60}})
        assert status == 202
    finally:
        import signal

        proc.stop(signal.SIGKILL)
    proc, _ = start_agent(tmp_path / "state", token_file)
    try:
        status, done = call(f"{proc.url}/v1/tasks/done")
        assert status == 200 and done["state"] == "succeeded"
        status, cut = call(f"{proc.url}/v1/tasks/cut")
        assert cut["state"] == "failed" and cut["error"]["code"] == "interrupted"
    finally:
        proc.stop()


def test_debug_endpoints_only_on_loopback_listener(agent: tuple[Proc, str, Path]) -> None:
    proc, debug, _ = agent
    assert debug.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{debug}/debug/config") as resp:
        config = json.loads(resp.read())
    assert config["token"] is None or config["token"] == "***"
    assert TOKEN not in json.dumps(config)
    status, _ = call(f"{proc.url}/debug/tasks")
    assert status == 404
