"""Work in pieces: the listing lies in the store as pieces; the rerun of a killed run
reuses the pieces that run finished (keyed by content, config and parent) and commits the
same content as a run that was never killed."""

import os
import random

import pytest
from pipeline_samples import words_doc

from dataversion import Repo
from pipelines.config import IngestConfig
from pipelines.ingest import PIECE_OBJECTS, read_duplicates, run_ingest
from pipelines.scratch import PIECES_ROOT


def _tree(raw, vocab, n):
    rng = random.Random(6)
    docs = [words_doc(rng, vocab, 60) for _ in range(n)]
    docs[5] = docs[3].replace(docs[3].split()[2], "zz", 1)  # a near duplicate
    raw.mkdir()
    for i, d in enumerate(docs):
        (raw / f"{i:04d}.txt").write_text(d)


def test_a_killed_run_reuses_its_finished_pieces(tmp_path, vocab, monkeypatch):
    raw = tmp_path / "raw"
    _tree(raw, vocab, PIECE_OBJECTS * 2 + 5)  # three pieces
    url = "file://" + str(tmp_path / "repo")
    import pipelines.writers.shards as shards

    def killed(self, *a, **kw):
        raise RuntimeError("killed after reading")

    with monkeypatch.context() as m:
        m.setattr(shards.WriteRange, "_write", killed)
        with pytest.raises(Exception, match="killed after reading"):
            run_ingest(str(raw), url)
    repo = Repo.open(url)
    cached = {
        i.key.split("/")[3] for i in repo.store.list(PIECES_ROOT) if i.key.endswith("done.json")
    }
    assert len(cached) == 3
    # the same size and mtime (same change token), other bytes: a piece read again would
    # see them; a reused piece keeps what was read before
    for i in range(3):
        p = raw / f"{i:04d}.txt"
        st = p.stat()
        p.write_text("X" * st.st_size)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = run_ingest(str(raw), url)
    assert (report.kept, report.duplicates) == (PIECE_OBJECTS * 2 + 4, 1)
    texts = {r["source"]: r for r in repo.ls("main")}
    assert "0000.txt" in texts
    assert not list(repo.store.list(PIECES_ROOT))  # dropped after the commit
    # identical to a run that was never killed (on the original bytes)
    raw2 = tmp_path / "raw2"
    _tree(raw2, vocab, PIECE_OBJECTS * 2 + 5)
    url2 = "file://" + str(tmp_path / "repo2")
    fresh = run_ingest(str(raw2), url2)
    r2 = Repo.open(url2)
    assert repo.packing_id_of(report.commit) == r2.packing_id_of(fresh.commit)
    assert repo.root_of(report.commit) == r2.root_of(fresh.commit)
    assert read_duplicates(repo, "main") == read_duplicates(r2, "main")


def test_another_config_does_not_reuse_pieces(tmp_path, vocab, monkeypatch):
    raw = tmp_path / "raw"
    _tree(raw, vocab, 10)
    url = "file://" + str(tmp_path / "repo")
    import pipelines.writers.shards as shards

    def killed(self, *a, **kw):
        raise RuntimeError("killed")

    with monkeypatch.context() as m:
        m.setattr(shards.WriteRange, "_write", killed)
        with pytest.raises(Exception, match="killed"):
            run_ingest(str(raw), url)
    report = run_ingest(
        str(raw), url, config=IngestConfig.from_dict({"dedup": {"near_text": False}})
    )
    assert (report.kept, report.duplicates) == (10, 0)
