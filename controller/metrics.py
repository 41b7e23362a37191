"""Prometheus metrics of the controller: jobs by kind and outcome, image cache hits and
misses, and, read from the rows at each scrape, capacity and the state of every storage
and host, and each storage's health as each host's last probe found it. Each controller
app has a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import (
    BackupStorage,
    Health,
    Host,
    PrimaryStorage,
    PrimaryStorageHostRef,
)

# Job durations run from milliseconds (a linked clone) to hours (a large copy).
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._jobs = Counter("strata_jobs", "Jobs finished", ["kind", "outcome"],
                             registry=self.registry)
        self._job_seconds = Histogram(
            "strata_job_duration_seconds", "Time from a job's creation to its end",
            ["kind", "outcome"], buckets=JOB_BUCKETS, registry=self.registry)
        self._cache = Counter(
            "strata_image_cache_lookups",
            "Image caches asked for by new volumes: found ready (hit) or to be filled (miss)",
            ["outcome"], registry=self.registry)
        self._capacity = Gauge(
            "strata_storage_capacity_bytes",
            "Storage capacity: total and available as measured, allocated as promised",
            ["storage_kind", "id", "name", "measure"], registry=self.registry)
        self._storage_state = Gauge(
            "strata_storage_state", "1 for the state each storage is in",
            ["storage_kind", "id", "name", "state"], registry=self.registry)
        self._storage_health = Gauge(
            "strata_storage_health",
            "1 when the last probe from the host found the storage healthy, 0 when not",
            ["storage_kind", "id", "name", "host_id"], registry=self.registry)
        self._host_state = Gauge("strata_host_state", "1 for the state each host is in",
                                 ["id", "name", "state"], registry=self.registry)
        self._leader = Gauge(
            "strata_controller_leader",
            "1 while this controller leads (runs the host monitor and periodic work)",
            registry=self.registry)

    def job_finished(self, kind: str, outcome: str, seconds: float) -> None:
        self._jobs.labels(kind, outcome).inc()
        self._job_seconds.labels(kind, outcome).observe(max(seconds, 0.0))

    def leader(self, leading: bool) -> None:
        self._leader.set(1 if leading else 0)

    def cache_lookup(self, hit: bool) -> None:
        self._cache.labels("hit" if hit else "miss").inc()

    async def render(self, session: AsyncSession) -> bytes:
        """The exposition text, with the gauges read from the rows now: a storage or host
        that was deleted leaves no stale series behind."""
        for gauge in (self._capacity, self._storage_state, self._storage_health,
                      self._host_state):
            gauge.clear()
        stores = (await session.scalars(select(PrimaryStorage))).all()
        for ps in stores:
            labels = ("primary", ps.id, ps.name)
            self._storage_state.labels(*labels, ps.state).set(1)
            for measure, value in (("total", ps.capacity_total),
                                   ("available", ps.capacity_available),
                                   ("allocated", ps.capacity_allocated)):
                self._capacity.labels(*labels, measure).set(value)
        names = {ps.id: ps.name for ps in stores}
        for ref in (await session.scalars(select(PrimaryStorageHostRef).where(
                PrimaryStorageHostRef.health.in_((Health.HEALTHY, Health.UNHEALTHY))))).all():
            self._storage_health.labels(
                "primary", ref.primary_storage_id, names.get(ref.primary_storage_id, ""),
                ref.host_id).set(1 if ref.health == Health.HEALTHY else 0)
        for bs in (await session.scalars(select(BackupStorage))).all():
            labels = ("backup", bs.id, bs.name)
            self._storage_state.labels(*labels, bs.state).set(1)
            for measure, value in (("total", bs.capacity_total),
                                   ("available", bs.capacity_available)):
                self._capacity.labels(*labels, measure).set(value)
        for host in (await session.scalars(select(Host))).all():
            self._host_state.labels(host.id, host.name, host.state).set(1)
        return generate_latest(self.registry)
