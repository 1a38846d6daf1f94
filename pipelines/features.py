"""Features: compute them from records (in the ingestion pipeline), write a commit's features
table, and publish commits to a Feast repository (offline export, apply, materialize).

- `record_features(table)`: pure, vectorized; the ingest DoFn and the backfill both call it.
- `write_commit_features(repo, cid, new)`: after a commit lands, its table =
  its parent's rows + the rows of the records the run added, stamped with the commit.
- `publish(repo, ref, feature_repo)`: for every commit reachable from `ref` not yet
  published to that Feast repository, oldest first: export the rows it introduced or
  changed to the view's offline file `data/offline/<view>.parquet` (event_timestamp = the
  commit's time), apply the definitions if they changed, and materialize exactly the
  commit's own time window. One file lock around all of it (the file registry and the SQLite store lose concurrent writes).

Feast is imported inside `publish` only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataversion import Repo
from dataversion.errors import BadInputError, NotFoundError
from dataversion.features import (
    FEATURE_VIEWS,
    FEATURES_SCHEMA,
    RECORD_FEATURES_SCHEMA,
    VIEW_MODALITY,
    commit_features,
    features_key,
)
from dataversion.records import ids_as_numpy, ids_to_hex
from dataversion.stores.atomic import write_atomic

DEFAULT_FEATURE_REPO = "feature_repo"
DEFINITIONS = "definitions.py"
STATE = "data/published.json"
LOCK = "data/.publish.lock"
_QUALITY_WORDS = 50  # texts of this many words or more get the full length credit


# ---------------------------------------------------------------------------- compute
def _meta_dicts(col: pa.ChunkedArray | pa.Array) -> list[dict]:
    return [json.loads(m) if m else {} for m in col.to_pylist()]


def _image_phash(data: bytes | None) -> str | None:
    from .filters.image import check_image

    if not data:
        return None
    info = check_image(data)
    return None if not hasattr(info, "phash") else f"{info.phash:016x}"


def record_features(records: pa.Table) -> pa.Table:
    """Features of a record table (RECORD_FEATURES_SCHEMA, sorted by record id).

    Needs record_id, modality, label, meta, text; images take their pHash from a `phash`
    (uint64) column when present (the pipeline's candidates), else decode `data`.
    Features of another modality are null. Pure; never raises for odd metadata.
    """
    n = records.num_rows
    modality = records.column("modality").to_numpy(zero_copy_only=False).astype(object)
    metas = _meta_dicts(records.column("meta"))
    text = records.column("text")
    chars = pc.utf8_length(text)
    words = pc.count_substring_regex(text, r"\S+")
    letters = pc.count_substring_regex(text, r"\pL")
    ch = chars.to_numpy(zero_copy_only=False).astype(np.float64)
    wd = words.to_numpy(zero_copy_only=False).astype(np.float64)
    lt = letters.to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        letter_ratio = np.where(ch > 0, lt / np.where(ch > 0, ch, 1), 0.0)
    # A simple score: half for being made of letters, half for having some length.
    quality = np.round(0.5 * letter_ratio + 0.5 * np.minimum(1.0, wd / _QUALITY_WORDS), 4)
    is_text = modality == "text"
    is_image = modality == "image"
    is_audio = modality == "audio"

    def ints(values: list, mask: np.ndarray) -> pa.Array:
        return pa.array([v if m else None for v, m in zip(values, mask)], pa.int64())

    pii = [sum(int(v) for v in (m.get("pii") or {}).values()) for m in metas]
    phash: list[str | None] = [None] * n
    if is_image.any():
        if "phash" in records.column_names:
            ph = records.column("phash").to_pylist()
            for i in np.flatnonzero(is_image).tolist():
                phash[i] = f"{ph[i]:016x}" if ph[i] is not None else None
        else:
            data = records.column("data")
            for i in np.flatnonzero(is_image).tolist():
                phash[i] = _image_phash(data[i].as_py())

    def meta_of(key: str, mask: np.ndarray) -> list:
        return [m.get(key) if k else None for m, k in zip(metas, mask)]

    def to_int(v):
        try:
            return int(v) if v is not None else None
        except (TypeError, ValueError):
            return None

    def to_float(v):
        try:
            return float(v) if v is not None else None
        except (TypeError, ValueError):
            return None

    text_mask = pa.array(~is_text)
    out = pa.Table.from_arrays(
        [
            pa.array(ids_to_hex(ids_as_numpy(records.column("record_id"))), pa.string()),
            pc.if_else(text_mask, pa.scalar(None, pa.int64()), pc.cast(chars, pa.int64())),
            pc.if_else(text_mask, pa.scalar(None, pa.int64()), pc.cast(words, pa.int64())),
            ints(pii, is_text),
            pa.array(np.where(is_text, quality, np.nan), pa.float64(), mask=~is_text),
            pa.array([to_int(v) for v in meta_of("width", is_image)], pa.int64()),
            pa.array([to_int(v) for v in meta_of("height", is_image)], pa.int64()),
            pa.array(meta_of("format", is_image), pa.string()),
            pa.array(phash, pa.string()),
            pa.array([to_float(v) for v in meta_of("duration_s", is_audio)], pa.float64()),
            pa.array([to_int(v) for v in meta_of("sample_rate", is_audio)], pa.int64()),
            pa.array([to_int(v) for v in meta_of("channels", is_audio)], pa.int64()),
            records.column("label").cast(pa.string()),
            records.column("modality").cast(pa.string()),
        ],
        schema=RECORD_FEATURES_SCHEMA,
    )
    return out.sort_by("record_id")


def stamp(features: pa.Table, commit_id: str, commit_time: str) -> pa.Table:
    """Record features -> a commit's features table (FEATURES_SCHEMA, sorted by record id)."""
    features = features.select(RECORD_FEATURES_SCHEMA.names)
    n = features.num_rows
    ts = pa.array([_parse_time(commit_time)] * n, pa.timestamp("us", tz="UTC"))
    cols = [features.column("record_id"), pa.array([commit_id] * n, pa.string()), ts]
    cols += [features.column(name) for name in RECORD_FEATURES_SCHEMA.names[1:]]
    return pa.Table.from_arrays(cols, schema=FEATURES_SCHEMA).sort_by("record_id")


def _parse_time(commit_time: str) -> datetime:
    return datetime.strptime(commit_time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def has_commit_features(repo: Repo, commit_id: str) -> bool:
    return repo.store.exists(features_key(commit_id))


def compute_commit_features(repo: Repo, commit_id: str) -> pa.Table:
    """Backfill: a commit's features table computed from its shards (any kind of commit)."""
    commit = repo.read_commit(commit_id)
    cols = ["record_id", "modality", "label", "meta", "text", "data"]
    parts = [record_features(t) for t in repo.read_rows(commit_id, cols)]
    feats = (
        pa.concat_tables(parts) if parts else RECORD_FEATURES_SCHEMA.empty_table()
    )
    return stamp(feats, commit_id, commit.time)


def write_commit_features(
    repo: Repo, commit_id: str, new_features: pa.Table | None = None
) -> dict[str, Any]:
    """Write `features/<commit_id>.parquet` once (put_if_absent; the content is determined).

    `new_features` are the records the commit added (RECORD_FEATURES_SCHEMA): the table is
    the first parent's table restamped + those rows (an ingest commit only adds). Without
    them, or if the parent has no table, it is computed from the commit's shards.
    """
    key = features_key(commit_id)
    if repo.store.exists(key):
        return {"key": key, "written": False}
    commit = repo.read_commit(commit_id)
    table = None
    if new_features is not None:
        parent = commit.parents[0] if commit.parents else None
        base = None
        if parent is None:
            base = RECORD_FEATURES_SCHEMA.empty_table()
        elif has_commit_features(repo, parent):
            base = commit_features(repo, parent).select(RECORD_FEATURES_SCHEMA.names)
        if base is not None:
            new = new_features.select(RECORD_FEATURES_SCHEMA.names)
            if base.num_rows:  # a re-added id keeps one row: the new one
                keep = pc.invert(pc.is_in(base.column("record_id"), value_set=new.column("record_id")))
                base = base.filter(keep)
            table = stamp(pa.concat_tables([base, new]), commit_id, commit.time)
            expected = commit.records.count
            if table.num_rows != expected:
                table = None  # not a pure append: compute from the shards instead
    if table is None:
        table = compute_commit_features(repo, commit_id)
    repo.store.put_if_absent(key, table_bytes(table))
    return {"key": key, "written": True, "rows": table.num_rows}


# ---------------------------------------------------------------------------- publish
def _exclusive(path: Path):
    """One publisher per Feast repository at a time (apply and materialize included), across
    processes and threads."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


def _definitions_hash(feature_repo: Path) -> str:
    h = hashlib.sha256()
    for name in ("feature_store.yaml", DEFINITIONS):
        h.update(name.encode() + b"\0" + (feature_repo / name).read_bytes() + b"\0")
    return h.hexdigest()


def _read_state(feature_repo: Path) -> dict[str, Any]:
    try:
        return json.loads((feature_repo / STATE).read_text())
    except FileNotFoundError:
        return {"definitions": None, "commits": {}}


def _write_state(feature_repo: Path, state: dict[str, Any]) -> None:
    write_atomic(str(feature_repo / STATE), json.dumps(state, indent=1, sort_keys=True).encode())


def _write_parquet_atomic(path: Path, table: pa.Table) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    write_atomic(str(path), buf.getvalue().to_pybytes())


def _append_offline(path: Path, parts: list[pa.Table], schema: pa.Schema) -> None:
    """Rewrite one view's offline file with `parts` appended (atomic replace).

    One file per view, not one per commit: Feast's Dask offline store fails to sort a
    point-in-time join whose merged frame has a partition of only unmatched rows (null
    timestamps), which several source files produce. The file grows with the rows
    published (each commit adds only the rows it introduced or changed).
    """
    old = pq.read_table(path) if path.exists() else schema.empty_table()
    _write_parquet_atomic(path, pa.concat_tables([old.cast(schema), *parts]).combine_chunks())


def load_definitions(feature_repo: Path) -> list:
    """The Feast objects of `<feature_repo>/definitions.py` (imported under a private name)."""
    from feast import Entity, FeatureService, FeatureView

    path = feature_repo / DEFINITIONS
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist", hint="pass --feature-repo DIR")
    name = f"_dataversion_feature_defs_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return [
        v
        for v in vars(module).values()
        if isinstance(v, (Entity, FeatureView, FeatureService))
    ]


def _unpublished(repo: Repo, commit_id: str, done: dict) -> list[tuple[str, Any]]:
    todo = [c for c in repo.reachable_commits([commit_id]) if c not in done]
    commits = [(c, repo.read_commit(c)) for c in todo]
    commits.sort(key=lambda x: (x[1].time, x[0]))
    return commits


def _changed_rows(repo: Repo, commit, table: pa.Table) -> pa.Table:
    """Rows of a commit's table that no parent's table holds with the same label."""
    if not commit.parents or table.num_rows == 0:
        return table
    keep = np.ones(table.num_rows, bool)
    ids = table.column("record_id")
    label = pc.fill_null(table.column("label"), "\0none")
    key = pc.binary_join_element_wise(ids, label, "\0")
    for parent in commit.parents:
        ptable = commit_features(repo, parent, ["record_id", "label"])
        pkey = pc.binary_join_element_wise(
            ptable.column("record_id"), pc.fill_null(ptable.column("label"), "\0none"), "\0"
        )
        keep &= ~pc.is_in(key, value_set=pkey).to_numpy(zero_copy_only=False)
    return table.filter(pa.array(keep))


def _view_schema(view: str) -> pa.Schema:
    return pa.schema([FEATURES_SCHEMA.field(n) for n in ("record_id", "dataset_commit", "event_timestamp", *FEATURE_VIEWS[view])])


def _view_rows(rows: pa.Table, view: str) -> pa.Table:
    modality = VIEW_MODALITY[view]
    cols = ["record_id", "dataset_commit", "event_timestamp", *FEATURE_VIEWS[view]]
    t = rows.select(cols)
    if modality is not None:
        t = t.filter(pc.equal(rows.column("modality"), modality))
    return t


def erase_from_feature_repo(
    repo: Repo, feature_repo: str | os.PathLike = DEFAULT_FEATURE_REPO
) -> dict[str, Any]:
    """Apply the repository's erasures to a Feast repository: the erased records' rows leave
    every view's offline file, and their online rows are overwritten with nulls (Feast's
    online store interface has no per-entity delete; a null reads back as None, the same
    as an unknown id). Idempotent; `publish` runs it first, so a publish never serves
    an erased record again. Returns {records, offline_rows_removed, online_rows_nulled}."""
    from dataversion.porcelain.erase import erased_record_ids, erasures

    root = Path(feature_repo).resolve()
    if not (root / "feature_store.yaml").is_file():
        raise BadInputError(f"{root} is not a Feast repository (no feature_store.yaml)")
    erased = sorted(erased_record_ids(erasures(repo)))
    report: dict[str, Any] = {"feature_repo": str(root), "records": len(erased), "offline_rows_removed": 0,
                              "online_rows_nulled": 0}
    if not erased:
        return report
    with _exclusive(root / LOCK):
        return _erase_locked(root, erased, report)


def _erase_locked(root: Path, erased: list[str], report: dict[str, Any]) -> dict[str, Any]:
    value_set = pa.array(erased, pa.string())
    present: dict[str, list[str]] = {}
    for view in FEATURE_VIEWS:
        path = root / "data" / "offline" / f"{view}.parquet"
        if not path.exists():
            continue
        table = pq.read_table(path)
        hit = pc.is_in(table.column("record_id"), value_set=value_set)
        n = int(pc.sum(hit).as_py() or 0)
        if n:
            present[view] = sorted(set(table.filter(hit).column("record_id").to_pylist()))
            _write_parquet_atomic(path, table.filter(pc.invert(hit)))
            report["offline_rows_removed"] += n
    if not present or not (root / "data/registry.db").exists():
        return report
    from feast import FeatureStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    store = FeatureStore(repo_path=str(root))
    provider = store._get_provider()
    now = datetime.now(timezone.utc)
    for view, ids in present.items():
        fv = store.get_feature_view(view)
        names = [f.name for f in fv.features]
        rows = [
            (EntityKey(join_keys=["record_id"], entity_values=[Value(string_val=rid)]), {n: Value() for n in names}, now, now)
            for rid in ids
        ]
        provider.online_write_batch(store.config, fv, rows, progress=None)
        report["online_rows_nulled"] += len(rows)
    return report


def publish(
    repo: Repo,
    ref: str,
    feature_repo: str | os.PathLike = DEFAULT_FEATURE_REPO,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Publish the commit `ref` names (and every unpublished ancestor) to a Feast repository.

    Idempotent: a second call finds nothing to do and touches no file. Returns what it did:
    {commit, applied, published: [{commit, time, rows: {view: n}}], skipped, elapsed_s}.
    Raises NotFoundError (ref, feature repo), BadInputError (not a feature repo).
    """
    started = time.monotonic()
    root = Path(feature_repo).resolve()
    if not (root / "feature_store.yaml").is_file():
        raise BadInputError(f"{root} is not a Feast repository (no feature_store.yaml)")
    commit_id = repo.resolve(ref)
    erased = erase_from_feature_repo(repo, root)
    with _exclusive(root / LOCK):
        state = _read_state(root)
        defs = _definitions_hash(root)
        todo = _unpublished(repo, commit_id, state["commits"])
        need_apply = state.get("definitions") != defs or not (root / "data/registry.db").exists()
        report: dict[str, Any] = {
            "commit": commit_id,
            "feature_repo": str(root),
            "applied": False,
            "published": [],
            "already_published": len(state["commits"]),
            "erased": erased,
        }
        if not todo and not need_apply:
            report["message"] = f"nothing to do: {commit_id[:12]} is already published"
            report["elapsed_s"] = round(time.monotonic() - started, 3)
            return report
        exports = []
        new_rows: dict[str, list[pa.Table]] = {view: [] for view in FEATURE_VIEWS}
        for cid, commit in todo:
            written = write_commit_features(repo, cid)
            if progress and written["written"]:
                print(f"[features] computed features/{cid}.parquet", file=sys.stderr)
            rows = _changed_rows(repo, commit, commit_features(repo, cid))
            counts = {}
            for view in FEATURE_VIEWS:
                vt = _view_rows(rows, view)
                counts[view] = vt.num_rows
                if vt.num_rows:
                    new_rows[view].append(vt)
            exports.append((cid, commit, counts))
        for view, parts in new_rows.items():
            path = root / "data" / "offline" / f"{view}.parquet"
            if parts or not path.exists():
                _append_offline(path, parts, _view_schema(view))
        del new_rows

        from feast import FeatureStore

        store = FeatureStore(repo_path=str(root))
        if need_apply:
            store.apply(load_definitions(root))
            state["definitions"] = defs
            report["applied"] = True
            _write_state(root, state)
        for cid, commit, counts in exports:
            views = [v for v, n in counts.items() if n]
            if views:
                t = _parse_time(commit.time)
                # the commit's own window, inclusive at both ends: exactly its rows
                store.materialize(t, t, feature_views=views)
            state["commits"][cid] = {"time": commit.time, "rows": counts}
            _write_state(root, state)
            report["published"].append({"commit": cid, "time": commit.time, "rows": counts})
            if progress:
                print(f"[features] published {cid[:12]}: {counts}", file=sys.stderr)
        n = len(report["published"])
        report["message"] = (
            f"published {n} commit(s) up to {commit_id[:12]}"
            + ("; applied the definitions" if report["applied"] else "")
        )
        report["elapsed_s"] = round(time.monotonic() - started, 3)
        return report
