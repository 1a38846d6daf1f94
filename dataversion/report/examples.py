"""Examples shown in a report: text excerpts with the differing words marked, image
thumbnails as data URIs, audio durations, and reading a duplicate's payload from the
ingest source it came from (the duplicate itself is never stored).

Every function returns HTML that is safe to embed: user text is escaped here, thumbnails
are re-encoded by Pillow (a payload's own bytes are never embedded), failures become a
short escaped note.
"""

from __future__ import annotations

import base64
import difflib
import io
import json
import os
import re
import wave
from html import escape
from typing import Any

from ..pixels import exif_orientation, orient, to_8bit

_WORD = re.compile(r"\S+")
_DIFF_CHARS = 20_000  # texts are compared on their first characters only
MAX_SOURCE_BYTES = 8 * 2**20  # a duplicate read back from its source


def excerpt(text: str, chars: int = 320) -> str:
    """The first `chars` characters of a text, escaped."""
    t = " ".join(text[: chars * 2].split())
    return escape(t if len(t) <= chars else t[: chars - 1] + "\u2026")


def marked_pair(a: str, b: str, *, window: int = 60) -> tuple[str, str, float]:
    """Excerpts of two texts around their first difference, the differing words in <mark>,
    and the share of equal words (a similarity hint, 0..1)."""
    wa, wb = _WORD.findall(a[:_DIFF_CHARS]), _WORD.findall(b[:_DIFF_CHARS])
    sm = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    ops = sm.get_opcodes()
    first = next((op for op in ops if op[0] != "equal"), None)
    start_a = max(0, (first[1] if first else 0) - window // 4)
    start_b = max(0, (first[3] if first else 0) - window // 4)

    def side(words, lo_idx, hi_idx, start):
        out, shown = [], 0
        if start > 0:
            out.append("\u2026")
        for tag, i1, i2, j1, j2 in ops:
            lo, hi = (i1, i2) if lo_idx == 1 else (j1, j2)
            for k in range(max(lo, start), hi):
                if shown >= window:
                    out.append("\u2026")
                    return " ".join(out)
                w = escape(words[k])
                out.append(w if tag == "equal" else f"<mark>{w}</mark>")
                shown += 1
        return " ".join(out)

    total = max(len(wa), len(wb)) or 1
    equal = sum(i2 - i1 for tag, i1, i2, _, _ in ops if tag == "equal")
    return side(wa, 1, 2, start_a), side(wb, 3, 4, start_b), equal / total


def thumbnail(data: bytes | None, size: int = 112) -> str:
    """An <img> with a PNG thumbnail of an image payload (data URI), or an escaped note."""
    if not data:
        return '<span class="note">no image</span>'
    try:
        from PIL import Image
    except ImportError:
        return '<span class="note">no thumbnail (Pillow not installed)</span>'
    try:
        with Image.open(io.BytesIO(data)) as img:
            orientation = exif_orientation(img)  # the picture as the loader serves it:
            img.draft("RGB", (size * 2, size * 2))
            img = orient(to_8bit(img), orientation)  # upright, 8-bit (a 16-bit one is not white)
            img.thumbnail((size, size))
            if img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(bg, rgba).convert("RGB")
            elif img.mode != "RGB":
                img = img.convert("RGB")
            buf = io.BytesIO()
            img.save(buf, "PNG", optimize=True)
            w, h = img.size
    except Exception as e:  # noqa: BLE001 - any decode failure is a note in the report, not a crash
        return f'<span class="note">no thumbnail: {escape(type(e).__name__)}</span>'
    return f'<img class="thumb" width="{w}" height="{h}" alt="thumbnail" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def audio_duration(data: bytes | None, meta: str | None = None) -> float | None:
    """Seconds of an audio payload: from its metadata when recorded, else decoded."""
    if meta:
        try:
            d = json.loads(meta).get("duration_s")
            if isinstance(d, (int, float)):
                return float(d)
        except (ValueError, AttributeError):
            pass
    if not data:
        return None
    try:
        import soundfile

        info = soundfile.info(io.BytesIO(data))
        return float(info.frames) / info.samplerate if info.samplerate else None
    except Exception:  # noqa: BLE001 - not installed or not decodable: try the stdlib's WAV
        pass
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        return None


class SourceReader:
    """Reads units (an object, or one line of a JSONL object: `key#L<n>`) back from the
    ingest source a commit names (its provenance), bounded in size. Any failure is None."""

    def __init__(self, source_url: str | None, text_field: str = "text", tokens: dict[str, str] | None = None):
        self.text_field = text_field
        self.store = None
        # object key -> the change token the commit consumed (size-mtime locally, the ETag on
        # S3): an object whose token differs now is not read back (it is another object)
        self.tokens = tokens or {}
        self._changed: set[str] = set()
        if source_url:
            try:
                from ..stores import open_store

                self.store = open_store(source_url)
            except Exception:  # noqa: BLE001 - the source may be gone: examples say so
                self.store = None

    def changed(self, unit: str) -> bool:
        """Whether the unit's object was found changed since the commit (by `read`)."""
        base, sep, line = unit.rpartition("#L")
        return (base if sep and line.isdigit() else unit) in self._changed

    def _token(self, key: str, info: Any) -> str:
        """The object's change token as ingest recorded it (`dataversion.scan`, S3 ETags)."""
        local = self.store.local_path(key)
        if local is None:
            return info.etag or ""
        st = os.stat(local)
        return f"{st.st_size}-{st.st_mtime_ns}"

    def read(self, unit: str) -> tuple[str | None, bytes | None]:
        """(text, data) of a unit: text for JSONL lines and UTF-8 objects, else data."""
        if self.store is None:
            return None, None
        base, sep, line = unit.rpartition("#L")
        key, line_no = (base, int(line)) if sep and line.isdigit() else (unit, None)
        local = self.store.local_path(key)
        if local is not None:  # never follow a link out of the source directory
            root = os.path.realpath(self.store.local_path("") or "")
            real = os.path.realpath(local)
            if os.path.commonpath([root, real]) != root:
                return None, None
        try:
            for info in self.store.list(key):
                if info.key != key:
                    continue
                if info.size > MAX_SOURCE_BYTES:
                    return None, None
                if key in self.tokens and self._token(key, info) != self.tokens[key]:
                    self._changed.add(key)
                    return None, None
            data = self.store.get(key)
        except Exception:  # noqa: BLE001 - gone, unreachable, refused: no example
            return None, None
        if line_no is not None:
            lines = data.split(b"\n")
            if not 1 <= line_no <= len(lines):
                return None, None
            try:
                obj = json.loads(lines[line_no - 1])
                text = obj.get(self.text_field) if isinstance(obj, dict) else None
                return (text if isinstance(text, str) else None), None
            except ValueError:
                return None, None
        try:
            return data.decode("utf-8"), data
        except UnicodeDecodeError:
            return None, data
