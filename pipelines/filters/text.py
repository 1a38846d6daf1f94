"""Text cleaning: strict UTF-8, NFC, control characters, whitespace, length, PII redaction.

`clean_text` is the pure rule set for one text; `clean_texts` applies it to a batch.
PII is replaced by typed placeholders (`<EMAIL>`, `<PHONE>`, `<IPV4>`, `<CARD>`); the number
of replacements of each kind is returned with the cleaned text (it goes into the record's
metadata). Card numbers are redacted only when they pass the Luhn check.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import TextRules
from . import Drop

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ipv4": "<IPV4>", "card": "<CARD>"}

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

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", re.A)
# Python's regex engine costs ~20 ns per character scanned, so the digit rules below never
# scan a whole text: one pass finds numeric spans (7+ characters of digits and separators),
# and the specific rules run on those short spans only.
_NUMERIC_SPAN = re.compile(r"[0-9+(][0-9 ().+-]{5,}[0-9]", re.A)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![0-9.]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9.]*[0-9])", re.A)
_CARD = re.compile(r"(?<![0-9-])[0-9](?:[ -]?[0-9]){12,18}(?![0-9-])", re.A)
_PHONE = re.compile(
    r"(?<![0-9+])(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{2,4}(?:[ .-]?[0-9]{2,4}){1,3}(?![0-9])",
    re.A,
)
_DATE = re.compile(
    r"[0-9]{4}[-./][0-9]{1,2}[-./][0-9]{1,2}|[0-9]{1,2}[-./][0-9]{1,2}[-./][0-9]{4}", re.A
)
_NON_DIGIT = re.compile(r"[^0-9]", re.A)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (card numbers pass it)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


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


def redact_pii(
    text: str, kinds: Sequence[str] = ("email", "phone", "ipv4", "card")
) -> tuple[str, dict[str, int]]:
    """Replace e-mail addresses, IPv4 addresses, Luhn-valid card numbers and phone numbers.

    Order matters: e-mails first, then (within each numeric span) IPv4 addresses, card
    numbers (a Luhn-invalid digit run is left for the phone rule), then phone numbers
    (7 to 15 digits with a separator or a leading +, dates excluded).
    """
    counts: dict[str, int] = {}
    if "email" in kinds and "@" in text:
        text, n = _redact_emails(text)
        if n:
            counts["email"] = n
    numeric = [k for k in ("ipv4", "card", "phone") if k in kinds]
    if not numeric or sum(map(text.count, "0123456789")) < 4:
        return text, counts

    def span(m: re.Match) -> str:
        return _redact_numeric_span(m.group(0), numeric, counts)

    return _NUMERIC_SPAN.sub(span, text), counts


_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", re.A)


def _redact_emails(text: str) -> tuple[str, int]:
    """`_EMAIL.subn("<EMAIL>", text)`, anchored at the '@' characters.

    `_EMAIL` starts with a character class, so the regex engine tries (and backtracks) at
    every position of the text: ~80 ns per character. A match holds exactly one '@': its
    local part is the run of local-part characters just before the '@' (clipped at the end
    of the previous match, where the scan resumes), and it matches iff the domain part
    matches right after the '@'. The leftmost match is therefore found from the '@'s in
    order, with the same result as the regex scan.
    """
    a = text.find("@")
    if a < 0:
        return text, 0
    local = _EMAIL_LOCAL
    domain = _EMAIL_DOMAIN.match
    pieces: list[str] = []
    pos = 0
    while a >= 0:
        s = a
        while s > pos and text[s - 1] in local:
            s -= 1
        if s < a:
            m = domain(text, a + 1)
            if m is not None:
                pieces.append(text[pos:s])
                pieces.append(PLACEHOLDERS["email"])
                pos = m.end()
                a = text.find("@", pos)
                continue
        a = text.find("@", a + 1)
    if not pieces:
        return text, 0
    pieces.append(text[pos:])
    return "".join(pieces), len(pieces) // 2


_NO_DIGITS = str.maketrans("", "", "0123456789")


def _redact_numeric_span(s: str, kinds: list[str], counts: dict[str, int]) -> str:
    def count(kind: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1

    # spans are ASCII; a rule is skipped when the span has too few digits for it to redact
    # anything (IPv4: 4, card: 13, phone: 7; the IPv4 rule only removes digits)
    nd = len(s) - len(s.translate(_NO_DIGITS))
    if "ipv4" in kinds and "." in s:

        def ipv4(m: re.Match) -> str:
            count("ipv4")
            return PLACEHOLDERS["ipv4"]

        s = _IPV4.sub(ipv4, s)
    if "card" in kinds and nd >= 13:

        def card(m: re.Match) -> str:
            if luhn_valid(_NON_DIGIT.sub("", m.group(0))):
                count("card")
                return PLACEHOLDERS["card"]
            return m.group(0)

        s = _CARD.sub(card, s)
    if "phone" in kinds and nd >= 7:

        def phone(m: re.Match) -> str:
            p = m.group(0)
            digits = len(p) - len(p.translate(_NO_DIGITS))
            # a bare digit run (a year, a count) or a date is not a phone number
            if (
                7 <= digits <= 15
                and (len(p) > digits or p.startswith("+"))
                and not _DATE.fullmatch(p)
            ):
                count("phone")
                return PLACEHOLDERS["phone"]
            return p

        s = _PHONE.sub(phone, s)
    return s


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

    1. Texts that are already clean (ASCII, no control characters, no whitespace to
       normalize: found with a few numpy passes over the joined bytes) skip normalization;
       the others go through `normalize_text` one by one.
    2. E-mail addresses: only texts holding an '@', anchored at the '@' (`_redact_emails`).
    3. Numeric PII: the spans `_NUMERIC_SPAN` would match (with 4+ digits: fewer can hold
       no IPv4 address, card or phone number) are found in numpy over the joined UTF-8 of
       the batch (`_numeric_spans`); only those go through the per-span rules.
    """
    n = len(texts)
    out: list[CleanText | Drop | None] = [None] * n
    kept: list[int] = []  # indices of texts still alive after normalization
    kept_text: list[str] = []
    kept_raw: list[bytes | None] = []  # UTF-8 of kept_text when at hand
    fast = _already_clean(texts)
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
                out[i] = Drop("empty_text", "no text left after cleaning (empty or whitespace only)")
                continue
            raw = None
        kept.append(i)
        kept_text.append(t)
        kept_raw.append(raw)
    pii: list[dict[str, int]] = [{} for _ in kept]
    if rules.redact_pii and kept:
        kinds = rules.pii_kinds
        if "email" in kinds:
            for j, t in enumerate(kept_text):
                if "@" in t:
                    t2, c = _redact_emails(t)
                    if c:
                        kept_text[j] = t2
                        kept_raw[j] = None
                        pii[j]["email"] = c
        numeric = [k for k in ("ipv4", "card", "phone") if k in kinds]
        if numeric:
            _redact_numeric_batch(kept_text, kept_raw, numeric, pii)
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


def _already_clean(texts: Sequence[str | bytes]) -> list[bool]:
    """Per text: ASCII (valid UTF-8, already NFC), non-empty, no control character, no
    leading or trailing space, no double space: every normalization rule leaves it as is
    and it is not empty after stripping, whatever the rules. Conservative: False only
    sends a text down the general path."""
    n = len(texts)
    flags = [False] * n
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
    # bytes < 0x20 (controls, \t \n \r \v \f), 0x7f (DEL) and >= 0x80 (not ASCII)
    bad_pos = np.flatnonzero((b - np.uint8(0x20)) >= np.uint8(0x5F))
    sp = b == 0x20
    dbl = np.flatnonzero(sp[:-1] & sp[1:])
    ok = (b[starts] != 0x20) & (b[ends - 1] != 0x20)
    for pos in (bad_pos, dbl):
        if len(pos):
            ok[np.searchsorted(ends, pos, side="right")] = False
    for k in np.flatnonzero(ok).tolist():
        flags[idx[k]] = True
    return flags


_DIGIT_LO, _DIGIT_HI = np.uint8(ord("0")), np.uint8(10)
# bytes of `_NUMERIC_SPAN`'s class [0-9 ().+-], and of its first character [0-9+(]
_SPAN_BYTE = np.zeros(256, bool)
_SPAN_BYTE[list(b"0123456789 ().+-")] = True
_OPEN_BYTE = np.zeros(256, bool)
_OPEN_BYTE[list(b"+(")] = True
_WIN = 8  # bytes looked at around each digit in numpy; longer stretches are walked in Python


def _numeric_spans(b: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, digits) of the matches of `_NUMERIC_SPAN` in `b` (bytes) that hold 4+ digits.

    The regex's class C = [0-9 ().+-] has no multi-byte UTF-8 character. In a maximal run
    of C characters the regex matches at most once: from the first character of the run
    in [0-9+(] (p) to the last digit of the run (q), when q - p >= 6 (greedy `{5,}`
    backtracks to the last digit; a later start only shortens the match; after the match
    the run holds no digit). So: group the digits into C runs, extend each group left over
    the run's non-digit characters to find p.
    """
    n = len(b)
    d = np.flatnonzero((b - _DIGIT_LO) < _DIGIT_HI)
    if len(d) < 4:
        return []
    # consecutive digits are in one run iff every byte between them is in C
    gap = d[1:] - d[:-1] - 1
    same = gap == 0
    near = np.flatnonzero((gap > 0) & (gap <= _WIN))
    if len(near):
        ar = np.arange(_WIN)
        pos = d[near, None] + 1 + ar
        inside = ar < gap[near, None]
        inc = _SPAN_BYTE[b[np.minimum(pos, n - 1)]] | ~inside
        same[near] = inc.all(axis=1)
    far = np.flatnonzero(gap > _WIN)
    if len(far):
        # rare: the first _WIN bytes after the digit all in C; the rest is walked below
        pos = d[far, None] + 1 + np.arange(_WIN)
        maybe = far[_SPAN_BYTE[b[pos]].all(axis=1)]
        for k in maybe.tolist():
            lo, hi = int(d[k]) + 1, int(d[k + 1])
            same[k] = bool(_SPAN_BYTE[b[lo:hi]].all())
    # groups of digits in one run: [g0[i], g1[i]] indices into d
    brk = np.flatnonzero(~same)
    g0 = np.concatenate(([0], brk + 1))
    g1 = np.concatenate((brk, [len(d) - 1]))
    keep = (g1 - g0) >= 3
    g0, g1 = g0[keep], g1[keep]
    if not len(g0):
        return []
    first, last = d[g0], d[g1]
    # walk left from the first digit over the run's other C bytes: p is the leftmost
    # '+' or '(' there, else the first digit
    ar = np.arange(1, _WIN + 1)
    pos = first[:, None] - ar
    valid = pos >= 0
    vals = b[np.maximum(pos, 0)]
    inrun = _SPAN_BYTE[vals] & valid
    # inrun prefix (contiguous from the digit leftwards)
    run = np.logical_and.accumulate(inrun, axis=1)
    opens = run & _OPEN_BYTE[vals]
    p = first.copy()
    has = opens.any(axis=1)
    if has.any():
        # leftmost '+'/'(' in the run: the largest offset
        far_off = _WIN - 1 - np.argmax(opens[:, ::-1], axis=1)
        p[has] = first[has] - 1 - far_off[has]
    out = []
    long_left = np.flatnonzero(run[:, -1])
    p_list = p.tolist()
    for k in long_left.tolist():  # the run goes on beyond the window: walk it
        f = int(first[k])
        s = f - _WIN - 1
        while s >= 0 and _SPAN_BYTE[b[s]]:
            s -= 1
        seg = b[s + 1 : f]
        o = np.flatnonzero(_OPEN_BYTE[seg])
        p_list[k] = s + 1 + int(o[0]) if len(o) else f
    for pk, q, nd in zip(p_list, last.tolist(), (g1 - g0 + 1).tolist()):
        if q - pk >= 6:
            out.append((pk, q + 1, nd))
    return out


def _redact_numeric_batch(
    texts: list[str], raws: list[bytes | None], kinds: list[str], pii: list[dict[str, int]]
) -> None:
    """Numeric PII of a batch, in place: `_NUMERIC_SPAN.sub` of `redact_pii`, per text."""
    parts = [
        r if r is not None else t.encode("utf-8", "surrogatepass") for t, r in zip(texts, raws)
    ]
    joined = b"\n".join(parts)  # "\n" is not in the span class: no span crosses texts
    spans = _numeric_spans(np.frombuffer(joined, np.uint8))
    if not spans:
        return
    lens = np.fromiter(map(len, parts), np.int64, len(parts)) + 1
    starts = np.cumsum(lens) - lens
    docs = np.searchsorted(starts, [s for s, _, _ in spans], side="right") - 1
    starts_l = starts.tolist()
    ipv4 = "ipv4" in kinds
    edits: dict[int, list[tuple[int, int, str]]] = {}
    for (s, e, nd), j in zip(spans, docs.tolist()):
        # fewer than 7 digits: only an IPv4 address could be there, and it needs a '.'
        if nd < 7 and not (ipv4 and joined.find(b".", s, e) >= 0):
            continue
        span = joined[s:e].decode("ascii")
        new = _redact_numeric_span(span, kinds, pii[j])
        if new != span:
            base = starts_l[j]
            edits.setdefault(j, []).append((s - base, e - base, new))
    for j, ed in edits.items():
        t = texts[j]
        ascii_ = t.isascii()
        src: str | bytes = t if ascii_ else parts[j]  # ASCII: byte offsets are char offsets
        pieces = []
        pos = 0
        for s, e, new in ed:
            pieces.append(src[pos:s])
            pieces.append(new if ascii_ else new.encode("ascii"))
            pos = e
        pieces.append(src[pos:])
        if ascii_:
            texts[j] = "".join(pieces)  # type: ignore[arg-type]
        else:
            texts[j] = b"".join(pieces).decode("utf-8", "surrogatepass")  # type: ignore[arg-type]
        raws[j] = None
