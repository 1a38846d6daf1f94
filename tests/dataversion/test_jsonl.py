"""The one JSONL line reader `add` and `ingest` share: numbering, blank lines, reasons."""

from __future__ import annotations

import json

from dataversion.jsonl import (
    BAD_JSONL_LINE,
    INVALID_UTF8,
    MAX_DEPTH,
    MISSING_TEXT_FIELD,
    LineReject,
    jsonl_lines,
    nesting_depth,
    parse_jsonl,
)


def reasons(data: bytes, **kw) -> dict[int, str]:
    return {
        n: p.reason if isinstance(p, LineReject) else "ok"
        for n, p in parse_jsonl(data, "text", **kw)
    }


def test_lines_split_on_newline_only_numbered_from_one():
    data = b'{"text": "a"}\r\n\n  \t\n{"text": "b\\u2028c"}\x0b\n{"text": "d"}'
    assert [n for n, _ in jsonl_lines(data)] == [1, 4, 5]  # blank lines keep their numbers
    assert [n for n, _ in jsonl_lines(data + b"\n")] == [1, 4, 5]  # a final newline adds no line
    assert [n for n, _ in jsonl_lines(b"")] == []
    # \r, \x0b, \x1c... are not line breaks (bytes.splitlines would split on \r)
    assert reasons(b'{"text": "a"}\r{"text": "b"}\n') == {1: BAD_JSONL_LINE}
    assert [p for _, p in parse_jsonl(data, "text")][0] == {"text": "a"}  # CRLF tolerated


def test_a_byte_order_mark_before_line_one_is_ignored():
    assert reasons(b'\xef\xbb\xbf{"text": "a"}\n{"text": "b"}\n') == {1: "ok", 2: "ok"}


def test_one_reason_per_kind_of_bad_line():
    data = b"\n".join(
        [
            b'{"text": "good", "lang": "en"}',
            b"{broken",
            b"caf\xe9",
            b"[1, 2]",
            b'"just a string"',
            b'{"body": "no text field"}',
            b'{"text": 3}',
        ]
    )
    assert reasons(data) == {
        1: "ok",
        2: BAD_JSONL_LINE,
        3: INVALID_UTF8,
        4: BAD_JSONL_LINE,
        5: BAD_JSONL_LINE,
        6: MISSING_TEXT_FIELD,
        7: MISSING_TEXT_FIELD,
    }
    parsed = dict(parse_jsonl(data, "text"))
    assert parsed[1] == {"text": "good", "lang": "en"}
    assert parsed[3].message == "line is not valid UTF-8 at byte 3"
    assert parsed[4].message == "line is a JSON array, not an object"
    assert reasons(data, max_depth=None) == reasons(data)


def test_deep_nesting_rejects_that_line_only():
    deep = b"[" * 100_000 + b"]" * 100_000
    data = (
        b'{"text": "before"}\n'
        + deep
        + b'\n{"text": "after", "m": '
        + deep
        + b"}\n"
        + b'{"text": "end"}\n'
    )
    out = dict(parse_jsonl(data, "text"))
    assert out[1] == {"text": "before"} and out[4] == {"text": "end"}
    for n in (2, 3):
        assert out[n].reason == BAD_JSONL_LINE and "levels deep" in out[n].message
    # without the depth limit, the parser's RecursionError still rejects the line only
    out = dict(parse_jsonl(data, "text", max_depth=None))
    assert out[1] == {"text": "before"} and out[4] == {"text": "end"}
    for n in (2, 3):
        assert out[n].reason == BAD_JSONL_LINE and "RecursionError" in out[n].message


def test_the_depth_limit_counts_nesting_not_brackets_in_strings():
    ok = json.dumps({"text": "[" * 1000, "m": [[[{"a": "}}}"}]]]}).encode()
    assert nesting_depth(ok) == 5 and reasons(ok) == {1: "ok"}
    at_limit = b'{"text": "x", "m": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert nesting_depth(at_limit) == MAX_DEPTH and reasons(at_limit) == {1: "ok"}
    over = b'{"text": "x", "m": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    assert reasons(over) == {1: BAD_JSONL_LINE}
    many_flat = json.dumps({"text": "x", "m": [[]] * 1000}).encode()  # many brackets, depth 3
    assert reasons(many_flat) == {1: "ok"}
