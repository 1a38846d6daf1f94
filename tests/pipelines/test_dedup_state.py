"""The branch's dedup state is stored like records: runs of content-addressed parts shared
between commits; +1% onto a branch writes ~1% of the index bytes; runs are compacted;
records the branch no longer holds are not matched."""

import random

from pipeline_samples import words_doc

from dataversion import Repo
from pipelines.config import IngestConfig
from pipelines.dedup import state as dstate
from pipelines.ingest import run_ingest


def _write(root, docs: dict[str, str]) -> None:
    for rel, text in docs.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _state(repo: Repo, ref: str) -> dstate.BranchState:
    return dstate.BranchState.from_bytes(repo.read_attachment(repo.resolve(ref), dstate.STATE))


def _sizes(repo: Repo, blobs) -> int:
    return sum(len(repo.read_blob(b)) for b in blobs)


def test_one_percent_more_writes_about_one_percent_of_the_index(tmp_path, vocab):
    rng = random.Random(2)
    raw = tmp_path / "raw"
    base = {f"base/{i:05d}.txt": words_doc(rng, vocab, 60) for i in range(2000)}
    _write(raw, base)
    url = "file://" + str(tmp_path / "repo")
    run_ingest(str(raw), url)
    repo = Repo.open(url)
    before = _state(repo, "main")
    assert len(before.runs) == 1 and before.runs[0]["entries"] == 2000
    more = {f"more/{i:03d}.txt": words_doc(rng, vocab, 60) for i in range(20)}
    more["more/near.txt"] = base["base/00007.txt"].replace(
        base["base/00007.txt"].split()[3], "zz", 1
    )
    _write(raw, more)
    report = run_ingest(str(raw), url)
    assert (report.kept, report.duplicate_kinds) == (20, {"near": 1})
    after = _state(repo, "main")
    new = set(after.blobs()) - set(before.blobs())
    assert set(before.blobs()) <= set(after.blobs())  # shared, not rewritten
    written = _sizes(repo, new) + len(repo.read_attachment(repo.resolve("main"), dstate.STATE))
    total = _sizes(repo, after.blobs())
    assert written / total <= 0.03, (written, total)
    # every part is an attachment of the commit, so gc keeps it
    attachments = repo.read_commit(repo.resolve("main")).attachments
    assert all(attachments[dstate.PART_PREFIX + b] == b for b in after.blobs())
    assert repo.gc(grace_seconds=0)["deleted"] >= 0 and repo.verify()["ok"]
    assert _sizes(repo, after.blobs()) == total


def test_runs_are_compacted_and_old_runs_still_match(tmp_path, vocab, monkeypatch):
    monkeypatch.setattr(dstate, "FANOUT", 2)
    rng = random.Random(3)
    raw = tmp_path / "raw"
    url = "file://" + str(tmp_path / "repo")
    first = words_doc(rng, vocab, 80)
    _write(raw, {"r0/first.txt": first})
    run_ingest(str(raw), url)
    for r in range(1, 5):
        _write(raw, {f"r{r}/{i}.txt": words_doc(rng, vocab, 60) for i in range(3)})
        run_ingest(str(raw), url)
    repo = Repo.open(url)
    st = _state(repo, "main")
    assert len(st.runs) <= 3 and any(run["level"] >= 1 for run in st.runs)
    assert st.entries == 13
    _write(raw, {"r9/near-first.txt": first.replace(first.split()[5], "qq", 1)})
    report = run_ingest(str(raw), url)
    assert report.duplicate_kinds == {"near": 1}


def test_a_removed_record_is_not_matched(tmp_path, vocab):
    rng = random.Random(4)
    raw = tmp_path / "raw"
    url = "file://" + str(tmp_path / "repo")
    doc = words_doc(rng, vocab, 80)
    _write(raw, {"a.txt": doc, "b.txt": words_doc(rng, vocab, 80)})
    run_ingest(str(raw), url)
    repo = Repo.open(url)
    repo.rm(branch="main", source_prefixes=["a.txt"])
    (raw / "a.txt").unlink()
    _write(raw, {"c.txt": doc.replace(doc.split()[2], "qq", 1)})
    # the rm commit carries no dedup state (rebuilt from its records) and no consumed list
    # (b.txt is read again: an exact duplicate of the branch's record)
    report = run_ingest(str(raw), url, config=IngestConfig())
    assert (report.kept, report.duplicate_kinds) == (1, {"exact": 1})
    assert sorted(r["source"] for r in repo.ls("main")) == ["b.txt", "c.txt"]  # ls is in id order


def test_state_parent_reads_overlapping_parts_and_drops_removed_records(tmp_path):
    """Parts on one grid answer ranges of another grid; ids the branch no longer holds are
    never candidates; hashes come back by id."""
    import numpy as np

    from pipelines.dedup import sharded

    rules = IngestConfig().dedup
    repo = Repo.init("file://" + str(tmp_path / "repo"))
    rng = np.random.default_rng(1)
    ids = np.frombuffer(rng.bytes(16 * 300), "S16").copy()
    sigs = rng.integers(0, 2**32, (300, rules.num_perm), dtype=np.uint64).astype(np.uint32)
    monkey_rows = dstate.PART_ROWS
    dstate.PART_ROWS = 64  # several parts per run
    try:
        run = dstate.write_run(repo, {"text": ids}, {"text": sigs}, rules)
    finally:
        dstate.PART_ROWS = monkey_rows
    assert len(run["bands"]["text"]) > 4 and len(run["hashes"]["text"]) > 1
    st = dstate.BranchState(rules.index_params(), [run])
    removed = set(ids[:10].tolist())
    parent = dstate.StateParent(
        repo, st, lambda x: np.array([i not in removed for i in x.tolist()]), rules
    )
    keys = sharded.band_keys(sigs, "text", rules)
    for parts in (1, 3, 7):
        got = [parent.band_rows("text", k, parts) for k in range(parts)]
        rows = sum(t.num_rows for t in got if t is not None)
        assert rows == keys.size - 10 * keys.shape[1]
        for k, t in enumerate(got):
            if t is not None:
                assert (sharded.key_range(t.column("key").to_numpy(), parts) == k).all()
                assert not set(sharded._ids(t).tolist()) & removed
    h = parent.hashes("text", ids[[5, 200, 17]])
    assert h == [sigs[i].tobytes() for i in (5, 200, 17)]
