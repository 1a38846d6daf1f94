"""Dedup as sharded steps: plain functions over Arrow tables of one shard, which the Beam
steps (`dedup.steps`) call after a GroupByKey, and the tests and benchmarks call directly.

The model is datatrove's Signature -> Buckets -> Cluster -> Filter: no function here sees
more than one shard (a record-id range, or a band-key range), and every step's output is
keyed by the shard of the next step.

    dedup_rows        (reading worker) candidates -> small rows: id, order, rank, hash
    decide_exact      (per id range) equal ids: the best-ranked row is the exact
                      representative, the others exact duplicates; a row whose id the
                      branch holds is a duplicate of the branch's record
    band_rows         (per id range) representatives -> LSH band keys, keyed by key range
    bucket_pairs      (per key range) members of a bucket, in source order, each paired
                      with the next `max_window` (the windows of `lsh.candidate_pairs`)
    attach_a/verify_b (per id range, twice) the pair's hashes joined on, then verified:
                      estimated Jaccard (MinHash) or the image rule (`phash.near_images`)
    propagate         (per id range, one call per round) min-label propagation: every
                      node takes the smallest rank among its neighbours' labels
    final_similarity  (per id range of the representative) similarity to the kept record
    decide_range      (per id range) the join on record id: kept rows, duplicates resolved
                      through chains (an exact duplicate of a near duplicate points at the
                      kept record), written by the caller

Ranks are bytes that sort like the representative rule: a record the branch holds
(b"\\x00" + id) before any new one (b"\\x01" + policy value + source order + id); the
smallest rank in a cluster is its representative, so every duplicate points at a kept
record: one of the branch, or the best new one, which is kept.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataversion.errors import DataversionError
from dataversion.records import RECORD_ID, ids_as_numpy, ids_to_array, ids_to_hex

from ..config import POLICIES, DedupRules
from .lsh import minhash_band_keys
from .phash import KEY_WORDS, as_image_keys, image_band_keys, image_keys, near_images

__all__ = ["POLICIES", "run_local"]
_MAX64 = (1 << 64) - 1
_MTIME = re.compile(r"^\d+-(\d+)$")  # a local file's change token: <size>-<mtime_ns>

ROWS_SCHEMA = pa.schema(
    [
        ("record_id", RECORD_ID),
        ("modality", pa.string()),
        ("source", pa.string()),
        ("order", pa.binary()),  # source order: b"\x01" + key + b"\x00" + line (8 bytes BE)
        ("rank", pa.binary()),  # representative rule (see the module docstring)
        ("in_parent", pa.bool_()),
        # MinHash signature bytes (text) or the image key (`phash.image_keys`: pHash,
        # thumbnail flag, thumbnail: 80 bytes)
        ("hash", pa.binary()),
    ]
)
DUPS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("record_id", RECORD_ID),
        ("duplicate_of", RECORD_ID),
        ("kind", pa.string()),
        ("similarity", pa.float64()),
        ("via", RECORD_ID),  # the record it duplicates exactly, when that one was not kept
    ]
)


def mtime_of(token: str) -> int:
    """The modification time (ns) in a local change token, 0 when it has none (S3 ETags)."""
    m = _MTIME.match(token or "")
    return int(m.group(1)) if m else 0


RANGE_BITS = 24  # ranges split the top 24 bits of ids and band keys: up to 2^24 ranges
MAX_RANGES = 1 << RANGE_BITS


def id_range(ids: np.ndarray, parts: int) -> np.ndarray:
    """The range (0..parts-1) of each 'S16' id: its first three bytes, split evenly."""
    if len(ids) == 0:
        return np.empty(0, np.int64)
    b = np.frombuffer(np.ascontiguousarray(ids).tobytes(), np.uint8).reshape(-1, 16)
    top = (b[:, 0].astype(np.int64) << 16) | (b[:, 1].astype(np.int64) << 8) | b[:, 2]
    return (top * parts) >> RANGE_BITS


def key_range(keys: np.ndarray, parts: int) -> np.ndarray:
    """The range (0..parts-1) of each uint64 band key: its top 24 bits, split evenly."""
    top = (np.asarray(keys, np.uint64) >> np.uint64(64 - RANGE_BITS)).astype(np.int64)
    return (top * parts) >> RANGE_BITS


def split_by(table: pa.Table, parts_of_rows: np.ndarray):
    """[(part, rows of `table` in that part)] in part order."""
    if table.num_rows == 0:
        return []
    order, spans = _split_order(parts_of_rows)
    sorted_t = table.take(pa.array(order, pa.int64()))
    return [(p, sorted_t.slice(s, e - s)) for p, s, e in spans]


def _split_order(parts_of_rows: np.ndarray):
    """(stable row order by part, [(part, start, end)] of the ordered rows)."""
    p = np.asarray(parts_of_rows)
    # a 16-bit sort key makes numpy's stable argsort a radix sort
    small = len(p) and p.min() >= 0 and p.max() < (1 << 16)
    order = np.argsort(p.astype(np.uint16) if small else p, kind="stable")
    sp = p[order]
    cuts = np.flatnonzero(np.diff(sp)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(sp)]))
    return order, [(int(sp[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def band_split(keys: np.ndarray, parts: int):
    """Band keys [n, bands] -> the flattened (node, band) rows in key-range order, as
    `split_by` orders them: (node index, band, key, [(part, start, end)])."""
    n, b = keys.shape
    flat = keys.ravel()
    if len(flat) == 0:
        return np.empty(0, np.int64), np.empty(0, np.uint8), flat, []
    order, spans = _split_order(key_range(flat, parts))
    return order // b, (order % b).astype(np.uint8), flat[order], spans


def concat(tables, schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t is not None and t.num_rows]
    return pa.concat_tables(tables).combine_chunks() if tables else schema.empty_table()


def _ids(table: pa.Table, column: str = "record_id") -> np.ndarray:
    return ids_as_numpy(table.column(column)).copy() if table.num_rows else np.empty(0, "S16")


def _id_col(ids: np.ndarray) -> pa.Array:
    return (
        ids_to_array([])
        if len(ids) == 0
        else pa.FixedSizeBinaryArray.from_buffers(
            RECORD_ID, len(ids), [None, pa.py_buffer(np.ascontiguousarray(ids).tobytes())]
        )
    )


def parent_rank(ids: np.ndarray) -> list[bytes]:
    raw = np.ascontiguousarray(ids).tobytes()
    return [b"\x00" + raw[i : i + 16] for i in range(0, len(raw), 16)]


# ---- Signature: in the reading worker -------------------------------------------------


def dedup_rows(
    candidates: pa.Table, in_parent: np.ndarray, rules: DedupRules, mtimes: dict | None = None
) -> pa.Table:
    """The small rows the dedup steps need for a candidate table (no payloads).

    `in_parent[i]`: the branch already holds row i's id. `mtimes`: object key -> mtime (ns)
    for the `oldest` policy.
    """
    n = candidates.num_rows
    if n == 0:
        return ROWS_SCHEMA.empty_table()
    ids = _ids(candidates)
    keys = _single(candidates.column("object_key")).cast(pa.binary())
    lines = _be64(candidates.column("line").to_numpy(zero_copy_only=False))
    policy = rules.representative
    if policy in ("longest", "shortest"):
        texts = candidates.column("text")
        lengths = pc.fill_null(
            pc.if_else(
                pc.is_null(texts),
                pc.binary_length(candidates.column("data")),
                pc.utf8_length(texts),
            ),
            0,
        ).to_numpy(zero_copy_only=False)
        values = lengths.astype(np.uint64)
        if policy == "longest":
            values = np.uint64(_MAX64) - values
    elif policy == "oldest":
        mt = mtimes or {}
        names = candidates.column("object_key").to_pylist()
        values = np.array([mt.get(k, 0) for k in names], np.uint64)
    else:
        values = np.zeros(n, np.uint64)
    # order: b"\x01" + key + b"\x00" + line; rank: b"\x01" + value + order[1:] + id
    order = pc.binary_join_element_wise(b"\x01", keys, b"\x00", lines, b"")
    rank = pc.binary_join_element_wise(
        b"\x01", _be64(values), keys, b"\x00", lines, _fixed(ids.view(np.uint8), 16), b""
    )
    return pa.Table.from_arrays(
        [
            candidates.column("record_id"),
            candidates.column("modality"),
            candidates.column("source"),
            order,
            rank,
            pa.array(np.asarray(in_parent, bool)),
            _hash_column(candidates),
        ],
        schema=ROWS_SCHEMA,
    )


def _single(col) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _fixed(raw: np.ndarray, width: int) -> pa.Array:
    """Rows of `width` bytes (a flat uint8 buffer) as a binary column."""
    n = len(raw) // width
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(np.ascontiguousarray(raw))]
    ).cast(pa.binary())


def _be64(values: np.ndarray) -> pa.Array:
    """Integers as 8-byte big-endian binary values (they sort like the numbers)."""
    return _fixed(np.asarray(values).astype(">u8").view(np.uint8), 8)


def _hash_column(candidates: pa.Table) -> pa.Array:
    """Per row: the MinHash signature bytes (text), the image key (`phash.image_keys`,
    native byte order), empty otherwise."""
    n = candidates.num_rows
    mods = candidates.column("modality")
    text, image = _is(mods, "text"), _is(mods, "image")
    sig = _single(candidates.column("sig"))
    sig_bytes = np.ascontiguousarray(sig.flatten().to_numpy()).view(np.uint8).reshape(n, -1)
    width = np.where(text, sig_bytes.shape[1], np.where(image, 8 * KEY_WORDS, 0)).astype(
        np.int32
    )
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(width, out=offsets[1:])
    if text.all():
        data = sig_bytes.reshape(-1)
    else:
        data = np.empty(int(offsets[-1]), np.uint8)
        for mask, rows in ((text, sig_bytes), (image, None)):
            idx = np.flatnonzero(mask)
            if not len(idx):
                continue
            if rows is None:
                ph = candidates.column("phash").to_numpy(zero_copy_only=False).astype(np.uint64)
                thumbs = (
                    candidates.column("thumb").take(pa.array(idx)).to_pylist()
                    if "thumb" in candidates.column_names
                    else None
                )
                rows = image_keys(ph[idx], thumbs).view(np.uint8).reshape(len(idx), -1)
            else:
                rows = rows[idx]
            w = rows.shape[1]
            data[(offsets[idx][:, None] + np.arange(w)).ravel()] = rows.ravel()
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))]
    )


# ---- Exact: per id range --------------------------------------------------------------


def decide_exact(rows: pa.Table, rules: DedupRules) -> tuple[pa.Table, pa.Table]:
    """Rows of one id range -> (exact duplicates, near-dup nodes).

    Equal ids: the best-ranked row is the representative, every other row a duplicate of
    that id; a row whose id the branch holds is a duplicate of the branch's record.
    Nodes: the representatives of modalities with near-dup detection on (ROWS_SCHEMA).
    """
    if rows.num_rows == 0:
        return DUPS_SCHEMA.empty_table(), ROWS_SCHEMA.empty_table()
    o = id_then_bytes_order(_ids(rows), rows.column("rank"))
    ids = _ids(rows)[o]
    first = np.ones(len(ids), bool)
    first[1:] = ids[1:] != ids[:-1]
    in_parent = rows.column("in_parent").to_numpy(zero_copy_only=False)[o]
    dup = ~first | in_parent
    d = rows.take(pa.array(o[dup]))
    dups = pa.Table.from_arrays(
        [
            d.column("source"),
            d.column("record_id"),
            d.column("record_id"),
            pa.array(["exact"] * d.num_rows, pa.string()),
            pa.array(np.ones(d.num_rows)),
            pa.nulls(d.num_rows, RECORD_ID),
        ],
        schema=DUPS_SCHEMA,
    )
    mods = rows.column("modality")
    near = np.zeros(len(ids), bool)
    if rules.near_text:
        near |= _is(mods, "text")
    if rules.near_image:
        near |= _is(mods, "image")
    nodes = rows.take(pa.array(o[~dup & near[o]]))
    return dups, nodes


def _is(col, value: str) -> np.ndarray:
    return pc.fill_null(pc.equal(col, value), False).to_numpy(zero_copy_only=False)


def id_words(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (high, low) big-endian uint64 halves of 'S16' ids: they sort like the ids."""
    w = np.frombuffer(np.ascontiguousarray(ids).tobytes(), ">u8").reshape(-1, 2)
    return w[:, 0].astype(np.uint64), w[:, 1].astype(np.uint64)


def id_then_bytes_order(ids: np.ndarray, values) -> np.ndarray:
    """The stable row order by (id, value bytes) of 'S16' ids and a binary column, as
    `pc.sort_indices` gives it: a numpy sort of the ids, and only the rows of repeated
    ids sorted by their bytes (a sort of variable-length bytes costs ~10x)."""
    if len(ids) == 0:
        return np.empty(0, np.int64)
    hi, lo = id_words(ids)
    o = np.lexsort((lo, hi))
    sid = ids[o]
    same = sid[1:] == sid[:-1]
    if same.any():
        multi = np.zeros(len(o), bool)
        multi[1:] = same
        multi[:-1] |= same
        pos = np.flatnonzero(multi)
        group = np.cumsum(np.concatenate(([True], ~same)))[pos]
        sub = pa.table({"g": pa.array(group), "v": values.take(pa.array(o[pos]))})
        so = pc.sort_indices(sub, [("g", "ascending"), ("v", "ascending")]).to_numpy()
        o[pos] = o[pos][so]
    return o


# ---- Buckets: band keys, per key range --------------------------------------------------

BANDS_SCHEMA = pa.schema(
    [("band", pa.uint8()), ("key", pa.uint64()), ("record_id", RECORD_ID), ("order", pa.binary())]
)


def hash_matrix(table: pa.Table, modality: str, rules: DedupRules) -> np.ndarray:
    """The `hash` column of rows of one modality: uint32 [n, num_perm] or image keys
    uint64 [n, KEY_WORDS] (`phash.image_keys`; a bare 8-byte pHash has no thumbnail)."""
    col = table.column("hash").combine_chunks()
    n = len(col)
    if n == 0:
        return (
            np.empty((0, rules.num_perm), np.uint32)
            if modality == "text"
            else np.empty((0, KEY_WORDS), np.uint64)
        )
    offsets = np.frombuffer(col.buffers()[1], np.int32)[col.offset : col.offset + n + 1]
    buf = np.frombuffer(col.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    if modality == "text":
        return buf.view(np.uint32).reshape(n, rules.num_perm)
    widths = np.diff(offsets)
    if (widths == widths[0]).all():
        return as_image_keys(buf.view(np.uint64).reshape(n, -1))
    starts = (offsets[:-1] - offsets[0]).astype(np.int64)
    return np.stack(
        [as_image_keys(buf[s : s + w].view(np.uint64))[0] for s, w in zip(starts, widths)]
    )


def band_keys(hashes: np.ndarray, modality: str, rules: DedupRules) -> np.ndarray:
    if modality == "text":
        return minhash_band_keys(hashes, rules.bands)
    return image_band_keys(hashes, rules.phash_max_distance)


def band_rows(nodes: pa.Table, rules: DedupRules, parts: int):
    """Near-dup nodes -> [((modality, key range), band rows)]: one row per (node, band)."""
    out = []
    mods = nodes.column("modality")
    for m_i, modality in enumerate(("text", "image")):
        mask = _is(mods, modality)
        sub = nodes if mask.all() else nodes.filter(pa.array(mask))
        if sub.num_rows == 0:
            continue
        keys = band_keys(hash_matrix(sub, modality, rules), modality, rules)
        node, band, key, spans = band_split(keys, parts)
        take = pa.array(node)
        rows = pa.Table.from_arrays(
            [
                pa.array(band),
                pa.array(key),
                sub.column("record_id").take(take),
                sub.column("order").take(take),
            ],
            schema=BANDS_SCHEMA,
        )
        out.extend((m_i * parts + p, rows.slice(s, e - s)) for p, s, e in spans)
    return out


PAIRS_SCHEMA = pa.schema([("a", RECORD_ID), ("b", RECORD_ID), ("b_parent", pa.bool_())])


def bucket_pairs(new: pa.Table, parent: pa.Table | None, max_window: int) -> pa.Table:
    """Candidate pairs of one key range: within each bucket (band, key), members sorted in
    source order (the branch's records first, by id), each paired with its next
    `max_window` members, as `lsh.candidate_pairs` pairs rows; pairs of two branch records
    are left out (the branch is not re-clustered). `a` is always a new record.

    Only rows whose key another row shares can pair: they are found with a numpy sort of
    the keys, and only they are sorted by (band, key, order) (a sort of variable-length
    bytes, ~10x the cost of the key sort when run over every row)."""
    if new.num_rows == 0:
        return PAIRS_SCHEMA.empty_table()
    new_keys = new.column("key").to_numpy()
    if parent is not None and parent.num_rows:
        # only the branch's members of buckets a new record is in (by key: a key shared
        # across bands only adds rows that pair with nothing)
        par = parent.filter(pa.array(np.isin(parent.column("key").to_numpy(), new_keys)))
        par_rows = pa.Table.from_arrays(
            [
                par.column("band"),
                par.column("key"),
                par.column("record_id"),
                pa.array(parent_rank(_ids(par)), pa.binary()),
            ],
            schema=BANDS_SCHEMA,
        )
        rows = pa.concat_tables([new, par_rows]).combine_chunks()
        keys = rows.column("key").to_numpy()
    else:
        rows, keys = new, new_keys
    rows = rows.take(pa.array(_shared_rows(keys)))
    if rows.num_rows < 2:
        return PAIRS_SCHEMA.empty_table()
    rows = rows.take(
        pc.sort_indices(rows, [("band", "ascending"), ("key", "ascending"), ("order", "ascending")])
    )
    band = rows.column("band").to_numpy()
    key = rows.column("key").to_numpy()
    ids = _ids(rows)
    is_parent = _first_bytes(rows.column("order")) == 0
    a_list, b_list = [], []
    for d in range(1, max_window + 1):
        eq = (band[d:] == band[:-d]) & (key[d:] == key[:-d])
        if not eq.any():
            break
        i = np.flatnonzero(eq)
        j = i + d
        ok = ~(is_parent[i] & is_parent[j])
        i, j = i[ok], j[ok]
        # a: the new one (the earlier in source order when both are new)
        swap = is_parent[i]
        a_list.append(np.where(swap, j, i))
        b_list.append(np.where(swap, i, j))
    if not a_list:
        return PAIRS_SCHEMA.empty_table()
    ai, bi = np.concatenate(a_list), np.concatenate(b_list)
    code = np.stack((ids[ai].view("V16"), ids[bi].view("V16")), 1).reshape(-1).view("V32")
    _, first = np.unique(code, return_index=True)
    ai, bi = ai[first], bi[first]
    return pa.Table.from_arrays(
        [_id_col(ids[ai]), _id_col(ids[bi]), pa.array(is_parent[bi])], schema=PAIRS_SCHEMA
    )


def _shared_rows(keys: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the rows whose key at least one other row has."""
    if len(keys) < 2:
        return np.empty(0, np.int64)
    o = np.argsort(keys)
    eq = keys[o[1:]] == keys[o[:-1]]
    shared = np.zeros(len(keys), bool)
    shared[1:] = eq
    shared[:-1] |= eq
    return np.sort(o[shared])


def _first_bytes(col) -> np.ndarray:
    """The first byte of every value of a binary column (int16; -1 for an empty value)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n == 0:
        return np.empty(0, np.int16)
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] else np.zeros(1, np.uint8)
    out = data[np.minimum(offsets[:-1], len(data) - 1)].astype(np.int16)
    out[offsets[1:] == offsets[:-1]] = -1
    return out


# ---- Cluster: verify, then connected components ---------------------------------------

EDGES_SCHEMA = pa.schema(
    [
        ("u", RECORD_ID),
        ("v", RECORD_ID),
        ("modality", pa.string()),
        ("source_u", pa.string()),
        ("source_v", pa.string()),
        ("rank_u", pa.binary()),
        ("rank_v", pa.binary()),
        ("hash_u", pa.binary()),
        ("hash_v", pa.binary()),
        ("similarity", pa.float64()),
    ]
)


def _lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(sorted_ids, ids)
    pos = np.minimum(pos, max(len(sorted_ids) - 1, 0))
    if len(sorted_ids) == 0 or not (sorted_ids[pos] == ids).all():
        raise ValueError("a dedup pair names a record missing from its range")
    return pos


def _sorted_nodes(nodes: pa.Table) -> tuple[pa.Table, np.ndarray]:
    t = nodes.take(pc.sort_indices(nodes, [("record_id", "ascending")]))
    return t, _ids(t)


ATTACHED_SCHEMA = pa.schema(
    [
        ("a", RECORD_ID),
        ("b", RECORD_ID),
        ("b_parent", pa.bool_()),
        ("modality", pa.string()),
        ("source_a", pa.string()),
        ("rank_a", pa.binary()),
        ("hash_a", pa.binary()),
    ]
)


def attach_a(nodes: pa.Table, pairs: pa.Table, parts: int):
    """Pairs whose `a` lies in this id range + the range's nodes -> the pairs with a's
    modality, source, rank and hash, keyed by the id range of `b`."""
    if pairs.num_rows == 0:
        return []
    t, ids = _sorted_nodes(nodes)
    pos = pa.array(_lookup(ids, _ids(pairs, "a")))
    out = pa.Table.from_arrays(
        [
            pairs.column("a"),
            pairs.column("b"),
            pairs.column("b_parent"),
            t.column("modality").take(pos),
            t.column("source").take(pos),
            t.column("rank").take(pos),
            t.column("hash").take(pos),
        ],
        schema=ATTACHED_SCHEMA,
    )
    return split_by(out, id_range(_ids(out, "b"), parts))


def similarity(modality: str, ha: np.ndarray, hb: np.ndarray, rules: DedupRules) -> np.ndarray:
    """Estimated Jaccard (MinHash rows) or the image similarity of `phash.near_images`."""
    return compare(modality, ha, hb, rules)[0]


def compare(modality: str, ha: np.ndarray, hb: np.ndarray, rules: DedupRules):
    """(similarity, near) of pairs of hashes, row by row: the one pairwise rule the
    one-worker decision (`lsh`) applies too."""
    if modality == "text":
        sim = (ha == hb).mean(axis=1) if len(ha) else np.empty(0)
        return sim, sim >= rules.text_threshold - 1e-12
    return near_images(ha, hb, rules.phash_max_distance)


def verify_b(nodes: pa.Table, attached: pa.Table, parent_hashes, rules: DedupRules) -> pa.Table:
    """Pairs whose `b` lies in this id range (with a's data) + the range's nodes -> the
    verified edges (EDGES_SCHEMA, u = a, v = b). `parent_hashes(modality, ids)` gives the
    branch's stored hashes (bytes per id) for pairs whose `b` the branch holds."""
    if attached.num_rows == 0:
        return EDGES_SCHEMA.empty_table()
    code = np.stack((_ids(attached, "a").view("V16"), _ids(attached, "b").view("V16")), 1)
    _, first = np.unique(code.reshape(-1).view("V32"), return_index=True)
    attached = attached.take(pa.array(np.sort(first)))
    t, ids = _sorted_nodes(nodes)
    out = []
    for modality in ("text", "image"):
        sub = attached.filter(pc.equal(attached.column("modality"), modality))
        if sub.num_rows == 0:
            continue
        b_ids = _ids(sub, "b")
        b_par = sub.column("b_parent").to_numpy(zero_copy_only=False)
        hb_bytes: list[bytes] = [b""] * len(b_ids)
        rank_b: list[bytes] = [b""] * len(b_ids)
        source_b: list[str | None] = [None] * len(b_ids)
        new_rows = np.flatnonzero(~b_par)
        if len(new_rows):
            pos = pa.array(_lookup(ids, b_ids[new_rows]))
            hb_new = t.column("hash").take(pos).to_pylist()
            rk_new = t.column("rank").take(pos).to_pylist()
            sr_new = t.column("source").take(pos).to_pylist()
            for r, h, k, s in zip(new_rows.tolist(), hb_new, rk_new, sr_new):
                hb_bytes[r], rank_b[r], source_b[r] = h, k, s
        par_rows = np.flatnonzero(b_par)
        if len(par_rows):
            got = parent_hashes(modality, b_ids[par_rows])
            ranks = parent_rank(b_ids[par_rows])
            for r, h, k in zip(par_rows.tolist(), got, ranks):
                hb_bytes[r], rank_b[r] = h, k
        ha = hash_matrix(sub.select(["hash_a"]).rename_columns(["hash"]), modality, rules)
        hb = hash_matrix(pa.table({"hash": pa.array(hb_bytes, pa.binary())}), modality, rules)
        sim, ok = compare(modality, ha, hb, rules)
        if not ok.any():
            continue
        k = pa.array(np.flatnonzero(ok))
        out.append(
            pa.Table.from_arrays(
                [
                    sub.column("a").take(k),
                    sub.column("b").take(k),
                    sub.column("modality").take(k),
                    sub.column("source_a").take(k),
                    pa.array(source_b, pa.string()).take(k),
                    sub.column("rank_a").take(k),
                    pa.array(rank_b, pa.binary()).take(k),
                    sub.column("hash_a").take(k),
                    pa.array(
                        [h if s is not None else None for h, s in zip(hb_bytes, source_b)],
                        pa.binary(),
                    ).take(k),
                    pa.array(sim[ok]),
                ],
                schema=EDGES_SCHEMA,
            )
        )
    return concat(out, EDGES_SCHEMA)


# node state of label propagation: u, its modality, source, own rank, hash, current label
NODE_SCHEMA = pa.schema(
    [
        ("u", RECORD_ID),
        ("modality", pa.string()),
        ("source", pa.string()),
        ("rank", pa.binary()),
        ("hash", pa.binary()),
        ("label", pa.binary()),
    ]
)
ADJ_SCHEMA = pa.schema([("u", RECORD_ID), ("v", RECORD_ID)])
MSG_SCHEMA = pa.schema([("u", RECORD_ID), ("label", pa.binary())])


def directed_edges(edges: pa.Table, parts: int):
    """Verified edges -> per id range of their first end: the edges both ways, with the
    data of u (source and hash only when u is new: a branch node carries none)."""
    if edges.num_rows == 0:
        return []

    def col(name):
        return edges.column(name).combine_chunks()

    both = pa.Table.from_arrays(
        [
            pa.concat_arrays([col("u"), col("v")]),
            pa.concat_arrays([col("v"), col("u")]),
            pa.concat_arrays([col("modality")] * 2),
            pa.concat_arrays([col("source_u"), col("source_v")]),
            pa.concat_arrays([col("rank_u"), col("rank_v")]),
            pa.concat_arrays([col("rank_v"), col("rank_u")]),
            pa.concat_arrays([col("hash_u"), col("hash_v")]),
        ],
        names=["u", "v", "modality", "source", "rank_u", "rank_v", "hash_u"],
    )
    return split_by(both, id_range(_ids(both, "u"), parts))


def first_labels(directed: pa.Table, parts: int):
    """Round 0 of propagation for one id range: each node's label is the smallest rank
    among itself and its neighbours. -> (node state, adjacency, messages by range)."""
    t = directed.take(pc.sort_indices(directed, [("u", "ascending"), ("rank_v", "ascending")]))
    u = _ids(t, "u")
    first = np.ones(len(u), bool)
    first[1:] = u[1:] != u[:-1]
    head = t.filter(pa.array(first))
    # the node's own source and hash: the row (if any) that carries them
    grp = np.cumsum(first) - 1
    src = t.column("source").to_pylist()
    hsh = t.column("hash_u").to_pylist()
    sources: list = [None] * int(first.sum())
    hashes: list = [None] * int(first.sum())
    for g, s, h in zip(grp.tolist(), src, hsh):
        if s is not None and sources[g] is None:
            sources[g] = s
        if h is not None and hashes[g] is None:
            hashes[g] = h
    own = head.column("rank_u").to_pylist()
    nb = head.column("rank_v").to_pylist()  # the smallest neighbour rank (sorted)
    labels = [min(a, b) for a, b in zip(own, nb)]
    nodes = pa.Table.from_arrays(
        [
            head.column("u"),
            head.column("modality"),
            pa.array(sources, pa.string()),
            head.column("rank_u"),
            pa.array(hashes, pa.binary()),
            pa.array(labels, pa.binary()),
        ],
        schema=NODE_SCHEMA,
    )
    adj = pa.Table.from_arrays([t.column("u"), t.column("v")], schema=ADJ_SCHEMA)
    changed = np.asarray([lb != o for lb, o in zip(labels, own)], bool)
    return nodes, adj, _messages(nodes, adj, changed, parts)


def _messages(nodes: pa.Table, adj: pa.Table, changed: np.ndarray, parts: int):
    """For every edge u -> v whose u changed label: (v, label of u), keyed by range of v."""
    if adj.num_rows == 0 or not changed.any():
        return []
    ids = _ids(nodes, "u")
    pos = _lookup(ids, _ids(adj, "u"))
    send = changed[pos]
    if not send.any():
        return []
    k = pa.array(np.flatnonzero(send))
    msgs = pa.Table.from_arrays(
        [adj.column("v").take(k), nodes.column("label").take(pa.array(pos[send]))],
        schema=MSG_SCHEMA,
    )
    return split_by(msgs, id_range(_ids(msgs, "u"), parts))


def propagate(nodes: pa.Table, adj: pa.Table, msgs: pa.Table, parts: int):
    """One round for one id range: each node's label becomes the smallest of its label and
    the labels its neighbours sent. -> (nodes, adjacency, messages by range, changed count)."""
    if msgs.num_rows == 0 or nodes.num_rows == 0:
        return nodes, adj, [], 0
    best = msgs.group_by("u").aggregate([("label", "min")])
    ids = _ids(nodes, "u")
    pos = _lookup(ids, _ids(best, "u"))
    labels = nodes.column("label").to_pylist()
    changed = np.zeros(len(labels), bool)
    for p, lab in zip(pos.tolist(), best.column("label_min").to_pylist()):
        if lab < labels[p]:
            labels[p] = lab
            changed[p] = True
    nodes = nodes.set_column(5, "label", pa.array(labels, pa.binary()))
    return nodes, adj, _messages(nodes, adj, changed, parts), int(changed.sum())


FINAL_SCHEMA = pa.schema(
    [
        ("u", RECORD_ID),
        ("modality", pa.string()),
        ("source", pa.string()),
        ("hash", pa.binary()),
        ("rep", RECORD_ID),
        ("rep_parent", pa.bool_()),
    ]
)


def near_members(nodes: pa.Table, parts: int):
    """Converged nodes of one range -> the new ones that are not their cluster's
    representative, keyed by the id range of the representative (its hash is there)."""
    labels = nodes.column("label").to_pylist()
    ranks = nodes.column("rank").to_pylist()
    dup = np.asarray([lb != rk and rk[:1] == b"\x01" for lb, rk in zip(labels, ranks)], bool)
    if not dup.any():
        return []
    d = nodes.filter(pa.array(dup))
    reps = [lb[-16:] for lb, k in zip(labels, dup) if k]
    rep_parent = [lb[:1] == b"\x00" for lb, k in zip(labels, dup) if k]
    out = pa.Table.from_arrays(
        [
            d.column("u"),
            d.column("modality"),
            d.column("source"),
            d.column("hash"),
            ids_to_array(reps),
            pa.array(rep_parent),
        ],
        schema=FINAL_SCHEMA,
    )
    return split_by(out, id_range(np.frombuffer(b"".join(reps), "S16"), parts))


def final_similarity(nodes: pa.Table, members: pa.Table, parent_hashes, rules, parts: int):
    """Members whose representative lies in this range + the range's nodes -> their near
    duplicate rows (DUPS_SCHEMA), keyed by the id range of the member."""
    if members.num_rows == 0:
        return []
    t, ids = _sorted_nodes(nodes)
    out = []
    for modality in ("text", "image"):
        sub = members.filter(pc.equal(members.column("modality"), modality))
        if sub.num_rows == 0:
            continue
        reps = _ids(sub, "rep")
        par = sub.column("rep_parent").to_numpy(zero_copy_only=False)
        hb: list[bytes] = [b""] * len(reps)
        nr = np.flatnonzero(~par)
        if len(nr):
            got = t.column("hash").take(pa.array(_lookup(ids, reps[nr]))).to_pylist()
            for r, h in zip(nr.tolist(), got):
                hb[r] = h
        pr = np.flatnonzero(par)
        if len(pr):
            for r, h in zip(pr.tolist(), parent_hashes(modality, reps[pr])):
                hb[r] = h
        ha = hash_matrix(sub, modality, rules)
        hbm = hash_matrix(pa.table({"hash": pa.array(hb, pa.binary())}), modality, rules)
        sim = similarity(modality, ha, hbm, rules)
        out.append(
            pa.Table.from_arrays(
                [
                    sub.column("source"),
                    sub.column("u"),
                    sub.column("rep"),
                    pa.array(["near"] * sub.num_rows, pa.string()),
                    pa.array(sim),
                    pa.nulls(sub.num_rows, RECORD_ID),
                ],
                schema=DUPS_SCHEMA,
            )
        )
    dups = concat(out, DUPS_SCHEMA)
    return split_by(dups, id_range(_ids(dups), parts))


# ---- Filter: the join on record id, per id range ---------------------------------------


def decide_range(
    payloads: pa.Table, exact: pa.Table, near: pa.Table
) -> tuple[pa.Table, list[dict]]:
    """One id range's candidates (with payloads), exact duplicates and near duplicates ->
    (kept candidate rows, duplicate dicts). An exact duplicate of a record that is itself a
    near duplicate points at that one's representative (`via` names the record it equals),
    so every duplicate points at a record that is stored."""
    near_ids = _ids(near)
    order = np.argsort(near_ids)
    near_sorted = near_ids[order]
    near_rep = _ids(near, "duplicate_of")[order]
    near_sim = near.column("similarity").to_numpy()[order]
    dups: list[dict] = []
    dropped: set[str] = set()
    near_hex_rep = ids_to_hex(_ids(near, "duplicate_of"))
    for src, own, rep, sim in zip(
        near.column("source").to_pylist(),
        ids_to_hex(near_ids),
        near_hex_rep,
        near.column("similarity").to_pylist(),
    ):
        dups.append(
            {
                "source": src,
                "record_id": own,
                "duplicate_of": rep,
                "kind": "near",
                "similarity": round(sim, 6),
                "cluster": rep,
            }
        )
        dropped.add(src)
    e_ids = _ids(exact)
    if len(e_ids):
        pos = np.searchsorted(near_sorted, e_ids)
        pos = np.minimum(pos, max(len(near_sorted) - 1, 0))
        hit = (near_sorted[pos] == e_ids) if len(near_sorted) else np.zeros(len(e_ids), bool)
        e_hex = ids_to_hex(e_ids)
        rep_hex = ids_to_hex(near_rep[pos[hit]]) if hit.any() else []
        rep_iter = iter(rep_hex)
        for i, (src, own) in enumerate(zip(exact.column("source").to_pylist(), e_hex)):
            if hit[i]:
                rep = next(rep_iter)
                dups.append(
                    {
                        "source": src,
                        "record_id": own,
                        "duplicate_of": rep,
                        "kind": "near",
                        "similarity": round(float(near_sim[pos[i]]), 6),
                        "cluster": rep,
                        "via": own,
                    }
                )
            else:
                dups.append(
                    {
                        "source": src,
                        "record_id": own,
                        "duplicate_of": own,
                        "kind": "exact",
                        "similarity": 1.0,
                        "cluster": own,
                    }
                )
            dropped.add(src)
    if dropped:
        keep = pc.invert(
            pc.is_in(payloads.column("source"), pa.array(sorted(dropped), pa.string()))
        )
        kept = payloads.filter(keep)
    else:
        kept = payloads
    dups.sort(key=lambda d: d["source"])
    return kept, dups


# ---- The branch's side, and all steps in one process ----------------------------------


class IndexParent:
    """The branch's dedup state read from a `DedupIndex` (ids, signatures, image keys) and an
    id membership test; answers what the sharded steps ask of the branch."""

    def __init__(self, index, contains, rules: DedupRules):
        self.index, self._contains, self.rules = index, contains, rules
        self._bands: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._sorted: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self._contains(ids) if self._contains is not None else np.zeros(len(ids), bool)

    def _arrays(self, modality: str):
        if modality == "text":
            return self.index.text_ids, self.index.text_sigs
        return self.index.image_ids, self.index.image_keys

    def band_rows(
        self, modality: str, part: int, parts: int, keys: np.ndarray | None = None
    ) -> pa.Table | None:
        """The branch's band rows (band, key, record_id) whose key lies in range `part`
        (and, given `keys`, is one of them)."""
        if modality not in self._bands:
            ids, h = self._arrays(modality)
            bk = band_keys(h, modality, self.rules) if len(ids) else np.empty((0, 1), np.uint64)
            n, b = bk.shape
            flat = bk.ravel()
            self._bands[modality] = (
                np.tile(np.arange(b, dtype=np.uint8), n),
                flat,
                np.repeat(ids, b),
                key_range(flat, parts),
            )
        band, key, ids, rng = self._bands[modality]
        sel = np.flatnonzero(rng == part)
        if keys is not None:
            sel = sel[np.isin(key[sel], keys)]
        if not len(sel):
            return None
        return pa.Table.from_arrays(
            [pa.array(band[sel]), pa.array(key[sel]), _id_col(ids[sel])],
            names=["band", "key", "record_id"],
        )

    def hashes(self, modality: str, ids: np.ndarray) -> list[bytes]:
        if modality not in self._sorted:
            own, h = self._arrays(modality)
            o = np.argsort(own)
            self._sorted[modality] = (own[o], h[o])
        own, h = self._sorted[modality]
        pos = _lookup(own, ids)
        return [h[p].tobytes() for p in pos.tolist()]


# one string (the hint inside it): Beam re-raises a step's exception with the step's name
# appended, from its message alone
NOT_CONVERGED = (
    "near-duplicate clusters not settled after dedup.max_rounds rounds of label propagation: a "
    "chain of near duplicates is longer than that (e.g. overlapping windows of one text); nothing "
    'was committed; raise it with --config FILE holding {"dedup": {"max_rounds": 64}}'
)


class NotConverged(DataversionError):
    """Label propagation still changed labels in its last round (exit 1, one line: what to
    raise; a chain of near duplicates longer than the rounds allow)."""


def settle(state, msgs, parts: int) -> None:
    """The check after the last round: the messages still in flight change no label, else
    NotConverged (a chain of near duplicates longer than `dedup.max_rounds` hops)."""
    for p, (n, a) in state.items():
        if propagate(n, a, concat(msgs.get(p, []), MSG_SCHEMA), parts)[3]:
            raise NotConverged(NOT_CONVERGED)


def run_local(tables, parent: IndexParent, rules: DedupRules, parts: int, mtimes=None):
    """Every sharded step in this process, with dicts standing in for the GroupByKeys
    (what the Beam graph does, for tests and benchmarks). `tables`: candidate tables.
    -> {part: (kept candidate rows, duplicate dicts)}."""
    from collections import defaultdict

    payload, rows_by = defaultdict(list), defaultdict(list)
    for t in tables:
        for p, sub in split_by(t, id_range(_ids(t), parts)):
            payload[p].append(sub)
        rows = dedup_rows(t, parent.contains(_ids(t)), rules, mtimes)
        for p, sub in split_by(rows, id_range(_ids(rows), parts)):
            rows_by[p].append(sub)
    exact, nodes = {}, {}
    bands = defaultdict(list)
    for p, ts in rows_by.items():
        exact[p], nodes[p] = decide_exact(concat(ts, ROWS_SCHEMA), rules)
        for k, b in band_rows(nodes[p], rules, parts):
            bands[k].append(b)
    pairs_by = defaultdict(list)
    for k, ts in bands.items():
        modality, part = ("text", k) if k < parts else ("image", k - parts)
        new = concat(ts, BANDS_SCHEMA)
        pairs = bucket_pairs(
            new,
            parent.band_rows(modality, part, parts, new.column("key").to_numpy()),
            rules.max_window,
        )
        for p, sub in split_by(pairs, id_range(_ids(pairs, "a"), parts)):
            pairs_by[p].append(sub)
    attached_by = defaultdict(list)
    for p, ts in pairs_by.items():
        for q, sub in attach_a(
            nodes.get(p, ROWS_SCHEMA.empty_table()), concat(ts, PAIRS_SCHEMA), parts
        ):
            attached_by[q].append(sub)
    directed_by = defaultdict(list)
    for p, ts in attached_by.items():
        edges = verify_b(
            nodes.get(p, ROWS_SCHEMA.empty_table()),
            concat(ts, ATTACHED_SCHEMA),
            parent.hashes,
            rules,
        )
        for q, sub in directed_edges(edges, parts):
            directed_by[q].append(sub)
    state, msgs = {}, defaultdict(list)
    for p, ts in directed_by.items():
        n, a, m = first_labels(pa.concat_tables(ts), parts)
        state[p] = (n, a)
        for q, sub in m:
            msgs[q].append(sub)
    for _ in range(rules.max_rounds):
        if not msgs:
            break
        new_msgs = defaultdict(list)
        for p, (n, a) in state.items():
            n, a, m, _changed = propagate(n, a, concat(msgs.get(p, []), MSG_SCHEMA), parts)
            state[p] = (n, a)
            for q, sub in m:
                new_msgs[q].append(sub)
        msgs = new_msgs
    if msgs:
        settle(state, msgs, parts)
    members = defaultdict(list)
    for n, _a in state.values():
        for q, sub in near_members(n, parts):
            members[q].append(sub)
    near = defaultdict(list)
    for p, ts in members.items():
        for q, sub in final_similarity(
            nodes.get(p, ROWS_SCHEMA.empty_table()),
            concat(ts, FINAL_SCHEMA),
            parent.hashes,
            rules,
            parts,
        ):
            near[q].append(sub)
    return {
        p: decide_range(
            concat(payload[p], payload[p][0].schema),
            exact.get(p, DUPS_SCHEMA.empty_table()),
            concat(near.get(p, []), DUPS_SCHEMA),
        )
        for p in sorted(payload)
    }
