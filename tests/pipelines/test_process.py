"""Each bad input of the issue is rejected with a reason, never crashes, never vanishes."""

import io

from PIL import Image
from pipeline_samples import png_bytes, wav_bytes

from pipelines.config import IngestConfig
from pipelines.process import WorkItem, process_objects


def run(objs, config=IngestConfig()):
    out = process_objects([(WorkItem(k, "e", len(d)), d) for k, d in objs], config)
    assert out.inputs == out.candidates.num_rows + len(out.rejects)  # nothing lost
    return out, {r["source"]: r["reason"] for r in out.rejects}


def test_bad_inputs_each_rejected_with_a_reason():
    png = png_bytes(100, 100)
    wav = wav_bytes(1.0)
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    out, reasons = run(
        [
            ("empty.txt", b""),
            ("latin1.txt", "caf\xe9".encode("latin-1")),
            ("blank.txt", b"  \n\t \n"),
            ("trunc.png", png[: len(png) // 2]),
            ("text.png", b"I am text, not a PNG"),
            ("bomb.png", bomb.getvalue()),
            ("trunc.wav", wav[: len(wav) // 2]),
            ("blob.bin", b"\x00\x01\x02binary"),
            ("good.png", png),
            ("good.wav", wav),
            ("good.txt", b"fine text"),
        ]
    )
    assert reasons == {
        "empty.txt": "empty_file",
        "latin1.txt": "invalid_utf8",
        "blank.txt": "empty_text",
        "trunc.png": "corrupt_image",
        "text.png": "extension_mismatch",
        "bomb.png": "decompression_bomb",
        "trunc.wav": "truncated_audio",
        "blob.bin": "unsupported_binary",
    }
    assert sorted(out.candidates.column("source").to_pylist()) == [
        "good.png",
        "good.txt",
        "good.wav",
    ]
    metas = dict(
        zip(out.candidates.column("source").to_pylist(), out.candidates.column("meta").to_pylist())
    )
    assert metas["good.png"] == '{"format":"png","height":100,"width":100}'
    assert '"duration_s":1.0' in metas["good.wav"] and '"sample_rate":8000' in metas["good.wav"]


def test_jsonl_with_broken_lines_keeps_good_lines():
    data = b'{"text": "first good"}\n{broken\n\n{"text": "second good"}\n\xff\xfe\n[1, 2]\n{"text": "   "}\n'
    out, reasons = run([("mix.jsonl", data)])
    assert out.candidates.column("text").to_pylist() == ["first good", "second good"]
    assert out.candidates.column("source").to_pylist() == ["mix.jsonl#L1", "mix.jsonl#L4"]
    assert reasons == {
        "mix.jsonl#L2": "bad_jsonl_line",
        "mix.jsonl#L5": "invalid_utf8",
        "mix.jsonl#L6": "bad_jsonl_line",  # an array, not an object
        "mix.jsonl#L7": "empty_text",
    }
    assert out.inputs == 6  # the blank line is a separator, not an input


def test_sniffing_wins_over_extension_when_allowed():
    png = png_bytes(20, 20)
    out, reasons = run([("pic.txt", png)])  # an image named .txt is an image
    assert out.candidates.column("modality").to_pylist() == ["image"]
    out, reasons = run([("text.png", b"text")], IngestConfig(reject_extension_mismatch=False))
    assert out.candidates.column("modality").to_pylist() == ["text"]


def test_record_ids_hash_the_stored_payload():
    import xxhash

    out, _ = run([("a.txt", b"  Hello\t world  "), ("b.png", png_bytes(20, 20))])
    for row in out.candidates.to_pylist():
        payload = row["text"].encode() if row["text"] is not None else row["data"]
        assert xxhash.xxh3_128_digest(payload) == row["record_id"]


def test_a_batch_runs_without_cyclic_collections(monkeypatch):
    """A batch allocates tens of thousands of small containers; a collection every 700 of
    them (and full ones visiting every object of a Beam worker) cost a third of the step:
    none runs inside a batch, and the collector is back on after it, also after a failure."""
    import gc

    import pipelines.process as process

    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    texts = [(f"doc{i}.txt", f"document number {i} with a few more words".encode()) for i in range(5000)]
    items = [(WorkItem(k, "e", len(d)), d) for k, d in texts]
    gc.collect()  # counts at zero: a collection due before the call is not the batch's
    gc.callbacks.append(count)
    try:
        out = process_objects(items, IngestConfig())
    finally:
        gc.callbacks.remove(count)
    assert out.candidates.num_rows == 5000
    # (one young collection may start as the collector comes back on, at the batch's end)
    assert len(collections) <= 1, collections
    assert gc.isenabled()

    def boom(*a, **k):
        raise RuntimeError("batch step failed")

    monkeypatch.setattr(process, "clean_texts", boom)
    out, reasons = run(texts[:3])
    assert set(reasons.values()) == {"internal_error"}
    assert gc.isenabled()


def test_a_text_whose_signature_fails_rejects_only_itself(monkeypatch):
    import numpy as np

    import pipelines.process as process
    from pipelines.dedup.minhash import minhash_signatures

    def fragile(texts, **kw):
        if any("POISON" in t for t in texts):
            raise ValueError("cannot sign this")
        return minhash_signatures(texts, **kw)

    monkeypatch.setattr(process, "minhash_signatures", fragile)
    out, reasons = run(
        [("a.txt", b"the first text, fine"), ("b.txt", b"a POISON text"), ("c.txt", b"the third one, fine")]
    )
    assert reasons == {"b.txt": "internal_error"}
    kept = out.candidates
    assert kept.column("source").to_pylist() == ["a.txt", "c.txt"]
    sigs = np.array(kept.column("sig").to_pylist(), np.uint32)
    assert (sigs == minhash_signatures(kept.column("text").to_pylist())).all()
    assert not (sigs == 0).all(axis=1).any()
