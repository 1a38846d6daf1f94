"""`dataversion checkout | rm` (init and add run in every `cli` fixture)."""

from __future__ import annotations

import json


def test_checkout_and_rm(cli, tmp_path):
    cli("checkout", "main", tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "b.txt").read_text() == "second text"
    cli("rm", "--source", "sub/")
    assert [r["source"] for r in json.loads(cli("ls", "--json").stdout)] and all(
        not r["source"].startswith("sub/") for r in json.loads(cli("ls", "--json").stdout)
    )


def test_add_accounts_for_every_file_whose_content_another_file_holds(cli, tmp_path):
    """Two files with the same content are one record (ids are content hashes): the second is
    reported as a duplicate of the kept record and `duplicates` lists it (a user's `add`
    dropped it silently: +1 record, nothing said of b.txt)."""
    import json

    d = tmp_path / "d2"
    d.mkdir()
    (d / "a.txt").write_text("same content in two files here")
    (d / "b.txt").write_text("same content in two files here")
    (d / "c.txt").write_text("other content")
    r = cli("add", d, "--json")
    out = json.loads(r.stdout)
    assert out["added"] == 2
    assert [x["source"] for x in out["duplicates"]] == ["b.txt"]
    kept = out["duplicates"][0]["duplicate_of"]
    listed = json.loads(cli("duplicates", "main", "--json").stdout)
    assert [(x["source"], x["duplicate_of"], x["kind"], x["kept_source"]) for x in listed] == [("b.txt", kept, "exact", "a.txt")]
    show = json.loads(cli("show", "main", "--json").stdout)
    counts = show["counts"]
    assert counts["inputs"] == counts["added"] + counts["already_present"] + counts["duplicates"] + counts["rejected"]
    (d / "e.txt").write_text("fresh text")
    (d / "f.txt").write_text("fresh text")
    r = cli("add", d)
    assert "duplicate f.txt" in r.stderr and "duplicate b.txt" in r.stderr  # b.txt: the same as a.txt, again
    assert "+1 -0 records (2 already present, 2 duplicate(s) stored once" in r.stdout


def test_checkout_keeps_backslashes_of_posix_file_names(cli, tmp_path):
    """On POSIX a backslash is a character of a file name: `add` read `back\\slash.txt` and
    checkout writes it back so (it wrote `back/slash.txt`, and refused the whole checkout
    for a file named `\\tmp\\abs.txt`)."""
    import os

    d = tmp_path / "bs"
    (d / "extra").mkdir(parents=True)
    names = ["extra/back\\slash.txt", "\\tmp\\abs.txt", "x\\..\\..\\escape.txt"]
    for i, n in enumerate(names):
        (d / n).write_text(f"text of file number {i}")
    cli("add", d)
    out = tmp_path / "out"
    cli("checkout", "main", out)
    for i, n in enumerate(names):
        assert (out / n).read_text() == f"text of file number {i}"
    written = {os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs}
    assert not any(os.path.isabs(p) or p.startswith("..") for p in written)
    assert not (tmp_path / "escape.txt").exists() and not (out / "extra" / "back").exists()


def test_init_on_a_file_is_bad_input_in_one_line(tmp_path):
    from click.testing import CliRunner

    from dataversion.cli import main

    f = tmp_path / "ing1.json"
    f.write_text("{}")
    r = CliRunner().invoke(main, ["init", "--repo", str(f)])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and "is a file" in r.stderr and "Errno" not in r.stderr
    r = CliRunner().invoke(main, ["init", "--repo", str(f / "sub")])
    assert r.exit_code == 2 and "is a file" in r.stderr, r.output


def test_a_newline_in_a_file_name_keeps_each_record_on_one_line(cli, tmp_path):
    import json

    d = tmp_path / "nl"
    d.mkdir()
    (d / "two\nlines.txt").write_text("a text whose file name holds a newline")
    cli("add", d)
    lines = cli("ls", "main").stdout.splitlines()
    assert any(line.endswith('"two\\nlines.txt"') for line in lines), lines
    assert all(line.split()[0].isalnum() and len(line.split()[0]) == 32 for line in lines)
    diff = cli("diff", "main~1", "main", "--records").stdout.splitlines()
    assert any('"two\\nlines.txt"' in line for line in diff), diff
    # --json carries the name as it is
    assert "two\nlines.txt" in {r["source"] for r in json.loads(cli("ls", "main", "--json").stdout)}


def test_checkout_into_a_non_empty_directory_is_refused(cli, tmp_path):
    """A second checkout into the same directory left the first commit's files beside the
    second's, and overwrote a user's file of the same name without a word."""
    out = tmp_path / "co"
    cli("checkout", "main", out)
    mine = out / "a.txt"
    mine.write_text("my notes")
    r = cli("checkout", "main~1", out, code=2)
    assert r.stderr.startswith("error: cannot check out into") and "not empty" in r.stderr
    assert mine.read_text() == "my notes"
    empty = tmp_path / "empty"
    empty.mkdir()
    cli("checkout", "main~1", empty)  # an existing empty directory is fine
    assert (empty / "a.txt").exists() and not (empty / "c.txt").exists()


def test_init_of_an_existing_repository_says_so(cli):
    r = cli("init")
    assert r.stdout.startswith("a dataversion repository is already at ") and "left unchanged" in r.stdout
