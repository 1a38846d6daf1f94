"""Turning a local directory tree into records: one per file, one per JSONL line.

The walk (`walk_entries`) and the read (`read_regular_file`) are shared with ingest's local
source (`pipelines.readers.source`), so `add` and `ingest` reject the same entries for the
same reasons. Every entry under a directory is an input; what is not a readable regular
file inside the tree is rejected without being opened:

- `hidden_file`: a name starting with "." (one unit per hidden directory, not descended)
- `not_a_regular_file`: FIFO, socket, device, or a symlink to a directory (never opened:
  opening a FIFO blocks until a writer comes)
- `symlink_outside_source`: a symlink whose target lies outside the directory given
- `broken_symlink`: a dangling or looping symlink
- `too_large`: larger than the caller's byte limit (checked before reading)

A file that cannot be read (permissions, I/O error, gone since the walk) is no property of
its bytes: the read raises and the caller fails, nothing is recorded as rejected.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from .compression import DecompressError, decompress_object, inner_name
from .errors import BadInputError, StoreError, human_message
from .hashing import DEFAULT_ID_HASH
from .jsonl import LineReject, parse_jsonl
from .records import RECORD_SCHEMA, binary_record_ids, ids_to_array, text_record_ids
from .sniff import SNIFF_BYTES, sniff_modality

JSONL_TEXT_FIELD = "text"

HIDDEN_FILE = "hidden_file"
NOT_A_REGULAR_FILE = "not_a_regular_file"
SYMLINK_OUTSIDE_SOURCE = "symlink_outside_source"
BROKEN_SYMLINK = "broken_symlink"
TOO_LARGE = "too_large"
INTERNAL_ERROR = "internal_error"
HEAD_BYTES = 64  # what the size checks look at before reading the rest
DECOMPRESSED_LIMIT = 256 * 1024 * 1024  # `add`: the most a compressed file may expand to


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


@dataclass(frozen=True)
class FileEntry:
    """One entry of a walked tree. `problem` (reason, message) when it is rejected unread.

    `path` is what to open: the file itself, or a symlink's resolved target. `token` is
    `<size>-<mtime_ns>` of what would be read (the target, for a symlink).
    """

    path: str
    name: str  # the source name: relative to the directory given, "/"-separated
    size: int
    token: str
    problem: tuple[str, str] | None = None


def walk_entries(paths: list[str], *, include_hidden: bool = False) -> Iterator[FileEntry]:
    """Every entry under the given paths, sorted by name per path (see the module doc).

    The source name is the path relative to the directory given (a file given directly is
    named by its base name and followed if it is a symlink: it was asked for). Raises
    BadInputError for a path that does not exist, StoreError for a directory that cannot
    be listed (an accounting hole otherwise).
    """
    for root in paths:
        root_abs = os.path.abspath(root)
        if os.path.isdir(root_abs):
            found: list[FileEntry] = []
            _scan_dir(root_abs, "", os.path.realpath(root_abs), include_hidden, found)
            found.sort(key=lambda e: e.name)
            yield from found
            continue
        if not os.path.lexists(root_abs):
            raise BadInputError(f"{root} does not exist")
        name = os.path.basename(root_abs)
        try:
            target = os.path.realpath(root_abs, strict=True)
            st = os.stat(target)
        except OSError as e:
            yield FileEntry(root_abs, name, 0, "broken", (BROKEN_SYMLINK, _broken_message(e)))
            continue
        yield _classified(target, name, st)


def walk_files(paths: list[str], *, include_hidden: bool = False) -> Iterator[tuple[str, str]]:
    """(path to open, source name) of every readable regular file `walk_entries` finds."""
    for e in walk_entries(paths, include_hidden=include_hidden):
        if e.problem is None:
            yield e.path, e.name


def _token(st: os.stat_result) -> str:
    return f"{st.st_size}-{st.st_mtime_ns}"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special file"


def _classified(path: str, name: str, st: os.stat_result, via_link: bool = False) -> FileEntry:
    if stat.S_ISREG(st.st_mode):
        return FileEntry(path, name, st.st_size, _token(st))
    what = f"a symlink to a {_kind(st.st_mode)}" if via_link else f"a {_kind(st.st_mode)}"
    return FileEntry(path, name, 0, _token(st), (NOT_A_REGULAR_FILE, f"{what}, not a regular file; not opened"))


def _broken_message(e: OSError) -> str:
    return f"the symlink does not resolve: {e.strerror or e}"


def _scan_dir(directory: str, rel: str, root_real: str, include_hidden: bool, out: list[FileEntry]) -> None:
    # os.scandir gives the entry type without a stat per entry, and relative names are built
    # by concatenation: os.walk + relpath cost more than reading the files themselves.
    try:
        entries = list(os.scandir(directory))
    except OSError as e:
        raise StoreError(f"cannot list directory {directory}: {e.strerror or e}") from e
    for entry in entries:
        name = rel + entry.name
        try:
            if entry.name.startswith(".") and not include_hidden:
                is_dir = entry.is_dir(follow_symlinks=False)
                what = "hidden directory, not descended into" if is_dir else "hidden file, not read"
                token = "dir" if is_dir else _token(entry.stat(follow_symlinks=False))
                out.append(FileEntry(entry.path, name, 0, token, (HIDDEN_FILE, f"{what} (include_hidden reads it)")))
            elif entry.is_dir(follow_symlinks=False):
                _scan_dir(entry.path, name + "/", root_real, include_hidden, out)
            elif entry.is_symlink():
                out.append(_symlink_entry(entry.path, name, root_real))
            elif entry.is_file(follow_symlinks=False):
                out.append(FileEntry(entry.path, name, *_size_token(entry.stat(follow_symlinks=False))))
            else:
                out.append(_classified(entry.path, name, entry.stat(follow_symlinks=False)))
        except FileNotFoundError:
            continue  # gone since the directory was listed: not part of this snapshot


def _size_token(st: os.stat_result) -> tuple[int, str]:
    return st.st_size, _token(st)


def _symlink_entry(path: str, name: str, root_real: str) -> FileEntry:
    try:
        target = os.path.realpath(path, strict=True)
        st = os.stat(target)
    except OSError as e:  # dangling (ENOENT) or looping (ELOOP)
        return FileEntry(path, name, 0, f"broken-{_token(os.lstat(path))}", (BROKEN_SYMLINK, _broken_message(e)))
    if not is_inside(target, root_real):
        return FileEntry(path, name, 0, _token(st), (SYMLINK_OUTSIDE_SOURCE, "the symlink points outside the source directory; not followed"))
    return _classified(target, name, st, via_link=True)


def is_inside(path: str, root_real: str) -> bool:
    """Whether a resolved path is `root_real` or lies under it (both already realpath'd)."""
    return path == root_real or path.startswith(root_real.rstrip(os.sep) + os.sep)


def read_regular_file(
    path: str,
    *,
    max_bytes: int | None = None,
    check_head: Callable[[bytes, int], tuple[str, str] | None] | None = None,
) -> bytes | tuple[str, str]:
    """The bytes of a regular file, or (reason, message) when it is rejected unread.

    Opened without blocking and without following a final symlink, then checked with
    fstat: a FIFO or device swapped in since the walk is `not_a_regular_file`, a file over
    `max_bytes` is `too_large` (before any byte is read, and again if it grew).
    `check_head(first bytes, size)` may reject on the first `HEAD_BYTES` bytes before the
    rest is read. Raises OSError when the file cannot be read (a fault, not a property).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return NOT_A_REGULAR_FILE, f"a {_kind(st.st_mode)}, not a regular file; not read"
        if max_bytes is not None and st.st_size > max_bytes:
            return TOO_LARGE, too_large_message(st.st_size, max_bytes)
        if check_head is not None:
            problem = check_head(f.read(HEAD_BYTES), st.st_size)
            if problem is not None:
                return problem
            f.seek(0)
        data = _read_upto(f, st.st_size, max_bytes)
    if max_bytes is not None and len(data) > max_bytes:
        return TOO_LARGE, f"grew past the limit of {max_bytes} bytes while being read; not kept"
    return data


def too_large_message(size: int, limit: int) -> str:
    return f"{size} bytes, limit {limit}; not read"


def _read_upto(f, expected: int, limit: int | None) -> bytes:
    """To the end of the file, stopping once more than `limit` bytes are in (None: no limit).

    The first read asks for `expected` + 1 bytes (fstat's size): an unchanged file is read in
    one buffer, without the doubling copies of an open-ended read.
    """
    parts: list[bytes] = []
    total, ask = 0, expected + 1
    while limit is None or total <= limit:
        want = ask if limit is None else min(ask, limit + 1 - total)
        chunk = f.read(want)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        ask = 1 << 20
    return b"".join(parts)
def jsonl_line_source(source: str, line_no: int) -> str:
    return f"{source}#L{line_no}"


def split_line_source(source: str) -> tuple[str, int] | None:
    base, sep, line = source.rpartition("#L")
    if sep and line.isdigit():
        return base, int(line)
    return None


def scan_tree(
    paths: list[str],
    *,
    text_field: str = JSONL_TEXT_FIELD,
    progress=None,
    include_hidden: bool = False,
    max_file_bytes: int | None = None,
    id_hash: str = DEFAULT_ID_HASH,
) -> ScanResult:
    """Read every file under `paths` into one record table (not yet deduplicated), record
    ids computed with `id_hash` (the repository's).

    `Scanner` does the same batch by batch, in bounded memory; this is its whole result."""
    scanner = Scanner(paths, text_field=text_field, progress=progress, include_hidden=include_hidden,
                      max_file_bytes=max_file_bytes, id_hash=id_hash)
    tables = list(scanner.batches())
    table = pa.concat_tables(tables) if tables else _records_table([], [], [], [], [], [], id_hash)
    return ScanResult(table, scanner.inputs, scanner.skipped)


BATCH_BYTES = 64 * 2**20  # payload bytes a Scanner batch holds before it is handed on


class Scanner:
    """Every file under `paths` as record tables of about `batch_bytes` of payload each
    (`batches()`), so that `add` holds one batch, not the tree. `inputs` and `skipped`
    count what was read so far (complete once `batches()` is exhausted).

    Never raises for a bad file: every entry is an input, and what is not kept is skipped
    with a reason (the module doc; bad JSONL lines per `dataversion.jsonl`; any exception
    while handling one file makes that file `internal_error`). Text files that are not valid
    UTF-8 are kept as binary records (nothing is lost). Raises StoreError when a file or
    directory cannot be read at all: that is a fault of the machine, not of the data.
    Record ids are computed with `id_hash` (pass the repository's `Repo.id_hash`).
    """

    def __init__(self, paths: list[str], *, text_field: str = JSONL_TEXT_FIELD, progress=None,
                 include_hidden: bool = False, max_file_bytes: int | None = None, batch_bytes: int | None = None,
                 id_hash: str = DEFAULT_ID_HASH):
        self.id_hash = id_hash
        self.paths, self.text_field, self.progress = paths, text_field, progress
        self.include_hidden, self.max_file_bytes = include_hidden, max_file_bytes
        self.batch_bytes = BATCH_BYTES if batch_bytes is None else batch_bytes
        self.inputs = 0
        self.skipped: list[Skipped] = []

    def batches(self):
        texts: list[str] = []
        t_src: list[str] = []
        t_meta: list[str | None] = []
        blobs: list[bytes] = []
        b_src: list[str] = []
        b_mod: list[str] = []
        skipped = self.skipped
        held = 0
        # Sequential reads: for small files a thread pool costs more than the reads (measured).
        entries = list(walk_entries(self.paths, include_hidden=self.include_hidden))
        progress = self.progress
        if progress is not None and hasattr(progress, "total"):
            progress.total = len(entries)
        lists = (texts, t_src, t_meta, blobs, b_src, b_mod, skipped)
        for entry in entries:
            if progress is not None:
                progress.update(1)
            if entry.problem is not None:
                self.inputs += 1
                skipped.append(Skipped(entry.name, *entry.problem))
                continue
            try:
                data = read_regular_file(entry.path, max_bytes=self.max_file_bytes)
            except OSError as e:
                raise StoreError(f"cannot read {entry.path}: {e.strerror or e}", hint="nothing was committed; fix it and rerun") from e
            if isinstance(data, tuple):
                self.inputs += 1
                skipped.append(Skipped(entry.name, *data))
                continue
            marks = [len(x) for x in lists]
            try:
                self.inputs += _scan_one(
                    entry.name, data, self.text_field, *lists, max_bytes=self.max_file_bytes or DECOMPRESSED_LIMIT
                )
            except Exception as e:  # noqa: BLE001 - one file can only ever reject itself
                for x, n in zip(lists, marks):
                    del x[n:]
                self.inputs += 1
                skipped.append(Skipped(entry.name, INTERNAL_ERROR, internal_error_message(e)))
                continue
            held += len(data)
            if held >= self.batch_bytes:
                yield _records_table(texts, t_src, t_meta, blobs, b_src, b_mod, self.id_hash)
                for x in lists[:-1]:
                    x.clear()
                held = 0
        if texts or blobs:
            yield _records_table(texts, t_src, t_meta, blobs, b_src, b_mod, self.id_hash)


def internal_error_message(e: BaseException) -> str:
    """`Type: message` of an exception, short enough for a reject row (no object reprs:
    `errors.human_message`)."""
    text = f"{type(e).__name__}: {human_message(e)}"
    return text if len(text) <= 500 else text[:497] + "..."


def _scan_one(
    source, data, text_field, texts, t_src, t_meta, blobs, b_src, b_mod, skipped, *, max_bytes
) -> int:
    """Append the records of one file; returns how many inputs (file or JSONL lines) it had.

    A compressed file (gzip, bzip2, xz, zstd) holding text or JSONL is read as what it
    holds, decompressed up to `max_bytes` (`dataversion.compression`); one that does not
    decompress is skipped with the reason, one holding anything else is kept as it is
    (a binary record)."""
    inputs = 0
    modality = sniff_modality(source, data[:SNIFF_BYTES])
    if modality == "compressed":
        got = decompress_object(data, max_bytes=max_bytes)
        if isinstance(got, DecompressError):
            skipped.append(Skipped(source, got.reason, got.message))
            return 1
        inner = sniff_modality(inner_name(source), got.data[:SNIFF_BYTES])
        if inner in ("text", "jsonl"):
            data, modality = got.data, inner
        else:
            modality = "binary"
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


def _records_table(texts, t_src, t_meta, blobs, b_src, b_mod, id_hash: str) -> pa.Table:
    text_arr = pa.array(texts, pa.large_string())
    data_arr = pa.array(blobs, pa.large_binary())
    n_t, n_b = len(texts), len(blobs)
    ids = text_record_ids(text_arr, id_hash) + binary_record_ids(data_arr, id_hash)
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
