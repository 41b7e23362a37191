"""The fuzz tier's body, run inside a network namespace of its own (see test_fuzz.py):
the controller with its embedded local agent on `./dev start`'s defaults, seeded with an
image and a volume, then schemathesis against its OpenAPI document. Whatever address the
fuzzer invents for a host, an image or a store, only loopback exists in here.

Prints one JSON line: schemathesis's exit code and summary, how many requests it made,
and every resource left in a transitional state once the jobs it started have ended.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cli.client import Client
from tests.support.procs import admin_token, spawn

API = "http://127.0.0.1:8640"
FILES = ("127.0.0.2", 8000)
TRANSITIONAL = {
    "hosts": {"enrolling", "connecting"},
    "primary-storages": {"creating", "deleting", "entering_maintenance", "leaving_maintenance"},
    "backup-storages": {"creating", "deleting"},
    "images": {"allocated", "creating", "copying", "destroying"},
    "volumes": {"allocated", "creating", "copying", "resizing", "destroying", "snapshotting"},
    "snapshots": {"creating", "destroying"},
    "snapshot-backups": {"creating", "destroying"},
}
ATTACHMENT_TRANSITIONAL = {"connecting", "detaching"}
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


@contextlib.contextmanager
def file_server(directory: Path) -> Iterator[None]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(FILES, handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()


def settle(api: Client, job: dict[str, Any]) -> dict[str, Any]:
    done = api.wait_job(str(job["job_id"]), timeout=120)
    if done["state"] != "succeeded":
        raise RuntimeError(f"seeding failed: {done}")
    return done


def wait_seeded(api: Client) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stores = api.get("/v1/backup-storages")["items"]
        primaries = api.get("/v1/primary-storages")["items"]
        if (stores and stores[0]["state"] == "ready" and primaries
                and [h["state"] for h in primaries[0]["hosts"]] == ["connected"]):
            return
        time.sleep(0.5)
    raise RuntimeError("the embedded controller did not seed its storages")


def seed(api: Client, work: Path) -> dict[str, str]:
    """Objects of every kind, so that operations on ids reach their logic."""
    wait_seeded(api)
    image = work / "www" / "base.qcow2"
    image.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    ids = {"hosts": api.get("/v1/hosts")["items"][0]["id"],
           "primary-storages": api.get("/v1/primary-storages")["items"][0]["id"],
           "backup-storages": api.get("/v1/backup-storages")["items"][0]["id"]}
    with file_server(image.parent):
        ids["images"] = str(settle(api, api.post("/v1/images", {
            "name": "base", "url": f"http://{FILES[0]}:{FILES[1]}/base.qcow2",
            "backup_storage_id": ids["backup-storages"],
            "sha256": hashlib.sha256(image.read_bytes()).hexdigest()}))["resource_id"])
    job = settle(api, api.post("/v1/volumes", {
        "name": "root", "primary_storage_id": ids["primary-storages"],
        "image_id": ids["images"]}))
    ids["volumes"], ids["jobs"] = str(job["resource_id"]), str(job["id"])
    ids["snapshots"] = str(settle(api, api.post(f"/v1/volumes/{ids['volumes']}/snapshots",
                                                {"name": "snap"}))["resource_id"])
    ids["snapshot-backups"] = str(settle(api, api.post(
        f"/v1/snapshots/{ids['snapshots']}/backups",
        {"backup_storage_id": ids["backup-storages"]}))["resource_id"])
    return ids


def config(ids: dict[str, str], token: str, path: Path) -> None:
    """The admin token, and path ids of real objects for the operations on one object."""
    lines = [f'headers = {{ Authorization = "Bearer {token}" }}', ""]
    for kind, obj_id in ids.items():
        lines += ["[[operations]]", f'include-path-regex = "^/v1/{kind}/"',
                  f'parameters = {{ "path.id" = "{obj_id}", "path.host_id" = "{ids["hosts"]}" }}',
                  ""]
    path.write_text("\n".join(lines))


def wait_jobs(api: Client, limit: float) -> int:
    deadline = time.monotonic() + limit
    while True:
        running = int(api.get("/v1/jobs?state=running&limit=1&count=true")["total"])
        if running == 0 or time.monotonic() > deadline:
            return running
        time.sleep(1)


def stuck(api: Client) -> list[str]:
    found = []
    for kind, states in TRANSITIONAL.items():
        offset = 0
        while True:
            page = api.get(f"/v1/{kind}?limit=500&offset={offset}")
            for item in page["items"]:
                if item["state"] in states:
                    found.append(f"{kind} {item['id']} is {item['state']}")
                for ref in item.get("hosts", []) if kind == "primary-storages" else []:
                    if ref["state"] in ATTACHMENT_TRANSITIONAL:
                        found.append(f"{kind} {item['id']} on host {ref['host_id']} is "
                                     f"{ref['state']}")
            offset += len(page["items"])
            if page["next"] is None:
                break
    return found


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--examples", type=int, default=50)
    p.add_argument("--seed", default="1")
    args = p.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work: Path = args.work
    state = work / "state"
    state.mkdir(parents=True)
    controller = spawn("controller", ["--state-dir", str(state), "--local-agent-download-allow",
                                      f"{FILES[0]}/32"], work / "controller.log", API)
    try:
        token = admin_token(state)
        assert token is not None
        api = Client(API, token)
        ids = seed(api, work)
        config(ids, token, work / "schemathesis.toml")
        st = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "st"),
             "--config-file", str(work / "schemathesis.toml"), "run",
             f"{API}/v1/openapi.json", "--checks", CHECKS, "--max-examples", str(args.examples),
             "--phases", "coverage,fuzzing", "--workers", "1", "--seed", args.seed,
             "--request-timeout", "30", "--no-color"],
            capture_output=True, text=True, cwd=work)
        running = wait_jobs(api, 180)
        result = {"rc": st.returncode, "summary": st.stdout[-6000:], "stderr": st.stderr[-2000:],
                  "jobs_still_running": running, "stuck": stuck(api)}
    finally:
        controller.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
