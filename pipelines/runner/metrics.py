"""Prometheus metrics of a runner: runs by status, failed attempts, records by outcome,
run durations, the last success, whether a run holds the lease."""

from __future__ import annotations

import time

from .. import run_history as rh


class RunnerMetrics:
    """Prometheus metrics of a runner. Pass a registry in tests; None uses the default."""

    def __init__(self, registry=None):
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else REGISTRY
        kw = {"registry": self.registry}
        self.runs = Counter(
            "dataversion_runner_runs", "Runs by final status.", ["branch", "status"], **kw
        )
        self.failures = Counter(
            "dataversion_runner_attempt_failures",
            "Failed ingestion attempts (retried or not).",
            ["branch", "transient"],
            **kw,
        )
        self.records = Counter(
            "dataversion_runner_records",
            "Records by outcome (kept, duplicate, rejected).",
            ["branch", "outcome"],
            **kw,
        )
        self.duration = Histogram(
            "dataversion_runner_run_duration_seconds",
            "Wall time of runs that ran the ingestion.",
            ["branch"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
            **kw,
        )
        self.last_success = Gauge(
            "dataversion_runner_last_success_timestamp_seconds",
            "When the last run succeeded (or found nothing new).",
            ["branch"],
            **kw,
        )
        self.running = Gauge(
            "dataversion_runner_running", "1 while a run holds the lease.", ["branch"], **kw
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the pod
        from prometheus_client import start_http_server

        start_http_server(port, addr=addr, registry=self.registry)

    def observe(self, rec: rh.RunRecord) -> None:
        self.runs.labels(rec.branch, rec.status).inc()
        if (
            rec.status in (rh.SUCCEEDED, rh.NOTHING_NEW, rh.FAILED, rh.ABANDONED)
            and rec.duration_s is not None
        ):
            self.duration.labels(rec.branch).observe(rec.duration_s)
        if rec.status in (rh.SUCCEEDED, rh.NOTHING_NEW):
            self.last_success.labels(rec.branch).set(time.time())
        for outcome, name in (
            ("kept", "kept"),
            ("duplicate", "duplicates"),
            ("rejected", "rejected"),
        ):
            n = rec.counts.get(name) or 0
            if n:
                self.records.labels(rec.branch, outcome).inc(n)
