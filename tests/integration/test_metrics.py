"""Prometheus metrics from the real controller (authenticated) and the real agent's
loopback debug listener, parsed with Prometheus' own text parser, after real volume
jobs: job counts, cache hits and misses, capacity and state as the API shows them."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Stack
from tests.integration.test_end_to_end import register
from tests.support.fileserver import FileServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


def scrape(url: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def test_metrics_follow_jobs_and_rows(stack: Stack, file_server: FileServer,
                                      image_dir: Path) -> None:
    api, url = stack.api, f"{stack.controller.url}/metrics"
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(url)
    assert refused.value.code == 401

    image_id, _ = register(stack, file_server, image_dir)
    for name in ("m1", "m2"):
        stack.wait(api.post("/v1/volumes", {"name": name, "primary_storage_id":
                                            stack.primary_id, "image_id": image_id}))
    # Rows the host monitor may re-measure meanwhile: read them on both sides of a scrape.
    for _ in range(3):
        ps = api.get(f"/v1/primary-storages/{stack.primary_id}")
        samples = scrape(url, api.token)
        if api.get(f"/v1/primary-storages/{stack.primary_id}") == ps:
            break

    assert value(samples, "strata_jobs_total", kind="volume.create",
                 outcome="succeeded") == 2
    assert value(samples, "strata_job_duration_seconds_count", kind="volume.create",
                 outcome="succeeded") == 2
    assert value(samples, "strata_image_cache_lookups_total", outcome="miss") == 1
    assert value(samples, "strata_image_cache_lookups_total", outcome="hit") == 1

    labels = {"storage_kind": "primary", "id": ps["id"], "name": ps["name"]}
    for measure in ("total", "available", "allocated"):
        assert value(samples, "strata_storage_capacity_bytes", measure=measure,
                     **labels) == ps["capacity"][measure], measure
    assert value(samples, "strata_storage_state", state="ready", **labels) == 1
    host = api.get(f"/v1/hosts/{stack.host_id}")
    assert value(samples, "strata_host_state", id=host["id"], name=host["name"],
                 state=host["state"]) == 1

    agent = scrape(f"{stack.agent_debug}/metrics")
    assert value(agent, "strata_agent_task_duration_seconds_count",
                 command="create_volume", outcome="succeeded") == 2
    assert value(agent, "strata_agent_tasks_running", command="create_volume") == 0
