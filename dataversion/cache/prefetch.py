"""Background prefetch of the next shards of an order into a read tier."""

from __future__ import annotations

import logging
import threading
from typing import Any

from .base import ReadTier

log = logging.getLogger(__name__)


class Prefetcher:
    """A background thread that brings the next shards of an order into the tier (and, for
    a tier that keeps decoded copies, decodes them: `ReadTier.prepare`).

    `advance(i)` says the reader is at index i of `shard_ids`; the thread keeps up to `depth`
    shards ahead fetched. A daemon thread: it dies with its process (no orphans).
    """

    def __init__(self, tier: ReadTier, store: Any, shard_ids: list[str], depth: int = 2):
        self.tier, self.store, self.ids, self.depth = tier, store, list(shard_ids), depth
        self._target = -1
        self._done = 0
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="dataversion-prefetch", daemon=True)
        self._thread.start()

    def extend(self, shard_ids: list[str]) -> None:
        """Append shards to the order and fetch them ahead (the reader learns the order lazily)."""
        if not shard_ids:
            return
        with self._cv:
            start = len(self.ids)
            self.ids.extend(shard_ids)
            self._target = max(self._target, min(len(self.ids) - 1, start + self.depth - 1))
            self._cv.notify()

    def advance(self, index: int) -> None:
        with self._cv:
            self._target = max(self._target, min(len(self.ids) - 1, index + self.depth))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and self._done > self._target:
                    self._cv.wait()
                if self._stopped:
                    return
                i = self._done
                self._done += 1
            try:
                # a shard another process prepares now is left to it: prepare the next one
                self.tier.prepare(self.store, self.ids[i], wait=False)
            except Exception as e:  # noqa: BLE001 - the reader will hit (and report) it itself
                log.debug("prefetch of %s failed: %s", self.ids[i], e)
