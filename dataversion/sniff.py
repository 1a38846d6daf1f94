"""Modality by content (magic bytes), not by file name alone."""

from __future__ import annotations

IMAGE_FORMATS = {"png", "jpeg", "gif", "bmp", "webp"}
AUDIO_FORMATS = {"wav", "flac", "ogg"}
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")


_FIRST_BYTES = frozenset(b"\x89\xffGBRfO")


def sniff_format(head: bytes) -> str | None:
    """The container format a payload's first bytes announce, or None if unknown."""
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
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    return None


def modality_of_format(fmt: str | None) -> str | None:
    if fmt in IMAGE_FORMATS:
        return "image"
    if fmt in AUDIO_FORMATS:
        return "audio"
    return None


def sniff_modality(name: str, head: bytes) -> str:
    """'image', 'audio', 'jsonl', 'text' or 'binary' for a file's name and first bytes.

    Magic bytes win over the extension: a text file named .png is text, a PNG named .txt is
    an image. Text means 'no known magic and not obviously binary'; strict UTF-8 decoding of
    the whole file is the caller's job.
    """
    modality = modality_of_format(sniff_format(head))
    if modality:
        return modality
    if b"\x00" in head[:8192]:
        return "binary"
    if name.lower().endswith(JSONL_SUFFIXES):
        return "jsonl"
    return "text"
