"""CLI bugs a new user reported in `ingest`, `duplicates` and `runs`: wrong input is one
line with exit 2 (bad input) or 3 (not found) that says what to do, never a silent "nothing"."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from dataversion.cli import main
from pipelines.ingest import run_ingest

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def ingested(tmp_path, monkeypatch):
    """A branch one ingest wrote: two texts (one a copy of the other: a duplicate) and an
    empty file (rejected `empty_file`)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    text = "a text long enough to be kept by the cleaning rules of the ingest pipeline"
    (raw / "a.txt").write_text(text)
    (raw / "b.txt").write_text(text)
    (raw / "empty.txt").write_text("")
    url = f"file://{tmp_path}/repo"
    monkeypatch.setenv("DATAVERSION_REPO", url)
    report = run_ingest(str(raw), url)
    assert (report.kept, report.duplicates, report.rejected) == (1, 1, 1)
    return {"raw": raw, "url": url, "tmp": tmp_path}


def test_unknown_cluster_is_not_found(ingested):
    res = _invoke("duplicates", "main", "--json")
    (dup,) = json.loads(res.stdout)
    assert _invoke("duplicates", "main", "--cluster", dup["cluster"][:8]).exit_code == 0
    for bad in ("ffff0000", "zzzz"):  # unknown; not even hexadecimal
        for extra in ((), ("--json",)):
            res = _invoke("duplicates", "main", "--cluster", bad, *extra)
            assert res.exit_code == 3, res.output
            assert res.stdout == "" and res.stderr.startswith(f"error: no cluster {bad} in main")
            assert "dataversion duplicates main" in res.stderr and len(res.stderr.splitlines()) == 1


def test_a_commit_without_duplicates_is_not_an_error_but_an_unknown_cluster_in_it_is(ingested):
    other = ingested["tmp"] / "other"
    other.mkdir()
    (other / "x.txt").write_text("a record added with add")
    assert _invoke("add", other, "-m", "plain add").exit_code == 0
    res = _invoke("duplicates", "main")
    assert res.exit_code == 0 and "no duplicates recorded" in res.stdout
    res = _invoke("duplicates", "main", "--cluster", "abcd1234")
    assert res.exit_code == 3 and "no cluster abcd1234" in res.stderr and "no duplicates" in res.stderr


def test_retry_rejected_with_an_unknown_reason_lists_the_known_ones(ingested):
    tip = _tip(ingested["url"])
    res = _invoke("ingest", ingested["raw"], "--retry-rejected", "bogus_reason", "--no-progress")
    assert res.exit_code == 2, res.output
    assert res.stdout == "" and res.stderr.startswith("error: unknown reject reason 'bogus_reason'")
    for known in ("empty_file", "unreadable", "too_short", "bad_jsonl_line"):
        assert known in res.stderr
    assert _tip(ingested["url"]) == tip
    # a known reason the branch holds no reject for: nothing to retry, no commit, rc 0
    res = _invoke("ingest", ingested["raw"], "--retry-rejected", "unreadable", "--no-progress")
    assert res.exit_code == 0 and res.stdout.startswith("nothing new"), res.output
    assert _tip(ingested["url"]) == tip


def test_retry_rejected_accepts_a_reason_the_branch_recorded(ingested):
    """A reason this version does not produce but an older one recorded is still known."""
    from dataversion import Repo

    repo = Repo.open(ingested["url"])
    repo.commit(None, message="an older ingest", allow_empty=True, counts={"reasons": {"old_reason": 1}},
                provenance={"pipeline": "pipelines.ingest", "source": "file:///elsewhere"})
    res = _invoke("ingest", ingested["raw"], "--retry-rejected", "old_reason", "--no-progress")
    assert res.exit_code == 0, res.output


def test_every_reject_reason_of_the_pipeline_is_known():
    from pipelines.cli.ingest import KNOWN_REJECT_REASONS

    literal = set()
    for path in PIPELINES.rglob("*.py"):
        literal |= set(re.findall(r'Drop\(\s*"([a-z0-9_]+)"', path.read_text()))
    assert literal and literal <= set(KNOWN_REJECT_REASONS), literal - set(KNOWN_REJECT_REASONS)


def test_retry_rejected_that_changes_nothing_makes_no_commit(ingested):
    """As a plain incremental run that finds nothing new: the empty file is rejected again,
    the same way, so there is nothing to commit."""
    tip = _tip(ingested["url"])
    res = _invoke("ingest", ingested["raw"], "--retry-rejected", "--no-progress", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["commit"] is None
    assert _tip(ingested["url"]) == tip


def test_ingest_of_a_file_says_it_takes_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAVERSION_REPO", f"file://{tmp_path}/repo")
    f = tmp_path / "file.txt"
    f.write_text("one text")
    for source in (str(f), f"file://{f}"):
        res = _invoke("ingest", source)
        assert res.exit_code == 2, res.output
        err = res.stderr
        assert err.startswith(f"error: source {source} is a file, not a directory"), err
        assert "s3://" in err and "dataversion add" in err and len(err.splitlines()) == 1
        assert "does not exist" not in err
    assert not (tmp_path / "repo").exists()  # refused before anything was created
    res = _invoke("ingest", tmp_path / "nothing-here")  # a missing directory: as before
    assert res.exit_code == 3 and "does not exist" in res.stderr


def test_runs_refuses_a_negative_count(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAVERSION_REPO", f"file://{tmp_path}/repo")
    assert _invoke("init").exit_code == 0
    res = _invoke("runs", "-n", "-1")
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "-n" in res.stderr


def _tip(url):
    from dataversion import Repo

    return Repo.open(url).branch_tip("main")


def test_a_source_with_no_objects_is_not_found(tmp_path, monkeypatch, s3_env):
    """A typo'd S3 prefix lists nothing: exit 3 saying so, as an empty directory (was exit 0,
    "nothing new: 0 object(s) already consumed"); a missing source bucket names the source,
    not `dataversion init --create-bucket`."""
    monkeypatch.setenv("DATAVERSION_REPO", f"file://{tmp_path}/repo")
    empty = tmp_path / "empty"
    empty.mkdir()
    bucket = s3_env.new_bucket()
    for source in (str(empty), f"s3://{bucket}/no/such/prefix/"):
        res = _invoke("ingest", source, "--no-progress")
        assert res.exit_code == 3, res.output
        assert res.stderr.startswith("error: no objects under ") and "nothing was committed" in res.stderr, res.stderr
    res = _invoke("ingest", "s3://no-such-source-bucket-x/raw/", "--no-progress")
    assert res.exit_code == 3, res.output
    assert "source bucket no-such-source-bucket-x does not exist" in res.stderr and "--create-bucket" not in res.stderr


def test_incremental_ingest_after_rm_revert_and_add_reads_only_what_is_new(tmp_path, monkeypatch):
    """Commits of other kinds carry no `consumed` record: the next ingest read every object
    again and brought an `rm`-removed record back."""
    url = f"file://{tmp_path}/repo"
    monkeypatch.setenv("DATAVERSION_REPO", url)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"doc{i}.txt").write_text(f"document number {i} with words of its own, {i * 7} of them")
    assert _invoke("ingest", src, "--no-progress").exit_code == 0
    assert _invoke("rm", "--source", "doc1").exit_code == 0
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "added.txt").write_text("a text committed with add, not ingest")
    assert _invoke("add", extra).exit_code == 0
    (src / "new.txt").write_text("a new document in the ingest source")
    res = _invoke("ingest", src, "--no-progress", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["objects"] == 1 and out["kept"] == 1, out
    sources = {r["source"] for r in json.loads(_invoke("ls", "main", "--json").stdout)}
    assert "doc1.txt" not in sources and {"new.txt", "added.txt", "doc0.txt"} <= sources
    # a revert at the head: the same
    assert _invoke("revert", "main").exit_code == 0
    (src / "newer.txt").write_text("one more document in the ingest source")
    out = json.loads(_invoke("ingest", src, "--no-progress", "--json").stdout)
    assert out["objects"] == 1, out


def test_a_near_duplicate_chain_longer_than_the_rounds_is_one_error_line(tmp_path, monkeypatch):
    """Overlapping windows of one text make a chain of near duplicates; with too few rounds
    the run fails with one `error:` line saying what to raise (it was a 96-line traceback)."""
    import random

    monkeypatch.setenv("DATAVERSION_REPO", f"file://{tmp_path}/repo")
    rng = random.Random(1)
    words = [rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]) + str(rng.randrange(500))
             for _ in range(2000)]
    src = tmp_path / "windows"
    src.mkdir()
    for i in range(40):  # each window 2 words on from the last: neighbours share ~99% of shingles
        (src / f"w{i:03d}.txt").write_text(" ".join(words[2 * i : 2 * i + 300]))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"dedup": {"max_rounds": 1}}))
    res = _invoke("ingest", src, "--config", cfg, "--no-progress")
    assert res.exit_code == 1, res.output
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert lines and lines[-1].startswith("error: near-duplicate clusters not settled") and "max_rounds" in lines[-1]
    assert "Traceback" not in res.stderr and len(lines) <= 2, res.stderr


def test_rejects_and_duplicates_of_a_branch_after_an_rm_are_its_last_run_s(tmp_path, monkeypatch):
    """After an `rm` at the head, `rejects main` printed nothing and `duplicates main` said
    "no duplicates recorded", with exit 0."""
    monkeypatch.setenv("DATAVERSION_REPO", f"file://{tmp_path}/repo")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a text that is kept once and dropped once as its exact copy")
    (src / "b.txt").write_text("a text that is kept once and dropped once as its exact copy")
    (src / "c.txt").write_text("another text entirely, to be removed afterwards by the user")
    (src / "empty.txt").write_text("")
    assert _invoke("ingest", src, "--no-progress").exit_code == 0
    before = (json.loads(_invoke("rejects", "main", "--json").stdout), json.loads(_invoke("duplicates", "main", "--json").stdout))
    assert [r["source"] for r in before[0]] == ["empty.txt"] and len(before[1]) == 1
    assert _invoke("rm", "--source", "c.txt").exit_code == 0
    after = (json.loads(_invoke("rejects", "main", "--json").stdout), json.loads(_invoke("duplicates", "main", "--json").stdout))
    assert after == before
