"""Issue 10 against a real agent process: the download URL policy and the inspection of
hostile images. Loopback only: images are served on 127.0.0.2, which the test agent
allows; 127.0.0.1 (with a server of its own) and the agent's own ports must be refused."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import make_image
from tests.support import badimages
from tests.support.agents import Agent, start_test_agent
from tests.support.fileserver import FileServer


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = start_test_agent(tmp_path / "agent")
    yield agent
    agent.proc.stop()


@pytest.fixture
def loopback_server(image_dir: Path) -> Iterator[FileServer]:
    """The same images on 127.0.0.1, which the policy denies."""
    server = FileServer(image_dir, host="127.0.0.1")
    yield server
    server.close()


def download(agent: Agent, tmp_path: Path, url: str) -> tuple[str, dict[str, object]]:
    return agent.call("download_image", {"url": url, "dest_dir": str(tmp_path / "cache"),
                                         "file_name": "img"})


def port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def test_downloads_reach_only_what_the_policy_allows(
        agent: Agent, tmp_path: Path, file_server: FileServer,
        loopback_server: FileServer, image_dir: Path) -> None:
    make_image(image_dir, "ok.qcow2")
    lo = loopback_server.port
    agent_port, debug_port = port(agent.proc.url), port(agent.debug_url)
    served = f"127.0.0.2:{file_server.port}/ok.qcow2"
    refused = {
        f"http://127.0.0.1:{lo}/ok.qcow2": "not among the allowed",
        f"http://localhost:{lo}/ok.qcow2": "not among the allowed",
        f"http://0x7f000001:{lo}/ok.qcow2": "not among the allowed",
        f"http://127.1:{lo}/ok.qcow2": "not among the allowed",
        f"http://127.0.0.1:{agent_port}/healthz": "this agent",
        f"http://127.0.0.1:{debug_port}/debug/config": "this agent",
        file_server.url(f"ok.qcow2?to=http://127.0.0.1:{lo}/ok.qcow2"): "not among the allowed",
        file_server.url(f"ok.qcow2?to=http://127.0.0.1:{debug_port}/debug/config"):
            "this agent",
        file_server.url("ok.qcow2?hops=6"): "more than 5 redirects",
        file_server.url(f"ok.qcow2?to=ftp://127.0.0.2:{file_server.port}/ok.qcow2"):
            "http:// or https://",
        f"http://user:pass@{served}": "credentials",
        file_server.url(f"ok.qcow2?to=http://user:pass@{served}"): "credentials",
    }
    for url, reason in refused.items():
        state, error = download(agent, tmp_path, url)
        assert state == "failed" and error["code"] == "url_refused", (url, error)
        assert reason in str(error["message"]), (url, error)
    assert loopback_server.authorizations == [], "nothing reached 127.0.0.1"
    assert set(file_server.authorizations) == {None}, "no credentials were sent"
    state, error = download(agent, tmp_path, f"ftp://{served}")
    assert state == "rejected" and error["code"] == "invalid_input", error

    for url in (file_server.url("ok.qcow2"), file_server.url("ok.qcow2?hops=5")):
        state, facts = download(agent, tmp_path, url)
        assert state == "succeeded" and facts["format"] == "qcow2", (url, facts)
        os.remove(tmp_path / "cache" / "img")


@pytest.mark.parametrize("build", [badimages.huge, badimages.truncated, badimages.corrupt,
                                   badimages.polyglot])
def test_hostile_images_are_unsafe_and_the_reason_names_no_path(
        agent: Agent, tmp_path: Path, file_server: FileServer, image_dir: Path,
        build: Callable[[Path], Path]) -> None:
    image = build(image_dir)
    state, error = download(agent, tmp_path, file_server.url(image.name))
    assert state == "failed" and error["code"] == "unsafe_image", error
    message = str(error["message"])
    for internal in (str(tmp_path), ".strata-tmp"):
        assert internal not in message, message
    assert os.listdir(tmp_path / "cache") == [], "nothing half-made is left behind"
