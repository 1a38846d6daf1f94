"""Generate tests/data/format1-repo: a small repository written by dataversion 0.1 (format 1).

It was generated once, from main at 938c9d2 (before the core v2 format change), with

    cd <checkout of that commit> && PYTHONPATH=$PWD python tests/data/make_format1_repo.py tests/data/format1-repo

and committed. Rerunning it on format-2 code writes a format-2 repository instead, so do not
regenerate it: the fixture is what `dataversion upgrade` must convert. Contents: three commits on
main (texts + one binary record, an add, a removal), a branch `side` with its own commit, a tag
`v1`, a reflog, and one lineage entry with its pin on the second commit. Times and authors are
fixed so the commit ids are reproducible; `expected.json` beside the repo lists them.
"""

from __future__ import annotations

import json
import os
import sys
from unittest import mock

from dataversion import Repo
from dataversion.records import make_binary_records, make_text_records
from dataversion.training.lineage import record_checkpoint


def main(target: str) -> None:
    if os.path.exists(target):
        raise SystemExit(f"{target} exists: remove it first")
    times = iter(f"2026-12-01T00:00:0{i}.000000Z" for i in range(10))
    with mock.patch("dataversion.writer.utc_now", lambda: next(times)):
        repo = Repo.init(target)
        texts = [f"format one text number {i}" for i in range(40)]
        sources = [f"texts/t{i:02d}.txt" for i in range(40)]
        c1 = repo.commit(make_text_records(texts[:30], sources=sources[:30], labels=["a"] * 30),
                         message="first", author="fixture <f@x>")
        import pyarrow as pa

        binary = make_binary_records([b"\x89PNG fake image bytes"], ["image"], sources=["img/x.png"])
        c2 = repo.commit(pa.concat_tables([make_text_records(texts[30:], sources=sources[30:]), binary]),
                         message="second", author="fixture <f@x>")
        rid = make_text_records(texts[:1]).column("record_id")[0].as_py()
        c3 = repo.commit(None, remove_ids=[rid], message="remove t00", author="fixture <f@x>")
        repo.create_branch("side", c2.commit_id)
        c4 = repo.commit(make_text_records(["only on side"], sources=["side.txt"]), branch="side",
                         message="side work", author="fixture <f@x>")
        repo.create_tag("v1", c1.commit_id)
    state = {"commit": c2.commit_id, "seed": 7, "epoch": 0, "position": 5, "world_size": 1, "batch_size": 5,
             "remainder": "pad", "shuffle": True, "window": 16384, "num_records": 41}
    entry = record_checkpoint(repo, state, checkpoint="/ckpt/step5.pt", run="fixture", step=5,
                              saved_at="2026-12-01T00:00:09Z")
    expected = {
        "main": [c3.commit_id, c2.commit_id, c1.commit_id],
        "side": c4.commit_id,
        "tag_v1": c1.commit_id,
        "lineage_entry": entry.key,
        "removed_record": rid.hex(),
        "records": {c1.commit_id: 30, c2.commit_id: 41, c3.commit_id: 40, c4.commit_id: 42},
    }
    with open(os.path.join(os.path.dirname(os.path.abspath(target)), "format1-expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "format1-repo"))
