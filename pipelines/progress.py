"""Progress of an ingest run while its pipeline runs, on any runner.

Beam runners do not report metrics while a pipeline runs in the driver's process (the
DirectRunner returns only when it is done), so the run's workers leave a small marker in
the run's scratch area after each batch they read and process
(`progress/<uuid>.json`: objects, inputs, rejected, candidates), and the driver's
`RunProgress` thread counts them, with the dedup decision and the shard list once they
land. It shows a tqdm bar when stderr is a terminal, else a log line every `interval`
seconds (and one at the end). Markers are scratch like the rest: deleted after the commit,
collected by `gc` after a crash.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field


@dataclass
class ProgressCounts:
    objects: int = 0  # objects read and processed
    inputs: int = 0  # their units (objects, JSONL lines)
    rejected: int = 0
    candidates: int = 0  # units kept by the filters, before dedup
    duplicates: int | None = None  # once the dedup decision is made
    kept: int | None = None
    shards_written: bool = False
    seen: set[str] = field(default_factory=set)

    def add(self, marker: dict) -> None:
        self.objects += int(marker.get("objects", 0))
        self.inputs += int(marker.get("inputs", 0))
        self.rejected += int(marker.get("rejected", 0))
        self.candidates += int(marker.get("candidates", 0))

    def line(self, total: int) -> str:
        text = (
            f"read {self.objects}/{total} objects, {self.inputs} inputs: "
            f"{self.candidates} passed the filters, {self.rejected} rejected"
        )
        if self.duplicates is not None:
            text += f"; deduplicated: {self.kept} kept, {self.duplicates} duplicates"
        if self.shards_written:
            text += "; shards written"
        return text


class RunProgress:
    """Counts a run's progress markers in a background thread and shows them.

    `mode`: "bar" (tqdm on stderr), "log" (a line every `interval` s) or "off". Use as a
    context manager around the pipeline run; reading the store never fails the run (a
    failed poll is retried at the next tick).
    """

    def __init__(self, store, scratch, total: int, mode: str, interval: float = 10.0):
        self.store, self.scratch, self.total, self.mode = store, scratch, total, mode
        self.interval = interval
        self.counts = ProgressCounts()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._last_line = 0.0

    def __enter__(self) -> RunProgress:
        if self.mode == "off":
            return self
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total, desc="ingest", unit="obj", file=sys.stderr, dynamic_ncols=True
            )
        self._last_line = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="ingest-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self.poll()
            self._show(final=True)
        if self._bar is not None:
            self._bar.close()

    def _loop(self) -> None:
        tick = 0.5 if self.mode == "bar" else min(1.0, self.interval)
        while not self._stop.wait(tick):
            self.poll()
            self._show()

    def poll(self) -> None:
        """Read the markers that appeared since the last poll (and the decision)."""
        c = self.counts
        try:
            keys = [info.key for info in self.store.list(self.scratch.progress)]
            for key in keys:
                if key not in c.seen:
                    c.add(json.loads(self.store.get(key)))
                    c.seen.add(key)
            if c.duplicates is None and self.store.exists(self.scratch.decision):
                decision = json.loads(self.store.get(self.scratch.decision))
                c.duplicates, c.kept = len(decision["duplicates"]), decision["kept"]
            if not c.shards_written and self.store.exists(self.scratch.shards):
                c.shards_written = True
        except Exception:  # noqa: BLE001 - progress is best effort; the run decides
            return

    def _show(self, final: bool = False) -> None:
        c = self.counts
        if self._bar is not None:
            self._bar.n = c.objects
            post = f"inputs={c.inputs} rejected={c.rejected}"
            if c.duplicates is not None:
                post += f" duplicates={c.duplicates}"
            self._bar.set_postfix_str(post, refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if final or now - self._last_line >= self.interval:
            self._last_line = now
            print(f"[ingest] {c.line(self.total)}", file=sys.stderr, flush=True)


def progress_mode(progress: bool | str) -> str:
    """ "bar" on a terminal, "log" otherwise, "off" when not wanted (True/False or a mode)."""
    if isinstance(progress, str):
        return progress
    if not progress:
        return "off"
    return "bar" if sys.stderr.isatty() else "log"
