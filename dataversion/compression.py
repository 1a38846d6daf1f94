"""Compressed inputs (gzip, bzip2, xz, zstd) recognized by content and decompressed with a
bound on what comes out.

`add` and `ingest` both call `decompress_object`: a compressed text or JSONL object is read
as what it holds (`changelog.gz` is text, `rows.jsonl.zst` is JSONL: the name without its
compression suffix decides). Nothing is decompressed past the limit: the decoders are
asked for at most `max_bytes + 1` bytes, so a bomb costs no more memory than the limit,
and an output more than `max_ratio` times its input is rejected as a bomb. Rejects carry
a machine-readable reason (`decompression_bomb`, `too_large`, `corrupt_compressed`,
`nested_compression`) and a message without Python internals.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from dataclasses import dataclass

COMPRESSED_SUFFIXES = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
DECOMPRESSION_BOMB = "decompression_bomb"
TOO_LARGE = "too_large"
CORRUPT_COMPRESSED = "corrupt_compressed"
NESTED_COMPRESSION = "nested_compression"
MAX_RATIO = 1000  # decompressed / compressed bytes; repetitive logs reach ~100-300

_CHUNK = 1 << 20


def compression_of(head: bytes) -> str | None:
    """The compression format a payload's first bytes announce, or None."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4].isdigit():
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return None


def inner_name(name: str) -> str:
    """The name without its compression suffix: `a/b.jsonl.gz` -> `a/b.jsonl`."""
    lower = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Decompressed:
    format: str
    data: bytes


@dataclass(frozen=True)
class DecompressError:
    reason: str
    message: str


def decompress_object(
    data: bytes, *, max_bytes: int, max_ratio: int = MAX_RATIO
) -> Decompressed | DecompressError | None:
    """The decompressed bytes of a compressed payload, a DecompressError, or None when the
    payload is not compressed. Never raises for bad input."""
    fmt = compression_of(data[:6])
    if fmt is None:
        return None
    limit = min(max_bytes, max(len(data), 1) * max_ratio)
    try:
        out = _DECODERS[fmt](data, limit + 1)
    except _Truncated:
        return DecompressError(CORRUPT_COMPRESSED, f"the {fmt} stream is truncated")
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as e:
        return DecompressError(CORRUPT_COMPRESSED, f"the {fmt} stream does not decode: {_why(e)}")
    except Exception as e:  # noqa: BLE001 - zstandard.ZstdError and friends
        return DecompressError(CORRUPT_COMPRESSED, f"the {fmt} stream does not decode: {_why(e)}")
    if len(out) > limit:
        if limit < max_bytes:
            return DecompressError(
                DECOMPRESSION_BOMB,
                f"{fmt}: {len(data)} bytes decompress to more than {limit} "
                f"({max_ratio}x); not decompressed further",
            )
        return DecompressError(
            TOO_LARGE, f"{fmt}: decompresses to more than {max_bytes} bytes; not kept"
        )
    if compression_of(out[:6]) is not None:
        return DecompressError(
            NESTED_COMPRESSION, f"{fmt} holds another compressed stream; not decompressed"
        )
    return Decompressed(fmt, out)


class _Truncated(Exception):
    pass


def _why(e: BaseException) -> str:
    from .errors import human_message

    return human_message(e)


def _gzip(data: bytes, limit: int) -> bytes:
    """Every member of a (multi-member) gzip file, at most `limit` bytes."""
    parts: list[bytes] = []
    total = 0
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=31)
        buf = rest
        while True:
            chunk = d.decompress(buf, min(_CHUNK, limit - total))
            parts.append(chunk)
            total += len(chunk)
            if total >= limit or d.eof:
                break
            buf = d.unconsumed_tail
            if not buf:
                if not chunk:
                    raise _Truncated
                # output was capped by max_length with no input left to feed: drain
                continue
        if total >= limit:
            break
        rest = d.unused_data
        if rest and rest[:2] != b"\x1f\x8b":
            break  # trailing garbage after the last member (gzip(1) ignores it too)
    return b"".join(parts)


def _stream(decompressor_factory, data: bytes, limit: int) -> bytes:
    """bz2 / lzma: one decompressor per stream, concatenated streams read in turn."""
    parts: list[bytes] = []
    total = 0
    rest = data
    while rest:
        d = decompressor_factory()
        buf = rest
        while True:
            chunk = d.decompress(buf, min(_CHUNK, limit - total))
            buf = b""
            parts.append(chunk)
            total += len(chunk)
            if total >= limit or d.eof:
                break
            if d.needs_input:
                raise _Truncated
        if total >= limit:
            break
        rest = d.unused_data
    return b"".join(parts)


def _bz2(data: bytes, limit: int) -> bytes:
    return _stream(bz2.BZ2Decompressor, data, limit)


def _xz(data: bytes, limit: int) -> bytes:
    return _stream(lzma.LZMADecompressor, data, limit)


def _zstd(data: bytes, limit: int) -> bytes:
    try:
        import zstandard
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ValueError("zstd support (the zstandard package) is not installed") from e
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    parts: list[bytes] = []
    total = 0
    while total < limit:
        chunk = reader.read(min(_CHUNK, limit - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    if total < limit:
        # the reader ends quietly on a truncated frame; the output is known to be small
        # here, so a one-shot decoder can say whether the last frame was complete
        d = zstandard.ZstdDecompressor().decompressobj()
        d.decompress(data)
        if not d.eof:
            raise _Truncated
    return b"".join(parts)


_DECODERS = {"gzip": _gzip, "bzip2": _bz2, "xz": _xz, "zstd": _zstd}
