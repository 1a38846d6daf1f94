"""Where an ingest run's workers leave their results for the driver: the repository store.

    tmp/ingest/<run>/listing/NNNNNN.json   the work items of one piece (written by the driver)
    tmp/ingest/<run>/audit/NNNNNN.json     per piece: objects, inputs, rejects
    tmp/ingest/<run>/parts/PPPP.json       per id range: kept count, shard refs, duplicates
    tmp/ingest/<run>/features/PPPP.parquet features of the kept records, per id range
    tmp/ingest/<run>/index/PPPP.npz        dedup index entries of the kept records, per id range

Every runner can reach the store (no shared disk needed), and no step gathers the run: each
piece and each id range writes its own object. A run killed before its commit leaves only
these unreferenced objects; the driver deletes them after the commit.
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
    def listing(self) -> str:
        return self.prefix + "listing/"

    def listing_piece(self, piece: int) -> str:
        return f"{self.listing}{piece:06d}.json"

    @property
    def audit(self) -> str:
        return self.prefix + "audit/"

    def audit_piece(self, piece: int) -> str:
        return f"{self.audit}{piece:06d}.json"

    @property
    def parts(self) -> str:
        return self.prefix + "parts/"

    def part(self, part: int) -> str:
        return f"{self.parts}{part:04d}.json"

    @property
    def features(self) -> str:
        return self.prefix + "features/"

    def features_part(self, part: int) -> str:
        return f"{self.features}{part:04d}.parquet"

    @property
    def index(self) -> str:
        return self.prefix + "index/"

    def index_part(self, part: int) -> str:
        return f"{self.index}{part:04d}.npz"
