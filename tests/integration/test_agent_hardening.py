"""A real agent under concurrent re-attaches, failing writes and restarts: a sweep spares
the files of running tasks, errors name no temporary path, and the agent keeps its id."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.agents import Agent, start_test_agent
from tests.support.fileserver import FileServer


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = start_test_agent(tmp_path / "agent")
    yield agent
    agent.proc.stop()


def prepare(agent: Agent, primary: Path) -> tuple[str, dict[str, object]]:
    return agent.call("prepare_storage", {"path": str(primary),
                                          "subdirs": ["volumes", "imagecache"]})


def test_reattach_while_volumes_are_made_loses_nothing(agent: Agent, tmp_path: Path) -> None:
    """15 re-attaches (each sweeps temporary files) while 40 volumes and cache copies are
    being written into the same directories: every one of them succeeds."""
    primary = tmp_path / "primary"
    assert prepare(agent, primary)[0] == "succeeded"
    source = tmp_path / "source.raw"
    source.write_bytes(b"\x5a" * (24 << 20))

    def create(i: int) -> tuple[str, dict[str, object]]:
        if i % 2:
            return agent.call("copy_image", {
                "src_path": str(source), "dest_dir": str(primary / "imagecache"),
                "file_name": f"img-{i}", "expected_format": "raw"})
        return agent.call("create_volume", {"dest_dir": str(primary / "volumes"),
                                            "file_name": f"vol-{i}", "size": 1 << 30})

    with ThreadPoolExecutor(max_workers=55) as pool:
        calls = []
        for i in range(40):  # a re-attach after every few creations, all in flight at once
            calls.append(pool.submit(create, i))
            if i % 8 in (2, 5, 7):
                calls.append(pool.submit(prepare, agent, primary))
        results = [f.result() for f in calls]
    assert len(results) == 55
    failed = [r for r in results if r[0] != "succeeded"]
    assert not failed, failed
    assert len(list((primary / "imagecache").glob("img-*"))) == 20
    assert len(list((primary / "volumes").glob("vol-*"))) == 20


def test_a_sweep_removes_what_no_running_task_writes(agent: Agent, tmp_path: Path) -> None:
    primary = tmp_path / "primary"
    assert prepare(agent, primary)[0] == "succeeded"
    leftovers = [".strata-tmp-0123456789ab-vol-old", ".strata-tmp-t-gone~0123456789ab-vol-x"]
    for name in leftovers:
        (primary / "volumes" / name).write_bytes(b"half")
    state, _ = prepare(agent, primary)
    assert state == "succeeded"
    assert list((primary / "volumes").iterdir()) == []


def test_failures_name_the_final_file_not_the_temporary_one(
        agent: Agent, tmp_path: Path, file_server: FileServer, image_dir: Path) -> None:
    primary = tmp_path / "primary"
    assert prepare(agent, primary)[0] == "succeeded"
    bad = image_dir / "broken.qcow2"
    bad.write_bytes(b"QFI\xfb\x00\x00\x00\x63" + bytes(4096))  # qcow2 version 99
    state, err = agent.call("copy_image", {
        "src_path": str(bad), "dest_dir": str(primary / "imagecache"),
        "file_name": "img-bad", "expected_format": "qcow2"})
    assert state == "failed" and err["code"] == "unsafe_image", err
    assert ".strata-tmp" not in str(err["message"]) and str(primary) not in str(err["message"])

    state, err = agent.call("create_volume", {
        "dest_dir": str(primary / "volumes"), "file_name": "vol-on-bad",
        "backing": {"path": str(bad), "format": "qcow2"}})
    assert state == "failed", err
    assert ".strata-tmp" not in str(err["message"]) and "vol-on-bad" in str(err["message"])

    # Staged in the agent's state directory on its way to S3: named without it.
    state, err = agent.call("s3_register", {
        "endpoint": {"endpoint_url": "http://127.0.0.1:1", "bucket": "bucket-1",
                     "region": "r", "access_key": "a", "secret_key": "s"},
        "url": file_server.url(bad.name), "key": "images/img-staged"})
    assert state == "failed" and err["code"] == "unsafe_image", err
    message = str(err["message"])
    assert str(tmp_path / "agent") not in message and ".strata-tmp" not in message


def test_the_agent_id_is_kept_across_restarts_and_unique(tmp_path: Path) -> None:
    def agent_id(state: Path) -> str:
        agent = start_test_agent(state)
        try:
            status, info = agent.call("host_info", {})
        finally:
            agent.proc.stop()
        assert status == "succeeded", info
        return str(info["agent_id"])

    first = agent_id(tmp_path / "a")
    assert agent_id(tmp_path / "a") == first
    assert agent_id(tmp_path / "b") != first
    assert stat.S_IMODE((tmp_path / "a" / "agent-id").stat().st_mode) == 0o600
