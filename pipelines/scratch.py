"""Where an ingest run's workers leave their results for the driver: the repository store.

    tmp/ingest/<run>/audit.json          per batch: objects, inputs, rejects
    tmp/ingest/<run>/decision.json       duplicates and the number kept
    tmp/ingest/<run>/index.npz           the dedup index after this run
    tmp/ingest/<run>/shards.json         refs of the shards written
    tmp/ingest/<run>/features/NNN.parquet  features of the kept records, per id range
    tmp/ingest/<run>/progress/<uuid>.json  per batch read: counts for the driver's progress

Every runner can reach the store (no shared disk needed); a run killed before its commit
leaves only these unreferenced objects. The driver deletes them after the commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

SCRATCH_ROOT = "tmp/ingest/"


@dataclass(frozen=True)
class RunScratch:
    """The store keys of one run's results, under `prefix` (ends with "/")."""

    prefix: str

    @classmethod
    def new(cls) -> RunScratch:
        return cls(f"{SCRATCH_ROOT}{uuid.uuid4().hex}/")

    @property
    def run_id(self) -> str:
        return self.prefix.rstrip("/").rsplit("/", 1)[-1]

    @property
    def audit(self) -> str:
        return self.prefix + "audit.json"

    @property
    def decision(self) -> str:
        return self.prefix + "decision.json"

    @property
    def index(self) -> str:
        return self.prefix + "index.npz"

    @property
    def shards(self) -> str:
        return self.prefix + "shards.json"

    @property
    def features(self) -> str:
        return self.prefix + "features/"

    @property
    def progress(self) -> str:
        return self.prefix + "progress/"

    def features_part(self, part: int) -> str:
        return f"{self.features}{part:03d}.parquet"
