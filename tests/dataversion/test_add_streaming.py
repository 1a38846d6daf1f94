"""`add` streams: it holds one scan batch of payload, not the tree it adds (issue 17)."""

from __future__ import annotations

import os

import pyarrow as pa

import dataversion.scan as scan_mod
from dataversion import Repo
from dataversion.objectdb import ObjectDB


def _tree(root, n_files=24, size=512 * 1024):
    for i in range(n_files):
        d = root / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03d}.bin").write_bytes(os.urandom(size))
    (root / "notes.txt").write_text("a text\n")
    (root / ".hidden").write_text("skipped, counted")


def test_add_holds_one_batch_not_the_tree(tmp_path, monkeypatch):
    _tree(tmp_path / "raw")  # 12 MiB of payload
    monkeypatch.setattr(scan_mod, "BATCH_BYTES", 1 * 2**20)
    peaks = []
    orig = ObjectDB.write_shards_counted

    def watching(self, table, *a, **k):
        peaks.append(pa.total_allocated_bytes())
        return orig(self, table, *a, **k)

    monkeypatch.setattr(ObjectDB, "write_shards_counted", watching)
    repo = Repo.init(f"file://{tmp_path}/repo")
    result = repo.add([str(tmp_path / "raw")])
    assert result.added == 25 and len(result.skipped) == 1  # 24 binaries + 1 text; the hidden file
    assert len(peaks) > 1, "written batch by batch"
    assert max(peaks) < 6 * 2**20, max(peaks)  # a batch or two of Arrow memory, never the 12 MiB tree


def test_streamed_add_commits_what_a_whole_scan_commits(tmp_path, monkeypatch):
    _tree(tmp_path / "raw", n_files=12, size=64 * 1024)
    whole = Repo.init(f"file://{tmp_path}/a")
    whole.commit(scan_mod.scan_tree([str(tmp_path / "raw")]).table, message="x")
    monkeypatch.setattr(scan_mod, "BATCH_BYTES", 100 * 1024)
    streamed = Repo.init(f"file://{tmp_path}/b")
    result = streamed.add([str(tmp_path / "raw")])
    assert result.added == 13 and len(result.skipped) == 1
    assert streamed.read_commit(streamed.resolve("main")).root == whole.read_commit(whole.resolve("main")).root
    again = streamed.add([str(tmp_path / "raw")])  # nothing new: no commit, all already present
    assert again.commit_id is None and again.already_present == 13
    assert streamed.verify()["ok"]
