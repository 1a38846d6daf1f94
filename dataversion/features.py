"""Per-commit features: the table layout, reading a commit's table, the training frame and
the loader's batch join. Needs pyarrow and numpy only (no Feast, no torch).

Each commit has at most one features table, `features/<commit id>.parquet` in the repository
store, written by the ingestion pipeline right after the commit lands (or backfilled by
`dataversion features publish`). It holds one row per record of the commit, sorted by record
id, with the commit id and time in every row, so a commit's table is the whole truth about
its features: the training frame of a commit is that table, and a loader pinned to a commit
joins from it without asking any service.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import BadInputError, NotFoundError
from .records import ids_as_numpy

FEATURES_PREFIX = "features/"

# Feature views and their features (name -> Arrow type). The Feast definitions in
# feature_repo/ declare the same names; the pipeline computes them.
FEATURE_VIEWS: dict[str, dict[str, pa.DataType]] = {
    "text_stats": {
        "char_count": pa.int64(),
        "word_count": pa.int64(),
        "pii_redactions": pa.int64(),
        "quality_score": pa.float64(),
    },
    "image_stats": {
        "width": pa.int64(),
        "height": pa.int64(),
        "image_format": pa.string(),
        "phash": pa.string(),  # 16 hex digits (Feast has no unsigned 64-bit type)
    },
    "audio_stats": {
        "duration_s": pa.float64(),
        "sample_rate": pa.int64(),
        "channels": pa.int64(),
    },
    "labels": {
        "label": pa.string(),
        "modality": pa.string(),
    },
}
# Which records each view describes (None: every record).
VIEW_MODALITY: dict[str, str | None] = {
    "text_stats": "text",
    "image_stats": "image",
    "audio_stats": "audio",
    "labels": None,
}

KEY_COLUMNS = ("record_id", "dataset_commit", "event_timestamp")
FEATURE_COLUMNS: dict[str, pa.DataType] = {
    name: typ for view in FEATURE_VIEWS.values() for name, typ in view.items()
}
# The record's own feature columns (what the pipeline computes), without commit columns.
RECORD_FEATURES_SCHEMA = pa.schema(
    [pa.field("record_id", pa.string(), nullable=False)]
    + [pa.field(n, t) for n, t in FEATURE_COLUMNS.items()]
)
FEATURES_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),  # 32 hex digits
        pa.field("dataset_commit", pa.string(), nullable=False),
        pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
    + [pa.field(n, t) for n, t in FEATURE_COLUMNS.items()]
)


def features_key(commit_id: str) -> str:
    """Store key of a commit's features table."""
    return f"{FEATURES_PREFIX}{commit_id}.parquet"


def parse_feature_refs(refs: Sequence[str]) -> list[tuple[str, str]]:
    """["view:feature", ...] -> [(view, feature)]. Raises BadInputError for unknown ones."""
    out = []
    for ref in refs:
        view, sep, name = str(ref).partition(":")
        if not sep or view not in FEATURE_VIEWS or name not in FEATURE_VIEWS[view]:
            known = [f"{v}:{n}" for v, fs in FEATURE_VIEWS.items() for n in fs]
            raise BadInputError(f"unknown feature {ref!r}; known features: {', '.join(known)}")
        out.append((view, name))
    return out


def commit_features(repo, commit_id: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A commit's features table (one chunk per column). NotFoundError if it was never written."""
    key = features_key(commit_id)
    try:
        local = repo.store.local_path(key)
        source = local if local is not None else io.BytesIO(repo.store.get(key))
        table = pq.read_table(source, columns=list(columns) if columns else None)
    except (NotFoundError, FileNotFoundError) as e:
        raise NotFoundError(
            f"commit {commit_id[:12]} has no features table ({key})",
            hint="`dataversion features publish <ref>` computes it from the commit's records",
        ) from e
    return table.combine_chunks()


def historical(repo, ref: str, features: Sequence[str] | None = None) -> pa.Table:
    """The training frame of a commit: every record it holds with its features as of it.

    One row per record (sorted by record id): record_id, dataset_commit, event_timestamp and
    the requested features (["view:feature"], default all). Pinned: later commits never
    change it. NotFoundError if the ref or the commit's features table does not exist.
    """
    commit_id = repo.resolve(ref)
    cols = None
    if features is not None:
        cols = list(KEY_COLUMNS) + [name for _, name in parse_feature_refs(features)]
    return commit_features(repo, commit_id, cols)


def _prefix64(ids: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each 'S16' id as a uint64 (order-preserving)."""
    return np.frombuffer(np.ascontiguousarray(ids).tobytes(), dtype=">u8")[::2].astype(np.uint64)


def hex_ids_to_numpy(ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """32-hex-digit record ids -> a numpy 'S16' array of the raw 16-byte ids."""
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        ids = ids.to_pylist()
    raw = bytes.fromhex("".join(ids))
    if len(raw) != 16 * len(ids):
        raise BadInputError("record ids must be 32 hex digits")
    return np.frombuffer(raw, dtype="S16")


@dataclass
class FeatureJoin:
    """Joins features of one commit onto batches of record ids: a sorted-id binary search
    and one Arrow `take` per batch (the table is decoded once, in one chunk).

    Ids absent from the table get nulls and are counted in `missing`; never raises for them.
    """

    refs: list[str]
    ids: np.ndarray  # sorted 'S16'
    table: pa.Table  # rows aligned with `ids`, one column per ref, one chunk each
    missing: int = 0
    looked_up: int = 0

    @classmethod
    def for_commit(cls, repo, commit_id: str, refs: Sequence[str]) -> FeatureJoin:
        """Load the commit's table. NotFoundError if the commit has none."""
        pairs = parse_feature_refs(refs)
        names = [name for _, name in pairs]
        table = commit_features(repo, commit_id, ["record_id", *dict.fromkeys(names)])
        return cls.from_table(table, list(refs))

    @classmethod
    def from_table(cls, table: pa.Table, refs: Sequence[str]) -> FeatureJoin:
        pairs = parse_feature_refs(refs)
        ids = hex_ids_to_numpy(table.column("record_id"))
        order = np.argsort(ids, kind="stable")
        if not np.array_equal(order, np.arange(len(ids))):
            ids = ids[order]
            table = table.take(pa.array(order))
        cols = table.select([name for _, name in pairs]).rename_columns(list(refs)).combine_chunks()
        return cls(list(refs), ids, cols)

    def __post_init__(self) -> None:
        # the first 8 bytes as an integer: a uint64 binary search is ~10x faster than on 'S16'
        self._hi = _prefix64(self.ids)

    def rows_of(self, record_ids: np.ndarray) -> pa.Array:
        """Row index per record id ('S16' numpy array); null where the table lacks the id."""
        n = len(self.ids)
        hi = _prefix64(record_ids)
        pos = np.searchsorted(self._hi, hi)
        pos[pos >= n] = n - 1
        found = self.ids[pos] == record_ids
        retry = ~found & (self._hi[pos] == hi)
        if retry.any():  # two ids of the table share their first 8 bytes: search the full id
            p = np.minimum(np.searchsorted(self.ids, record_ids[retry]), n - 1)
            pos[retry] = p
            found[retry] = self.ids[p] == record_ids[retry]
        missing = len(record_ids) - int(np.count_nonzero(found))
        self.missing += missing
        self.looked_up += len(record_ids)
        if missing:
            return pa.array(pos, pa.int64(), mask=~found)
        return pa.array(pos, pa.int64())

    def columns_for(self, record_ids: np.ndarray) -> dict[str, pa.Array]:
        """{ref: Arrow array} aligned with `record_ids`."""
        if len(self.ids) == 0:
            self.missing += len(record_ids)
            self.looked_up += len(record_ids)
            return {
                r: pa.nulls(len(record_ids), self.table.schema.field(r).type) for r in self.refs
            }
        taken = self.table.take(self.rows_of(record_ids))
        return {r: c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for r, c in zip(self.refs, taken.columns)}

    def add_to(self, batch: dict, record_ids: pa.Array | pa.ChunkedArray, fmt: str = "python") -> None:
        """Add one entry per feature ref to `batch` (Python lists, or Arrow arrays for "arrow")."""
        for ref, col in self.columns_for(ids_as_numpy(record_ids)).items():
            batch[ref] = col.to_pylist() if fmt == "python" else col
