"""The ingestion driver: raw objects -> cleaned, deduplicated records -> one commit.

`run_ingest` lists the source, drops objects the branch already consumed, runs the
pipeline (`pipelines.graph.build_pipeline`) on any Beam runner, checks
`inputs == kept + duplicates + rejected`, then commits the prewritten shards with
`expected_parent` (compare-and-swap) and writes the commit's features table. Workers hand
their small results back through the repository's store (`pipelines.scratch`), which every
runner can reach; a run killed before the commit leaves only unreferenced objects.

Shards are written per record-id range (the number of ranges depends on the input size
only), so the same input gives the same shards whatever the runner and worker count.

A fault of the source store (unreachable after its retries, an object gone between listing
and reading) fails the run with one line naming the source, endpoint and key: nothing is
committed and nothing is consumed, so a rerun reads everything (`SourceFault`). The run
holds an in-flight marker (`dataversion.inflight`) from before the pipeline writes until
after the commit, so a concurrent `gc` keeps its scratch and the shards its workers wrote.
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass

from dataversion import Repo
from dataversion.denylist import denied_ids
from dataversion.errors import DataversionError, NotFoundError
from dataversion.hashing import canonical_json
from dataversion.inflight import InFlight
from dataversion.objects import ShardRef

from .config import IngestConfig
from .dedup.sharded import MAX_RANGES
from .graph import build_pipeline
from .process import WorkItem
from .progress import RunProgress, progress_mode
from .readers.labels import LabelResolver
from .readers.source import SourceFault, open_source
from .results import (
    CODE_VERSION,
    CONSUMED,
    DUPLICATES,
    REJECTS,
    RETRIED,
    IngestReport,
    read_consumed,
    read_duplicates,
    read_rejects,
)
from .results import (
    DEDUP_STATE as STATE,
)
from .scratch import PieceCache, RunScratch

__all__ = ["IngestReport", "build_pipeline", "read_duplicates", "read_rejects", "run_ingest"]


def run_ingest(
    source: str,
    repo_url: str,
    branch: str = "main",
    config: IngestConfig | None = None,
    beam_args: tuple[str, ...] | list[str] = (),
    progress: bool | str = False,
    message: str = "",
    retry_rejected: str | bool | None = None,
) -> IngestReport:
    """Ingest every object under `source` the branch has not consumed yet; one commit.

    Creates the repository if missing. Returns the report (commit None when nothing was
    new). `progress`: True shows the run's counts on stderr while the pipeline runs (a
    tqdm bar on a terminal, a log line every 10 s otherwise; "bar"/"log" force one). `retry_rejected` re-reads objects the branch rejected although it consumed them:
    True (or "") all of them, a reason (e.g. "unreadable") only those rejected for it.
    Raises SourceFault (a StoreError) when the source store cannot serve a listed object,
    ConflictError if the branch moved during the run, DataversionError if the accounting
    does not balance; in each case nothing is committed or consumed (rerun).
    """
    import apache_beam as beam

    started = time.monotonic()
    config = config or IngestConfig()
    src = open_source(source)
    repo = Repo.init(repo_url)
    parent = repo.branch_tip(branch)
    report = IngestReport(None, parent, branch, src.url, config_hash=config.hash)

    listing = src.list(include_hidden=config.include_hidden)
    resolver = LabelResolver(
        [o for o in listing if o.problem is None],
        lambda key: _read_sidecar(src, key, config),
        folder_labels=config.folder_labels,
        label_map=config.label_map,
        lowercase=config.lowercase_labels,
    )
    report.sidecar_errors = resolver.errors
    consumed = read_consumed(repo, parent)
    seen = consumed.get(src.url, {})
    if not listing and not seen:  # a typo'd prefix lists nothing, as an empty directory
        raise NotFoundError(f"no objects under {src.url}: nothing to ingest",
                            hint="check the source path or prefix (S3 keys are case-sensitive); nothing was committed")
    objects = [o for o in listing if o.key not in resolver.sidecars]
    new = [o for o in objects if seen.get(o.key) != o.etag]
    retried: list[str] = []
    if retry_rejected or retry_rejected == "":
        reason = retry_rejected if isinstance(retry_rejected, str) and retry_rejected else None
        again = rejected_keys(repo, parent, src.url, reason)
        retried = [o.key for o in objects if o.key in again and seen.get(o.key) == o.etag]
        new = sorted(new + [o for o in objects if o.key in set(retried)], key=lambda o: o.key)
    report.objects = len(new)
    report.objects_retried = len(retried)
    report.objects_skipped = len(objects) - len(new)
    if not new:
        report.message = (
            f"nothing new: {report.objects_skipped} object(s) already consumed by {branch}"
        )
        report.elapsed_s = round(time.monotonic() - started, 3)
        return report

    work = [WorkItem(o.key, o.etag, o.size, resolver.label_of(o.key), o.problem) for o in new]
    total_bytes = sum(o.size for o in new)
    # id ranges (and band-key ranges): ~target_shard_bytes of input each, so a worker's
    # share stays bounded however large the run (up to 2^24 ranges)
    partitions = max(1, min(MAX_RANGES, math.ceil(total_bytes / config.target_shard_bytes)))
    scratch = RunScratch.new()
    retry_note = f" ({len(retried)} rejected before, read again)" if retried else ""
    _log(
        progress,
        f"{len(new)} new object(s){retry_note}, {report.objects_skipped} already consumed; "
        "running the pipeline",
    )
    with InFlight(repo.store, f"ingest {scratch.run_id} into {branch}", scratch=scratch.prefix):
        try:
            pieces = _write_listing(repo, scratch, work, config, parent, partitions)
            repo.store.put(scratch.state, _parent_state(repo, parent, config).to_bytes())
            with RunProgress(repo.store, scratch, len(work), progress_mode(progress)):
                results = _run_pipeline(
                    beam, beam_args, src, repo, len(pieces), config, parent, scratch, partitions
                )
            _log(progress, "pipeline done; checking the accounting")
            _fill_report(report, results)
            _check_accounting(report, results, listed=len(work))
            if _rejected_again(repo, parent, src.url, new, retried, report, results):
                for scratch_of in (scratch, *(PieceCache(key) for key in pieces)):
                    _drop_scratch(repo, scratch_of)
                report.message = (f"nothing new: the {len(retried)} object(s) read again were rejected again, "
                                  "for the same reasons")
                report.elapsed_s = round(time.monotonic() - started, 3)
                _log(progress, report.message)
                return report
            result = _commit(
                repo,
                report,
                results,
                src=src,
                new=new,
                consumed={**consumed, src.url: {**seen, **{o.key: o.etag for o in new}}},
                retried=retried,
                config=config,
                branch=branch,
                message=message,
                parent=parent,
            )
        except BaseException:
            _drop_scratch(repo, scratch)
            raise
        report.commit = result.commit_id
        report.shards_written = len(results.shard_refs)
        report.features = _write_features(repo, result.commit_id, scratch)
        _drop_scratch(repo, scratch)
        for key in pieces:
            _drop_scratch(repo, PieceCache(key))
    report.message = f"committed {report.kept} new record(s) from {len(new)} object(s)"
    report.elapsed_s = round(time.monotonic() - started, 3)
    _log(progress, report.message)
    return report


def _read_sidecar(src, key: str, config: IngestConfig) -> bytes:
    """A label sidecar's bytes; one that is rejected (too large...) is a sidecar error
    (ValueError), a store fault fails the run (SourceFault)."""
    try:
        return src.read(key, max_bytes=config.max_object_bytes)
    except SourceFault:
        raise
    except DataversionError as e:
        raise ValueError(str(e)) from e


PIECE_OBJECTS = 64  # work items per listing piece (one ReadAndProcess call)


def _write_listing(repo, scratch, work, config, parent, partitions) -> list[str]:
    """Write the work items as listing pieces in the store; returns their cache keys (what
    identifies a piece's outputs: its items, the config, the parent, the id ranges). The
    pipeline reads the pieces there (its graph holds only the piece numbers)."""
    from dataversion.hashing import object_id

    keys: list[str] = []
    for start in range(0, len(work), PIECE_OBJECTS):
        chunk = work[start : start + PIECE_OBJECTS]
        rows = [
            [w.key, w.etag, w.size, w.label, list(w.problem) if w.problem else None] for w in chunk
        ]
        ident = {
            "items": rows,
            "config": config.hash,
            "parent": parent,
            "parts": partitions,
            "code": CODE_VERSION,
        }
        key = object_id(canonical_json(ident))
        doc = canonical_json({"cache": key, "items": rows})
        repo.store.put(scratch.listing_piece(len(keys)), doc)
        keys.append(key)
    return keys


def _run_pipeline(beam, beam_args, src, repo, pieces, config, parent, scratch, partitions):
    """Run the pipeline and read what it left; a SourceFault raised in a worker comes back
    as one clean SourceFault whatever the runner wrapped it in."""
    try:
        with beam.Pipeline(options=_pipeline_options(beam_args)) as p:
            build_pipeline(
                p,
                source_url=src.url,
                repo_url=repo.url,
                pieces=pieces,
                config=config,
                parent=parent,
                scratch=scratch.prefix,
                partitions=partitions,
                denied=denied_ids(repo.store).tobytes(),
            )
    except Exception as e:
        fault = source_fault_in(e)
        if fault is not None:
            raise SourceFault(
                f"ingest failed, nothing committed or consumed: {fault}",
                hint="fix the source store and rerun; the run reads everything again",
            ) from e
        raise
    try:
        return _read_results(repo, scratch, config, pieces, partitions)
    except NotFoundError as e:
        raise DataversionError(f"the pipeline did not produce its results ({e})") from e


_FAULT_LINE = re.compile(r"SourceFault: (.+?)(?: \[while running [^\]]*\])*$", re.MULTILINE)


def source_fault_in(exc: BaseException) -> str | None:
    """The one-line message of a SourceFault behind a pipeline failure, or None.

    In-process runners re-raise the worker's exception (its message suffixed with the
    step); multi-process ones raise a RuntimeError holding the worker's traceback text.
    """
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, SourceFault):
            return _strip_step(str(e))
        e = e.__cause__ or e.__context__
    found = _FAULT_LINE.findall(str(exc))
    return _strip_step(found[-1]) if found else None


def _strip_step(msg: str) -> str:
    return re.sub(r"(?: \[while running [^\]]*\])+$", "", msg.strip())


def _commit(repo, report, results, *, src, new, consumed, retried, config, branch, message, parent):
    """The run's commit: prewritten shards, counts, provenance and attachments, CAS on
    `parent`. `consumed` is the branch's record after this run."""
    counts = {
        "inputs": report.inputs,
        "kept": report.kept,
        "duplicates": report.duplicates,
        "rejected": report.rejected,
        "by_modality": report.by_modality,
        "reasons": report.reasons,
        "duplicate_kinds": report.duplicate_kinds,
    }
    provenance = {
        "pipeline": "pipelines.ingest",
        "source": src.url,
        "objects_consumed": len(new),
        "config_hash": config.hash,
        "config": config.to_dict(),
        "code_version": CODE_VERSION,
    }
    attachments = {
        CONSUMED: canonical_json(consumed),
        REJECTS: canonical_json(results.rejects),
        DUPLICATES: canonical_json(results.duplicates),
        STATE: results.state.to_bytes(),
    }
    if retried:
        provenance["objects_retried"] = len(retried)
        attachments[RETRIED] = canonical_json(sorted(retried))
    return repo.commit(
        None,
        prewritten_shards=results.shard_refs,
        branch=branch,
        message=message or f"ingest {src.url}: {len(new)} object(s)",
        counts=counts,
        provenance=provenance,
        attachments=attachments,
        attachment_blobs=results.state.attachment_blobs(),
        expected_parent=parent,
        allow_empty=True,
    )


def _rejected_again(repo, parent, source_url, new, retried, report, results) -> bool:
    """True when a `--retry-rejected` run changed nothing: it read only objects the branch
    had rejected, kept none, and rejected each again for a reason the branch already holds
    for it. Then there is nothing to commit (as a plain run that finds nothing new)."""
    if not retried or len(retried) != len(new) or report.kept or report.duplicates:
        return False
    by_reason: dict[str, set[str]] = {}
    for r in results.rejects:
        by_reason.setdefault(r["reason"], set()).add(r["source"])
    for reason, sources in by_reason.items():
        before = rejected_keys(repo, parent, source_url, reason)
        if any(_object_key(s, before) not in before for s in sources):
            return False
    return True


def _drop_scratch(repo: Repo, scratch: RunScratch | PieceCache) -> None:
    """Delete the objects under a run's scratch (or a piece cache); best effort (gc collects
    what is left)."""
    try:
        for info in list(repo.store.list(scratch.prefix)):
            repo.store.delete(info.key)
    except (DataversionError, OSError):
        pass


def rejected_keys(repo: Repo, tip: str | None, source_url: str, reason: str | None) -> set[str]:
    """Keys of the objects of `source_url` whose latest reading on the branch (first-parent
    history from `tip`) rejected them, or one of their lines (for `reason`, if given).

    Walks the first-parent history back (commits of other kinds consume nothing: passed
    through); an object a newer run read (consumed anew, or retried) is settled by that run.
    """
    keys: set[str] = set()
    settled: set[str] = set()
    cid = tip
    now = read_consumed(repo, cid).get(source_url, {})
    while cid is not None:
        commit = repo.read_commit(cid)
        parent = commit.parents[0] if commit.parents else None
        if commit.provenance.get("pipeline") != "pipelines.ingest":
            cid = parent
            continue
        before = read_consumed(repo, parent).get(source_url, {})
        if commit.provenance.get("source") == source_url:
            run_keys = {k for k, v in now.items() if before.get(k) != v}
            run_keys.update(json.loads(repo.read_attachment(cid, RETRIED) or b"[]"))
            for r in json.loads(repo.read_attachment(cid, REJECTS) or b"[]"):
                if reason is not None and r["reason"] != reason:
                    continue
                key = _object_key(r["source"], run_keys)
                if key not in settled:
                    keys.add(key)
            settled |= run_keys
        now, cid = before, parent
    return keys


def _object_key(unit_source: str, keys: set[str]) -> str:
    """The object key of a unit's source (`key` or `key#L<line>`)."""
    if unit_source in keys:
        return unit_source
    base, sep, line = unit_source.rpartition("#L")
    return base if sep and line.isdigit() else unit_source


@dataclass
class _RunResults:
    """What the pipeline's workers left in the run's scratch area, in a stable order."""

    objects: int  # objects processed
    inputs: int
    kept: int
    rejects: list[dict]  # sorted by source
    duplicates: list[dict]  # sorted by source
    shard_refs: list[ShardRef]  # sorted by (min id, id)
    state: object  # the branch's dedup state after the run (dedup.state.BranchState)


def _read_results(
    repo: Repo, scratch: RunScratch, config, pieces: int, partitions: int
) -> _RunResults:
    """Raises NotFoundError if a result is missing (a step did not run)."""
    store = repo.store
    audit = [json.loads(store.get(scratch.audit_piece(i))) for i in range(pieces)]
    parts = {
        int(i.key.rsplit("/", 1)[1].split(".")[0]): json.loads(store.get(i.key))
        for i in store.list(scratch.parts)
    }
    return _RunResults(
        objects=sum(a["objects"] for a in audit),
        inputs=sum(a["inputs"] for a in audit),
        kept=sum(p["kept"] for p in parts.values()),
        rejects=sorted((r for a in audit for r in a["rejects"]), key=lambda r: r["source"]),
        duplicates=sorted(
            (d for p in parts.values() for d in p["duplicates"]), key=lambda r: r["source"]
        ),
        shard_refs=sorted(
            (ShardRef.from_dict(d) for p in parts.values() for d in p["shards"]),
            key=lambda s: (s.min_id, s.id),
        ),
        state=_branch_state(repo, scratch, config, parts, partitions),
    )


def _parent_state(repo: Repo, parent, config: IngestConfig):
    """The parent's dedup state; rebuilt from its records (one run) when it has none (a
    commit made by `dataversion add`, or an index of other parameters)."""
    from .dedup.index import rebuild_index
    from .dedup.state import BranchState, load_state, write_run

    rules = config.dedup
    state = load_state(repo, parent, rules)
    if state is None:
        index = rebuild_index(repo, parent, rules)
        run = write_run(
            repo,
            {"text": index.text_ids, "image": index.image_ids},
            {"text": index.text_sigs, "image": index.image_keys},
            rules,
        )
        state = BranchState(rules.index_params(), [run] if run["entries"] else [])
    return state


def _branch_state(repo: Repo, scratch: RunScratch, config: IngestConfig, parts: dict, grid: int):
    """The branch's dedup state after this run: the parent's runs + this run's (the parts
    its workers wrote), compacted."""
    from .dedup.state import BranchState, compact, run_from_parts

    store = repo.store
    parent_state = BranchState.from_bytes(store.get(scratch.state))
    hash_parts: dict = {}
    for i, p in parts.items():
        for modality, blob in p.get("index", {}).items():
            hash_parts.setdefault(modality, {})[i] = blob
    band_parts: dict = {}
    band_fences: dict = {}
    for info in store.list(scratch.index):
        d = json.loads(store.get(info.key))
        band_parts.setdefault(d["modality"], {})[d["part"]] = d["blob"]
        band_fences.setdefault(d["modality"], {})[d["part"]] = d.get("fence")
    entries = sum(p["kept"] for p in parts.values() if p.get("index"))
    runs = list(parent_state.runs)
    if band_parts:
        runs.append(run_from_parts(hash_parts, band_parts, grid, entries, band_fences))
    return compact(repo, BranchState(parent_state.params, runs), config.dedup)


def _fill_report(report: IngestReport, results: _RunResults) -> None:
    report.inputs = results.inputs
    report.rejected = len(results.rejects)
    report.duplicates = len(results.duplicates)
    report.kept = results.kept
    report.reasons = dict(sorted(Counter(r["reason"] for r in results.rejects).items()))
    report.duplicate_kinds = dict(sorted(Counter(d["kind"] for d in results.duplicates).items()))
    by_mod: Counter[str] = Counter()
    for s in results.shard_refs:
        by_mod.update(s.by_modality)
    report.by_modality = dict(sorted(by_mod.items()))


def _check_accounting(report: IngestReport, results: _RunResults, *, listed: int) -> None:
    """Every listed object processed, every input kept, a duplicate or rejected, every kept
    record written; else DataversionError (nothing is committed)."""
    written = sum(s.live_rows for s in results.shard_refs)
    if (
        results.objects != listed
        or report.inputs != report.kept + report.duplicates + report.rejected
        or written != report.kept
    ):
        raise DataversionError(
            f"ingest accounting does not balance: {listed} objects listed, {results.objects} processed; "
            f"inputs {report.inputs} != kept {report.kept} + duplicates {report.duplicates} + rejected {report.rejected}, "
            f"or {written} records written; nothing committed"
        )


def _write_features(repo: Repo, commit_id: str, scratch: RunScratch) -> str | None:
    """The commit landed: write its features table (parent's rows + the run's new records).

    A failure here does not undo the commit; `features publish` backfills a missing table.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataversion.features import RECORD_FEATURES_SCHEMA

    from .features import write_commit_features

    try:
        parts = [
            pq.read_table(io.BytesIO(repo.store.get(info.key)))
            for info in sorted(repo.store.list(scratch.features), key=lambda i: i.key)
        ]
        new = pa.concat_tables(parts) if parts else RECORD_FEATURES_SCHEMA.empty_table()
        return write_commit_features(repo, commit_id, new)["key"]
    except (DataversionError, OSError, ValueError, pa.ArrowException) as e:
        _log(True, f"commit {commit_id[:12]} landed but its features table was not written: {e}")
        return None


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[ingest] {msg}", file=sys.stderr, flush=True)


def _pipeline_options(beam_args):
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")
    return PipelineOptions(args)
