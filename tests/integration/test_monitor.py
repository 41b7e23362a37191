"""The controller watches its agents: a host whose agent dies is marked disconnected
with the reason, and is reconnected (its storages attached again) when the agent is
back, without the operator. Real controller and agent processes."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from cli.client import Client
from tests.support.enrol import add_host, enrol_host
from tests.support.procs import free_port, start_agent, start_controller
from tests.support.waiting import eventually


def test_lost_agent_is_marked_then_reconnected(tmp_path: Path) -> None:
    agent, _ = start_agent(tmp_path / "agent")
    controller = start_controller(tmp_path / "controller",
                                  f"sqlite:///{tmp_path / 'strata.sqlite'}",
                                  config={"host_check_interval": 0.5})
    try:
        api = Client(controller.url, controller.token)
        host = enrol_host(api, "kvm-1", agent)
        store = api.wait_job(api.post("/v1/primary-storages", {
            "name": "local-1", "type": "local", "config": {"path": str(tmp_path / "ps")},
            "hosts": [host]})["job_id"])["resource_id"]

        agent.stop()
        lost = eventually(lambda: (h := api.get(f"/v1/hosts/{host}"))["state"] ==
                          "disconnected" and h)
        assert lost and lost["reason"].startswith("agent not answering"), lost
        port = int(agent.url.rsplit(":", 1)[1])
        agent, _ = start_agent(tmp_path / "agent", port=port)

        back = eventually(lambda: api.get(f"/v1/hosts/{host}")["state"] == "connected")
        assert back, api.get(f"/v1/hosts/{host}")
        ref = eventually(lambda: (r := api.get(f"/v1/primary-storages/{store}")["hosts"][0])
                         ["state"] == "connected" and r)
        assert ref and ref["reason"] is None
        # The host and its storages show connected a moment before the job records it.
        def settled() -> list[dict[str, Any]]:
            jobs: list[dict[str, Any]] = api.get("/v1/jobs?kind=host.connect")["items"]
            return [] if any(j["state"] == "running" for j in jobs) else jobs

        connects = eventually(settled)
        assert sorted(j["state"] for j in connects) == ["succeeded", "succeeded"], connects
    finally:
        controller.stop()
        agent.stop()


def test_an_agent_restarted_between_checks_is_reconnected_and_its_leftovers_swept(
        tmp_path: Path) -> None:
    """kill -9 and a start again, quicker than the checks come: the agent answers as a
    new instance, so the host is connected again (as it is when a check saw it down),
    and what the tasks it cut short left on its storages is removed."""
    agent, _ = start_agent(tmp_path / "agent")
    controller = start_controller(tmp_path / "controller",
                                  f"sqlite:///{tmp_path / 'strata.sqlite'}",
                                  config={"host_check_interval": 3})
    try:
        api = Client(controller.url, controller.token)
        host = enrol_host(api, "kvm-1", agent)
        api.wait_job(api.post("/v1/primary-storages", {
            "name": "local-1", "type": "local", "config": {"path": str(tmp_path / "ps")},
            "hosts": [host]})["job_id"])
        leftover = tmp_path / "ps" / "volumes" / ".strata-tmp-job-1.create~0123456789ab-v"
        leftover.write_bytes(b"half")

        agent.stop(signal.SIGKILL)
        agent, _ = start_agent(tmp_path / "agent", port=int(agent.url.rsplit(":", 1)[1]))

        def reconnected() -> list[dict[str, Any]]:
            jobs: list[dict[str, Any]] = api.get("/v1/jobs?kind=host.connect")["items"]
            done = [j for j in jobs if j["state"] == "succeeded"]
            return done if len(done) == 2 and not leftover.exists() else []

        assert eventually(reconnected), (api.get("/v1/jobs?kind=host.connect"),
                                         leftover.exists())
        assert api.get(f"/v1/hosts/{host}")["state"] == "connected"
    finally:
        controller.stop()
        agent.stop()


def test_a_host_registered_before_its_agent_runs_is_connected_when_it_answers(
        tmp_path: Path) -> None:
    """Its first connect gives up on the absent agent; the monitor connects (and so
    enrols) it as soon as the agent answers, without the operator."""
    controller = start_controller(tmp_path / "controller",
                                  f"sqlite:///{tmp_path / 'strata.sqlite'}",
                                  config={"host_check_interval": 0.5,
                                          "agent_unreachable_timeout": 1})
    agent = None
    try:
        api = Client(controller.url, controller.token)
        port = free_port()
        accepted = add_host(api, "kvm-late", f"https://127.0.0.1:{port}", tmp_path / "agent")
        job = api.wait_job(accepted["job_id"], timeout=30)
        assert job["state"] == "failed" and job["error"]["code"] == "agent_unreachable", job
        host = api.get(f"/v1/hosts/{job['resource_id']}")
        assert host["state"] == "disconnected" and not host["enrolled"]

        agent, _ = start_agent(tmp_path / "agent", port=port)
        started = time.monotonic()
        back = eventually(lambda: (h := api.get(f"/v1/hosts/{host['id']}"))["state"] ==
                          "connected" and h)
        assert back and back["enrolled"], api.get(f"/v1/hosts/{host['id']}")
        assert time.monotonic() - started < 10
    finally:
        controller.stop()
        if agent is not None:
            agent.stop()
