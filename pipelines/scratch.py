"""Where an ingest run's workers leave their results for the driver: the repository store.

    tmp/ingest/<run>/listing/NNNNNN.json   the work items of one piece (written by the driver)
    tmp/ingest/<run>/audit/NNNNNN.json     per piece: objects, inputs, rejects
    tmp/ingest/<run>/parts/PPPP.json       per id range: kept count, shard refs, duplicates
    tmp/ingest/<run>/features/PPPP.parquet features of the kept records, per id range
    tmp/ingest/<run>/state.json            the branch's dedup state the run reads (manifest)
    tmp/ingest/<run>/index/bands-KKKK.json the run's band part of key range K (a blob id)

    tmp/ingest/pieces/<key>/NNNN-<tag>-<range>.arrow, done.json
                                           a piece's outputs, keyed by its content, config,
                                           parent and ranges: a rerun of a killed run reuses
                                           the pieces it finished (done.json: the audit)

Every runner can reach the store (no shared disk needed), and no step gathers the run: each
piece and each id range writes its own object. A run killed before its commit leaves only
these unreferenced objects; the driver deletes them after the commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

SCRATCH_ROOT = "tmp/ingest/"
PIECES_ROOT = SCRATCH_ROOT + "pieces/"


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

    @property
    def progress(self) -> str:
        return self.prefix + "progress/"

    def features_part(self, part: int) -> str:
        return f"{self.features}{part:04d}.parquet"

    @property
    def state(self) -> str:
        return self.prefix + "state.json"

    @property
    def index(self) -> str:
        return self.prefix + "index/"

    def band_part(self, key: int) -> str:
        return f"{self.index}bands-{key:04d}.json"


@dataclass(frozen=True)
class PieceCache:
    """The stored outputs of one listing piece (see the module docstring)."""

    key: str

    @property
    def prefix(self) -> str:
        return f"{PIECES_ROOT}{self.key}/"

    @property
    def done(self) -> str:
        return self.prefix + "done.json"

    def output(self, n: int, tag: str, part: int) -> str:
        return f"{self.prefix}{n:06d}-{tag}-{part}.arrow"
