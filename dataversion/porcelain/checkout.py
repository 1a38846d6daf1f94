"""Materializing a snapshot as files: the inverse of `add`.

Every target path is checked before anything is written: a record whose source would land
outside the directory (`../../x`, an absolute path, a symlink escaping it) aborts the
checkout with a clear error and no file written.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError
from ..records import ids_as_numpy, ids_to_hex
from ..scan import JSONL_TEXT_FIELD, split_line_source

if TYPE_CHECKING:
    from ..repo import Repo

_EXT = {"text": ".txt", "image": ".img", "audio": ".audio", "binary": ".bin"}


def safe_target(root: str, relative: str) -> str:
    """`root/relative`, refusing any path that would resolve outside `root`."""
    if not relative or os.path.isabs(relative) or relative.startswith(("/", "\\")):
        raise BadInputError(f"refusing to write {relative!r}: not a relative path inside the checkout directory")
    parts = relative.replace("\\", "/").split("/")
    if any(p in ("..", "") for p in parts):
        raise BadInputError(f"refusing to write {relative!r}: it points outside the checkout directory")
    root_real = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root_real, *parts))
    if os.path.commonpath([root_real, target]) != root_real:
        raise BadInputError(f"refusing to write {relative!r}: it resolves outside the checkout directory")
    return target


def checkout(repo: Repo, ref: str, directory: str, *, progress: Any = None) -> dict[str, Any]:
    """Write the records of `ref` as files under `directory` (paths checked before any write)."""
    return materialize(repo, repo.resolve(ref), directory, progress=progress)


def materialize(repo: Repo, commit_id: str, directory: str, *, progress: Any = None) -> dict[str, Any]:
    os.makedirs(directory, exist_ok=True)
    manifest = repo.read_manifest(commit_id)
    # Pass 1: plan every path (metadata only) and validate it; nothing is written yet.
    plan_files: dict[str, str] = {}
    jsonl_files: dict[str, str] = {}
    for shard in manifest.shards:
        t = repo.read_shard_columns(shard, ["record_id", "modality", "source"])
        for rid, mod, src in zip(ids_to_hex(ids_as_numpy(t.column("record_id"))), t.column("modality").to_pylist(), t.column("source").to_pylist()):
            line = split_line_source(src) if src else None
            if line:
                jsonl_files.setdefault(line[0], safe_target(directory, line[0]))
            else:
                rel = src or f"{mod}/{rid}{_EXT.get(mod, '.bin')}"
                plan_files[rid] = safe_target(directory, rel)
    # Pass 2: write.
    written = 0
    lines: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for shard in manifest.shards:
        t = repo.read_shard(shard)
        cols = {c: t.column(c).to_pylist() for c in ("modality", "source", "meta", "text", "data", "label")}
        for i, rid in enumerate(ids_to_hex(ids_as_numpy(t.column("record_id")))):
            src = cols["source"][i]
            line = split_line_source(src) if src else None
            if line:
                obj = json.loads(cols["meta"][i]) if cols["meta"][i] else {}
                obj[JSONL_TEXT_FIELD] = cols["text"][i]
                lines[line[0]].append((line[1], json.dumps(obj, ensure_ascii=False, sort_keys=True)))
                continue
            target = plan_files[rid]
            os.makedirs(os.path.dirname(target), exist_ok=True)
            payload = cols["text"][i].encode("utf-8") if cols["text"][i] is not None else (cols["data"][i] or b"")
            with open(target, "wb") as f:
                f.write(payload)
            written += 1
            if progress is not None:
                progress.update(1)
    for rel, entries in lines.items():
        target = jsonl_files[rel]
        os.makedirs(os.path.dirname(target), exist_ok=True)
        entries.sort()
        with open(target, "w", encoding="utf-8") as f:
            for _, text in entries:
                f.write(text + "\n")
        written += 1
        if progress is not None:
            progress.update(len(entries))
    return {"commit": commit_id, "directory": os.path.abspath(directory), "files": written, "records": manifest.records.count}
