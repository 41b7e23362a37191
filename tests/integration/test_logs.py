"""One request followed through real processes: the X-Request-Id of an API call is in
the answer, in its job, in the controller's JSON log lines for the job and in the agent's
for the task the job ran."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.integration.test_end_to_end import register
from tests.support.fileserver import FileServer


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


def post(stack: Stack, path: str, body: dict[str, object],
         request_id: str) -> tuple[str, dict[str, object]]:
    req = urllib.request.Request(
        f"{stack.controller.url}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {stack.api.token}",
                 "Content-Type": "application/json", "X-Request-Id": request_id})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.headers["X-Request-Id"], json.loads(resp.read())


def json_lines(path: Path) -> list[dict[str, object]]:
    """The log's records; every line a daemon logs is one JSON object."""
    records = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    assert records, f"no JSON log lines in {path}"
    return records


def test_a_request_id_follows_a_volume_to_the_agent(stack: Stack, file_server: FileServer,
                                                    image_dir: Path) -> None:
    image_id, _ = register(stack, file_server, image_dir)
    echoed, accepted = post(stack, "/v1/volumes", {
        "name": "traced", "primary_storage_id": stack.primary_id, "image_id": image_id},
        "trace-7f3a")
    assert echoed == "trace-7f3a"
    job = stack.wait(accepted)
    assert job["request_id"] == "trace-7f3a"

    controller = json_lines(stack.state / "controller" / "controller.log")
    assert any(r.get("request_id") == "trace-7f3a" and str(job["id"]) in str(r["message"])
               for r in controller), "the job's end is logged under the request's id"
    agent = json_lines(stack.state / "agent" / "agent.log")
    assert any(r.get("request_id") == "trace-7f3a" and "create_volume" in str(r["message"])
               for r in agent), "the agent's task is logged under the request's id"
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in controller + agent)


def test_an_unfit_request_id_is_replaced(stack: Stack) -> None:
    for given in ("two words", "x" * 65, '{"forged": 1}'):
        echoed, accepted = post(stack, f"/v1/hosts/{stack.host_id}/reconnect", {}, given)
        assert echoed != given and len(echoed) == 32, echoed
        assert stack.wait(accepted)["request_id"] == echoed
