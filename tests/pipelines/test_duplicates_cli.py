"""`dataversion duplicates`: every duplicate points at a kept record (chains resolved), with
kind, similarity and cluster, and its source; the representative policy decides which one
of a cluster is kept (issue 18, items 3 and 4)."""

import json
import random

from click.testing import CliRunner
from pipeline_samples import words_doc

from dataversion import Repo
from dataversion.cli.duplicates import duplicates_command
from pipelines.config import IngestConfig
from pipelines.ingest import run_ingest


def _tree(tmp_path, vocab):
    rng = random.Random(8)
    license_text = words_doc(rng, vocab, 300)
    raw = tmp_path / "raw"
    files = {
        # a copyright file: the license with a header (a near duplicate), first by key
        "copyright/apache": "Upstream-Name: thing Copyright 2020 someone " + license_text,
        "licenses/Apache-2.0": license_text,
        "messy/Lizenz - Apache (Kopie).txt": license_text,  # an exact copy of the license
        "other.txt": words_doc(rng, vocab, 100),
    }
    for rel, text in files.items():
        p = raw / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return raw


def _ids_and_sources(repo):
    out = {}
    for t in repo.read_rows(repo.resolve("main"), ["source"]):
        out.update(
            zip(
                (r.hex() for r in t.column("record_id").to_pylist()), t.column("source").to_pylist()
            )
        )
    return out


def test_chained_duplicate_points_at_the_kept_record(tmp_path, vocab, monkeypatch):
    raw = _tree(tmp_path, vocab)
    url = "file://" + str(tmp_path / "repo")
    report = run_ingest(str(raw), url)
    assert (report.kept, report.duplicates) == (2, 2)
    repo = Repo.open(url)
    stored = _ids_and_sources(repo)
    monkeypatch.setenv("DATAVERSION_REPO", url)
    res = CliRunner().invoke(duplicates_command, ["main", "--json"])
    assert res.exit_code == 0, res.output
    dups = {d["source"]: d for d in json.loads(res.output)}
    assert set(dups) == {"licenses/Apache-2.0", "messy/Lizenz - Apache (Kopie).txt"}
    for d in dups.values():  # never a record that is not stored
        assert d["duplicate_of"] in stored and d["kept_source"] == "copyright/apache"
        assert d["kind"] == "near" and 0.8 <= d["similarity"] < 1.0
        assert d["cluster"] == d["duplicate_of"]
    assert (
        dups["messy/Lizenz - Apache (Kopie).txt"]["via"] == dups["licenses/Apache-2.0"]["record_id"]
    )
    cluster = dups["licenses/Apache-2.0"]["cluster"]
    res = CliRunner().invoke(duplicates_command, ["main", "--cluster", cluster[:8]])
    assert res.exit_code == 0, res.output
    assert "kept" in res.output and "copyright/apache" in res.output
    assert "licenses/Apache-2.0" in res.output and "same content as" in res.output
    res = CliRunner().invoke(duplicates_command, ["main", "--cluster", "ffff0000"])
    assert res.exit_code == 3 and "no cluster ffff0000 in main" in res.stderr


def test_shortest_policy_keeps_the_clean_license(tmp_path, vocab):
    raw = _tree(tmp_path, vocab)
    url = "file://" + str(tmp_path / "repo")
    cfg = IngestConfig.from_dict({"dedup": {"representative": "shortest"}})
    report = run_ingest(str(raw), url, config=cfg)
    assert report.kept == 2
    repo = Repo.open(url)
    assert set(_ids_and_sources(repo).values()) == {"licenses/Apache-2.0", "other.txt"}
    from dataversion.cli.duplicates import commit_duplicates

    dups = {d["source"]: d for d in commit_duplicates(repo, "main")}
    assert dups["copyright/apache"]["kind"] == "near"
    assert dups["messy/Lizenz - Apache (Kopie).txt"]["kind"] == "exact"
    assert {d["kept_source"] for d in dups.values()} == {"licenses/Apache-2.0"}


def test_the_branch_record_wins_over_the_policy(tmp_path, vocab):
    """A longer near duplicate arriving later does not replace what the branch holds."""
    raw = _tree(tmp_path, vocab)
    (raw / "copyright" / "apache").unlink()
    url = "file://" + str(tmp_path / "repo")
    cfg = IngestConfig.from_dict({"dedup": {"representative": "longest"}})
    run_ingest(str(raw), url, config=cfg)
    text = (raw / "licenses" / "Apache-2.0").read_text()
    (raw / "longer.txt").write_text("A header that makes it longer " + text)
    report = run_ingest(str(raw), url, config=cfg)
    assert (report.kept, report.duplicates) == (0, 1)
    from dataversion.cli.duplicates import commit_duplicates

    (d,) = commit_duplicates(Repo.open(url), "main")
    assert d["source"] == "longer.txt" and d["kept_source"] == "licenses/Apache-2.0"


def test_ingest_representative_option(tmp_path, vocab, monkeypatch):
    from pipelines.cli.ingest import ingest_command

    raw = _tree(tmp_path, vocab)
    url = "file://" + str(tmp_path / "repo")
    monkeypatch.setenv("DATAVERSION_REPO", url)
    res = CliRunner().invoke(ingest_command, [str(raw), "--representative", "shortest", "--json"])
    assert res.exit_code == 0, res.output
    assert set(_ids_and_sources(Repo.open(url)).values()) == {"licenses/Apache-2.0", "other.txt"}
    res = CliRunner().invoke(ingest_command, [str(raw), "--representative", "best"])
    assert res.exit_code != 0 and "best" in res.output
