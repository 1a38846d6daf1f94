"""`report --read-sources` reads dropped duplicates back from the ingest source: an object
that changed since the commit consumed it is another object and is not shown as the
duplicate (a user's report showed the new text as "exact duplicate, 0% words equal")."""

from __future__ import annotations

import os

from dataversion.report import collect
from pipelines.ingest import run_ingest

TEXT = "the same text stored once and dropped once as its exact duplicate here"


def test_a_duplicate_whose_source_changed_since_the_commit_is_not_shown(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(TEXT)
    (src / "b.txt").write_text(TEXT)
    url = f"file://{tmp_path}/repo"
    run_ingest(str(src), url)
    from dataversion import Repo

    repo = Repo.open(url)
    dups = collect(repo, "main", read_sources=True).clusters[0]["duplicates"]
    assert len(dups) == 1 and "changed at the source" not in dups[0]["html"]
    dropped = src / dups[0]["source"]
    assert TEXT in dups[0]["html"] or "excerpt" in dups[0]["html"]
    st = os.stat(dropped)
    dropped.write_text("entirely different words now live in this file")
    os.utime(dropped, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    dups = collect(repo, "main", read_sources=True).clusters[0]["duplicates"]
    assert "changed at the source since this commit" in dups[0]["html"]
    assert "entirely different" not in dups[0]["html"]
