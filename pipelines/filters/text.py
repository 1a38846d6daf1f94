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
        text, n = _EMAIL.subn(PLACEHOLDERS["email"], text)
        if n:
            counts["email"] = n
    numeric = [k for k in ("ipv4", "card", "phone") if k in kinds]
    if not numeric or sum(map(text.count, "0123456789")) < 4:
        return text, counts

    def span(m: re.Match) -> str:
        return _redact_numeric_span(m.group(0), numeric, counts)

    return _NUMERIC_SPAN.sub(span, text), counts


def _redact_numeric_span(s: str, kinds: list[str], counts: dict[str, int]) -> str:
    def count(kind: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1

    if "ipv4" in kinds and "." in s:

        def ipv4(m: re.Match) -> str:
            count("ipv4")
            return PLACEHOLDERS["ipv4"]

        s = _IPV4.sub(ipv4, s)
    if "card" in kinds:

        def card(m: re.Match) -> str:
            if luhn_valid(_NON_DIGIT.sub("", m.group(0))):
                count("card")
                return PLACEHOLDERS["card"]
            return m.group(0)

        s = _CARD.sub(card, s)
    if "phone" in kinds:

        def phone(m: re.Match) -> str:
            p = m.group(0)
            digits = sum(c.isdigit() for c in p)
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
    """`clean_text` over a batch (what the Beam DoFn calls)."""
    return [clean_text(t, rules) for t in texts]
