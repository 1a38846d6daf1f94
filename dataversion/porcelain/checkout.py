"""Materializing a snapshot as files: the inverse of `add`.

The directory must be new or empty (a checkout is one commit's files, never a mix with
what was there). Every target path is checked before anything is written: a record whose source would land
outside the directory (`../../x`, an absolute path, a symlink escaping it) aborts the
checkout with a clear error and no file written. Every record lands: records that share a
source path (a file edited and added again without `--sync`) are each written under the
path with `~<first 8 hex of the record id>` before the extension, and reported as renamed.
JSONL lines are regrouped into their files in line order through sorted runs spilled to a
temporary directory, so memory stays bounded by a batch whatever the snapshot's size.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError
from ..records import ids_as_numpy, ids_to_hex
from ..scan import JSONL_TEXT_FIELD, split_line_source

if TYPE_CHECKING:
    from ..repo import Repo

_EXT = {"text": ".txt", "image": ".img", "audio": ".audio", "binary": ".bin"}
_SPILL_BYTES = 64 * 2**20  # JSONL lines held in memory before a sorted run is spilled


def safe_target(root: str, relative: str) -> str:
    """`root/relative`, refusing any path that would resolve outside `root`."""
    if not relative or os.path.isabs(relative) or relative.startswith(("/", os.sep)):
        raise BadInputError(f"refusing to write {relative!r}: not a relative path inside the checkout directory")
    # sources are "/"-separated; a backslash is a separator only where the OS says so (on
    # POSIX it is a character of a file name, as `add` read it)
    parts = (relative.replace(os.sep, "/") if os.sep != "/" else relative).split("/")
    if any(p in ("..", "") for p in parts):
        raise BadInputError(f"refusing to write {relative!r}: it points outside the checkout directory")
    root_real = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root_real, *parts))
    if os.path.commonpath([root_real, target]) != root_real:
        raise BadInputError(f"refusing to write {relative!r}: it resolves outside the checkout directory")
    return target


def suffixed(relative: str, record_id: str) -> str:
    """`dir/name~<id8>.ext`: where a record goes when others share its source path."""
    head, tail = os.path.split(relative)
    stem, ext = os.path.splitext(tail)
    return os.path.join(head, f"{stem}~{record_id[:8]}{ext}")


class _LineSpool:
    """JSONL lines of many files, returned per file in (line, text) order, with memory
    bounded by `_SPILL_BYTES`: full buffers are sorted and spilled as runs, then merged."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.buffers: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.runs: dict[str, list[str]] = defaultdict(list)
        self.held = 0

    def add(self, rel: str, line: int, text: str) -> None:
        self.buffers[rel].append((line, text))
        self.held += len(text) + 32
        if self.held > _SPILL_BYTES:
            self._spill()

    def _spill(self) -> None:
        for rel, entries in self.buffers.items():
            entries.sort()
            fd, path = tempfile.mkstemp(dir=self.workdir, suffix=".run")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for line, text in entries:
                    f.write(f"{line}\t{text}\n")
            self.runs[rel].append(path)
        self.buffers.clear()
        self.held = 0

    @staticmethod
    def _read_run(path: str) -> Iterator[tuple[int, str]]:
        with open(path, encoding="utf-8") as f:
            for row in f:
                line, _, text = row.rstrip("\n").partition("\t")
                yield int(line), text

    def files(self) -> list[str]:
        return sorted(set(self.buffers) | set(self.runs))

    def lines(self, rel: str) -> Iterator[tuple[int, str]]:
        streams = [self._read_run(p) for p in self.runs.get(rel, [])]
        streams.append(iter(sorted(self.buffers.get(rel, []))))
        return heapq.merge(*streams)


def checkout(repo: Repo, ref: str, directory: str, *, progress: Any = None) -> dict[str, Any]:
    """Write the records of `ref` as files under `directory` (paths checked before any write)."""
    return materialize(repo, repo.resolve(ref), directory, progress=progress)


def _plan(repo: Repo, commit_id: str, groups, directory: str) -> tuple[dict[str, str], dict[str, str], list[dict[str, str]]]:
    """Pass 1, metadata only: the target of every file record and every JSONL file."""
    by_path: dict[str, list[str]] = defaultdict(list)
    jsonl_files: dict[str, str] = {}
    for t in repo.read_rows(commit_id, ["modality", "source"], groups):
        for rid, mod, src in zip(ids_to_hex(ids_as_numpy(t.column("record_id"))), t.column("modality").to_pylist(), t.column("source").to_pylist()):
            line = split_line_source(src) if src else None
            if line:
                jsonl_files.setdefault(line[0], safe_target(directory, line[0]))
            else:
                by_path[src or f"{mod}/{rid}{_EXT.get(mod, '.bin')}"].append(rid)
    plan: dict[str, str] = {}
    renamed: list[dict[str, str]] = []
    for rel, rids in by_path.items():
        if len(rids) == 1 and rel not in jsonl_files:
            plan[rids[0]] = safe_target(directory, rel)
            continue
        for rid in sorted(rids):
            new = suffixed(rel, rid)
            plan[rid] = safe_target(directory, new)
            renamed.append({"record_id": rid, "source": rel, "path": new})
    taken = {}
    for rid, target in plan.items():
        if target in taken:  # a suffixed name that another record's source already had
            raise BadInputError(f"cannot check out: records {taken[target]} and {rid} both map to {target}")
        taken[target] = rid
    return plan, jsonl_files, renamed


def materialize(repo: Repo, commit_id: str, directory: str, *, progress: Any = None) -> dict[str, Any]:
    if os.path.isdir(directory) and any(os.scandir(directory)):
        # files of another commit would stay beside this one's, and a user's file of the same
        # name would be overwritten without a word
        raise BadInputError(f"cannot check out into {directory}: the directory is not empty",
                            hint="give a new or empty directory (checkout writes a commit's files, it does not merge)")
    os.makedirs(directory, exist_ok=True)
    groups = repo.locate(commit_id)  # the checked packing: every row read is the tree's
    plan_files, jsonl_files, renamed = _plan(repo, commit_id, groups, directory)
    # Pass 2: write.
    written = 0
    with tempfile.TemporaryDirectory(prefix="dataversion-checkout-") as workdir:
        spool = _LineSpool(workdir)
        for t in repo.read_rows(commit_id, ["source", "meta", "text", "data"], groups):
            cols = {c: t.column(c).to_pylist() for c in ("source", "meta", "text", "data")}
            for i, rid in enumerate(ids_to_hex(ids_as_numpy(t.column("record_id")))):
                src = cols["source"][i]
                line = split_line_source(src) if src else None
                if line:
                    obj = json.loads(cols["meta"][i]) if cols["meta"][i] else {}
                    obj[JSONL_TEXT_FIELD] = cols["text"][i]
                    spool.add(line[0], line[1], json.dumps(obj, ensure_ascii=False, sort_keys=True))
                    continue
                target = plan_files[rid]
                os.makedirs(os.path.dirname(target), exist_ok=True)
                payload = cols["text"][i].encode("utf-8") if cols["text"][i] is not None else (cols["data"][i] or b"")
                with open(target, "wb") as f:
                    f.write(payload)
                written += 1
                if progress is not None:
                    progress.update(1)
            del t, cols
        for rel in spool.files():
            target = jsonl_files[rel]
            os.makedirs(os.path.dirname(target), exist_ok=True)
            n = 0
            with open(target, "w", encoding="utf-8") as f:
                for _, text in spool.lines(rel):
                    f.write(text + "\n")
                    n += 1
            written += 1
            if progress is not None:
                progress.update(n)
    return {"commit": commit_id, "directory": os.path.abspath(directory), "files": written,
            "records": repo.read_commit(commit_id).records.count, "renamed": renamed}
