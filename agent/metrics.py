"""Prometheus metrics of the agent's tasks, served on the loopback debug listener (the
protocol listener answers only the controller)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram

TASK_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class TaskMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._seconds = Histogram(
            "strata_agent_task_duration_seconds", "Agent task run times",
            ["command", "outcome"], buckets=TASK_BUCKETS, registry=self.registry)
        self._running = Gauge("strata_agent_tasks_running", "Agent tasks running now",
                              ["command"], registry=self.registry)

    def started(self, command: str) -> None:
        self._running.labels(command).inc()

    def finished(self, command: str, outcome: str, seconds: float) -> None:
        self._running.labels(command).dec()
        self._seconds.labels(command, outcome).observe(max(seconds, 0.0))
