"""Turning a local directory tree into records: one per file, one per JSONL line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from .errors import BadInputError
from .jsonl import LineReject, parse_jsonl
from .records import RECORD_SCHEMA, binary_record_ids, ids_to_array, text_record_ids
from .sniff import sniff_modality

JSONL_TEXT_FIELD = "text"


@dataclass
class Skipped:
    source: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason, "message": self.message}


@dataclass
class ScanResult:
    table: pa.Table
    inputs: int
    skipped: list[Skipped] = field(default_factory=list)


def walk_files(paths: list[str]) -> Iterator[tuple[str, str]]:
    """(absolute path, source name) for every regular file under the given paths, sorted.

    The source name is the path relative to the directory given (a file given directly is
    named by its base name). Hidden files and directories (".git", ".DS_Store") are skipped.
    Symlinks to files are followed; symlinked directories are not (no cycles).
    """
    for root in paths:
        root_abs = os.path.abspath(root)
        if os.path.isfile(root_abs):
            yield root_abs, os.path.basename(root_abs)
            continue
        if not os.path.isdir(root_abs):
            raise BadInputError(f"{root} does not exist")
        found: list[tuple[str, str]] = []
        _scan_dir(root_abs, "", found)
        found.sort(key=lambda t: t[1])
        yield from found


def _scan_dir(directory: str, rel: str, out: list[tuple[str, str]]) -> None:
    # os.scandir gives the entry type without a stat per file, and relative names are built
    # by concatenation: os.walk + relpath cost more than reading the files themselves.
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                _scan_dir(entry.path, rel + entry.name + "/", out)
            elif entry.is_file():
                out.append((entry.path, rel + entry.name))
        except OSError:
            continue


def jsonl_line_source(source: str, line_no: int) -> str:
    return f"{source}#L{line_no}"


def split_line_source(source: str) -> tuple[str, int] | None:
    base, sep, line = source.rpartition("#L")
    if sep and line.isdigit():
        return base, int(line)
    return None


def scan_tree(paths: list[str], *, text_field: str = JSONL_TEXT_FIELD, progress=None) -> ScanResult:
    """Read every file under `paths` into a record table (not yet deduplicated).

    Never raises for a bad file: bad JSONL lines are skipped with a reason (`dataversion.jsonl`).
    Text files that are not valid UTF-8 are kept as binary records (nothing is lost).
    """
    texts: list[str] = []
    t_src: list[str] = []
    t_meta: list[str | None] = []
    blobs: list[bytes] = []
    b_src: list[str] = []
    b_mod: list[str] = []
    skipped: list[Skipped] = []
    inputs = 0
    # Sequential reads: for small files a thread pool costs more than the reads (measured).
    files = list(walk_files(paths))
    if progress is not None and hasattr(progress, "total"):
        progress.total = len(files)
    for full, source in files:
        if progress is not None:
            progress.update(1)
        data = _read_file(full)
        if isinstance(data, OSError):
            inputs += 1
            skipped.append(Skipped(source, "unreadable", f"cannot read file: {data.strerror}"))
            continue
        inputs += _scan_one(source, data, text_field, texts, t_src, t_meta, blobs, b_src, b_mod, skipped)
    table = _records_table(texts, t_src, t_meta, blobs, b_src, b_mod)
    return ScanResult(table, inputs, skipped)


def _read_file(path: str) -> bytes | OSError:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return e


def _scan_one(source, data, text_field, texts, t_src, t_meta, blobs, b_src, b_mod, skipped) -> int:
    """Append the records of one file; returns how many inputs (file or JSONL lines) it had."""
    inputs = 0
    modality = sniff_modality(source, data[:64])
    if modality == "jsonl":
        for line_no, parsed in parse_jsonl(data, text_field):
            inputs += 1
            src = jsonl_line_source(source, line_no)
            if isinstance(parsed, LineReject):
                skipped.append(Skipped(src, parsed.reason, parsed.message))
                continue
            text = parsed.pop(text_field)
            texts.append(text)
            t_src.append(src)
            t_meta.append(json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if parsed else None)
        return inputs
    if modality == "text":
        try:
            texts.append(data.decode("utf-8"))
            t_src.append(source)
            t_meta.append(None)
            return 1
        except UnicodeDecodeError:
            modality = "binary"
    blobs.append(data)
    b_src.append(source)
    b_mod.append(modality)
    return 1


def _records_table(texts, t_src, t_meta, blobs, b_src, b_mod) -> pa.Table:
    text_arr = pa.array(texts, pa.large_string())
    data_arr = pa.array(blobs, pa.large_binary())
    n_t, n_b = len(texts), len(blobs)
    ids = text_record_ids(text_arr) + binary_record_ids(data_arr)
    return pa.table(
        {
            "record_id": ids_to_array(ids),
            "modality": pa.array(["text"] * n_t + b_mod, pa.string()),
            "source": pa.array(t_src + b_src, pa.string()),
            "label": pa.nulls(n_t + n_b, pa.string()),
            "meta": pa.array(t_meta + [None] * n_b, pa.string()),
            "text": pa.concat_arrays([text_arr, pa.nulls(n_b, pa.large_string())]),
            "data": pa.concat_arrays([pa.nulls(n_t, pa.large_binary()), data_arr]),
        },
        schema=RECORD_SCHEMA,
    )
