"""Benchmark: the API's cost at scale, against the targets of issue 15 (P4).

Starts `strata-controller` on embedded defaults (its local agent, seeded storages) on
SQLite or (`--database postgresql`) on a PostgreSQL server of its own with fsync on. Rows
are seeded straight into the database (SQLAlchemy Core bulk inserts), first up to 1,000
volumes, 100 snapshots and 10 hosts, then up to 100,000, 10,000 and 1,000; at each size
it measures through the API:

- the create rate: `--creates` root volumes (POST plus job completion) at concurrency 16;
- `GET /v1/volumes` filtered by primary storage and state, `limit=100`: the first page,
  the first page with its `total` (`count=true`), and a keyset page (`after=`) nine
  tenths deep; p50 and p99 of `--requests` sequential requests each.

Then prints each cost at the large size over its cost at the small one (target <= 1.3)
and the p99s (target < 50 ms). Half the seeded volumes are on the measured storage (a
tenth of those in `error`), the rest on nine storages in maintenance; the seeded hosts
have no agent (disconnected, never enrolled), so nothing contacts them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.volumes import api_rate, start_embedded, wait_seeded  # noqa: E402
from cli.client import Client  # noqa: E402
from controller.db.engine import create_engine  # noqa: E402
from controller.db.models import Host, PrimaryStorage, Snapshot, Volume  # noqa: E402
from tests.support.fileserver import FileServer  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

SIZES = ((1_000, 100, 10), (100_000, 10_000, 1_000))  # volumes, snapshots, hosts
OTHER_STORAGES = 9
CHUNK = 5_000
RATIO_TARGET, P99_TARGET_MS = 1.3, 50.0


async def seed(url: str, primary: str, image: str, volumes: int, snapshots: int,
               hosts: int) -> None:
    """Inserts rows until the tables hold `volumes`, `snapshots` and `hosts`."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            others = list((await conn.scalars(select(PrimaryStorage.id).where(
                PrimaryStorage.name.like("scale-%")))).all())
            if not others:
                others = [str(uuid.uuid4()) for _ in range(OTHER_STORAGES)]
                await conn.execute(insert(PrimaryStorage), [
                    {"id": sid, "name": f"scale-{i}", "type": "dir", "state": "maintenance",
                     "config": {"path": f"/srv/scale-{i}"}} for i, sid in enumerate(others)])
            have = await conn.scalar(select(func.count()).select_from(Volume)) or 0
            now = time.time()
            rows: list[dict[str, Any]] = []
            for i in range(have, volumes):
                store = primary if i % 2 == 0 else others[i // 2 % len(others)]
                rows.append({"id": str(uuid.uuid4()), "name": f"seed-{i}",
                             "primary_storage_id": store, "image_id": image, "size": 1 << 30,
                             "path": f"/srv/seed/{i}.qcow2", "format": "qcow2",
                             "state": "error" if i % 20 == 0 else "ready",
                             "created_at": now + i * 1e-6, "updated_at": now})
            for start in range(0, len(rows), CHUNK):
                await conn.execute(insert(Volume), rows[start:start + CHUNK])
            have = await conn.scalar(select(func.count()).select_from(Snapshot)) or 0
            owners = (await conn.execute(select(Volume.id, Volume.primary_storage_id).where(
                Volume.name.like("seed-%")).limit(snapshots))).all()
            snaps = [{"id": str(uuid.uuid4()), "name": f"seed-{i}",
                      "volume_id": owners[i % len(owners)][0],
                      "primary_storage_id": owners[i % len(owners)][1],
                      "path": f"/srv/seed/snap-{i}.qcow2", "virtual_size": 1 << 30,
                      "state": "ready", "created_at": now, "updated_at": now}
                     for i in range(have, snapshots)]
            for start in range(0, len(snaps), CHUNK):
                await conn.execute(insert(Snapshot), snaps[start:start + CHUNK])
            have = await conn.scalar(select(func.count()).select_from(Host)) or 0
            if hosts > have:
                await conn.execute(insert(Host), [
                    {"id": str(uuid.uuid4()), "name": f"seed-host-{i}",
                     "address": "https://127.0.0.1:9", "state": "disconnected",
                     "reason": "seeded", "created_at": now, "updated_at": now}
                    for i in range(have, hosts)])
        if engine.dialect.name == "postgresql":
            # What autovacuum does after a bulk load (it vacuums tables on inserts too):
            # statistics for the planner, a visibility map for index-only scans.
            async with engine.connect() as conn:
                await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
                    text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()


async def latencies(base_url: str, token: str, path: str, requests: int) -> list[float]:
    """Milliseconds of `requests` sequential GETs on one keep-alive connection, after a
    few unmeasured ones."""
    out = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(requests + 5):
            start = time.perf_counter()
            async with http.get(base_url + path) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {path}: {resp.status}")
            if i >= 5:
                out.append(1000 * (time.perf_counter() - start))
    return out


def deep_cursor(api: Client, query: str, depth: float) -> tuple[str, int]:
    """The `next` cursor `depth` of the way through the filtered list (or a full page
    before its end), walked by keyset pages of 100 as a client would, and the rows it
    passed."""
    total = api.get(f"/v1/volumes?{query}&limit=1&count=true")["total"]
    seen, cursor = 0, ""
    while seen + 100 <= min(depth * total, total - 100):
        page = api.get(f"/v1/volumes?{query}&limit=100" + (f"&after={cursor}" if cursor
                                                             else ""))
        seen += len(page["items"])
        cursor = page["next"]
    return cursor, seen


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def measure(controller: Any, api: Client, primary: str, image: str, args: argparse.Namespace
            ) -> dict[str, float]:
    query = f"primary_storage_id={primary}&state=ready"
    cursor, depth = deep_cursor(api, query, 0.9)
    print(f"    keyset page after row {depth:,} of the filtered list", flush=True)
    figures: dict[str, float] = {}
    for name, path in (("first page", f"/v1/volumes?{query}&limit=100"),
                       ("first page, count=true", f"/v1/volumes?{query}&limit=100&count=true"),
                       ("keyset page", f"/v1/volumes?{query}&limit=100&after={cursor}")):
        ms = asyncio.run(latencies(controller.url, controller.token, path, args.requests))
        figures[f"{name} p50 ms"] = p(ms, 50)
        figures[f"{name} p99 ms"] = p(ms, 99)
        print(f"    {name}: p50 {p(ms, 50):.2f} ms, p99 {p(ms, 99):.2f} ms", flush=True)
    rate = asyncio.run(api_rate(controller.url, controller.token, primary, image,
                                args.creates, 16))
    figures["create ms per volume"] = 1000 / rate
    print(f"    create: {rate:.1f} volumes/s", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--creates", type=int, default=100)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    www = work / "www"
    www.mkdir()
    server = FileServer(www)
    postgres = PostgresServer(fsync=True) if args.database == "postgresql" else None
    db_url = postgres.new_database() if postgres else None
    controller = start_embedded(work, db_url)
    try:
        api = Client(controller.url, controller.token, timeout=120)
        primary, backup = wait_seeded(api)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(www / "base.qcow2"),
                        "1G"], check=True)
        image = api.wait_job(api.post("/v1/images", {
            "name": "scale-base", "url": server.url("base.qcow2"),
            "backup_storage_id": backup})["job_id"])["resource_id"]
        warm = api.wait_job(api.post("/v1/volumes", {
            "name": "warm", "primary_storage_id": primary, "image_id": image})["job_id"])
        assert warm["state"] == "succeeded", warm
        url = db_url or f"sqlite+aiosqlite:///{work / 'state' / 'strata.sqlite'}"
        print(f"scale: {args.database}, {os.cpu_count()} cores; GET /v1/volumes?"
              f"primary_storage_id=..&state=ready&limit=100, {args.requests} requests "
              f"each; {args.creates} creates at concurrency 16", flush=True)
        results = []
        for volumes, snapshots, hosts in SIZES:
            start = time.perf_counter()
            asyncio.run(seed(url, primary, image, volumes, snapshots, hosts))
            print(f"  {volumes:,} volumes, {snapshots:,} snapshots, {hosts:,} hosts "
                  f"(seeded in {time.perf_counter() - start:.1f} s):", flush=True)
            results.append(measure(controller, api, primary, image, args))
        small, large = results
        print(f"  cost at {SIZES[1][0]:,} over cost at {SIZES[0][0]:,} volumes "
              f"(target <= {RATIO_TARGET:g}); p99 target < {P99_TARGET_MS:g} ms")
        for key in small:
            print(f"    {key:<32} {small[key]:8.2f} -> {large[key]:8.2f}   "
                  f"{large[key] / small[key]:5.2f}x")
    finally:
        controller.stop()
        server.close()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
