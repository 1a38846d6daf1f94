"""What a report shows, gathered from the repository into plain values (no HTML here).

Charts are aggregates computed part by part over the columns they need (modality, label,
payload lengths): memory stays bounded by one part whatever the commit's size. Examples are
samples: at most `MAX_CLUSTERS` duplicate clusters, `MAX_REJECT_EXAMPLES` rejects per reason.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataversionError, NotFoundError
from ..interop.snapshot import SnapshotView

if TYPE_CHECKING:
    from ..repo import Repo

# Attachment names an ingest commit carries (pipelines.results writes them; the core reads
# them by name so the report needs no pipelines import).
REJECTS, DUPLICATES, CONSUMED = "rejects", "duplicates", "consumed"  # attachments an ingest commit stores
MAX_COMMITS = 60
MAX_LABELS = 25
MAX_CLUSTERS = 12
MAX_DUPS_PER_CLUSTER = 3
MAX_REJECT_EXAMPLES = 3
MAX_CHANGE_SAMPLES = 12
MAX_DIFF_IDS = 200_000
SIZE_SAMPLE_RECORDS = 250_000  # payload lengths read for the histograms (metadata: every record)  # above this many changed records, no per-record samples


@dataclass
class ReportData:
    commit_id: str
    ref: str
    summary: dict[str, Any]
    refs: list[str]
    history: list[dict[str, Any]]
    records: int
    by_modality: dict[str, int]
    labels: list[tuple[str, int]]
    labels_distinct: int
    unlabeled: int
    size_hist: dict[str, list[tuple[str, int]]]
    size_sampled: tuple[int, int]  # (records whose lengths the histograms count, records)
    length_hist: list[tuple[str, int]]
    rejects_by_reason: list[tuple[str, int]]
    reject_examples: dict[str, list[dict[str, str]]]
    duplicates_total: int
    duplicate_kinds: dict[str, int]
    clusters: list[dict[str, Any]]
    features: list[dict[str, Any]] | None
    feature_categories: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    against: dict[str, Any] | None = None


def size_label(k: int) -> str:
    """Label of the log2 bin [2**k, 2**(k+1)) bytes."""
    v = 2**k
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024:
            return f"{v} {unit}"
        v //= 1024
    return f"{v} TiB"


def _log2_bins(values: np.ndarray) -> np.ndarray:
    return np.floor(np.log2(np.maximum(values, 1))).astype(np.int64)


def _hist(counter: Counter, label=size_label) -> list[tuple[str, int]]:
    if not counter:
        return []
    lo, hi = min(counter), max(counter)
    return [(label(k), int(counter.get(k, 0))) for k in range(lo, hi + 1)]


def _attachment_json(repo: Repo, commit_id: str, name: str, kind: type = list) -> Any:
    """The attachment's JSON value if it is a `kind` (list or dict), else an empty one."""
    try:
        data = repo.read_attachment(commit_id, name)
    except NotFoundError:
        return kind()
    try:
        value = json.loads(data) if data else kind()
    except ValueError:
        return kind()
    return value if isinstance(value, kind) else kind()


def _size_sample(view: SnapshotView) -> list[int]:
    """The parts whose payload lengths the histograms read: all of them up to
    SIZE_SAMPLE_RECORDS records, else evenly spaced parts holding about that many (parts
    are cut by record id, a hash: any part is a uniform sample of the records)."""
    rows = [p.rows for p in view.parts]
    total = sum(rows)
    if total <= SIZE_SAMPLE_RECORDS:
        return list(range(len(rows)))
    k = max(1, -(-len(rows) * SIZE_SAMPLE_RECORDS // total))
    return sorted({int(round(x)) for x in np.linspace(0, len(rows) - 1, k)})


def collect(repo: Repo, ref: str, *, against: str | None = None, read_sources: bool = False) -> ReportData:
    """Everything the report of `ref` shows (vs `against` when given).

    One pass over the commit's parts computes every aggregate and picks the few records
    shown as examples (the kept side of duplicate clusters, samples of what was added)."""
    commit_id = repo.resolve(ref)
    commit = repo.read_commit(commit_id)
    view = SnapshotView(repo, commit_id, cache_bytes=64 * 2**20)

    duplicates = _attachment_json(repo, commit_id, DUPLICATES)
    cluster_keys = _cluster_keys(duplicates)
    change = _change_ids(repo, against, view) if against else None
    wanted = cluster_keys + (change["ids"]["added"][:MAX_CHANGE_SAMPLES] if change and change["ids"] else [])
    picked = view.find_records(wanted, ["modality", "source", "label", "meta", "text", "data"]) if wanted else {}

    labels: Counter[str] = Counter()
    unlabeled = 0
    sizes: dict[str, np.ndarray] = {}
    lengths = np.zeros(64, dtype=np.int64)
    sampled = set(_size_sample(view))
    for i in range(len(view.parts)):
        t = view.part_table(i, ["modality", "label", "text", "data"] if i in sampled else ["modality", "label"])
        if t.num_rows == 0:
            continue
        lab = t.column("label")
        unlabeled += lab.null_count
        for row in pc.value_counts(lab.drop_null()).to_pylist():
            labels[row["values"]] += row["counts"]
        if i not in sampled:
            continue
        text_len = pc.binary_length(t.column("text")).fill_null(-1).to_numpy(zero_copy_only=False)
        data_len = pc.binary_length(t.column("data")).fill_null(0).to_numpy(zero_copy_only=False)
        bins = _log2_bins(np.where(text_len >= 0, text_len, data_len))
        mods = t.column("modality")
        for mod in pc.unique(mods).to_pylist():
            mask = pc.equal(mods, mod).to_numpy(zero_copy_only=False)
            counts = np.bincount(bins[mask], minlength=64)
            sizes[mod] = sizes.get(mod, np.zeros(64, dtype=np.int64)) + counts[:64]
        chars = pc.utf8_length(t.column("text").drop_null()).to_numpy(zero_copy_only=False)
        if len(chars):
            lengths += np.bincount(_log2_bins(chars), minlength=64)[:64]

    top = labels.most_common(MAX_LABELS)
    rest = sum(labels.values()) - sum(n for _, n in top)
    label_items = [(str(k), int(v)) for k, v in top]
    if rest:
        label_items.append((f"({len(labels) - len(top)} other labels)", int(rest)))
    if unlabeled:
        label_items.append(("(no label)", int(unlabeled)))

    rejects = _attachment_json(repo, commit_id, REJECTS)
    by_reason = Counter(str(r.get("reason", "?")) for r in rejects)
    examples: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rejects:
        reason = str(r.get("reason", "?"))
        if len(examples[reason]) < MAX_REJECT_EXAMPLES:
            examples[reason].append({"source": str(r.get("source", "")), "message": str(r.get("message", ""))})
    if not rejects and commit.counts.get("reasons"):
        by_reason = Counter({str(k): int(v) for k, v in commit.counts["reasons"].items()})

    # the change token of every object the branch had consumed at this commit (ingest's
    # `consumed` attachment): a duplicate read back from a source that changed since is not shown
    consumed = _attachment_json(repo, commit_id, CONSUMED, dict) if read_sources else {}
    tokens = consumed.get(commit.provenance.get("source"), {})
    clusters = _clusters(commit, duplicates, cluster_keys, picked, read_sources=read_sources, tokens=tokens)
    history = [
        {"id": c["id"], "time": c["time"], "message": c["message"], "by_modality": c["records"]["by_modality"],
         "count": c["records"]["count"], "counts": c.get("counts", {})}
        for c in reversed(repo.log(commit_id, MAX_COMMITS))
    ]
    features, categories = _features(repo, commit_id)
    refs = sorted(n for n, v in {**{f"branch {k}": v for k, v in repo.branches().items()},
                                 **{f"tag {k}": v for k, v in repo.tags().items()}}.items() if v == commit_id)
    return ReportData(
        commit_id=commit_id, ref=ref, summary=commit.summary(commit_id), refs=refs, history=history,
        records=view.record_count, by_modality=view.by_modality(), labels=label_items,
        labels_distinct=len(labels), unlabeled=int(unlabeled),
        size_hist={m: _hist(_nonzero(c)) for m, c in sorted(sizes.items())},
        size_sampled=(sum(view.parts[i].rows for i in sampled), view.record_count),
        length_hist=_hist(_nonzero(lengths), label=lambda k: f"{2**k:,}"),
        rejects_by_reason=by_reason.most_common(), reject_examples=dict(examples),
        duplicates_total=len(duplicates), duplicate_kinds=dict(Counter(str(d.get("kind", "?")) for d in duplicates)),
        clusters=clusters, features=features, feature_categories=categories,
        against=_against(repo, change, picked, label_items, labels, int(unlabeled)) if change else None,
    )


def _nonzero(counts: np.ndarray) -> Counter:
    return Counter({int(k): int(counts[k]) for k in np.flatnonzero(counts)})


def _cluster_keys(duplicates: list[dict]) -> list[str]:
    """The kept records of the clusters shown: near first, then the largest (by id on ties)."""
    size: Counter[str] = Counter()
    near: set[str] = set()
    for d in duplicates:
        k = str(d.get("duplicate_of", ""))
        size[k] += 1
        if d.get("kind") == "near":
            near.add(k)
    return sorted(size, key=lambda k: (k not in near, -size[k], k))[:MAX_CLUSTERS]


def _clusters(commit, duplicates: list[dict], chosen: list[str], kept: dict[str, dict], *, read_sources: bool,
              tokens: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A sample of duplicate clusters: the kept record and up to MAX_DUPS_PER_CLUSTER of
    the inputs dropped as its duplicates (read back from the source with `read_sources`,
    unless the object changed since the commit consumed it: `tokens`, key -> change token)."""
    from . import examples as ex

    wanted = set(chosen)
    groups: dict[str, list[dict]] = defaultdict(list)
    for d in duplicates:
        k = str(d.get("duplicate_of", ""))
        if k in wanted:
            groups[k].append(d)
    text_field = ((commit.provenance.get("config") or {}).get("text_field")) or "text"
    reader = ex.SourceReader(commit.provenance.get("source") if read_sources else None, text_field, tokens)
    out = []
    for key in chosen:
        rep = kept.get(key)
        members = sorted(groups[key], key=lambda d: (d.get("kind") != "near", str(d.get("source"))))
        card: dict[str, Any] = {
            "kept_id": key, "size": len(groups[key]),
            "kept": _example(rep, ex) if rep else {"source": None, "modality": None, "html": '<span class="note">not in this snapshot</span>'},
            "duplicates": [],
        }
        for d in members[:MAX_DUPS_PER_CLUSTER]:
            text, data = reader.read(str(d.get("source", "")))
            dup: dict[str, Any] = {"source": str(d.get("source", "")), "kind": str(d.get("kind", "?")),
                                   "similarity": d.get("similarity")}
            mod = rep["modality"] if rep else None
            if mod == "text" and text is not None and rep and rep.get("text") is not None:
                a, b, sim = ex.marked_pair(rep["text"], text)
                if not card.get("kept_marked"):  # the kept side shows its words differing from the first duplicate
                    card["kept"]["html"] = f'<p class="excerpt">{a}</p>'
                    card["kept_marked"] = True
                dup["html"] = f'<p class="excerpt">{b}</p>'
                dup["word_overlap"] = round(sim, 3)
            elif mod == "image" and data is not None:
                dup["html"] = ex.thumbnail(data)
            elif mod == "audio" and data is not None:
                secs = ex.audio_duration(data)
                dup["html"] = f'<p class="duration">{secs:.2f} s</p>' if secs is not None else '<span class="note">duration unknown</span>'
            elif reader.changed(str(d.get("source", ""))):
                dup["html"] = '<span class="note">changed at the source since this commit: not shown</span>'
            else:
                dup["html"] = '<span class="note">payload not stored (read with --read-sources)</span>' if not read_sources else '<span class="note">payload not readable at the source</span>'
            card["duplicates"].append(dup)
        card["more"] = max(0, len(members) - MAX_DUPS_PER_CLUSTER)
        out.append(card)
    return out


def _example(rec: dict, ex) -> dict[str, Any]:
    mod = rec.get("modality")
    if mod == "text" and rec.get("text") is not None:
        html = f'<p class="excerpt">{ex.excerpt(rec["text"])}</p>'
    elif mod == "image":
        html = ex.thumbnail(rec.get("data"))
    elif mod == "audio":
        secs = ex.audio_duration(rec.get("data"), rec.get("meta"))
        html = f'<p class="duration">{secs:.2f} s</p>' if secs is not None else '<span class="note">duration unknown</span>'
    else:
        html = f'<span class="note">{len(rec.get("data") or b""):,} bytes</span>'
    return {"source": rec.get("source"), "modality": mod, "label": rec.get("label"), "html": html}


def _features(repo: Repo, commit_id: str) -> tuple[list[dict[str, Any]] | None, dict[str, list[tuple[str, int]]]]:
    from ..features import FEATURE_COLUMNS, commit_features

    try:
        table = commit_features(repo, commit_id)
    except (DataversionError, OSError, pa.ArrowException):
        return None, {}
    rows, cats = [], {}
    for name, typ in FEATURE_COLUMNS.items():
        if name not in table.column_names or name in ("label", "modality", "phash"):
            continue
        col = table.column(name)
        n = len(col) - col.null_count
        if not n:
            continue
        if pa.types.is_string(typ):
            cats[name] = [(str(r["values"]), int(r["counts"])) for r in pc.value_counts(col.drop_null()).to_pylist()][:15]
            continue
        mm = pc.min_max(col)
        rows.append({"name": name, "count": n, "min": mm["min"].as_py(), "mean": pc.mean(col).as_py(),
                     "median": pc.quantile(col, q=0.5, interpolation="midpoint")[0].as_py(), "max": mm["max"].as_py()})
    return rows, cats


def _change_ids(repo: Repo, against: str, view: SnapshotView) -> dict[str, Any]:
    other_id = repo.resolve(against)
    # one diff: it describes every differing record anyway (its modality counts), so its
    # records come at the cost of keeping them; their ids are kept for a small change. The
    # records of this commit are found in the view's layout (located once for the whole
    # report), not looked up one by one in its index.
    d = repo.diff(other_id, view.commit_id, records=True, located_b=[p.group for p in view.parts])
    recs = d.pop("records", {})
    small = 0 < d["added"] + d["removed"] <= MAX_DIFF_IDS
    ids = {k: [r["record_id"] for r in recs.get(k, [])] for k in ("added", "removed", "changed")} if small else None
    return {"ref": against, "commit": other_id, "diff": d, "ids": ids, "records": recs if small else None}


def _against(repo: Repo, change: dict[str, Any], picked: dict[str, dict], label_items,
             labels: Counter, unlabeled: int) -> dict[str, Any]:
    d, other_id = change["diff"], change["commit"]
    out: dict[str, Any] = {"ref": change["ref"], "commit": other_id, "added": d["added"], "removed": d["removed"],
                           "by_modality": d["by_modality"], "added_samples": [], "removed_samples": []}
    recs = change.get("records")
    other = None
    other_labels: Counter[str] = Counter()
    if recs is not None and not recs["changed"]:
        # a small change: the label counts before are those of now, less what was added,
        # plus what was removed (the diff described each record): no pass over the other
        # commit's records
        other_labels.update(labels)
        other_labels["(no label)"] += unlabeled
        for r in recs["added"]:
            other_labels["(no label)" if r["label"] is None else r["label"]] -= 1
        for r in recs["removed"]:
            other_labels["(no label)" if r["label"] is None else r["label"]] += 1
        other_labels = Counter({k: v for k, v in other_labels.items() if v > 0})
    else:
        other = SnapshotView(repo, other_id, cache_bytes=16 * 2**20)
        for t in other.metadata_tables(["label"]):
            other_labels.update({("(no label)" if r["values"] is None else r["values"]): r["counts"] for r in pc.value_counts(t.column("label")).to_pylist()})
    now = {k: v for k, v in label_items if not k.startswith("(") or k == "(no label)"}
    names = sorted(set(now) | set(other_labels), key=lambda k: -(now.get(k, 0) + other_labels.get(k, 0)))[:MAX_LABELS]
    out["labels"] = [(k, int(other_labels.get(k, 0)), int(now.get(k, 0))) for k in names]
    out["records_before"] = other.record_count if other is not None else repo.read_commit(other_id).records.count
    if change["ids"]:
        cols = ["modality", "source", "label"]
        out["added_samples"] = [{"record_id": h, **{c: picked[h][c] for c in cols}}
                                for h in change["ids"]["added"][:MAX_CHANGE_SAMPLES] if h in picked]
        if other is None:
            out["removed_samples"] = [{"record_id": r["record_id"], **{c: r[c] for c in cols}}
                                      for r in recs["removed"][:MAX_CHANGE_SAMPLES]]
        else:
            out["removed_samples"] = list(other.find_records(change["ids"]["removed"][:MAX_CHANGE_SAMPLES], cols).values())
    return out
