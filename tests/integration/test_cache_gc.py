"""Image cache collection against a real controller and agent, on a local storage with
real cache files: a cache a volume sits on stays, unused ones go least recently used
first; a dry run removes nothing; settings and the last run through the API and CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cli.client import ApiError
from tests.conftest import Stack
from tests.integration.test_cli import strata
from tests.integration.test_end_to_end import register
from tests.support.fileserver import FileServer


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'controller' / 'strata.sqlite'}"


def test_unused_caches_go_lru_first(stack: Stack, file_server: FileServer,
                                    image_dir: Path) -> None:
    api, ps = stack.api, stack.primary_id
    gc = f"/v1/primary-storages/{ps}/cache-gc"
    assert api.get(gc) == {"storage_id": ps, "last_run": None,
                           "settings": {"high_watermark": 85.0, "low_watermark": 70.0}}
    images = {}
    for name in ("kept", "older", "newer"):
        images[name], _ = register(stack, file_server, image_dir, name=name, size="2M")
    volumes = {}
    for name in ("kept", "older", "newer"):  # made in this order: older is used first
        job = stack.wait(api.post("/v1/volumes", {"name": name, "primary_storage_id": ps,
                                                  "image_id": images[name]}))
        volumes[name] = str(job["resource_id"])
    for name in ("older", "newer"):
        stack.wait(api.delete(f"/v1/volumes/{volumes[name]}"))
    caches = stack.primary_path / "imagecache"
    assert {p.name for p in caches.iterdir()} == set(images.values())

    with pytest.raises(ApiError) as bad:
        api.request("PUT", gc, {"high_watermark": 10, "low_watermark": 20})
    assert (bad.value.status, bad.value.code) == (400, "invalid_input")
    # Any used disk is above 0.001%; the low mark 0 is never reached: all unused go.
    out = strata(stack, "--json", "ps", "cache-gc", "local-a", "--high", "0.001", "--low", "0")
    assert json.loads(out.stdout)["settings"] == {"high_watermark": 0.001, "low_watermark": 0}

    stack.wait(api.post(f"{gc}/run", {"dry_run": True}))
    run = api.get(gc)["last_run"]
    assert run["dry_run"] and run["in_use"] == 1
    assert [r["image_id"] for r in run["removed"]] == [images["older"], images["newer"]]
    assert {p.name for p in caches.iterdir()} == set(images.values()), "a dry run removes none"

    out = strata(stack, "ps", "cache-gc-run", "local-a", "--wait")
    assert "older" in out.stdout and "newer" in out.stdout
    assert {p.name for p in caches.iterdir()} == {images["kept"]}
    run = api.get(gc)["last_run"]
    assert not run["dry_run"] and len(run["removed"]) == 2 and run["failed"] == []
    assert run["used_percent_before"] > 0
    kept = api.get(f"/v1/volumes/{volumes['kept']}")
    subprocess.run(["qemu-img", "check", "-q", kept["path"]], check=True)

    # A collected image is cached again on demand.
    job = stack.wait(api.post("/v1/volumes", {"name": "again", "primary_storage_id": ps,
                                              "image_id": images["older"]}))
    assert Path(api.get(f"/v1/volumes/{job['resource_id']}")["path"]).is_file()
    assert (caches / images["older"]).is_file()
