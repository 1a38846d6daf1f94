"""A repository whose commits look like ingest commits (texts, images, audio, labels,
rejects and duplicates attachments, a source directory the duplicates came from), built
without Beam; and an HTML parser that collects what a page holds."""

from __future__ import annotations

import io
import json
import wave
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dataversion import Repo
from dataversion.hashing import canonical_json
from dataversion.records import make_binary_records, make_text_records

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def png(seed: int, size: int = 32) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (size, size), (seed * 40 % 256, 90, 200 - seed * 30 % 200))
    for i in range(size):
        img.putpixel((i, (i * seed) % size), (255, 255, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def wav(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x02" * int(seconds * rate))
    return buf.getvalue()


BASE_TEXT = " ".join(f"word{i % 37}" for i in range(90))


@dataclass
class ReportRepo:
    url: str
    repo: Repo
    source: Path
    first: str
    second: str
    near_source: str


def build(tmp_path: Path, *, hostile: bool = False, url: str | None = None) -> ReportRepo:
    """Two commits on main (a file:// repository unless `url`): the second is 'an ingest
    run' with rejects and duplicates."""
    url = url or f"file://{tmp_path}/repo"
    repo = Repo.init(url)
    src = tmp_path / "raw"
    src.mkdir()
    tag = HOSTILE if hostile else ""
    texts = [f"{BASE_TEXT} number {i}" for i in range(8)] + [f"{tag} hostile text </p></section>{tag}"]
    first = repo.commit(make_text_records(texts[:4], sources=[f"docs/{i}.txt" for i in range(4)],
                                          labels=["news"] * 3 + [None]), message="first").commit_id
    images = [png(1), png(2)]
    audio = [wav(0.5)]
    t2 = make_text_records(texts[4:], sources=[f"docs/{i}.txt" for i in range(4, 8)] + [f"docs/{tag}.txt"],
                           labels=["news", "blog", "blog", f"blog{tag}", tag or "blog"])
    b2 = make_binary_records(images + audio, ["image", "image", "audio"],
                             sources=["cats/1.png", "cats/2.png", "sounds/beep.wav"], labels=["cats", "cats", "sounds"],
                             metas=[None, None, json.dumps({"duration_s": 0.5})])
    kept_text = make_text_records([texts[4]]).column("record_id")[0].as_py().hex()
    kept_img = make_binary_records([images[0]], ["image"]).column("record_id")[0].as_py().hex()
    kept_wav = make_binary_records([audio[0]], ["audio"]).column("record_id")[0].as_py().hex()
    near_text = texts[4].replace("word5 ", "changed ", 1)
    near_name = f"dups/near{tag.replace('/', '_')}.txt"  # a file name: no slash
    (src / "dups").mkdir()
    (src / near_name).write_text(near_text)
    (src / "dups" / "small.png").write_bytes(png(1, 16))
    (src / "dups" / "beep2.wav").write_bytes(wav(0.75))
    duplicates = [
        {"source": near_name, "record_id": "0" * 32, "duplicate_of": kept_text, "kind": "near"},
        {"source": "dups/exact.txt", "record_id": kept_text, "duplicate_of": kept_text, "kind": "exact"},
        {"source": "dups/small.png", "record_id": "1" * 32, "duplicate_of": kept_img, "kind": "near"},
        {"source": "dups/beep2.wav", "record_id": "2" * 32, "duplicate_of": kept_wav, "kind": "near"},
    ]
    rejects = [
        {"source": "bad/empty.txt", "reason": "empty_file", "message": "the object is empty (0 bytes)"},
        {"source": "bad/x.bin", "reason": "unsupported_binary", "message": "binary content"},
        {"source": f"bad/{tag}.png", "reason": f"extension_mismatch{tag}", "message": f"named .png {tag}"},
    ]
    import pyarrow as pa

    second = repo.commit(
        pa.concat_tables([t2, b2]), message=f"ingest run {tag}",
        remove_ids=[make_text_records([texts[0]]).column("record_id")[0].as_py()],
        counts={"inputs": 12 + len(duplicates) + len(rejects), "kept": 8, "duplicates": len(duplicates),
                "rejected": len(rejects)},
        provenance={"pipeline": "pipelines.ingest", "source": f"file://{src}"},
        attachments={"rejects": canonical_json(rejects), "duplicates": canonical_json(duplicates)},
    ).commit_id
    return ReportRepo(url, repo, src, first, second, near_name)


@pytest.fixture
def report_repo(tmp_path) -> ReportRepo:
    return build(tmp_path)


@dataclass
class Page(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        HTMLParser.__init__(self, convert_charrefs=True)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def count_class(self, cls: str) -> int:
        return sum(1 for _, a in self.tags if cls in a.get("class", "").split())


def parse(html: str) -> Page:
    p = Page()
    p.feed(html)
    p.close()
    return p
