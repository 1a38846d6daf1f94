"""PipelineRunner: one run (lease -> ingestion with retries -> history -> release) and the
schedule that starts runs (APScheduler; see the package docstring for the guarantees)."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dataversion import Repo
from dataversion.errors import DataversionError
from dataversion.lease import Lease, default_owner

from .. import run_history as rh
from .attempt import IngestError, IngestFn, RunAbandoned, run_attempt
from .metrics import RunnerMetrics
from .triggers import UTC, latest_slot

log = logging.getLogger("dataversion.runner")

DEFAULT_INGEST = "pipelines.ingest:run_ingest"


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per run and exponential backoff between them (seconds)."""

    attempts: int = 3
    backoff: float = 2.0  # first wait; doubles each retry
    max_backoff: float = 60.0


class PipelineRunner:
    """Runs `ingest(source, repo_url, branch=..., **ingest_kwargs)` on a schedule, one run at
    a time per (repo, branch) across every runner process, with a run history in the store.

    `ingest` is a picklable module-level callable or "module:function" (default: the Beam
    ingestion, `pipelines.ingest:run_ingest`); it runs in a child process and returns an
    object with `to_dict()` (or a dict) holding at least commit, inputs, kept, duplicates,
    rejected, by_modality.
    """

    def __init__(
        self,
        source: str,
        repo_url: str,
        branch: str = "main",
        *,
        ingest: str | IngestFn = DEFAULT_INGEST,
        ingest_kwargs: dict[str, Any] | None = None,
        lease_ttl: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        stop_grace: float = 20.0,
        metrics: RunnerMetrics | None = None,
        owner: str | None = None,
    ):
        self.source = source
        self.repo_url = repo_url
        self.branch = branch
        self.ingest = ingest
        self.ingest_kwargs = dict(ingest_kwargs or {})
        self.retry = retry
        self.stop_grace = stop_grace
        self.metrics = metrics
        self.owner = owner or default_owner()
        self.repo = Repo.init(repo_url)  # the lease and the history live in its store
        self.lease = Lease(self.repo.store, branch, ttl=lease_ttl, owner=self.owner)
        self._stop = threading.Event()  # no new runs, no more retries
        self._abandon = threading.Event()  # kill the current ingestion now
        self._idle = threading.Event()
        self._idle.set()
        self._run_lock = threading.Lock()  # one run at a time inside this process too

    # -------------------------------------------------------------- one run
    def run(self, slot: datetime | None = None) -> rh.RunRecord:
        """One run for `slot` (None: unscheduled, e.g. --once). Never raises for a failed run:
        the failure is in the returned (and stored) record.
        """
        with self._run_lock:
            self._idle.clear()
            try:
                return self._run(slot)
            finally:
                self._idle.set()

    def _run(self, slot: datetime | None) -> rh.RunRecord:
        started = datetime.now(UTC)
        t0 = time.monotonic()
        rec = rh.RunRecord(
            run_id=uuid.uuid4().hex[:12],
            branch=self.branch,
            source=self.source,
            status=rh.RUNNING,
            started_at=rh.iso(started),
            slot=rh.iso(slot),
            owner=self.owner,
        )
        history = rh.RunHistoryWriter(self.repo.store, rec, started)
        if self._stop.is_set():
            return rec
        slot_s = rh.iso(slot)
        if not self.lease.try_acquire({"slot": slot_s, "run_id": rec.run_id}):
            held_by = self.lease.previous.owner if self.lease.previous else "another runner"
            return self._finish(
                history,
                rh.SKIPPED_LEASE_HELD,
                t0,
                error=f"lease held by {held_by}",
                final_only=True,
            )
        try:
            prev = self.lease.previous
            prev_slot = prev.data.get("slot") if prev else None
            if slot_s is not None and prev_slot is not None and prev_slot >= slot_s:
                self.lease.release(data=prev.data)
                return self._finish(
                    history,
                    rh.SKIPPED_SLOT_DONE,
                    t0,
                    error=f"slot {slot_s} already run",
                    final_only=True,
                )
            self.lease.start_heartbeat()
            if self.metrics:
                self.metrics.running.labels(self.branch).set(1)
            history.start()
            try:
                report = self._ingest_with_retries(rec)
            except RunAbandoned as e:
                return self._finish(history, rh.ABANDONED, t0, error=str(e))
            except IngestError as e:
                return self._finish(
                    history, rh.FAILED, t0, error=f"{e.error_type}: {e}" if e.error_type else str(e)
                )
            except Exception as e:  # noqa: BLE001 - recorded; the schedule goes on
                log.exception("run %s failed", rec.run_id)
                return self._finish(history, rh.FAILED, t0, error=f"{type(e).__name__}: {e}")
            rec.commit = report.get("commit")
            rec.parent = report.get("parent")
            rec.counts = {
                k: report[k]
                for k in ("objects", "inputs", "kept", "duplicates", "rejected", "by_modality")
                if k in report
            }
            return self._finish(history, rh.SUCCEEDED if rec.commit else rh.NOTHING_NEW, t0)
        finally:
            if self.metrics:
                self.metrics.running.labels(self.branch).set(0)
            self.lease.release()

    def _finish(
        self,
        history: rh.RunHistoryWriter,
        status: str,
        t0: float,
        *,
        error: str | None = None,
        final_only: bool = False,
    ) -> rh.RunRecord:
        rec = history.record
        rec.status, rec.error = status, error
        rec.ended_at = rh.iso(datetime.now(UTC))
        rec.duration_s = round(time.monotonic() - t0, 3)
        try:
            history.write_final() if final_only else history.finish()
        except DataversionError as e:
            log.error("could not record run %s: %s", rec.run_id, e)
        if self.metrics:
            self.metrics.observe(rec)
        level = logging.WARNING if status in (rh.FAILED, rh.ABANDONED) else logging.INFO
        log.log(
            level,
            "run %s %s%s%s",
            rec.run_id,
            status,
            f" commit {rec.commit}" if rec.commit else "",
            f": {error}" if error else "",
        )
        return rec

    def _ingest_with_retries(self, rec: rh.RunRecord) -> dict[str, Any]:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        def transient(e: BaseException) -> bool:
            return isinstance(e, IngestError) and e.transient and not self._stop.is_set()

        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.retry.attempts)),
            wait=wait_exponential(multiplier=self.retry.backoff, max=self.retry.max_backoff),
            retry=retry_if_exception(transient),
            sleep=lambda s: self._stop.wait(s),  # a stop request cuts the backoff short
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                rec.attempts = attempt.retry_state.attempt_number
                if self._stop.is_set() and rec.attempts > 1:
                    raise RunAbandoned("stopped between retries")
                try:
                    return self._ingest_once()
                except IngestError as e:
                    if self.metrics:
                        self.metrics.failures.labels(self.branch, str(e.transient).lower()).inc()
                    log.warning(
                        "attempt %d of run %s failed (%s): %s",
                        rec.attempts,
                        rec.run_id,
                        "transient" if e.transient else "permanent",
                        e,
                    )
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _ingest_once(self) -> dict[str, Any]:
        """Run the ingestion in a child process; kill it if the run is abandoned."""
        return run_attempt(
            self.ingest,
            self.source,
            self.repo_url,
            self.branch,
            self.ingest_kwargs,
            abandon_reason=self._abandon_reason,
        )

    def _abandon_reason(self) -> str | None:
        if self._abandon.is_set():
            return "stopped by a signal before the run finished"
        if self.lease.lost.is_set():
            return "the lease was lost (expired or taken over) during the run"
        return None

    # -------------------------------------------------------------- scheduling
    def request_stop(self) -> None:
        """Stop scheduling; the current run may finish within `stop_grace` (signal-safe)."""
        self._stop.set()

    def _scheduled_run(self, trigger) -> None:
        self.run(latest_slot(trigger, datetime.now(UTC)))

    def serve(
        self,
        trigger=None,
        *,
        once: bool = False,
        install_signals: bool = True,
        metrics_port: int | None = None,
    ) -> int:
        """Run on `trigger` until SIGTERM/SIGINT (or `request_stop()`); with `once`, run one
        slot (the latest of `trigger`, if given) and return. Returns the exit code: 0, or 1
        when a `once` run failed.
        """
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: self.request_stop())
        if metrics_port is not None:
            if self.metrics is None:
                self.metrics = RunnerMetrics()
            self.metrics.serve(metrics_port)
        result: list[rh.RunRecord] = []
        if once:
            slot = latest_slot(trigger, datetime.now(UTC)) if trigger is not None else None
            worker = threading.Thread(target=lambda: result.append(self.run(slot)), name="run-once")
            worker.start()
            while worker.is_alive() and not self._stop.is_set():
                worker.join(0.1)
            self._wind_down()
            worker.join()
            return 1 if result and result[0].status == rh.FAILED else 0
        if trigger is None:
            raise ValueError("a trigger is needed unless once=True")
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(timezone=UTC)
        job_kwargs: dict[str, Any] = {}
        missed = self._missed_slot(trigger)
        if missed:
            job_kwargs["next_run_time"] = datetime.now(UTC)  # catch up once, now
            log.info("slot %s was not run; running once now", rh.iso(missed))
        scheduler.add_job(
            self._scheduled_run,
            trigger,
            args=(trigger,),
            id=f"ingest:{self.branch}",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
            **job_kwargs,
        )
        scheduler.start()
        log.info(
            "runner %s: %s -> %s branch %s on %s",
            self.owner,
            self.source,
            self.repo_url,
            self.branch,
            trigger,
        )
        try:
            while not self._stop.wait(0.2):
                pass
        finally:
            scheduler.shutdown(wait=False)
            self._wind_down()
        return 0

    def _missed_slot(self, trigger) -> datetime | None:
        """The latest slot before now, if no runner has run it (from the lease's record)."""
        from dataversion.lease import read_lease

        slot = latest_slot(trigger, datetime.now(UTC))
        if slot is None:
            return None
        rec = read_lease(self.repo.store, self.branch)
        last = rec.data.get("slot") if rec else None
        if (
            last is None
            and rec is None
            and not any(True for _ in self.repo.store.list(f"{rh.RUNS_PREFIX}{self.branch}/"))
        ):
            return None  # a brand-new schedule: start with the next slot
        return slot if last is None or last < rh.iso(slot) else None

    def _wind_down(self) -> None:
        """After a stop request: let the current run finish for `stop_grace` s, then abandon it."""
        self._stop.set()
        if not self._idle.wait(self.stop_grace):
            log.warning("stopping: abandoning the current run (no partial commit)")
            self._abandon.set()
            self._idle.wait(30)
        self.lease.release()
