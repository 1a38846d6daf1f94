"""Modality by content (magic bytes), not by file name alone.

Text is what is left once no known format matches, and only when it looks like text: a
NUL byte, or more than 2% control bytes (other than tab, newlines, form feed, escape) in
the first `SNIFF_BYTES`, make it binary, so a random blob or an unknown binary format is
never reported as broken text (`invalid_utf8`). A Latin-1 text has no control bytes: it is
text, and its strict UTF-8 decoding tells what is wrong with it.
"""

from __future__ import annotations

from .compression import compression_of

IMAGE_FORMATS = {"png", "jpeg", "gif", "bmp", "webp", "tiff", "pnm", "avif", "heif"}
AUDIO_FORMATS = {"wav", "rf64", "aiff", "au", "flac", "ogg"}
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")
SNIFF_BYTES = 1024  # what the text/binary decision looks at

# binary formats recognized only to name them in a reject message
KNOWN_BINARY = (
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office/Java/Python package)"),
    (b"\x7fELF", "an ELF executable"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"PAR1", "a Parquet file"),
    (b"ID3", "an MP3 file (not supported)"),
    (b"\x00\x00\x00\x1cftypmp4", "an MP4 file (not supported)"),
)

_FIRST_BYTES = frozenset(b"\x89\xffGBRfOIMPF.\x00\x1f(\xfd")
_ISOBMFF_AVIF = {b"avif", b"avis"}
_ISOBMFF_HEIF = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


def sniff_format(head: bytes) -> str | None:
    """The container format a payload's first bytes announce, or None if unknown.

    Images: png, jpeg, gif, bmp, webp, tiff, pnm (PBM/PGM/PPM/PAM), avif, heif. Audio:
    wav (RIFF and big-endian RIFX), rf64, aiff (AIFF/AIFC), au, flac, ogg (Vorbis, Opus).
    """
    if not head or head[0] not in _FIRST_BYTES:  # fast path: most text starts elsewhere
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM") and len(head) >= 14:
        return "bmp"
    if head.startswith((b"RIFF", b"RIFX")) and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"RIFF", b"RIFX")) and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith((b"RF64", b"BW64")) and head[8:12] == b"WAVE":
        return "rf64"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head.startswith(b".snd"):
        return "au"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if _is_pnm(head):
        return "pnm"
    if head[4:8] == b"ftyp":
        return _isobmff_image(head)
    return None


def _is_pnm(head: bytes) -> bool:
    """P1-P7 then whitespace, then (after comments) a digit: the Netpbm header."""
    if len(head) < 3 or head[:1] != b"P" or head[1:2] not in b"1234567" or head[1:2] == b"":
        return False
    if head[2:3] not in (b" ", b"\t", b"\n", b"\r"):
        return False
    rest = head[3:].lstrip()
    while rest.startswith(b"#"):
        nl = rest.find(b"\n")
        if nl < 0:
            return False
        rest = rest[nl + 1 :].lstrip()
    return rest[:1].isdigit() or (head[1:2] == b"7" and rest[:5] == b"WIDTH")


def _isobmff_image(head: bytes) -> str | None:
    size = int.from_bytes(head[:4], "big")
    brands = [head[8:12]] + [head[i : i + 4] for i in range(16, min(size, len(head)), 4)]
    if any(b in _ISOBMFF_AVIF for b in brands):
        return "avif"
    if any(b in _ISOBMFF_HEIF for b in brands):
        return "heif"
    return None


def modality_of_format(fmt: str | None) -> str | None:
    if fmt in IMAGE_FORMATS:
        return "image"
    if fmt in AUDIO_FORMATS:
        return "audio"
    return None


# control bytes that never appear in text: C0 except \t \n \v \f \r and ESC; DEL
_CONTROL = bytes(c for c in range(32) if c not in (9, 10, 11, 12, 13, 27)) + b"\x7f"


def looks_binary(head: bytes) -> bool:
    """A NUL, or more than 2% control bytes, in the first `SNIFF_BYTES` bytes."""
    head = head[:SNIFF_BYTES]
    if b"\x00" in head:
        return True
    controls = len(head) - len(head.translate(None, _CONTROL))
    return controls * 50 > len(head)


def binary_kind(head: bytes) -> str | None:
    """What an unsupported binary payload is, when its magic says (for reject messages)."""
    for magic, what in KNOWN_BINARY:
        if head.startswith(magic):
            return what
    if len(head) > 262 and head[257:262] == b"ustar":
        return "a tar archive"
    return None


def sniff_modality(name: str, head: bytes) -> str:
    """'image', 'audio', 'compressed', 'jsonl', 'text' or 'binary' for a file's name and
    first bytes (give at least `SNIFF_BYTES` when there are that many).

    Magic bytes win over the extension: a text file named .png is text, a PNG named .txt is
    an image. 'compressed' (gzip, bzip2, xz, zstd) is for the caller to decompress and
    sniff again (`dataversion.compression`). Text means 'no known magic and looks like
    text'; strict UTF-8 decoding of the whole file is the caller's job.
    """
    modality = modality_of_format(sniff_format(head))
    if modality:
        return modality
    if compression_of(head) is not None:
        return "compressed"
    if looks_binary(head):
        return "binary"
    if name.lower().endswith(JSONL_SUFFIXES):
        return "jsonl"
    return "text"
