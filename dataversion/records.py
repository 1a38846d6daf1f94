"""Records as Arrow tables: the schema shards use, and building record tables from content.

A record is one unit of training data: a text (one file, or one JSONL line) or a binary
payload (an image, an audio clip, any other file). Its id is xxh3-128 of its canonical
content: the UTF-8 bytes of the text, or the payload bytes as stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from .errors import BadInputError
from .hashing import DEFAULT_ID_HASH, ID_HASHES, id_hasher

RECORD_ID = pa.binary(16)

RECORD_SCHEMA = pa.schema(
    [
        pa.field("record_id", RECORD_ID, nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("label", pa.string()),
        pa.field("meta", pa.string()),  # canonical JSON of extra per-record metadata
        pa.field("text", pa.large_string()),  # payload of text records
        pa.field("data", pa.large_binary()),  # payload of binary records
    ]
)

METADATA_COLUMNS = ("modality", "source", "label", "meta")
MODALITIES = ("text", "image", "audio", "binary")


def text_record_ids(texts: pa.Array | pa.ChunkedArray, id_hash: str = DEFAULT_ID_HASH) -> list[bytes]:
    """Record ids of a string column, hashing the UTF-8 bytes in place (no re-encoding)."""
    return _hash_var_width(texts, id_hasher(id_hash))


def binary_record_ids(data: pa.Array | pa.ChunkedArray, id_hash: str = DEFAULT_ID_HASH) -> list[bytes]:
    """Record ids of a binary column."""
    return _hash_var_width(data, id_hasher(id_hash))


def _hash_var_width(arr: pa.Array | pa.ChunkedArray, h) -> list[bytes]:
    if isinstance(arr, pa.ChunkedArray):
        out: list[bytes] = []
        for chunk in arr.chunks:
            out.extend(_hash_var_width(chunk, h))
        return out
    if arr.null_count:
        raise BadInputError("a record payload is null")
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        off_dtype = np.int64
    elif pa.types.is_string(arr.type) or pa.types.is_binary(arr.type):
        off_dtype = np.int32
    else:
        raise BadInputError(f"cannot hash a column of type {arr.type}")
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_dtype)[arr.offset : arr.offset + len(arr) + 1].tolist()
    data = memoryview(bufs[2]) if bufs[2] is not None else memoryview(b"")
    return [h(data[a:b]) for a, b in zip(offsets, offsets[1:])]


def ids_to_array(ids: Sequence[bytes]) -> pa.FixedSizeBinaryArray:
    """A list of 16-byte ids as an Arrow column, without a per-id Python conversion."""
    buf = b"".join(ids)
    if len(buf) != 16 * len(ids):
        raise BadInputError("record ids must be 16 bytes each")
    return pa.FixedSizeBinaryArray.from_buffers(RECORD_ID, len(ids), [None, pa.py_buffer(buf)])


def ids_as_numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A record_id column as a numpy 'S16' array (sortable, searchable, zero-copy when possible)."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            col = col.chunk(0)
        elif col.num_chunks == 0:
            return np.empty(0, dtype="S16")
        else:
            col = pa.concat_arrays(col.chunks)
    buf = col.buffers()[1]
    return np.frombuffer(buf, dtype="S16", count=len(col), offset=col.offset * 16)


def id_bytes(arr: np.ndarray, i: int) -> bytes:
    """The 16 raw bytes of entry i of an 'S16' id array (numpy strips trailing NULs otherwise)."""
    return arr[i : i + 1].tobytes()


def ids_to_hex(arr: np.ndarray) -> list[str]:
    """Hex strings of an 'S16' id array."""
    raw = arr.tobytes()
    return [raw[i : i + 16].hex() for i in range(0, len(raw), 16)]


def hex_to_id(hex_id: str) -> bytes:
    try:
        b = bytes.fromhex(hex_id)
    except ValueError:
        raise BadInputError(f"{hex_id!r} is not a hex record id") from None
    if len(b) != 16:
        raise BadInputError(f"record id {hex_id!r} must be 32 hex chars")
    return b


def make_text_records(
    texts: Sequence[str] | pa.Array,
    *,
    sources: Sequence[str | None] | None = None,
    labels: Sequence[str | None] | None = None,
    metas: Sequence[str | None] | None = None,
    id_hash: str = DEFAULT_ID_HASH,
) -> pa.Table:
    """A record table of text records; ids computed from the texts with `id_hash` (pass
    the repository's `Repo.id_hash` for a repository that is not xxh3-128)."""
    text_arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(texts, pa.large_string())
    if text_arr.type != pa.large_string():
        text_arr = text_arr.cast(pa.large_string())
    n = len(text_arr)
    ids = text_record_ids(text_arr, id_hash)
    return pa.table(
        {
            "record_id": ids_to_array(ids),
            "modality": pa.array(["text"] * n, pa.string()) if n else pa.array([], pa.string()),
            "source": pa.array(sources if sources is not None else [None] * n, pa.string()),
            "label": pa.array(labels if labels is not None else [None] * n, pa.string()),
            "meta": pa.array(metas if metas is not None else [None] * n, pa.string()),
            "text": text_arr,
            "data": pa.nulls(n, pa.large_binary()),
        },
        schema=RECORD_SCHEMA,
    )


def make_binary_records(
    payloads: Sequence[bytes],
    modalities: Sequence[str],
    *,
    sources: Sequence[str | None] | None = None,
    labels: Sequence[str | None] | None = None,
    metas: Sequence[str | None] | None = None,
    id_hash: str = DEFAULT_ID_HASH,
) -> pa.Table:
    """A record table of binary records (images, audio, other files); ids with `id_hash`."""
    data_arr = pa.array(payloads, pa.large_binary())
    n = len(data_arr)
    ids = binary_record_ids(data_arr, id_hash)
    return pa.table(
        {
            "record_id": ids_to_array(ids),
            "modality": pa.array(list(modalities), pa.string()),
            "source": pa.array(sources if sources is not None else [None] * n, pa.string()),
            "label": pa.array(labels if labels is not None else [None] * n, pa.string()),
            "meta": pa.array(metas if metas is not None else [None] * n, pa.string()),
            "text": pa.nulls(n, pa.large_string()),
            "data": data_arr,
        },
        schema=RECORD_SCHEMA,
    )


def conform(table: pa.Table) -> pa.Table:
    """Check a caller's record table against RECORD_SCHEMA (missing optional columns become null)."""
    if "record_id" not in table.column_names or "modality" not in table.column_names:
        raise BadInputError("a record table needs at least the columns record_id and modality")
    cols = []
    for field in RECORD_SCHEMA:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                try:
                    col = col.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise BadInputError(f"column {field.name} has type {col.type}, expected {field.type}") from e
            cols.append(col)
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    out = pa.Table.from_arrays(cols, schema=RECORD_SCHEMA)
    if out.column("record_id").null_count or out.column("modality").null_count:
        raise BadInputError("record_id and modality must not be null")
    return out


ID_CHECK_ROWS = 8


def check_ids_hash(table: pa.Table, id_hash: str, rows: int = ID_CHECK_ROWS) -> None:
    """Refuse a record table whose ids were computed with another record-id hash than the
    repository's `id_hash` (a caller that built records without knowing the repository's
    choice, e.g. `make_text_records` with its default). Looks at the first `rows` rows that
    carry a payload: cheap, and enough for a hash chosen per table; per-record integrity is
    `verify`'s job. BadInputError naming both hashes; rows without payload are not checked."""
    if table.num_rows == 0:
        return
    head = table.slice(0, min(table.num_rows, 4 * rows))
    texts = head.column("text").to_pylist() if "text" in head.column_names else [None] * head.num_rows
    datas = head.column("data").to_pylist() if "data" in head.column_names else [None] * head.num_rows
    ids = ids_as_numpy(head.column("record_id"))
    own = id_hasher(id_hash)
    checked = 0
    for i, (t, d) in enumerate(zip(texts, datas)):
        payload = t.encode("utf-8") if t is not None else d
        if payload is None:
            continue
        rid = id_bytes(ids, i)
        if own(payload) != rid:
            other = next((h for h in ID_HASHES if h != id_hash and id_hasher(h)(payload) == rid), None)
            if other is not None or id_hash != DEFAULT_ID_HASH:
                made = f"were computed with {other}" if other else f"are not {id_hash} of their payloads"
                raise BadInputError(
                    f"record ids {made}; this repository's record-id hash is {id_hash}",
                    hint=f"pass id_hash={id_hash!r} where records are built, e.g. make_text_records(..., id_hash=repo.id_hash)",
                )
        checked += 1
        if checked >= rows:
            return
