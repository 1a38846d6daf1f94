"""A small mixed repository (text, JSONL, an image, audio, a source path shared by two
records, a removed record) on every store, and what `dataversion ls --json` says it holds."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import pytest
from click.testing import CliRunner

from dataversion import Repo
from dataversion.cli import main


def write_sample_tree(raw: Path) -> None:
    from PIL import Image

    (raw / "texts" / "sub").mkdir(parents=True)
    (raw / "images" / "cats").mkdir(parents=True)
    (raw / "sounds").mkdir(parents=True)
    for i in range(6):
        (raw / "texts" / f"t{i}.txt").write_text(f"text number {i} with some words " * (i + 1))
    (raw / "texts" / "sub" / "nested.txt").write_text("nested text é ü")
    (raw / "lines.jsonl").write_text("".join(json.dumps({"text": f"line {i}", "n": i}) + "\n" for i in range(4)))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "PNG")
    (raw / "images" / "cats" / "red.png").write_bytes(buf.getvalue())
    wav = io.BytesIO()
    with wave.open(wav, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    (raw / "sounds" / "beep.wav").write_bytes(wav.getvalue())


def ls_records(repo_url: str, ref: str = "main") -> list[dict]:
    """`dataversion ls REF --json`, sorted by record id."""
    result = CliRunner().invoke(main, ["ls", ref, "--json", "--repo", repo_url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return sorted(json.loads(result.stdout), key=lambda r: r["record_id"])


@pytest.fixture
def sample_repo(repo_url: str, tmp_path: Path) -> str:
    """A repository (file:// or s3://) whose `main` has two shards: one holding a removed
    record (served rewritten), one without deletions (served as its own bytes)."""
    raw = tmp_path / "raw"
    write_sample_tree(raw)
    repo = Repo.init(repo_url)
    repo.add([str(raw)], message="first")
    (raw / "texts" / "t0.txt").write_text("t0 edited: a second record with the same source path")
    (raw / "texts" / "new.txt").write_text("a new text")
    repo.add([str(raw)], message="second")
    victim = next(r["record_id"] for r in repo.ls("main~1") if r["source"] == "texts/t3.txt")
    repo.rm(ids=[victim], message="remove one")
    return repo_url


def record_rows(table) -> list[dict]:
    """Rows of an Arrow table of served records in `ls --json`'s shape, sorted by id."""
    out = []
    for r in table.to_pylist():
        size = len(r["text"].encode("utf-8")) if r["text"] is not None else (len(r["data"]) if r["data"] is not None else None)
        out.append({"record_id": bytes(r["record_id"]).hex(), "modality": r["modality"], "source": r["source"],
                    "label": r["label"], "size": size})
    return sorted(out, key=lambda r: r["record_id"])
