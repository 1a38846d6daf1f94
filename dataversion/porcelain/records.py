"""Porcelain: committing records found on disk (`add`) and removing records (`rm`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..denylist import ERASED, denied_ids, denied_mask, denied_mask_of_texts
from ..errors import BadInputError, NotFoundError
from ..hashing import canonical_json
from ..records import hex_to_id, ids_as_numpy, ids_to_hex
from ..scan import Scanner, Skipped, scan_tree
from ..shards import first_occurrences
from ..writer import DEFAULT_BRANCH, CommitResult

DUPLICATES = "duplicates"  # the attachment `dataversion duplicates` lists (ingest writes it too)

if TYPE_CHECKING:
    from ..repo import Repo


def add(
    repo: Repo,
    paths: list[str],
    *,
    branch: str = DEFAULT_BRANCH,
    message: str = "",
    sync: bool = False,
    text_field: str = "text",
    progress: Any = None,
) -> CommitResult:
    """Commit the records found under local `paths` (one per file, one per JSONL line).

    With `sync`, the snapshot becomes equal to `paths`: records whose content or
    metadata is no longer there are removed.
    """

    if not sync:
        return _add_streaming(repo, paths, branch=branch, message=message, text_field=text_field, progress=progress)
    scan = scan_tree(paths, text_field=text_field, progress=progress, id_hash=repo.id_hash)
    before = len(scan.skipped)
    table = _drop_denied(scan.table, denied_ids(repo.store), scan.skipped, repo.id_hash)
    if len(scan.skipped) > before:  # the erased ones join the rejects, in source order
        scan.skipped.sort(key=lambda s: s.source)
    duplicates = sorted(_exact_duplicates(table, ~first_occurrences(ids_as_numpy(table.column("record_id")))),
                        key=lambda d: d["source"])
    remove_where = None
    if sync:
        wanted = {}
        for rid, src, lab, meta, mod in zip(
            ids_to_hex(ids_as_numpy(table.column("record_id"))),
            table.column("source").to_pylist(), table.column("label").to_pylist(),
            table.column("meta").to_pylist(), table.column("modality").to_pylist(),
        ):
            wanted.setdefault(rid, (mod, src, lab, meta))

        def remove_where(t: pa.Table) -> np.ndarray:  # noqa: F811
            hexes = ids_to_hex(ids_as_numpy(t.column("record_id")))
            rows = zip(hexes, t.column("modality").to_pylist(), t.column("source").to_pylist(),
                       t.column("label").to_pylist(), t.column("meta").to_pylist())
            return np.array([wanted.get(h) != (m, s, lab, me) for h, m, s, lab, me in rows], dtype=bool)

    counts = {"inputs": scan.inputs, "rejected": len(scan.skipped), "duplicates": len(duplicates)}
    result = repo.commit(
        table,
        branch=branch,
        message=message or f"add {' '.join(paths)}",
        remove_where=remove_where,
        remove_columns=["record_id", "modality", "source", "label", "meta"],
        counts=counts,
        attachments=_attachments(scan.skipped, duplicates),
    )
    result.skipped = [s.to_dict() for s in scan.skipped]
    result.duplicates = duplicates
    return result

def _add_streaming(repo: Repo, paths: list[str], *, branch: str, message: str, text_field: str, progress: Any) -> CommitResult:
    """`add` without `--sync`, in memory bounded by a scan batch: each batch's records new to
    the branch (and to the batches before it) are written as shards at once; one commit then
    names them all. The in-flight marker keeps gc off those shards until the commit lands."""
    from ..inflight import InFlight
    from ..shards import entry_digests

    scanner = Scanner(paths, text_field=text_field, progress=progress, id_hash=repo.id_hash)
    with InFlight(repo.store, f"add on {branch}"):
        parent = repo.branch_tip(branch)
        denied = denied_ids(repo.store)
        seen: set[bytes] = set()
        written: list[tuple[Any, np.ndarray, np.ndarray]] = []
        already_present = bytes_written = 0
        duplicates: list[dict[str, Any]] = []
        for table in scanner.batches():
            table = _drop_denied(table, denied, scanner.skipped, repo.id_hash)
            ids = ids_as_numpy(table.column("record_id"))
            keep = first_occurrences(ids) & np.fromiter((i not in seen for i in ids.tolist()), bool, len(ids))
            duplicates.extend(_exact_duplicates(table, ~keep))
            present = repo.contains(parent, ids) & keep
            already_present += int(present.sum())
            keep &= ~present
            if not keep.any():
                continue
            new = table.filter(pa.array(keep)) if not keep.all() else table
            new_ids = ids_as_numpy(new.column("record_id")).copy()
            seen.update(new_ids.tolist())
            refs, n_bytes, parts = repo.write_shards_counted(new)
            bytes_written += n_bytes
            digests = entry_digests(new)
            written.extend((ref, new_ids[rows], digests[rows]) for ref, rows in zip(refs, parts))
        scanner.skipped.sort(key=lambda s: s.source)
        duplicates.sort(key=lambda d: d["source"])
        result = repo.commit(
            None,
            branch=branch,
            message=message or f"add {' '.join(paths)}",
            expected_parent=parent,
            prewritten_rows=written,
            counts={"inputs": scanner.inputs, "rejected": len(scanner.skipped), "already_present": already_present,
                    "duplicates": len(duplicates)},
            attachments=_attachments(scanner.skipped, duplicates),
        )
    result.already_present += already_present
    result.bytes_written += bytes_written
    result.skipped = [s.to_dict() for s in scanner.skipped]
    result.duplicates = duplicates
    return result


def _exact_duplicates(table: pa.Table, repeated: np.ndarray) -> list[dict[str, Any]]:
    """The inputs of `table` marked `repeated` (content another input of this `add` holds):
    what `dataversion duplicates` lists, pointing at the record that was kept."""
    if not repeated.any():
        return []
    ids = ids_to_hex(ids_as_numpy(table.column("record_id"))[repeated])
    sources = table.column("source").filter(pa.array(repeated)).to_pylist()
    return [{"source": src or "", "duplicate_of": rid, "kind": "exact", "similarity": 1.0, "cluster": rid}
            for src, rid in zip(sources, ids)]


def _attachments(skipped: list, duplicates: list[dict[str, Any]]) -> dict[str, bytes] | None:
    """The commit's rejects and duplicates (the attachments `rejects` and `duplicates` read)."""
    out = {}
    if skipped:
        out["rejects"] = canonical_json([s.to_dict() for s in skipped])
    if duplicates:
        out[DUPLICATES] = canonical_json(duplicates)
    return out or None


def _erased_mask(table: pa.Table, denied: Any, id_hash: str) -> np.ndarray:
    """Which records of `table` an erasure removed: by id, or for texts by the id of another
    form the same text is stored in (ingest's cleaning: `denylist.denied_mask_of_texts`)."""
    erased = denied_mask(ids_as_numpy(table.column("record_id")), denied)
    if len(denied):
        erased |= denied_mask_of_texts(table.column("text").to_pylist(), denied, id_hash)
    return erased


def _drop_denied(table: pa.Table, denied: Any, skipped: list, id_hash: str) -> pa.Table:
    """`table` minus content an erasure removed (the denylist); those become rejects `erased`."""
    erased = _erased_mask(table, denied, id_hash)
    if not erased.any():
        return table
    for src in table.column("source").filter(pa.array(erased)).to_pylist():
        skipped.append(Skipped(src or "", ERASED, "this content was erased from the repository (see `dataversion erasures`)"))
    return table.filter(pa.array(~erased))


def rm(repo: Repo, *, branch: str = DEFAULT_BRANCH, ids: list[str] | None = None, source_prefixes: list[str] | None = None, message: str = "") -> CommitResult:
    """Remove records by id (hex) or by source prefix."""

    if not ids and not source_prefixes:
        raise BadInputError("nothing to remove: give record ids or --source prefixes")
    if any(not p for p in source_prefixes or ()):
        raise BadInputError("an empty --source prefix would match every record",
                            hint="give the prefix of the sources to remove (`dataversion ls` shows them)")
    raw = np.array([hex_to_id(h) for h in ids or []], dtype="S16")
    prefixes = tuple(source_prefixes or ())

    def by_source(t: pa.Table) -> np.ndarray:
        srcs = t.column("source").to_pylist()
        return np.array([s is not None and s.startswith(prefixes) for s in srcs], dtype=bool)

    if repo.branch_tip(branch) is None:
        raise NotFoundError(f"branch {branch} does not exist")
    return repo.commit(
        None,
        branch=branch,
        message=message or "rm",
        remove_ids=raw if len(raw) else None,
        remove_where=by_source if prefixes else None,
        remove_columns=["source"],
    )
