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
import pyarrow.compute as pc
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
    """Joins features of one commit onto record ids: a sorted-id binary search gives table
    rows, and the rows give values (the table is decoded once, in one chunk).

    Ids absent from the table get nulls and are counted in `missing`; never raises for them.

    The loader splits the work so that its main process does no search and no random reads:
    the process that decodes a shard (a worker) searches the shard's ids once (`rows_for`,
    pure) and gathers their features into a row-major int64 block (`block_of`: the table row,
    then each feature's value as 8 bytes or a dictionary code, and a validity column where the
    feature has nulls); each batch then carries `shard_block[rows]`, and the main process
    turns its columns into lists (`add_block`: a `.tolist()` per feature), counting
    `looked_up` and `missing` there, whatever the number of workers.
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
        self._specs: list[tuple] | None = None  # per ref, see prepare()
        self._width = 1

    # -- ids -> table rows ------------------------------------------------------------------
    def lookup(self, record_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row per record id, found mask) for an 'S16' array; rows of absent ids are
        meaningless. Pure: the counters are not touched."""
        n = len(self.ids)
        if n == 0 or len(record_ids) == 0:
            return np.zeros(len(record_ids), np.int64), np.zeros(len(record_ids), bool)
        hi = _prefix64(record_ids)
        pos = np.searchsorted(self._hi, hi)
        pos[pos >= n] = n - 1
        found = self.ids[pos] == record_ids
        retry = ~found & (self._hi[pos] == hi)
        if retry.any():  # two ids of the table share their first 8 bytes: search the full id
            p = np.minimum(np.searchsorted(self.ids, record_ids[retry]), n - 1)
            pos[retry] = p
            found[retry] = self.ids[p] == record_ids[retry]
        return pos, found

    def rows_for(self, record_ids: np.ndarray) -> np.ndarray:
        """Table row per record id ('S16' array), -1 where the table lacks the id. Pure."""
        pos, found = self.lookup(record_ids)
        return pos.astype(np.int64, copy=False) if found.all() else np.where(found, pos, -1)

    def rows_of(self, record_ids: np.ndarray) -> pa.Array:
        """Row index per record id ('S16' numpy array); null where the table lacks the id."""
        pos, found = self.lookup(record_ids)
        missing = len(record_ids) - int(np.count_nonzero(found))
        self.missing += missing
        self.looked_up += len(record_ids)
        if missing:
            return pa.array(pos, pa.int64(), mask=~found)
        return pa.array(pos, pa.int64())

    # -- table rows -> values -----------------------------------------------------------------
    def prepare(self) -> FeatureJoin:
        """Decode the columns for `block_of` once (numpy views where Arrow allows them)."""
        if self._specs is None:
            specs, width = [], 1
            for c in self.table.columns:
                spec, width = _column_spec(c.chunk(0) if c.num_chunks == 1 else c.combine_chunks(), width)
                specs.append(spec)
            self._specs, self._width = specs, width
        return self

    def block_of(self, rows: np.ndarray) -> np.ndarray:
        """The int64 block of table rows (`rows_for`: -1 = absent): column 0 the row, then per
        feature its value (and validity) columns. Pure."""
        self.prepare()
        m = len(rows)
        block = np.zeros((m, self._width), np.int64)
        block[:, 0] = rows
        if m == 0 or len(self.ids) == 0:
            return block
        absent = rows < 0
        any_absent = bool(absent.any())
        safe = np.where(absent, 0, rows) if any_absent else rows
        for kind, src, vcol, valid, ccol, extra in self._specs or ():
            if kind == "take":
                continue
            block[:, vcol] = src[safe]
            if kind == "dict" and any_absent:
                block[absent, vcol] = len(extra[0]) - 1  # the None slot
            if ccol is not None:
                block[:, ccol] = valid[safe]
                if any_absent:
                    block[absent, ccol] = 0
        return block

    def add_block(self, batch: dict, block: np.ndarray, fmt: str = "python") -> None:
        """Add one entry per feature ref to `batch` from a `block_of` block (Python lists, or
        Arrow arrays for "arrow"); counts the rows and the absent ones."""
        rows = block[:, 0]
        neg = rows < 0
        absent_n = self._count(rows, neg)
        if fmt != "python":
            batch.update(self._arrays(rows, absent_n))
            return
        m = len(rows)
        absent = neg if absent_n else None
        empty = len(self.ids) == 0
        for i, (ref, (kind, _, vcol, _, ccol, extra)) in enumerate(zip(self.refs, self.prepare()._specs or ())):
            if empty:
                batch[ref] = [None] * m
            elif kind == "dict":
                batch[ref] = extra[0][block[:, vcol]].tolist()  # nulls and absent: the None slot
            elif kind == "take":
                col = self.table.column(i).chunk(0)
                idx = pa.array(rows, pa.int64()) if absent is None else pa.array(rows, pa.int64(), mask=absent)
                batch[ref] = col.take(idx).to_pylist()
            else:
                v = block[:, vcol]
                out = (v.view(extra[0]) if extra[0] is not None else v).tolist()
                bad = absent if ccol is None else block[:, ccol] == 0
                if bad is not None:
                    nbad = int(np.count_nonzero(bad))
                    if nbad == m:
                        out = [None] * m
                    elif nbad:
                        for k in np.flatnonzero(bad).tolist():
                            out[k] = None
                batch[ref] = out

    def add_rows(self, batch: dict, rows: np.ndarray, fmt: str = "python") -> None:
        """Add one entry per feature ref to `batch` from table rows (-1: absent)."""
        if fmt == "python":
            self.add_block(batch, self.block_of(rows), fmt)
        else:
            batch.update(self._arrays(rows, self._count(rows, rows < 0)))

    def columns_for(self, record_ids: np.ndarray) -> dict[str, pa.Array]:
        """{ref: Arrow array} aligned with `record_ids`."""
        rows = self.rows_for(record_ids)
        return self._arrays(rows, self._count(rows, rows < 0))

    def add_to(self, batch: dict, record_ids: pa.Array | pa.ChunkedArray, fmt: str = "python") -> None:
        """Add one entry per feature ref to `batch` (Python lists, or Arrow arrays for "arrow")."""
        self.add_rows(batch, self.rows_for(ids_as_numpy(record_ids)), fmt)

    def _arrays(self, rows: np.ndarray, absent: int) -> dict[str, pa.Array]:
        if len(self.ids) == 0:
            return {r: pa.nulls(len(rows), f.type) for r, f in zip(self.refs, self.table.schema)}
        idx = pa.array(rows, pa.int64(), mask=rows < 0) if absent else pa.array(rows, pa.int64())
        taken = self.table.take(idx)
        return {r: c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for r, c in zip(self.refs, taken.columns)}

    def _count(self, rows: np.ndarray, neg: np.ndarray) -> int:
        absent = int(np.count_nonzero(neg))
        self.missing += absent
        self.looked_up += len(rows)
        return absent


_DICT_MAX = 4096  # strings with at most max(this, rows / 8) distinct values are dictionary-coded


def _column_spec(col: pa.Array, width: int) -> tuple[tuple, int]:
    """How one feature column goes into blocks: (kind, source array, value column, validity
    array, validity column, extra), and the block width after it.

    "num": integers and floats as 8 bytes (extra = (the dtype to view them as, or None for
    int64,)), plus a validity column only when the column has nulls. "dict": strings with few
    distinct values, as codes into extra = (object array of the values + None,). "take":
    anything else, read with an Arrow take by row in `add_block`."""
    typ, n = col.type, len(col)
    valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None
    filled = col.fill_null(0) if col.null_count and (pa.types.is_integer(typ) or pa.types.is_floating(typ)) else col
    view: type | None = None
    if pa.types.is_integer(typ) and typ != pa.uint64():
        src = filled.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    elif typ == pa.uint64():
        src, view = filled.to_numpy(zero_copy_only=False).view(np.int64), np.uint64
    elif typ in (pa.float32(), pa.float64()):
        src, view = filled.to_numpy(zero_copy_only=False).astype(np.float64, copy=False).view(np.int64), np.float64
    else:
        if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_binary(typ):
            enc = pc.dictionary_encode(col) if n else None
            if enc is not None and len(enc.dictionary) <= max(_DICT_MAX, n // 8):
                d = len(enc.dictionary)
                objects = np.array(enc.dictionary.to_pylist() + [None], dtype=object)
                codes = enc.indices.fill_null(d).to_numpy(zero_copy_only=False)
                return ("dict", codes, width, None, None, (objects,)), width + 1
        return ("take", None, 0, None, None, None), width
    ccol = None
    if valid is not None:
        ccol = width + 1
    return ("num", src, width, valid, ccol, (view,)), width + 1 + (valid is not None)
