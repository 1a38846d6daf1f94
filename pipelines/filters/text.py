"""Text cleaning: strict UTF-8, NFC, control characters, whitespace, length, PII redaction.

`clean_text` is the pure rule set for one text; `clean_texts` applies it to a batch.
PII is replaced by typed placeholders (`<EMAIL>`, `<PHONE>`, `<IPV4>`, `<IPV6>`, `<CARD>`,
`<IBAN>`, `<API_KEY>`: the rules and their context exceptions are `pipelines.filters.pii`);
the number of replacements of each kind is returned with the cleaned text (it goes into
the record's metadata).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import TextRules
from . import Drop
from .pii import PLACEHOLDERS, luhn_valid, redact_pii, redaction_edits

__all__ = [
    "PLACEHOLDERS",
    "CleanText",
    "clean_text",
    "clean_texts",
    "decode_utf8",
    "luhn_valid",
    "normalize_text",
    "redact_pii",
]


# C0/C1 controls except \t \n \r, DEL, and invisible format characters (zero-width, BOM).
_CONTROL_TABLE = dict.fromkeys(
    [
        *range(0x00, 0x09),
        0x0B,
        0x0C,
        *range(0x0E, 0x20),
        *range(0x7F, 0xA0),
        0x200B,
        0x200C,
        0x200D,
        0x2060,
        0xFEFF,
    ]
)


@dataclass
class CleanText:
    """A kept text: the cleaned string and the PII replacements made, by kind."""

    text: str
    pii: dict[str, int] = field(default_factory=dict)


def decode_utf8(data: bytes) -> str | Drop:
    """Strict UTF-8 decode (a leading BOM is dropped)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Drop("invalid_utf8", f"not valid UTF-8 at byte {e.start}: {e.reason}")
    return text[1:] if text.startswith("\ufeff") else text


def _normalize_whitespace(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    blank = 0
    for line in text.split("\n"):
        line = " ".join(line.split())
        if line:
            if blank and out:
                out.append("")  # paragraphs: at most one empty line between them
            out.append(line)
            blank = 0
        else:
            blank += 1
    return "\n".join(out)


def _whitespace_is_normal(text: str) -> bool:
    return (
        text.isascii()
        and "  " not in text
        and "\n" not in text
        and "\t" not in text
        and "\r" not in text
        and "\x0b" not in text
        and "\x0c" not in text
        and text[:1] != " "
        and text[-1:] != " "
    )


def normalize_text(text: str, rules: TextRules) -> str:
    """NFC, control characters removed, whitespace normalized (no length or PII rules).

    Whitespace: runs of spaces, tabs and other Unicode spaces become one space, lines are
    stripped, at most one empty line separates paragraphs, the ends are stripped.
    """
    if rules.nfc and not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if rules.remove_control_chars and not text.isprintable():
        text = text.translate(_CONTROL_TABLE)
    if rules.normalize_whitespace and not _whitespace_is_normal(text):
        text = _normalize_whitespace(text)
    return text


def clean_text(text: str | bytes, rules: TextRules = TextRules()) -> CleanText | Drop:
    """Apply every text rule to one text (bytes are decoded as strict UTF-8 first)."""
    if isinstance(text, bytes):
        decoded = decode_utf8(text)
        if isinstance(decoded, Drop):
            return decoded
        text = decoded
    text = normalize_text(text, rules)
    if not text.strip():
        return Drop("empty_text", "no text left after cleaning (empty or whitespace only)")
    pii: dict[str, int] = {}
    if rules.redact_pii:
        text, pii = redact_pii(text, rules.pii_kinds)
    n = len(text)
    if n < rules.min_chars:
        return Drop("too_short", f"{n} characters after cleaning, minimum {rules.min_chars}")
    if n > rules.max_chars:
        return Drop("too_long", f"{n} characters after cleaning, maximum {rules.max_chars}")
    return CleanText(text, pii)


def clean_texts(
    texts: Sequence[str | bytes], rules: TextRules = TextRules()
) -> list[CleanText | Drop]:
    """`clean_text` over a batch (what the Beam DoFn calls): the same results, computed over
    the whole batch at once.

    1. Texts that are already clean (ASCII, no control characters but newlines, no
       whitespace to normalize; or so but for the newlines that end them: found with a few
       numpy passes over the joined bytes) skip normalization; the others go through
       `normalize_text` one by one.
    2. PII: one scan of the joined UTF-8 of the batch (`pii.redact_texts`).

    Both run over chunks of ~`_CHUNK_BYTES` of text: the numpy passes over a whole batch
    (tens of MB) made temporaries the allocator mapped afresh on every batch, page faults
    that cost more than the passes themselves.
    """
    out: list[CleanText | Drop] = []
    i, n = 0, len(texts)
    while i < n:
        j, size = i, 0
        while j < n and (size < _CHUNK_BYTES or j == i):
            size += len(texts[j])
            j += 1
        out.extend(_clean_chunk(texts[i:j] if i or j < n else texts, rules))
        i = j
    return out


_CHUNK_BYTES = 1 << 19


def _clean_chunk(texts: Sequence[str | bytes], rules: TextRules) -> list[CleanText | Drop]:
    n = len(texts)
    out: list[CleanText | Drop | None] = [None] * n
    kept: list[int] = []  # indices of texts still alive after normalization
    kept_text: list[str] = []
    kept_raw: list[bytes | None] = []  # UTF-8 of kept_text when at hand
    codes = _already_clean(texts)
    if rules.normalize_whitespace:  # it strips the newlines that end a text
        texts = [t.rstrip(b"\n" if isinstance(t, bytes) else "\n") if c == CLEAN_BUT_TRAILING_NEWLINES else t
                 for t, c in zip(texts, codes)] if CLEAN_BUT_TRAILING_NEWLINES in codes else texts
        fast = [c != CHANGES for c in codes]
    else:
        fast = [c == CLEAN for c in codes]
    if all(fast):  # the usual batch: one comprehension instead of the general loop
        kept = list(range(n))
        kept_raw = [t if isinstance(t, bytes) else None for t in texts]
        kept_text = [t.decode("ascii") if isinstance(t, bytes) else t for t in texts]
    else:
        for i, t in enumerate(texts):
            if fast[i]:
                if isinstance(t, bytes):
                    raw: bytes | None = t
                    t = t.decode("ascii")
                else:
                    raw = None
            else:
                if isinstance(t, bytes):
                    decoded = decode_utf8(t)
                    if isinstance(decoded, Drop):
                        out[i] = decoded
                        continue
                    t = decoded
                t = normalize_text(t, rules)
                if not t.strip():
                    out[i] = Drop(
                        "empty_text", "no text left after cleaning (empty or whitespace only)"
                    )
                    continue
                raw = None
            kept.append(i)
            kept_text.append(t)
            kept_raw.append(raw)
    pii: list[dict[str, int]] = [{} for _ in kept]
    if rules.redact_pii and kept:
        for j, (t, counts) in redaction_edits(kept_text, rules.pii_kinds, kept_raw).items():
            kept_text[j] = t
            pii[j] = counts
    lo, hi = rules.min_chars, rules.max_chars
    for j, i in enumerate(kept):
        t = kept_text[j]
        m = len(t)
        if m < lo:
            out[i] = Drop("too_short", f"{m} characters after cleaning, minimum {lo}")
        elif m > hi:
            out[i] = Drop("too_long", f"{m} characters after cleaning, maximum {hi}")
        else:
            out[i] = CleanText(t, pii[j])
    return out  # type: ignore[return-value]


def ingest_forms(texts: list[str]) -> list[str | None]:
    """What `ingest` stores of each text with the default rules (None: it would drop it):
    the other form of a text `add` stores as it is, registered for the denylist
    (entry point `dataversion.content_forms`), so erased content stays out by either path."""
    return [r.text if isinstance(r, CleanText) else None for r in clean_texts(texts)]


CHANGES, CLEAN, CLEAN_BUT_TRAILING_NEWLINES = 0, 1, 2  # what `_already_clean` finds


def _already_clean(texts: Sequence[str | bytes]) -> list[int]:
    """Per text, found with a few numpy passes over the joined bytes: CLEAN when every
    normalization rule leaves it as is and it is not empty after stripping, whatever the
    rules: ASCII (valid UTF-8, already NFC), no control character but newlines, no space at
    the start or end of the text or of a line, no double space, no newline first or last,
    at most one empty line in a row. CLEAN_BUT_TRAILING_NEWLINES: the same once the
    newlines that end it are stripped (the usual text file; whitespace normalization strips
    them). CHANGES otherwise. Conservative: CHANGES only sends a text down the general path."""
    n = len(texts)
    flags = [CHANGES] * n
    idx: list[int] = []
    parts: list[bytes] = []
    for i, t in enumerate(texts):
        if isinstance(t, str):
            if not t.isascii() or not t:
                continue
            t = t.encode("ascii")
        elif not t:
            continue
        idx.append(i)
        parts.append(t)
    if not parts:
        return flags
    lens = np.fromiter(map(len, parts), np.int64, len(parts))
    ends = np.cumsum(lens)
    starts = ends - lens
    b = np.frombuffer(b"".join(parts), np.uint8)
    # bytes < 0x20 but the newline (controls, \t \r \v \f), 0x7f (DEL), >= 0x80 (not ASCII)
    sp, nl = b == 0x20, b == 0x0A
    bad = ((b - np.uint8(0x20)) >= np.uint8(0x5F)) & ~nl
    # pairs and triples found across two texts only ever mark the first text: conservative
    pair = sp[:-1] & (sp[1:] | nl[1:])  # "  " and " \n"
    pair |= nl[:-1] & sp[1:]  # "\n "
    first = b[starts]
    last = b[ends - 1]
    ok = (first != 0x20) & (first != 0x0A) & (last != 0x20)
    for pos in (np.flatnonzero(bad), np.flatnonzero(pair), np.flatnonzero(nl[:-2] & nl[1:-1] & nl[2:])):
        if len(pos):
            ok[np.searchsorted(ends, pos, side="right")] = False
    # a text ending in newlines: clean once they are stripped (no space or third newline
    # before them: the pair and triple checks above)
    code = np.where(ok, np.where(last == 0x0A, CLEAN_BUT_TRAILING_NEWLINES, CLEAN), CHANGES)
    if len(idx) == n:  # every text went in: idx is 0..n-1
        return code.tolist()
    for k in np.flatnonzero(ok).tolist():
        flags[idx[k]] = int(code[k])
    return flags
