"""The dedup decision for one run: which new records are kept, which duplicate what.

Representative rule (deterministic, documented in the README of `pipelines/`):
1. A record the parent commit already holds (same id), or one in a near-duplicate cluster
   with a parent record, is a duplicate of that parent record: the branch keeps what it has.
2. Otherwise, within a group of equal ids or a near-duplicate cluster (connected component
   of verified LSH pairs), the record that comes first in (object key, line number) order
   is kept; every other member is a duplicate of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import DedupRules
from .index import DedupIndex
from .lsh import image_clusters, minhash_clusters
from .phash import KEY_WORDS, as_image_keys, image_keys


@dataclass
class DedupDecision:
    """Per input row: `dup_of` (-1 kept; else a row index into `ref_ids`) and `kind`."""

    keep: np.ndarray  # bool
    duplicate_of: np.ndarray  # 'S16' record id each duplicate points to (undefined for kept rows)
    kind: np.ndarray  # object: None | "exact" | "near"


def decide_duplicates(
    ids: np.ndarray,
    modality: np.ndarray,
    priority: np.ndarray,
    sigs: np.ndarray,
    phash: np.ndarray,
    parent_contains,
    parent_index: DedupIndex,
    rules: DedupRules,
) -> DedupDecision:
    """Decide every row. `sigs[i]` is row i's MinHash signature (meaningful for text rows),
    `phash[i]` its image key (image rows, `phash.image_keys`, or a bare pHash);
    `parent_contains(ids) -> mask` tests the parent's ids.
    `priority`: lower is kept first (rank by object key, line)."""
    n = len(ids)
    keep = np.ones(n, bool)
    dup_of = ids.copy()
    kind = np.full(n, None, dtype=object)
    if n == 0:
        return DedupDecision(keep, dup_of, kind)
    if rules.exact:
        in_parent = parent_contains(ids)
        keep[in_parent] = False
        kind[in_parent] = "exact"
        rest = np.flatnonzero(~in_parent)
        order = rest[np.lexsort((priority[rest], ids[rest]))]
        if len(order) > 1:
            same = ids[order[1:]] == ids[order[:-1]]
            later = order[1:][same]
            keep[later] = False
            kind[later] = "exact"  # dup_of is already the (equal) id
    for modal, enabled in (("text", rules.near_text), ("image", rules.near_image)):
        if not enabled:
            continue
        rows = np.flatnonzero(keep & (modality == modal))
        if modal == "text":
            p_ids, p_keys = parent_index.text_ids, parent_index.text_sigs
            keys = sigs[rows] if len(rows) else np.empty((0, rules.num_perm), np.uint32)
            all_keys = np.concatenate((p_keys, keys)) if len(p_keys) else keys
        else:
            p_ids, p_keys = parent_index.image_ids, as_image_keys(parent_index.image_keys)
            keys = as_image_keys(phash[rows]) if len(rows) else p_keys[:0]
            all_keys = np.concatenate((p_keys, keys))
        n_p = len(p_ids)
        if len(rows) == 0 or len(rows) + n_p < 2:
            continue
        prio = np.concatenate((np.arange(n_p) - n_p, priority[rows] + 0)).astype(np.int64)
        if modal == "text":
            reps = minhash_clusters(
                all_keys,
                prio,
                bands=rules.bands,
                threshold=rules.text_threshold,
                max_window=rules.max_window,
            )
        else:
            reps = image_clusters(
                all_keys,
                prio,
                phash_max_distance=rules.phash_max_distance,
                max_window=rules.max_window,
            )
        all_ids = np.concatenate((p_ids, ids[rows]))
        new_reps = reps[n_p:]
        dup = new_reps != np.arange(n_p, n_p + len(rows))
        keep[rows[dup]] = False
        kind[rows[dup]] = "near"
        dup_of[rows[dup]] = all_ids[new_reps[dup]]
    return DedupDecision(keep, dup_of, kind)


def decide_run(tables: list, parent_contains, parent_index: DedupIndex, rules: DedupRules) -> dict:
    """A run's dedup keys (tables of `steps.DEDUP_KEY_COLUMNS`, in any order) -> its decision:
    {kept_sources: [source], duplicates: [{source, record_id, duplicate_of, kind}],
    index: the parent's index extended with the kept records, as bytes}.

    `parent_contains(ids) -> bool array` says which ids the parent holds (None: no parent).
    The same keys give the same decision whatever order the runner delivered them in.
    """
    import pyarrow as pa

    from dataversion.records import ids_as_numpy, ids_to_hex

    tables = [t for t in tables if t.num_rows]
    if tables:
        t = pa.concat_tables(tables)
        # a deterministic order whatever order the runner delivered the batches in
        keys = np.asarray(t.column("object_key").to_pylist(), dtype=object)
        lines = t.column("line").to_numpy()
        order = sorted(range(t.num_rows), key=lambda i: (keys[i], lines[i]))
        t = t.take(pa.array(order, pa.int64()))
        ids = ids_as_numpy(t.column("record_id")).copy()
        modality = np.asarray(t.column("modality").to_pylist(), dtype=object)
        sig_col = t.column("sig").combine_chunks()
        sigs = (
            sig_col.values.to_numpy().reshape(t.num_rows, rules.num_perm)
            if t.num_rows
            else np.empty((0, rules.num_perm), np.uint32)
        )
        phash = image_keys(
            t.column("phash").to_numpy().astype(np.uint64),
            t.column("thumb").to_pylist() if "thumb" in t.column_names else None,
        )
        sources = t.column("source").to_pylist()
    else:
        ids = np.empty(0, "S16")
        modality = np.empty(0, object)
        sigs = np.empty((0, rules.num_perm), np.uint32)
        phash = np.empty((0, KEY_WORDS), np.uint64)
        sources = []
    d = decide_duplicates(
        ids,
        modality,
        np.arange(len(ids)),
        sigs,
        phash,
        parent_contains or _no_parent,
        parent_index,
        rules,
    )
    dup_rows = np.flatnonzero(~d.keep)
    dup_hex = ids_to_hex(d.duplicate_of[dup_rows]) if len(dup_rows) else []
    own_hex = ids_to_hex(ids[dup_rows]) if len(dup_rows) else []
    duplicates = [
        {"source": sources[r], "record_id": own, "duplicate_of": of, "kind": d.kind[r]}
        for r, own, of in zip(dup_rows.tolist(), own_hex, dup_hex)
    ]
    kept_text = d.keep & (modality == "text")
    kept_image = d.keep & (modality == "image")
    index = parent_index.extended(
        ids[kept_text], sigs[kept_text], ids[kept_image], phash[kept_image]
    )
    return {
        "kept_sources": [s for s, k in zip(sources, d.keep.tolist()) if k],
        "duplicates": duplicates,
        "index": index.to_bytes(),
    }


def _no_parent(ids: np.ndarray) -> np.ndarray:
    return np.zeros(len(ids), bool)
