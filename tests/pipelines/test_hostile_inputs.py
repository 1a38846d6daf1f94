"""Hostile local inputs (issue 17): FIFOs, sockets, symlinks, hidden names, huge files and
inputs that make a decoder raise. Each is one rejected unit with a reason, on `ingest` and
on `dataversion add` alike; nothing hangs, nothing outside the source is read, and the
accounting holds."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap

import pytest
from pipeline_samples import png_bytes

from dataversion import Repo
from pipelines.config import IngestConfig, TextRules
from pipelines.ingest import read_rejects, run_ingest
from pipelines.process import WorkItem, process_objects

HOSTILE_REASONS = {
    "broken_symlink": 3,  # dangling, and the two links of a loop
    "hidden_file": 2,  # .secret, .git/ (one unit for the directory)
    "not_a_regular_file": 3,  # FIFO, socket, symlink to a directory
    "symlink_outside_source": 1,  # -> /etc/passwd
}


@pytest.fixture
def hostile_tree():
    """A source dir with every hostile entry kind. Short path: a socket path has ~100 bytes."""
    root = tempfile.mkdtemp(prefix="hs-", dir="/tmp")
    try:
        os.makedirs(f"{root}/docs")
        os.makedirs(f"{root}/.git")
        with open(f"{root}/docs/good.txt", "w") as f:
            f.write("a perfectly ordinary document")
        with open(f"{root}/.git/config", "w") as f:
            f.write("[core]")
        with open(f"{root}/.secret", "w") as f:
            f.write("hunter2")
        os.mkfifo(f"{root}/docs/pipe.txt")  # opening it would block until a writer comes
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(f"{root}/docs/sock")
        os.symlink("/etc/passwd", f"{root}/docs/passwd.txt")
        os.symlink(f"{root}/docs/missing.txt", f"{root}/docs/dangling.txt")
        os.symlink(f"{root}/docs/loop_b", f"{root}/docs/loop_a")
        os.symlink(f"{root}/docs/loop_a", f"{root}/docs/loop_b")
        os.symlink("good.txt", f"{root}/docs/alias.txt")  # inside the source: followed
        os.symlink(f"{root}/docs", f"{root}/docs_link")  # a directory: not followed
        yield root
    finally:
        sock.close()
        shutil.rmtree(root, ignore_errors=True)


def _reasons(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["reason"]] = out.get(r["reason"], 0) + 1
    return dict(sorted(out.items()))


@pytest.mark.timeout(120)
def test_ingest_rejects_every_hostile_entry_without_opening_it(hostile_tree, tmp_path):
    repo_url = f"file://{tmp_path}/repo"
    r = run_ingest(hostile_tree, repo_url)
    assert r.inputs == r.kept + r.duplicates + r.rejected
    assert r.reasons == HOSTILE_REASONS
    assert (r.kept, r.duplicates) == (1, 1)  # good.txt, and alias.txt is the same bytes
    rows = {x["source"]: x for x in read_rejects(Repo.open(repo_url), "main")}
    assert rows["docs/passwd.txt"]["reason"] == "symlink_outside_source"
    assert rows["docs/pipe.txt"]["message"].startswith("a FIFO")
    assert rows["docs/sock"]["message"].startswith("a socket")
    assert rows["docs_link"]["message"].startswith("a symlink to a directory")
    assert set(rows) >= {".git", ".secret", "docs/dangling.txt", "docs/loop_a", "docs/loop_b"}
    sources = [x["source"] for x in Repo.open(repo_url).ls("main")]
    assert sources == ["docs/alias.txt"]  # first in key order; nothing of /etc/passwd
    # rejects are consumed like any other: the next run has nothing new
    assert run_ingest(hostile_tree, repo_url).commit is None


@pytest.mark.timeout(120)
def test_add_rejects_the_same_entries_for_the_same_reasons(hostile_tree, tmp_path):
    repo = Repo.init(f"file://{tmp_path}/repo")
    res = repo.add([hostile_tree])
    assert _reasons(res.skipped) == HOSTILE_REASONS
    counts = repo.log()[0]["counts"]
    # good.txt and alias.txt are both inputs; add dedups by content
    assert counts["inputs"] == sum(HOSTILE_REASONS.values()) + 2
    assert counts["rejected"] == sum(HOSTILE_REASONS.values())
    assert [x["source"] for x in repo.ls("main")] == ["docs/alias.txt"]


def test_hidden_files_are_read_when_the_config_says_so(tmp_path):
    src = tmp_path / "src"
    (src / ".notes").mkdir(parents=True)
    (src / ".notes" / "n.txt").write_text("a hidden note worth keeping")
    (src / "a.txt").write_text("a visible document")
    r = run_ingest(str(src), f"file://{tmp_path}/r1", config=IngestConfig(include_hidden=True))
    assert (r.kept, r.rejected) == (2, 0)
    r = run_ingest(str(src), f"file://{tmp_path}/r2")
    assert (r.kept, r.reasons) == (1, {"hidden_file": 1})


def test_a_symlink_given_to_add_directly_is_followed_and_a_fifo_is_not_opened(tmp_path):
    (tmp_path / "t.txt").write_text("target text")
    os.symlink(tmp_path / "t.txt", tmp_path / "link.txt")
    os.mkfifo(tmp_path / "p.txt")
    repo = Repo.init(f"file://{tmp_path}/repo")
    res = repo.add([str(tmp_path / "link.txt"), str(tmp_path / "p.txt")])
    assert res.added == 1 and _reasons(res.skipped) == {"not_a_regular_file": 1}


def test_too_large_is_decided_before_reading(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(b"\x00\x01" * 2500)  # 5000 bytes
    (src / "long.txt").write_text("word " * 400)  # 2000 bytes of text
    lines = [json.dumps({"text": f"line number {i} of a jsonl object"}) for i in range(60)]
    (src / "lines.jsonl").write_text("\n".join(lines) + "\n")  # > 2000 bytes, lines are small
    wide = [json.dumps({"text": "x" * 1500}), json.dumps({"text": "a narrow line"})]
    (src / "wide.jsonl").write_text("\n".join(wide) + "\n")  # one line over text.max_bytes
    (src / "small.txt").write_text("small enough")
    cfg = IngestConfig(max_object_bytes=4000, text=TextRules(max_bytes=1000))
    r = run_ingest(str(src), f"file://{tmp_path}/repo", config=cfg)
    assert r.reasons == {"too_large": 3}
    assert r.kept == 62 and r.inputs == 65
    rows = {
        x["source"]: x["message"]
        for x in read_rejects(Repo.open(f"file://{tmp_path}/repo"), "main")
    }
    assert rows["big.bin"] == "5000 bytes, limit 4000; not read"
    assert "limit 1000 (text.max_bytes); not read" in rows["long.txt"]
    assert "JSONL line of 1512 bytes" in rows["wide.jsonl#L1"]
    cfg = IngestConfig(max_object_bytes=1500)
    r = run_ingest(str(src), f"file://{tmp_path}/repo2", config=cfg)
    assert r.reasons == {"too_large": 4}  # the JSONL objects too, now


def test_an_s3_object_over_the_limit_is_rejected_from_its_listed_size(s3_env):
    import io

    from pipelines.readers.source import open_source

    client = s3_env.client()
    bucket = s3_env.new_bucket()
    client.put_object(bucket, "raw/big.bin", io.BytesIO(b"x" * 2000), 2000)
    src = open_source(f"s3://{bucket}/raw")
    drop = src.fetch("big.bin", size=2000, max_bytes=1000)
    assert drop.reason == "too_large" and src._store is None  # no request at all
    cfg = IngestConfig(text=TextRules(max_bytes=1000))
    from pipelines.process import size_drop
    from pipelines.readers.read import read_item

    got = read_item(src, WorkItem("big.bin", "e", 2000), cfg)
    assert got.reason == "too_large" and "text.max_bytes" in got.message
    assert src._store.stats["GET"] == 1 and src._store.stats["GET_BYTES"] == 64  # the head only
    assert size_drop("big.bin", b"\x89PNG\r\n\x1a\n", 2000, cfg) is None  # images: no text cap


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["huge.jsonl", "huge.txt"])
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_a_sparse_3gb_file_is_rejected_with_bounded_memory(tmp_path, name):
    """The peak RSS of the whole ingest (Beam included) stays under 500 MB."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / name, "wb") as f:
        f.write(b'{"text": "' if name.endswith(".jsonl") else b"the start of one long line ")
        f.truncate(3 * 2**30)  # sparse: no disk cost
    (src / "ok.txt").write_text("an ordinary document")
    # VmHWM: the peak RSS of this process image. ru_maxrss would not do: Linux carries it
    # over fork and exec, so the child would report the (larger) pytest parent's peak.
    code = textwrap.dedent(
        f"""
        import json, re
        from pipelines.ingest import run_ingest
        r = run_ingest({str(src)!r}, {f"file://{tmp_path}/repo"!r})
        status = open("/proc/self/status").read()
        peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
        print(json.dumps({{"reasons": r.reasons, "kept": r.kept, "rss_mb": peak_kb / 1024}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=280, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(name, res)
    assert res["reasons"] == {"too_large": 1} and res["kept"] == 1
    assert res["rss_mb"] < 500


# -- one input can only ever reject itself ------------------------------------------------


def test_an_exception_in_a_decoder_rejects_only_its_object_or_line(tmp_path, monkeypatch):
    import pipelines.process as process

    real_check_image, real_parse_line = process.check_image, process.parse_line

    def check_image(data, rules):
        if data.endswith(b"BOOM"):
            raise RecursionError("maximum recursion depth exceeded")
        return real_check_image(data, rules)

    def parse_line(raw, text_field, *a, **k):
        if b"explode" in raw:
            raise MemoryError("cannot allocate")
        return real_parse_line(raw, text_field, *a, **k)

    monkeypatch.setattr(process, "check_image", check_image)
    monkeypatch.setattr(process, "parse_line", parse_line)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(png_bytes(32, 32, seed=1))
    (src / "b.png").write_bytes(png_bytes(32, 32, seed=2) + b"BOOM")
    lines = [{"text": "first line of text"}, {"text": "explode here"}, {"text": "third one"}]
    (src / "c.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = run_ingest(str(src), f"file://{tmp_path}/repo")
    assert r.inputs == r.kept + r.duplicates + r.rejected == 5
    assert r.reasons == {"internal_error": 2} and r.kept == 3
    rows = {
        x["source"]: x["message"]
        for x in read_rejects(Repo.open(f"file://{tmp_path}/repo"), "main")
    }
    assert rows == {
        "b.png": "RecursionError: maximum recursion depth exceeded",
        "c.jsonl#L2": "MemoryError: cannot allocate",
    }


def test_a_failing_batch_step_lands_on_the_unit_that_caused_it(monkeypatch):
    import pipelines.process as process

    real = process.clean_texts

    def clean_texts(raws, rules):
        if any(b"poison" in (r if isinstance(r, bytes) else r.encode()) for r in raws):
            raise RecursionError("deep")
        return real(raws, rules)

    monkeypatch.setattr(process, "clean_texts", clean_texts)
    items = [(WorkItem(f"{i}.txt", "e", 9), f"text number {i}".encode()) for i in range(5)]
    items.insert(2, (WorkItem("bad.txt", "e", 6), b"poison"))
    out = process_objects(items, IngestConfig())
    assert out.inputs == 6 and out.candidates.num_rows == 5
    assert out.rejects == [
        {"source": "bad.txt", "reason": "internal_error", "message": "RecursionError: deep"}
    ]


def test_add_turns_an_exception_on_one_file_into_its_reject(tmp_path, monkeypatch):
    import dataversion.scan as scan

    real = scan.sniff_modality

    def sniff(name, head):
        if name.endswith("bad.txt"):
            raise ValueError("sniffer bug")
        return real(name, head)

    monkeypatch.setattr(scan, "sniff_modality", sniff)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "good.txt").write_text("fine")
    (tmp_path / "src" / "bad.txt").write_text("not fine")
    res = Repo.init(f"file://{tmp_path}/repo").add([str(tmp_path / "src")])
    assert res.added == 1
    assert res.skipped == [
        {"source": "bad.txt", "reason": "internal_error", "message": "ValueError: sniffer bug"}
    ]


# -- memory budget of a worker batch ----------------------------------------------------


def test_a_worker_batch_is_processed_in_chunks_within_its_budgets(tmp_path, monkeypatch):
    import pipelines.readers.read as read
    from pipelines.readers.source import open_source

    sizes = []
    real = read.process_objects

    def spy(chunk, config, *rest):
        sizes.append([item.key for item, _ in chunk])
        return real(chunk, config, *rest)

    monkeypatch.setattr(read, "process_objects", spy)
    for i in range(4):
        (tmp_path / f"t{i}.txt").write_bytes((b"some text %d " % i) * 33)  # 396 bytes each
    for i in range(3):
        (tmp_path / f"i{i}.png").write_bytes(png_bytes(8, 8, seed=i))  # 64 pixels, 268 bytes
    src = open_source(str(tmp_path))
    items = [WorkItem(o.key, o.etag, o.size) for o in src.list()]
    audit = {"objects": len(items), "inputs": 0, "rejects": []}
    cfg = IngestConfig(max_batch_bytes=1000, max_batch_pixels=100)
    tables = list(read.chunked_process(src, items, cfg, audit))
    assert audit["inputs"] == 7 and not audit["rejects"]
    assert sum(t.num_rows for t in tables) == 7
    # two images exceed the pixel budget, three texts the byte budget
    assert sizes == [["i0.png"], ["i1.png"], ["i2.png", "t0.txt"], ["t1.txt", "t2.txt"], ["t3.txt"]]
