"""CLI bugs a new user reported: each error is one line with the right exit code and a way
forward, and `--json` output stays valid JSON (nothing printed before an error)."""

from __future__ import annotations

import json

from dataversion import Repo


def test_branch_that_exists_is_refused_with_where_it_is(cli):
    tip = json.loads(cli("log", "--json").stdout)[0]["id"]
    cli("branch", "dev")
    cli("tag", "v1", "main~1")
    for args in (("branch", "dev"), ("branch", "dev", "v1")):
        out = cli(*args, code=4)
        assert out.stdout == ""
        assert out.stderr.startswith(f"error: branch dev already exists (at {tip[:12]})"), out.stderr
        assert "dataversion reset dev" in out.stderr and "another writer" not in out.stderr
        assert len(out.stderr.splitlines()) == 1
    assert {b["name"]: b["commit"] for b in json.loads(cli("branch", "--json").stdout)}["dev"] == tip


def test_branch_delete_needs_a_name(cli):
    out = cli("branch", "-d", code=2)
    assert out.stdout == "" and out.stderr.startswith("error: branch -d needs a branch name")
    assert "dev" not in out.stdout
    out = cli("branch", "-d", "main", "main~1", code=2)  # -d takes one name
    assert out.stderr.startswith("error: ")
    assert "main" in {b["name"] for b in json.loads(cli("branch", "--json").stdout)}


def test_delete_unknown_branch_is_not_found(cli):
    out = cli("branch", "-d", "nosuch", code=3)
    assert out.stderr.startswith("error: branch nosuch not found") and "dataversion branch" in out.stderr


def test_log_refuses_a_negative_count(cli):
    out = cli("log", "-n", "-1", code=2)
    assert out.stdout == "" and out.stderr.startswith("error: ") and "-n" in out.stderr
    assert json.loads(cli("log", "-n", "0", "--json").stdout) == []  # as git: zero is fine


def test_reflog_of_an_unknown_branch_is_not_found(cli):
    out = cli("reflog", "nosuch", code=3)
    assert out.stdout == "" and out.stderr.startswith("error: branch nosuch not found")
    assert "dataversion branch" in out.stderr
    out = cli("reflog", "nosuch", "--json", code=3)
    assert out.stdout == ""
    # a deleted branch keeps its reflog: shown, with the deletion last
    cli("branch", "gone")
    cli("branch", "-d", "gone")
    entries = json.loads(cli("reflog", "gone", "--json").stdout)
    assert [e["reason"] for e in entries] == ["branch: created from main", "branch: deleted"]
    assert entries[-1]["new"] is None


def test_ls_json_of_an_unknown_ref_prints_nothing_on_stdout(cli):
    out = cli("ls", "nosuch", "--json", code=3)
    assert out.stdout == "" and out.stderr.startswith("error: unknown ref 'nosuch'")
    assert len(json.loads(cli("ls", "main", "--json").stdout)) == 3


def test_ls_json_error_on_the_first_read_prints_nothing_on_stdout(cli, tmp_path):
    """The shards are gone: the error comes before `[`, so stdout stays empty."""
    from click.testing import CliRunner

    from dataversion.cli import main

    repo = Repo.open(f"file://{tmp_path}/repo")
    for info in list(repo.store.list("shards/")):
        repo.store.delete(info.key)
    res = CliRunner().invoke(main, ["ls", "main", "--json"])
    assert res.exit_code in (3, 5) and res.stdout == "", (res.stdout, res.stderr)
    assert res.stderr.startswith("error: ")


def test_log_after_the_default_branch_was_deleted_names_the_refs_left(cli):
    tip = json.loads(cli("log", "--json").stdout)[0]["id"]
    cli("tag", "main/x")
    cli("branch", "-d", "main")
    for args in (("log",), ("ls", "--json"), ("show",)):
        out = cli(*args, code=3)
        assert out.stdout == ""
        err = out.stderr
        assert "no commits yet" not in err, err
        assert "branch main" in err and "main/x" in err and len(err.splitlines()) == 1, err
        assert tip[:12] in err  # where it was, from the reflog
    assert json.loads(cli("log", "main/x", "--json").stdout)[0]["id"] == tip


def test_unknown_ref_lists_the_refs_that_exist(cli):
    cli("tag", "v1")
    err = cli("log", "nosuch", code=3).stderr
    assert err.startswith("error: unknown ref 'nosuch'") and "main" in err and "v1" in err
    # other errors of resolution are unchanged
    assert "ancestor" in cli("log", "main~9", code=3).stderr


def test_empty_repository_still_says_no_commits_yet(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dataversion.cli import main

    monkeypatch.setenv("DATAVERSION_REPO", f"file://{tmp_path}/empty")
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    res = runner.invoke(main, ["log"])
    assert res.exit_code == 3 and "no commits yet" in res.stderr


def test_erase_next_steps_name_cache_purge(cli):
    rid = json.loads(cli("ls", "main", "--json").stdout)[0]["record_id"]
    out = cli("erase", rid, "--reason", "test").stdout
    nxt = [line for line in out.splitlines() if line.startswith("next:")]
    assert nxt and "dataversion gc" in nxt[0] and "dataversion cache purge" in nxt[0]
    assert "dataversion features erase" in nxt[0]


def test_rm_of_an_empty_source_prefix_is_refused(cli):
    """`--source ""` matched every record: the whole branch was removed with exit 0."""
    before = json.loads(cli("ls", "main", "--json").stdout)
    r = cli("rm", "--source", "", code=2)
    assert r.stderr.startswith("error: an empty --source prefix")
    assert json.loads(cli("ls", "main", "--json").stdout) == before


def test_a_branch_under_an_existing_branch_name_is_refused_in_one_line(cli):
    """`branch main/x` beside branch main: file:// met a file where a directory would be
    (NotADirectoryError, exit 1); now the clash message of every backend, exit 2."""
    r = cli("branch", "main/x", code=2)
    assert r.stderr.startswith("error: cannot create branch main/x: branch main exists"), r.stderr
    assert "NotADirectoryError" not in r.stderr
