"""The formats people have (issue 18, item 5): compressed text and JSONL, RF64/RIFX/AIFF/
AU/FLAC/OGG audio, TIFF/PNM/AVIF/HEIF images, binary never taken for text, and reject
messages without Python internals. Both paths: `ingest` (`process_objects`) and `add`
(`scan_tree`)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random

import numpy as np
import pytest

from dataversion.compression import decompress_object
from dataversion.errors import human_message
from dataversion.scan import scan_tree
from dataversion.sniff import sniff_modality
from pipelines.config import IngestConfig
from pipelines.process import WorkItem, process_objects

TEXT = b"Debian changelog line, repeated but real enough to be read as text.\n" * 40


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "zst": _zstd}


def image_bytes(fmt: str, mode: str = "RGB") -> bytes:
    from PIL import Image

    a = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).convert(mode).save(buf, fmt)
    return buf.getvalue()


def audio_bytes(fmt: str, subtype: str | None = None, endian: str | None = None) -> bytes:
    import soundfile as sf

    rate = 48000 if fmt == "OGG" else 8000
    data = (np.random.default_rng(0).standard_normal((rate // 2, 1)) * 0.1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt, subtype=subtype, endian=endian)
    return buf.getvalue()


def run(objects: dict[str, bytes]):
    out = process_objects(
        [(WorkItem(k, "e", len(v)), v) for k, v in objects.items()], IngestConfig()
    )
    kept = dict(
        zip(
            out.candidates.column("source").to_pylist(),
            out.candidates.column("modality").to_pylist(),
        )
    )
    rejects = {r["source"]: r for r in out.rejects}
    assert out.inputs == len(kept) + len(rejects)
    return kept, rejects, out


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
def test_compressed_text_and_jsonl_are_read_by_content(ext):
    comp = COMPRESSORS[ext]
    kept, rejects, out = run(
        {
            f"changelog.{ext}": comp(TEXT),
            f"rows.jsonl.{ext}": comp(b'{"text": "one"}\n{"text": "two"}\n'),
            "misnamed.txt": comp(TEXT),  # the content decides, not the name
        }
    )
    assert not rejects, rejects
    assert kept == {
        f"changelog.{ext}": "text",
        f"rows.jsonl.{ext}#L1": "text",
        f"rows.jsonl.{ext}#L2": "text",
        "misnamed.txt": "text",
    }
    texts = out.candidates.column("text").to_pylist()
    assert texts[0] == TEXT.decode().strip() and texts[1:3] == ["one", "two"]
    assert '"compression"' in out.candidates.column("meta").to_pylist()[0]


def test_compression_limits_and_faults_are_rejects_with_reasons():
    zeros = gzip.compress(b"\0" * (8 << 20))  # ~8 KB in, 8 MiB out: over 1000x
    big = gzip.compress(os.urandom(1 << 20).hex().encode() * 9)  # ~18 MiB of text
    _, rejects, _ = run(
        {
            "bomb.txt.gz": zeros,
            "big.txt.gz": big,
            "cut.txt.xz": lzma.compress(TEXT)[:40],
            "cut.txt.zst": _zstd(TEXT)[:20],
            "nested.txt.gz.gz": gzip.compress(gzip.compress(TEXT)),
            "garbage.gz": b"\x1f\x8b" + os.urandom(200),
            "archive.tar.gz": gzip.compress(b"x" * 257 + b"ustar" + b"\0" * 300),
        }
    )
    got = {k: r["reason"] for k, r in rejects.items()}
    assert got == {
        "bomb.txt.gz": "decompression_bomb",
        "big.txt.gz": "too_large",
        "cut.txt.xz": "corrupt_compressed",
        "cut.txt.zst": "corrupt_compressed",
        "nested.txt.gz.gz": "nested_compression",
        "garbage.gz": "corrupt_compressed",
        "archive.tar.gz": "unsupported_binary",
    }
    assert "tar archive" in rejects["archive.tar.gz"]["message"]
    assert "truncated" in rejects["cut.txt.zst"]["message"]


def test_decompression_never_exceeds_its_limit():
    """The decoders are asked for at most limit + 1 bytes: a 1 GiB bomb costs nothing
    (xz is the exception a decoder brings: its dictionary, up to 64 MiB at preset 9)."""
    import tracemalloc

    bomb = gzip.compress(b"\0" * (16 << 20)) * 64  # 64 gzip members: 1 GiB of zeros
    tracemalloc.start()
    got = decompress_object(bomb, max_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got.reason in ("decompression_bomb", "too_large")
    assert peak < 16 << 20, peak


@pytest.mark.parametrize(
    "name,fmt,subtype,endian",
    [
        ("a.rf64", "RF64", None, None),
        ("riff.wav", "WAV", None, None),
        ("rifx.wav", "WAV", None, "BIG"),
        ("a.aiff", "AIFF", None, None),
        ("a.au", "AU", None, None),
        ("a.flac", "FLAC", None, None),
        ("a.ogg", "OGG", "VORBIS", None),
        ("a.opus", "OGG", "OPUS", None),
    ],
)
def test_audio_formats(name, fmt, subtype, endian):
    kept, rejects, out = run({name: audio_bytes(fmt, subtype, endian)})
    assert kept == {name: "audio"}, rejects
    assert '"duration_s":0.5' in out.candidates.column("meta").to_pylist()[0]


def test_truncated_rifx_is_rejected():
    data = audio_bytes("WAV", endian="BIG")
    _, rejects, _ = run({"cut.wav": data[: len(data) // 2]})
    assert rejects["cut.wav"]["reason"] == "truncated_audio"


@pytest.mark.parametrize(
    "name,fmt,mode",
    [
        ("a.tiff", "TIFF", "RGB"),
        ("a.ppm", "PPM", "RGB"),
        ("a.pgm", "PPM", "L"),
        ("a.pbm", "PPM", "1"),
        ("a.avif", "AVIF", "RGB"),
    ],
)
def test_image_formats(name, fmt, mode):
    kept, rejects, _ = run({name: image_bytes(fmt, mode)})
    assert kept == {name: "image"}, rejects


def test_heif_through_pillow_heif():
    pytest.importorskip("pillow_heif", reason="pillow-heif (the pipelines extra) decodes HEIF")
    import pillow_heif

    pillow_heif.register_heif_opener()
    kept, rejects, _ = run({"a.heic": image_bytes("HEIF")})
    assert kept == {"a.heic": "image"}, rejects


def test_binary_is_never_text():
    """Random bytes and unknown binary formats are binary (not `invalid_utf8`); a Latin-1
    text is still text whose UTF-8 is wrong; a PBM is an image."""
    rng = random.Random(0)
    blobs = {
        f"r{i}.bin": bytes(rng.randrange(256) for _ in range(rng.randrange(8, 3000)))
        for i in range(50)
    }
    _, rejects, _ = run(
        {**blobs, "noise.pbm": blobs["r0.bin"], "latin1.txt": "café".encode("latin-1")}
    )
    for k in blobs:
        assert rejects[k]["reason"] == "unsupported_binary", rejects[k]
    assert rejects["noise.pbm"]["reason"] == "extension_mismatch"
    assert "sniffed: binary" in rejects["noise.pbm"]["message"]
    assert rejects["latin1.txt"]["reason"] == "invalid_utf8"
    assert sniff_modality("p.pbm", b"P4\n# made by hand\n8 2\n\xff\x00") == "image"
    assert sniff_modality("plain.txt", b"P1 is the name of a plan, not a bitmap") == "text"


def test_reject_messages_show_no_python_reprs():
    class Opaque:
        pass

    assert "object at 0x" not in human_message(ValueError(f"bad {Opaque()} and {io.BytesIO()}"))
    assert human_message(ValueError("")) == "ValueError"
    _, rejects, _ = run(
        {
            "broken.png": b"\x89PNG\r\n\x1a\n" + os.urandom(100),
            "broken.jpg": b"\xff\xd8\xff" + os.urandom(100),
            "broken.tiff": b"II*\x00" + os.urandom(100),
            "broken.flac": b"fLaC" + os.urandom(100),
            "broken.au": b".snd" + os.urandom(100),
        }
    )
    assert len(rejects) == 5
    for r in rejects.values():
        assert "object at 0x" not in r["message"] and "<_io" not in r["message"], r


def test_add_reads_compressed_files_and_new_formats(tmp_path):
    (tmp_path / "log.txt.gz").write_bytes(gzip.compress(TEXT))
    (tmp_path / "rows.jsonl.bz2").write_bytes(bz2.compress(b'{"text": "a"}\n{"text": "b"}\n'))
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(TEXT)[:30])
    (tmp_path / "bundle.tar.gz").write_bytes(gzip.compress(b"x" * 257 + b"ustar" + b"\0" * 300))
    (tmp_path / "a.tiff").write_bytes(image_bytes("TIFF"))
    (tmp_path / "a.aiff").write_bytes(audio_bytes("AIFF"))
    res = scan_tree([str(tmp_path)])
    mods = dict(
        zip(res.table.column("source").to_pylist(), res.table.column("modality").to_pylist())
    )
    assert mods == {
        "a.aiff": "audio",
        "a.tiff": "image",
        "bundle.tar.gz": "binary",  # kept as it is: nothing lost
        "log.txt.gz": "text",
        "rows.jsonl.bz2#L1": "text",
        "rows.jsonl.bz2#L2": "text",
    }
    assert [(s.source, s.reason) for s in res.skipped] == [("cut.txt.gz", "corrupt_compressed")]
    assert res.inputs == 7


def test_svg_is_rejected_not_cleaned_as_prose(tmp_path):
    """An SVG was ingested as text: PII redaction turned coordinates into <PHONE> and the
    whitespace rules re-spaced the markup (a corrupted file, exit 0). It is rejected with a
    reason; an XML or HTML text that is not SVG stays text."""
    from dataversion import Repo
    from pipelines.ingest import read_rejects, run_ingest

    src = tmp_path / "src"
    src.mkdir()
    (src / "icon.svg").write_text('<?xml version="1.0"?>\n<!-- made by hand -->\n<svg xmlns="http://www.w3.org/2000/svg">'
                                  '<path d="m 11.007812 14 l -6 -6 6 -6"/></svg>\n')
    (src / "plain.svg").write_text('<svg width="16" height="16"><rect width="16" height="16"/></svg>')
    (src / "notes.xml").write_text('<?xml version="1.0"?>\n<notes><note>call 555 0100 about the svg export</note></notes>\n')
    url = f"file://{tmp_path}/repo"
    rep = run_ingest(str(src), url)
    assert (rep.kept, rep.rejected) == (1, 2), rep
    rejects = {r["source"]: r["reason"] for r in read_rejects(Repo.open(url), "main")}
    assert rejects == {"icon.svg": "unsupported_format", "plain.svg": "unsupported_format"}
