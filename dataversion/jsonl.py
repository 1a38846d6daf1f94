"""JSONL parsing shared by `add` (`dataversion.scan`) and `ingest` (`pipelines.process`).

One definition of a line and of why a line is rejected, so both commands give the same
line numbers and reasons for the same file:

- lines are the pieces between b"\\n" bytes, numbered from 1; a final newline does not
  start another line; a UTF-8 byte-order mark before line 1 is ignored; CRLF files parse
  alike (the b"\\r" is JSON whitespace)
- a blank line (ASCII whitespace only) separates records: it is neither a record nor a
  reject, but it keeps its number
- a line is rejected with `invalid_utf8` (not UTF-8), `bad_jsonl_line` (not JSON, not a
  JSON object, nested deeper than `MAX_DEPTH`, or any other failure of the parser) or
  `missing_text_field` (an object without a string `text_field`)

The depth limit makes the verdict independent of the caller's stack: Python's parser
raises RecursionError at a depth that depends on how deep the call already is (a Beam
worker is deeper than `add`), and downstream steps re-parse the line's metadata.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

INVALID_UTF8 = "invalid_utf8"
BAD_JSONL_LINE = "bad_jsonl_line"
MISSING_TEXT_FIELD = "missing_text_field"
MAX_DEPTH = 256  # arrays/objects inside each other; far below Python's recursion limit

_BOM = b"\xef\xbb\xbf"
# A JSON string (escapes included), so that brackets inside strings do not count as nesting.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


@dataclass(frozen=True)
class LineReject:
    """Why a line is not a record: `reason` is a stable identifier, `message` for humans."""

    reason: str
    message: str


def jsonl_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every non-blank line of a JSONL object, in order."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            yield line_no, raw


def nesting_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in one JSON text (brackets in strings ignored)."""
    a = np.frombuffer(_STRING.sub(b'""', raw), np.uint8)
    step = ((a == ord("[")) | (a == ord("{"))).astype(np.int32)
    step -= (a == ord("]")) | (a == ord("}"))
    return int(np.cumsum(step).max(initial=0))


def parse_line(raw: bytes, text_field: str, max_depth: int | None = MAX_DEPTH) -> dict | LineReject:
    """One JSONL line -> its object, or why it is rejected. Never raises."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return LineReject(INVALID_UTF8, f"line is not valid UTF-8 at byte {e.start}")
    try:
        # Counting openers is cheap; only a line with many of them can nest too deeply.
        if max_depth is not None and raw.count(b"[") + raw.count(b"{") > max_depth:
            depth = nesting_depth(raw)
            if depth > max_depth:
                return LineReject(
                    BAD_JSONL_LINE, f"line nests {depth} levels deep (the limit is {max_depth})"
                )
        obj = json.loads(text)
    except ValueError as e:  # JSONDecodeError
        return LineReject(BAD_JSONL_LINE, f"line is not valid JSON: {e}")
    except Exception as e:  # noqa: BLE001 - any parser failure rejects this line only
        return LineReject(BAD_JSONL_LINE, f"line could not be parsed: {type(e).__name__}: {e}")
    if not isinstance(obj, dict):
        return LineReject(BAD_JSONL_LINE, f"line is a JSON {_json_type(obj)}, not an object")
    if not isinstance(obj.get(text_field), str):
        return LineReject(MISSING_TEXT_FIELD, f"line has no string field {text_field!r}")
    return obj


def parse_jsonl(
    data: bytes, text_field: str, max_depth: int | None = MAX_DEPTH
) -> Iterator[tuple[int, dict | LineReject]]:
    """(line number, object or LineReject) for every non-blank line. Never raises for bad
    content; each object holds a string `text_field`."""
    for line_no, raw in jsonl_lines(data):
        yield line_no, parse_line(raw, text_field, max_depth)


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
