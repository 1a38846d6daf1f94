"""Porcelain: committing records found on disk (`add`) and removing records (`rm`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..denylist import ERASED, denied_ids, denied_mask
from ..errors import BadInputError, NotFoundError
from ..hashing import canonical_json
from ..records import hex_to_id, ids_as_numpy, ids_to_hex
from ..scan import Skipped, scan_tree
from ..writer import DEFAULT_BRANCH, CommitResult

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

    scan = scan_tree(paths, text_field=text_field, progress=progress)
    table = _reject_erased(repo, scan)
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

    counts = {"inputs": scan.inputs, "rejected": len(scan.skipped)}
    result = repo.commit(
        table,
        branch=branch,
        message=message or f"add {' '.join(paths)}",
        remove_where=remove_where,
        remove_columns=["record_id", "modality", "source", "label", "meta"],
        counts=counts,
        attachments={"rejects": canonical_json([s.to_dict() for s in scan.skipped])} if scan.skipped else None,
    )
    result.skipped = [s.to_dict() for s in scan.skipped]
    return result

def _reject_erased(repo: Repo, scan: Any) -> pa.Table:
    """The scanned records minus content an erasure removed (the denylist), which become
    rejects with reason `erased` (counted: inputs == kept + duplicates + rejected)."""
    table = scan.table
    ids = ids_as_numpy(table.column("record_id"))
    erased = denied_mask(ids, denied_ids(repo.store))
    if not erased.any():
        return table
    for src in table.column("source").filter(pa.array(erased)).to_pylist():
        scan.skipped.append(Skipped(src or "", ERASED, "this content was erased from the repository (see `dataversion erasures`)"))
    scan.skipped.sort(key=lambda s: s.source)
    return table.filter(pa.array(~erased))


def rm(repo: Repo, *, branch: str = DEFAULT_BRANCH, ids: list[str] | None = None, source_prefixes: list[str] | None = None, message: str = "") -> CommitResult:
    """Remove records by id (hex) or by source prefix."""

    if not ids and not source_prefixes:
        raise BadInputError("nothing to remove: give record ids or --source prefixes")
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
