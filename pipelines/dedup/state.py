"""The branch's near-duplicate state, stored like the records: content-addressed objects
shared between commits, a change writes in proportion to itself.

A commit's `dedup_state` attachment is a small manifest of *runs* (an LSM tree's sorted
runs). Each ingest adds one run holding its kept records' entries, in two partitionings:

- band rows (band, key, record id) split by band-key range: what a bucket step reads;
- hashes (record id, MinHash signature or pHash) split by record-id range: what
  verification reads.

Every part is one blob (named by the hash of its bytes) and one attachment of every commit
that uses it (`dedup_state/<blob id>`), so `gc` keeps it and a commit that adds nothing to
it shares it with its parent. A band part has a *fence* beside it (`bandpages`: a blob,
attachment alike, named in the run's `band_fences`), so that a bucket step reads only the
pages of the part that can hold one of its new keys, each checked by its checksum; a part
without a fence (written before fences, or rewritten by an erasure) is read whole.

When more than `FANOUT` runs share a level, they are merged into one run of the next level
(writes amortize to O(log_FANOUT N) per entry; a +1% run onto a big branch writes ~1% of
the index). Entries of records the branch no longer holds are filtered when read, by the
branch membership test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dataversion.errors import CorruptObjectError
from dataversion.hashing import canonical_json
from dataversion.objectdb import blob_key
from dataversion.records import ids_as_numpy

from ..config import DedupRules
from . import bandpages, sharded

STATE = "dedup_state"
PART_PREFIX = "dedup_state/"
FANOUT = 8
# entries (band rows or hashes) per part, about; a run's grid is a power of two
PART_ROWS = 1 << 16
MODALITIES = ("text", "image")
# fence pages a StateParent keeps parsed (~12 bytes each in the fence, ~16 in memory)
FENCE_CACHE_PAGES = 1 << 22


def part_bytes(table: pa.Table) -> bytes:
    """The table as an Arrow IPC file (grown in Arrow's memory pool and copied out once:
    ~2x faster than through io.BytesIO, the same bytes)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def write_band_part(repo, rows: pa.Table) -> tuple[str, str | None]:
    """Store band rows (sorted: `sort_bands`) as a part and its fence; (part id, fence id,
    None when the rows cannot be paged)."""
    data = part_bytes(rows.combine_chunks())
    blob = repo.put_blob(data)
    fence = bandpages.fence_bytes(blob, data)
    return blob, (repo.put_blob(fence) if fence is not None else None)


def read_part(data: bytes) -> pa.Table:
    return pa.ipc.open_file(pa.BufferReader(data)).read_all()


def sort_bands(t: pa.Table) -> pa.Table:
    """Band rows in a canonical order, by (key, band, record_id): the same part bytes
    whatever the input order. A numpy sort of the keys, then only the rows of repeated
    keys (the buckets, a few percent) sorted by all three: ~3x faster than Arrow's
    three-column sort of a 16-byte id column."""
    n = t.num_rows
    if n < 2:
        return t
    key = sharded._single(t.column("key")).to_numpy()
    order = np.argsort(key)
    sk = key[order]
    same = sk[1:] == sk[:-1]
    if same.any():
        tied = np.zeros(n, bool)
        tied[1:] |= same
        tied[:-1] |= same
        pos = np.flatnonzero(tied)  # runs of equal keys, in key order
        sub = order[pos]
        band = sharded._single(t.column("band")).to_numpy()[sub]
        hi, lo = sharded.id_words(ids_as_numpy(t.column("record_id"))[sub])
        order[pos] = sub[np.lexsort((lo, hi, band, key[sub]))]
    return t.take(pa.array(order, pa.int64()))


def hash_rows(ids: np.ndarray, h: np.ndarray) -> pa.Table:
    """(record_id, hash bytes) rows, sorted by id."""
    n = len(ids)
    if n:
        hi, lo = sharded.id_words(ids)
        order = np.lexsort((lo, hi))
        ids, h = ids[order], h[order]
    raw = np.ascontiguousarray(h).view(np.uint8).reshape(n, -1) if n else np.empty((0, 0), np.uint8)
    raw = np.ascontiguousarray(raw)
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(raw.shape[1])
    hashes = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw.reshape(-1))]
    )
    return pa.Table.from_arrays([sharded._id_col(ids), hashes], names=["record_id", "hash"])


def band_table(ids: np.ndarray, h: np.ndarray, modality: str, rules: DedupRules):
    """(band rows, their keys) of entries."""
    keys = sharded.band_keys(h, modality, rules)
    nb = keys.shape[1]
    t = pa.Table.from_arrays(
        [
            pa.array(np.tile(np.arange(nb, dtype=np.uint8), len(ids))),
            pa.array(keys.ravel()),
            sharded._id_col(np.repeat(ids, nb)),
        ],
        names=["band", "key", "record_id"],
    )
    return t, keys.ravel()


def band_parts(ids: np.ndarray, h: np.ndarray, modality: str, rules: DedupRules, parts: int):
    """[(key range, band rows)] of entries: `split_by(*band_table(...))` without the
    sort of the whole table."""
    node, band, key, spans = sharded.band_split(sharded.band_keys(h, modality, rules), parts)
    t = pa.Table.from_arrays(
        [pa.array(band), pa.array(key), sharded._id_col(ids[node])],
        names=["band", "key", "record_id"],
    )
    return [(p, t.slice(s, e - s)) for p, s, e in spans]


def grid_for(rows: int) -> int:
    """Parts of a run of `rows` entries: a power of two, ~PART_ROWS entries each."""
    g = 1
    while g * PART_ROWS < rows and g < sharded.MAX_RANGES:
        g *= 2
    return g


@dataclass
class BranchState:
    """The runs of a branch's dedup state (newest last)."""

    params: dict
    runs: list[dict] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return canonical_json({"params": self.params, "runs": self.runs})

    @classmethod
    def from_bytes(cls, data: bytes) -> BranchState:
        d = json.loads(data)
        return cls(d["params"], d["runs"])

    def blobs(self) -> list[str]:
        out = []
        for run in self.runs:
            for kind in ("bands", "hashes", "band_fences"):
                for parts in run.get(kind, {}).values():
                    out.extend(parts.values())
        return sorted(set(out))

    def attachment_blobs(self) -> dict[str, str]:
        return {PART_PREFIX + b: b for b in self.blobs()}

    @property
    def entries(self) -> int:
        return sum(r["entries"] for r in self.runs)


def load_state(repo, commit_id: str | None, rules: DedupRules) -> BranchState | None:
    """The commit's state; None when it has none or was built with other parameters."""
    if commit_id is None:
        return BranchState(rules.index_params())
    data = repo.read_attachment(commit_id, STATE)
    if not data:
        return None
    state = BranchState.from_bytes(data)
    return state if state.params == rules.index_params() else None


def write_run(repo, ids: dict, hashes: dict, rules: DedupRules, level: int = 0) -> dict:
    """A run of entries {modality: ids ('S16')}, {modality: hash matrix}, written as parts."""
    n = sum(len(v) for v in ids.values())
    run = {"level": level, "entries": n, "bands": {}, "hashes": {}}
    for modality in MODALITIES:
        mid = ids.get(modality)
        if mid is None or len(mid) == 0:
            continue
        h = hashes[modality]
        band, keys = band_table(mid, h, modality, rules)
        grid = grid_for(len(keys))
        blobs, fences = {}, {}
        for k, t in sharded.split_by(band, sharded.key_range(keys, grid)):
            blobs[str(k)], fence = write_band_part(repo, sort_bands(t))
            if fence is not None:
                fences[str(k)] = fence
        run["bands"][modality] = blobs
        run.setdefault("band_fences", {})[modality] = fences
        run["bands_grid"] = {**run.get("bands_grid", {}), modality: grid}
        hgrid = grid_for(len(mid))
        ht = hash_rows(mid, h)
        run["hashes"][modality] = {
            str(p): repo.put_blob(part_bytes(t.sort_by([("record_id", "ascending")])))
            for p, t in sharded.split_by(ht, sharded.id_range(sharded._ids(ht), hgrid))
        }
        run["hashes_grid"] = {**run.get("hashes_grid", {}), modality: hgrid}
    return run


def run_from_parts(
    hash_parts: dict, band_parts: dict, grid: int, entries: int, band_fences: dict | None = None
) -> dict:
    """A run whose parts the pipeline's workers wrote on the run's own grid (`grid` id
    ranges and key ranges): {modality: {part: blob id}} each (`band_fences`: the fences of
    the band parts, as `write_band_part` returns them)."""
    run = {
        "level": 0,
        "entries": entries,
        "bands": {m: {str(k): b for k, b in sorted(v.items())} for m, v in band_parts.items() if v},
        "hashes": {
            m: {str(k): b for k, b in sorted(v.items())} for m, v in hash_parts.items() if v
        },
        "bands_grid": {m: grid for m, v in band_parts.items() if v},
        "hashes_grid": {m: grid for m, v in hash_parts.items() if v},
    }
    fences = {
        m: {str(k): f for k, f in sorted(v.items()) if f}
        for m, v in (band_fences or {}).items()
        if m in run["bands"]
    }
    if any(fences.values()):
        run["band_fences"] = {m: v for m, v in fences.items() if v}
    return run


def _covering(part: int, parts: int, grid: int) -> list[int]:
    """The parts of a `grid` that overlap range `part` of `parts` (both split the same
    top bits)."""
    bits = sharded.RANGE_BITS
    lo = -(-(part << bits) // parts)  # first top-bits value in the range
    hi = min((((part + 1) << bits) - 1) // parts, (1 << bits) - 1)  # last
    return list(range((lo * grid) >> bits, ((hi * grid) >> bits) + 1))


def _all_hashes(repo, run: dict, modality: str, rules: DedupRules):
    parts = run["hashes"].get(modality, {})
    tables = [
        read_part(repo.read_blob(b)) for _, b in sorted(parts.items(), key=lambda kv: int(kv[0]))
    ]
    if not tables:
        return np.empty(0, "S16"), None
    t = pa.concat_tables(tables)
    return sharded._ids(t), sharded.hash_matrix(t, modality, rules)


def compact(repo, state: BranchState, rules: DedupRules, contains=None) -> BranchState:
    """Merge the runs of any level holding more than FANOUT runs into one run of the next
    level (dropping entries of records the branch no longer holds, when `contains` says)."""
    runs = list(state.runs)
    level = 0
    while True:
        same = [r for r in runs if r["level"] == level]
        if len(same) <= FANOUT:
            if not any(r["level"] > level for r in runs):
                break
            level += 1
            continue
        ids, hashes = {}, {}
        for modality in MODALITIES:
            got = [_all_hashes(repo, r, modality, rules) for r in same]
            got = [(i, h) for i, h in got if len(i)]
            if not got:
                continue
            mid = np.concatenate([i for i, _ in got])
            mh = np.concatenate([h for _, h in got])
            if contains is not None:
                live = contains(mid)
                mid, mh = mid[live], mh[live]
            ids[modality], hashes[modality] = mid, mh
        merged = write_run(repo, ids, hashes, rules, level=level + 1)
        runs = [r for r in runs if r["level"] != level] + [merged]
    return BranchState(state.params, runs)


class StateParent:
    """The branch's dedup state for the sharded steps (the `IndexParent` interface), read
    part by part as the steps ask; entries of records the branch no longer holds dropped."""

    def __init__(self, repo, state: BranchState, contains, rules: DedupRules):
        self.repo, self.state, self._contains, self.rules = repo, state, contains, rules
        self._cache: dict[str, pa.Table] = {}
        self._fences: dict[str, bandpages.Fence] = {}
        self._fence_pages = 0  # pages of the fences kept

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self._contains(ids) if self._contains is not None else np.zeros(len(ids), bool)

    def _part(self, blob: str) -> pa.Table:
        t = self._cache.get(blob)
        if t is None:
            if len(self._cache) > 64:
                self._cache.clear()
            t = self._cache[blob] = read_part(self.repo.read_blob(blob))
        return t

    def _fence(self, fence_id: str, blob: str) -> bandpages.Fence:
        f = self._fences.get(fence_id)
        if f is None:
            f = bandpages.Fence.from_bytes(self.repo.read_blob(fence_id))
            # bounded by pages (12 bytes each), not by fences: a run's parts can be large
            if self._fence_pages + len(f.first) > FENCE_CACHE_PAGES:
                self._fences.clear()
                self._fence_pages = 0
            self._fences[fence_id] = f
            self._fence_pages += len(f.first)
        if f.blob != blob:
            raise CorruptObjectError(f"fence {fence_id} names part {f.blob}, not {blob}")
        return f

    def band_rows(
        self, modality: str, part: int, parts: int, keys: np.ndarray | None = None
    ) -> pa.Table | None:
        """The branch's band rows (band, key, record_id) whose key lies in range `part` of
        `parts` and, given `keys` (the run's new band keys of that range), is one of them:
        only the pages of a fenced part that can hold one are read (checked page by page,
        CorruptObjectError on a mismatch); a part without a fence is read whole."""
        want = None
        if keys is not None:
            want = np.unique(np.asarray(keys, np.uint64))
            want = want[sharded.key_range(want, parts) == part]
            if len(want) == 0:
                return None
        tables = []
        for run in self.state.runs:
            blobs = run["bands"].get(modality)
            if not blobs:
                continue
            fences = run.get("band_fences", {}).get(modality, {})
            grid = run["bands_grid"][modality]
            for j in _covering(part, parts, grid):
                b = blobs.get(str(j))
                if not b:
                    continue
                fence = fences.get(str(j)) if want is not None else None
                if fence:
                    f = self._fence(fence, b)
                    tables.append(bandpages.rows_of_keys(self.repo.store, blob_key(b), f, want))
                    continue
                t = self._part(b)
                got = t.column("key").to_numpy()
                sel = sharded.key_range(got, parts) == part
                if want is not None:
                    sel &= np.isin(got, want)
                tables.append(t.filter(pa.array(sel)))
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return None
        t = pa.concat_tables(tables).combine_chunks()
        if self._contains is not None:
            t = t.filter(pa.array(self.contains(sharded._ids(t))))
        return t if t.num_rows else None

    def hashes(self, modality: str, ids: np.ndarray) -> list[bytes]:
        out: list[bytes | None] = [None] * len(ids)
        for run in reversed(self.state.runs):
            blobs = run["hashes"].get(modality)
            if not blobs:
                continue
            grid = run["hashes_grid"][modality]
            want = [i for i, h in enumerate(out) if h is None]
            if not want:
                break
            w_ids = ids[want]
            rng = sharded.id_range(w_ids, grid)
            for j in np.unique(rng).tolist():
                b = blobs.get(str(j))
                if not b:
                    continue
                t = self._part(b)
                own = sharded._ids(t)
                sel = np.flatnonzero(rng == j)
                pos = np.minimum(np.searchsorted(own, w_ids[sel]), max(len(own) - 1, 0))
                hit = own[pos] == w_ids[sel]
                if hit.any():
                    got = t.column("hash").take(pa.array(pos[hit])).to_pylist()
                    for k, h in zip(sel[hit].tolist(), got):
                        out[want[k]] = h
        if any(h is None for h in out):
            raise ValueError("the branch's dedup state has no hash for a record it matched")
        return out


def scrub_part_bytes(data: bytes, erased_ids: np.ndarray) -> bytes | None:
    """An erasure's rewrite of one state part (band rows or hashes): the rows of
    `erased_ids` ('S16') removed; None when it holds none of them."""
    t = read_part(data)
    if "record_id" not in t.column_names:
        return None  # a band part's fence: names no record
    ids = sharded._ids(t)
    drop = np.isin(ids, erased_ids)
    if not drop.any():
        return None
    return part_bytes(t.filter(pa.array(~drop)))


def rename_parts(data: bytes, renamed: dict[str, str]) -> bytes | None:
    """A state manifest naming the rewritten parts (old blob id -> new); None if unchanged.
    A rewritten band part loses its fence (the fence names the old bytes): it is read whole
    until a compaction writes it again."""
    state = BranchState.from_bytes(data)
    changed = False
    for run in state.runs:
        for kind in ("bands", "hashes"):
            for modality, parts in run[kind].items():
                for k, b in list(parts.items()):
                    if b in renamed:
                        parts[k] = renamed[b]
                        changed = True
                        if kind == "bands":
                            run.get("band_fences", {}).get(modality, {}).pop(k, None)
    return state.to_bytes() if changed else None
