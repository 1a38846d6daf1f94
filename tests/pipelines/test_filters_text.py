import pytest

from pipelines.config import TextRules
from pipelines.filters import Drop
from pipelines.filters.text import CleanText, clean_text, clean_texts, luhn_valid, redact_pii


def test_strict_utf8():
    assert clean_text(b"caf\xc3\xa9") == CleanText("café", {})
    d = clean_text(b"bad \xff byte")
    assert isinstance(d, Drop) and d.reason == "invalid_utf8"
    assert clean_text(b"\xef\xbb\xbfbom").text == "bom"


def test_nfc():
    assert clean_text("e\u0301").text == "\u00e9"
    assert clean_text("e\u0301", TextRules(nfc=False)).text == "e\u0301"


def test_control_characters_removed():
    assert clean_text("a\x00b\x07c\u200bd\x7f").text == "abcd"
    assert clean_text("tab\there").text == "tab here"


def test_whitespace_normalized():
    assert clean_text("  a \t\u00a0 b  \r\n\r\n\r\n\r\n c \n").text == "a b\n\nc"
    assert clean_text("a  b", TextRules(normalize_whitespace=False)).text == "a  b"


def test_empty_and_whitespace_only_rejected():
    for t in ("", "   \n\t  ", "\x00\u200b"):
        d = clean_text(t)
        assert isinstance(d, Drop) and d.reason == "empty_text"


def test_length_limits():
    r = TextRules(min_chars=5, max_chars=10)
    assert clean_text("abc", r).reason == "too_short"
    assert clean_text("a" * 11, r).reason == "too_long"
    assert clean_text("abcdef", r).text == "abcdef"


def test_pii_redaction_with_counts():
    res = clean_text(
        "mail a.b@example.org, b@x.co; call +1 415-555-2671; host 10.0.0.1; card 4111 1111 1111 1111"
    )
    assert res.text == "mail <EMAIL>, <EMAIL>; call <PHONE>; host <IPV4>; card <CARD>"
    assert res.pii == {"email": 2, "phone": 1, "ipv4": 1, "card": 1}


def test_card_needs_luhn_and_dates_years_are_not_phones():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    text, counts = redact_pii("order 4111 1111 1111 1112 on 2024-01-15 in 2024, 300.5 units, v1.2")
    assert "4111 1111 1111 1112" in text and "2024-01-15" in text and counts == {}
    text, counts = redact_pii("999.300.1.1 is no address but 192.168.1.20 is")
    assert counts == {"ipv4": 1} and "999.300.1.1" in text


def test_pii_kinds_configurable():
    res = clean_text("x@y.com 10.0.0.1", TextRules(pii_kinds=("ipv4",)))
    assert res.text == "x@y.com <IPV4>"
    assert clean_text("x@y.com", TextRules(redact_pii=False)).text == "x@y.com"


def test_batch():
    out = clean_texts(["ok", b"\xff", "  "])
    assert [type(o).__name__ for o in out] == ["CleanText", "Drop", "Drop"]


@pytest.mark.parametrize("chunk_bytes", [None, 97])
def test_batch_equals_one_by_one_on_multiline_and_messy_whitespace(monkeypatch, chunk_bytes):
    """`clean_texts`' fast path (texts already clean, or clean but for trailing newlines:
    the usual text file) gives what `clean_text` gives, under every whitespace rule; also
    when the batch is cleaned in many chunks."""
    import random

    import pipelines.filters.text as text_filter

    if chunk_bytes:
        monkeypatch.setattr(text_filter, "_CHUNK_BYTES", chunk_bytes)

    rng = random.Random(7)
    pieces = ["word", "other", " ", "  ", "\n", "\n\n", "\n\n\n", "\t", "\r\n", "\r", " \n", "\n ", "é", "\x0b", "\x00", "x@y.com"]
    texts = ["ok\n", "ok\n\n\n", "a\nb", "a\n\nb\n", "\nlead", "trail \n", "a\n \nb\n", "a\n\n\nb", "\n", " \n ", "one line"]
    for _ in range(3000):
        texts.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))
    for raw in (False, True):
        batch = [t.encode() if raw else t for t in texts]
        for rules in (TextRules(), TextRules(normalize_whitespace=False), TextRules(min_chars=3, redact_pii=False)):
            got = [(type(c).__name__, getattr(c, "text", None), getattr(c, "pii", None), getattr(c, "reason", None))
                   for c in clean_texts(batch, rules)]
            want = [(type(c).__name__, getattr(c, "text", None), getattr(c, "pii", None), getattr(c, "reason", None))
                    for c in (clean_text(t, rules) for t in batch)]
            assert got == want
