"""The per-batch stage of ingestion: raw object bytes -> candidate records + rejects.

For each object: empty file check, content sniffing, then the filter of its modality
(text / JSONL lines / image / audio). Kept units become rows of a candidate table (the
record schema plus the keys dedup needs: object key, line, MinHash signature, pHash);
dropped units become reject rows. Pure: no I/O, the Beam DoFn and the tests call it alike.

One input can only ever reject itself: an exception while handling one object or one JSONL
line (RecursionError, MemoryError in a decoder, a bug) makes that unit an `internal_error`
reject with the exception's type and message, and the rest of the batch goes on. Store
faults cannot happen here (no I/O); reading is `pipelines.readers.source`.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dataversion.compression import DecompressError, decompress_object, inner_name
from dataversion.hashing import DEFAULT_ID_HASH
from dataversion.jsonl import LineReject, jsonl_lines, parse_line
from dataversion.records import RECORD_SCHEMA, binary_record_ids, ids_to_array, text_record_ids
from dataversion.scan import INTERNAL_ERROR, TOO_LARGE, internal_error_message
from dataversion.sniff import (
    IMAGE_FORMATS,
    JSONL_SUFFIXES,
    SNIFF_BYTES,
    binary_kind,
    sniff_format,
    sniff_modality,
)

from .config import IngestConfig
from .dedup.minhash import minhash_signatures
from .filters import Drop
from .filters.audio import check_audio
from .filters.image import check_image
from .filters.text import clean_texts
from .gcpause import gc_paused
from .readers.labels import normalize_label

IMAGE_EXTENSIONS = {
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff",
    ".pbm", ".pgm", ".ppm", ".pnm", ".pam", ".avif", ".heic", ".heif",
}  # fmt: skip
AUDIO_EXTENSIONS = {
    ".wav", ".wave", ".rf64", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc",
    ".au", ".snd",
}  # fmt: skip
_MEDIA_SUFFIXES = tuple(IMAGE_EXTENSIONS | AUDIO_EXTENSIONS)


def candidate_schema(num_perm: int) -> pa.Schema:
    return pa.schema(
        list(RECORD_SCHEMA)
        + [
            pa.field("object_key", pa.string()),
            pa.field(
                "line", pa.int64()
            ),  # 0 for whole-object records, else the JSONL line (1-based)
            pa.field(
                "sig", pa.list_(pa.uint32(), num_perm)
            ),  # MinHash (text rows; zeros otherwise)
            pa.field("phash", pa.uint64()),  # pHash (image rows; 0 otherwise)
            # 8x8 grey thumbnail of the near-dup rule (image rows; null otherwise)
            pa.field("thumb", pa.binary()),
        ]
    )


@dataclass
class WorkItem:
    """One raw object to ingest, as the driver hands it to the pipeline."""

    key: str
    etag: str
    size: int
    label: str | None = None
    problem: tuple[str, str] | None = None  # (reason, message): rejected without reading


@dataclass
class ProcessedBatch:
    candidates: pa.Table
    rejects: list[dict] = field(default_factory=list)  # {source, reason, message}
    inputs: int = 0  # units seen: objects, or JSONL lines of JSONL objects


def canonical_meta(d: dict) -> str | None:
    return (
        json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        if d
        else None
    )


def line_source(key: str, line: int) -> str:
    return f"{key}#L{line}" if line else key


class _Builder:
    def __init__(self, config: IngestConfig, id_hash: str = DEFAULT_ID_HASH):
        self.config = config
        self.id_hash = id_hash  # the repository's record-id hash
        self.texts: list[str] = []
        self.t_rows: list[tuple[str, int, str | None, str | None]] = []
        self.blobs: list[bytes] = []
        self.b_rows: list[tuple[str, str, str | None, str | None, int, bytes | None]] = []
        self.rejects: list[dict | None] = []
        self.inputs = 0
        # texts wait here and are cleaned as one batch (`clean_texts`) when the table is
        # built: (key, line, raw, label, meta, index of their slot in self.rejects)
        self.pending: list[tuple[str, int, str | bytes, str | None, dict, int]] = []

    def reject(self, key: str, line: int, drop: Drop) -> None:
        self.rejects.append(
            {"source": line_source(key, line), "reason": drop.reason, "message": drop.message}
        )

    def add_text(
        self, key: str, line: int, raw: str | bytes, label: str | None, meta: dict
    ) -> None:
        self.pending.append((key, line, raw, label, meta, len(self.rejects)))
        self.rejects.append(None)  # a drop keeps its place among the rejects

    def flush_texts(self) -> None:
        """Clean the pending texts as one batch: kept ones become text rows, in order."""
        pending, self.pending = self.pending, []
        if pending:
            results = _each_alone_on_error(
                lambda raws: clean_texts(raws, self.config.text), [p[2] for p in pending]
            )
            for (key, line, _, label, meta, slot), res in zip(pending, results):
                if isinstance(res, Drop):
                    self.rejects[slot] = {
                        "source": line_source(key, line),
                        "reason": res.reason,
                        "message": res.message,
                    }
                    continue
                if res.pii:
                    meta = {**meta, "pii": res.pii}
                self.texts.append(res.text)
                self.t_rows.append((key, line, label, canonical_meta(meta)))
        self.rejects[:] = [r for r in self.rejects if r is not None]

    def signatures(self) -> np.ndarray:
        """MinHash signatures of the kept texts; a text whose signature fails is rejected
        `internal_error` (and leaves the kept rows), the others keep theirs."""
        cfg = self.config.dedup
        if not self.texts or not cfg.near_text:
            return np.zeros((len(self.texts), cfg.num_perm), np.uint32)

        def sign(texts):
            sigs = minhash_signatures(
                texts, shingle_size=cfg.shingle_size, num_perm=cfg.num_perm, seed=cfg.seed
            )
            return np.asarray(sigs, np.uint32).reshape(len(texts), cfg.num_perm)

        try:  # the usual batch: one matrix, no row-by-row detour
            return sign(self.texts)
        except Exception:  # noqa: BLE001 - find the text that caused it (below)
            pass
        out = _each_alone_on_error(lambda texts: list(sign(texts)), self.texts)
        failed = [i for i, r in enumerate(out) if isinstance(r, Drop)]
        for i in failed:
            key, line = self.t_rows[i][0], self.t_rows[i][1]
            self.reject(key, line, out[i])
        if failed:
            keep = [i for i, r in enumerate(out) if not isinstance(r, Drop)]
            self.texts = [self.texts[i] for i in keep]
            self.t_rows = [self.t_rows[i] for i in keep]
            out = [out[i] for i in keep]
        if not out:
            return np.zeros((0, cfg.num_perm), np.uint32)
        return np.stack(out).astype(np.uint32, copy=False)

    def table(self) -> pa.Table:
        self.flush_texts()
        cfg = self.config
        num_perm = cfg.dedup.num_perm
        sigs = self.signatures()
        n_t, n_b = len(self.texts), len(self.blobs)
        text_arr = pa.array(self.texts, pa.large_string())
        data_arr = pa.array(self.blobs, pa.large_binary())
        ids = text_record_ids(text_arr, self.id_hash) + binary_record_ids(data_arr, self.id_hash)
        sigs = np.concatenate((sigs, np.zeros((n_b, num_perm), np.uint32)))
        rows_meta = self.t_rows + [(k, 0, lab, me) for k, _, lab, me, _, _ in self.b_rows]
        keys, lines, labels, metas = (
            (list(c) for c in zip(*rows_meta)) if rows_meta else ([], [], [], [])
        )
        sources = (
            [line_source(k, ln) for k, ln in zip(keys, lines)] if any(lines) else keys
        )
        return pa.Table.from_arrays(
            [
                ids_to_array(ids),
                pa.array(["text"] * n_t + [r[1] for r in self.b_rows], pa.string()),
                pa.array(sources, pa.string()),
                pa.array(labels, pa.string()),
                pa.array(metas, pa.string()),
                pa.concat_arrays([text_arr, pa.nulls(n_b, pa.large_string())]),
                pa.concat_arrays([pa.nulls(n_t, pa.large_binary()), data_arr]),
                pa.array(keys, pa.string()),
                pa.array(lines, pa.int64()),
                pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel(), pa.uint32()), num_perm),
                pa.array([0] * n_t + [r[4] for r in self.b_rows], pa.uint64()),
                pa.array([None] * n_t + [r[5] for r in self.b_rows], pa.binary()),
            ],
            schema=candidate_schema(num_perm),
        )


def process_objects(
    items: Sequence[tuple[WorkItem, bytes]], config: IngestConfig, id_hash: str = DEFAULT_ID_HASH
) -> ProcessedBatch:
    """Split, clean and featurize a batch of raw objects; record ids with `id_hash` (the
    repository's `Repo.id_hash`). Never raises: an exception while
    handling one object or line rejects that unit `internal_error`; one in a step of the
    whole batch reruns the batch object by object, so it lands on the object that caused it."""
    try:
        with gc_paused():
            return _process_batch(items, config, id_hash)
    except Exception as e:  # noqa: BLE001 - isolate the object that caused it
        if len(items) == 1:
            b = _Builder(config, id_hash)
            b.inputs = 1
            b.reject(items[0][0].key, 0, internal_error(e))
            return ProcessedBatch(b.table(), b.rejects, b.inputs)
        parts = [process_objects([it], config, id_hash) for it in items]
        return ProcessedBatch(
            pa.concat_tables([p.candidates for p in parts]),
            [r for p in parts for r in p.rejects],
            sum(p.inputs for p in parts),
        )


def reject_erased(candidates: pa.Table, denied: np.ndarray) -> tuple[pa.Table, list[dict]]:
    """Candidates minus content an erasure removed (`denied`: the repository's denylist as
    'S16' ids), and a reject (reason `erased`) for each candidate dropped."""
    from dataversion.denylist import ERASED, denied_mask
    from dataversion.records import ids_as_numpy

    if not len(denied) or not candidates.num_rows:
        return candidates, []
    hit = denied_mask(ids_as_numpy(candidates.column("record_id")), denied)
    if not hit.any():
        return candidates, []
    rejects = [
        {"source": src, "reason": ERASED, "message": "this content was erased from the repository (see `dataversion erasures`)"}
        for src in candidates.column("source").filter(pa.array(hit)).to_pylist()
    ]
    return candidates.filter(pa.array(~hit)), rejects


def internal_error(e: BaseException) -> Drop:
    """The reject of a unit whose handling raised: the exception's type and message."""
    return Drop(INTERNAL_ERROR, internal_error_message(e))


def _each_alone_on_error(batch_fn, values: list) -> list:
    """`batch_fn(values)` (one result per value); if it raises, each value alone, and a
    value that still raises gets an `internal_error` Drop as its result."""
    try:
        return list(batch_fn(values))
    except Exception as e:  # noqa: BLE001 - find the value that caused it
        if len(values) == 1:
            return [internal_error(e)]
    out = []
    for v in values:
        try:
            out.extend(batch_fn([v]))
        except Exception as e:  # noqa: BLE001
            out.append(internal_error(e))
    return out


def _process_batch(items: Sequence[tuple[WorkItem, bytes]], config: IngestConfig, id_hash: str) -> ProcessedBatch:
    b = _Builder(config, id_hash)
    for item, data in items:
        marks = (b.inputs, len(b.rejects), len(b.pending), len(b.blobs), len(b.b_rows))
        try:
            _process_one(b, item, data, config)
        except Exception as e:  # noqa: BLE001 - one object can only ever reject itself
            b.inputs = marks[0]
            del b.rejects[marks[1] :], b.pending[marks[2] :]
            del b.blobs[marks[3] :], b.b_rows[marks[4] :]
            b.inputs += 1
            b.reject(item.key, 0, internal_error(e))
    return ProcessedBatch(b.table(), b.rejects, b.inputs)


def size_drop(key: str, head: bytes, size: int, config: IngestConfig) -> Drop | None:
    """A limit of the object's modality that its size breaks, judged on its first bytes
    (before the rest is read): whole-object text over `text.max_bytes` (a compressed text
    is judged on what it decompresses to, with the same limit)."""
    if size > config.text.max_bytes and sniff_modality(key, head) == "text":
        return Drop(
            TOO_LARGE,
            f"a text object of {size} bytes, limit {config.text.max_bytes} (text.max_bytes); not read",
        )
    return None


def _line_too_large(n: int, config: IngestConfig) -> Drop:
    return Drop(
        TOO_LARGE,
        f"a JSONL line of {n} bytes, limit {config.text.max_bytes} (text.max_bytes); not parsed",
    )


def declared_pixels(data: bytes) -> int:
    """Width x height an image's header declares (0 for anything else); decodes no pixels."""
    if sniff_format(data[:64]) not in IMAGE_FORMATS:
        return 0
    try:
        import io

        from PIL import Image

        from .filters.image import register_plugins

        register_plugins()

        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
        return w * h
    except Exception:  # noqa: BLE001 - a broken header is the image filter's to judge
        return 0


UNSUPPORTED_FORMAT = "unsupported_format"  # a text-looking format that is not prose (SVG)
_SVG = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*)*<svg[\s>]", re.I | re.S)


def is_svg(head: bytes) -> bool:
    """Whether the first bytes open an SVG document (an XML prolog, comments and a doctype
    may come before the <svg> element)."""
    return _SVG.match(head) is not None


def _process_one(b: _Builder, item: WorkItem, data: bytes, config: IngestConfig) -> None:
    key = item.key
    if not data:
        b.inputs += 1
        b.reject(key, 0, Drop("empty_file", "the object is empty (0 bytes)"))
        return
    modality = sniff_modality(key, data[:SNIFF_BYTES])
    meta: dict = {}
    if modality == "compressed":
        got = _decompressed(key, data, config)
        if isinstance(got, Drop):
            b.inputs += 1
            b.reject(key, 0, got)
            return
        data, meta = got
        modality = "jsonl" if inner_name(key).lower().endswith(JSONL_SUFFIXES) else "text"
    # splitext only for a name that ends like a media file (most names do not)
    ext = posixpath.splitext(key)[1].lower() if key.lower().endswith(_MEDIA_SUFFIXES) else ""
    if config.reject_extension_mismatch and (
        (ext in IMAGE_EXTENSIONS and modality != "image")
        or (ext in AUDIO_EXTENSIONS and modality != "audio")
    ):
        b.inputs += 1
        claimed = "image" if ext in IMAGE_EXTENSIONS else "audio"
        b.reject(
            key,
            0,
            Drop(
                "extension_mismatch",
                f"named {ext} but the content is not {claimed} (sniffed: {modality})",
            ),
        )
        return
    if modality == "jsonl":
        _process_jsonl(b, item, data, config, meta)
        return
    b.inputs += 1
    if modality == "text" and is_svg(data[:SNIFF_BYTES]):
        b.reject(key, 0, Drop(UNSUPPORTED_FORMAT, "SVG vector image: not rasterized, and not kept as text "
                                                  "(cleaning would rewrite its markup and coordinates)"))
    elif modality == "text":
        b.add_text(key, 0, data, item.label, meta)
    elif modality == "image":
        res = check_image(data, config.image)
        if isinstance(res, Drop):
            b.reject(key, 0, res)
        else:
            b.blobs.append(data)
            b.b_rows.append(
                (key, "image", item.label, canonical_meta(res.meta()), res.phash, res.thumb)
            )
    elif modality == "audio":
        res = check_audio(data, config.audio)
        if isinstance(res, Drop):
            b.reject(key, 0, res)
        else:
            b.blobs.append(data)
            b.b_rows.append((key, "audio", item.label, canonical_meta(res.meta()), 0, None))
    elif config.reject_binary:
        what = binary_kind(data[:SNIFF_BYTES])
        b.reject(
            key,
            0,
            Drop(
                "unsupported_binary",
                f"{what}: no supported image, audio, text or compressed text format"
                if what
                else "binary content of no supported image, audio, text or compressed text format",
            ),
        )
    else:
        b.blobs.append(data)
        b.b_rows.append((key, "binary", item.label, None, 0, None))


def _decompressed(key: str, data: bytes, config: IngestConfig) -> tuple[bytes, dict] | Drop:
    """A compressed object's content and the metadata saying how it came, or the Drop
    that rejects it: only compressed text and JSONL are read (bounded by the limit of the
    content's kind, bomb-checked: `dataversion.compression`)."""
    jsonl = inner_name(key).lower().endswith(JSONL_SUFFIXES)
    limit = config.max_object_bytes if jsonl else config.text.max_bytes
    got = decompress_object(data, max_bytes=limit)
    if isinstance(got, DecompressError):
        return Drop(got.reason, got.message)
    inner = sniff_modality(inner_name(key), got.data[:SNIFF_BYTES])
    if inner not in ("text", "jsonl"):
        what = binary_kind(got.data[:SNIFF_BYTES]) or f"{inner} content"
        return Drop(
            "unsupported_binary",
            f"{got.format}-compressed, holding {what}: only compressed text and JSONL are read",
        )
    return got.data, {"compression": got.format}


def _process_jsonl(
    b: _Builder, item: WorkItem, data: bytes, config: IngestConfig, meta: dict | None = None
) -> None:
    """One unit per non-blank line (`dataversion.jsonl`: the line rules `add` uses too);
    blank lines separate records and are not inputs."""
    label_field = config.label_field
    seen = 0
    for line_no, raw in jsonl_lines(data):
        seen += 1
        b.inputs += 1
        marks = (len(b.rejects), len(b.pending))
        if len(raw) > config.text.max_bytes:  # decoding and parsing it would cost ~5x
            b.reject(item.key, line_no, _line_too_large(len(raw), config))
            continue
        try:
            parsed = parse_line(raw, config.text_field)
            if isinstance(parsed, LineReject):
                b.reject(item.key, line_no, Drop(parsed.reason, parsed.message))
                continue
            text = parsed.pop(config.text_field)
            label = item.label
            if label_field and label_field in parsed:
                raw_label = parsed.pop(label_field)
                if raw_label is not None:
                    label = normalize_label(
                        str(raw_label), config.label_map, config.lowercase_labels
                    )
            b.add_text(item.key, line_no, text, label, {**meta, **parsed} if meta else parsed)
        except Exception as e:  # noqa: BLE001 - one line can only ever reject itself
            del b.rejects[marks[0] :], b.pending[marks[1] :]
            b.reject(item.key, line_no, internal_error(e))
    if not seen:
        b.inputs += 1
        b.reject(item.key, 0, Drop("empty_file", "the JSONL object has no non-blank line"))
