"""Real processes racing on one branch, and commits killed half way, on both stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from dataversion import Repo
from dataversion.records import make_text_records

# A child process that builds a commit on the branch tip, then waits at a file barrier so
# both children attempt the ref compare-and-swap at the same moment, through the real CLI.
RACER = textwrap.dedent(
    """
    import os, sys, time
    from dataversion import refs
    barrier_dir, me = sys.argv[1], sys.argv[2]
    original = refs.Refs.set_if_equals
    def synchronized(self, *a, **kw):
        open(os.path.join(barrier_dir, me), "w").close()
        deadline = time.time() + 60
        while len(os.listdir(barrier_dir)) < 2 and time.time() < deadline:
            time.sleep(0.01)
        return original(self, *a, **kw)
    refs.Refs.set_if_equals = synchronized
    from dataversion.cli import main
    sys.argv = ["dataversion", "add", sys.argv[3], "-m", "from " + me, *sys.argv[4:]]
    main()
    """
)

# A child that commits and SIGKILLs itself at a chosen point of the write sequence.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from dataversion import Repo, refs, repo as repo_mod, history
    from dataversion.records import make_text_records
    point = sys.argv[2]
    def die(*a, **kw):
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "before_ref":
        refs.Refs.set_if_equals = die
    elif point == "before_history":
        history.write_chunk = die
    elif point == "after_shards":
        repo_mod.Repo.put_blob = die
    r = Repo.open(sys.argv[1])
    texts = ["killed commit record %d " % i + "x" * 2000 for i in range(2000)]
    r.commit(make_text_records(texts), message="never lands", target_shard_bytes=256 * 1024,
             attachments={"note": b"x"})
    """
)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.getcwd() + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_two_processes_committing_to_one_branch(repo_url, tmp_path):
    repo = Repo.init(repo_url)
    base = repo.commit(make_text_records(["base"]), message="base").commit_id
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = []
    for me in ("p1", "p2"):
        src = tmp_path / f"src-{me}"
        src.mkdir()
        (src / f"{me}.txt").write_text(f"content only {me} has")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RACER, str(barrier), me, str(src), "--repo", repo_url],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
            )
        )
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 4], results
    loser = next(r for r in results if r[0] == 4)
    assert "error:" in loser[2] and "another writer" in loser[2] and "Traceback" not in loser[2]
    log = Repo.open(repo_url).log()
    assert len(log) == 2 and log[1]["id"] == base  # the winner's commit on top of base; nothing lost
    winner = next(r for r in results if r[0] == 0)
    assert log[0]["id"][:12] in winner[1]


def _kill_mid_commit(repo_url, point):
    repo = Repo.init(repo_url)
    base = repo.commit(make_text_records(["survivor one", "survivor two"]), message="base").commit_id
    p = subprocess.run([sys.executable, "-c", KILLER, repo_url, point], env=_env(), capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    fresh = Repo.open(repo_url)
    assert fresh.resolve("main") == base
    assert [c["id"] for c in fresh.log()] == [base]
    assert fresh.verify()["ok"]
    leftovers = fresh.gc(dry_run=True, grace_seconds=0)
    fresh.gc(grace_seconds=0)
    assert fresh.verify()["ok"]
    assert sorted(r["source"] or r["record_id"] for r in fresh.ls("main")) == sorted(
        r["source"] or r["record_id"] for r in Repo.open(repo_url).ls(base)
    )
    # the next commit works normally
    again = fresh.commit(make_text_records(["after the crash"]), message="next")
    assert fresh.log()[0]["id"] == again.commit_id and fresh.log()[1]["id"] == base
    return leftovers


def test_kill_before_ref_update_leaves_valid_repo(repo_url):
    leftovers = _kill_mid_commit(repo_url, "before_ref")
    kinds = {k.split("/")[0] for k in leftovers["objects"]}
    assert {"shards", "tree", "packings", "packing", "commits", "history"} <= kinds


def test_kill_after_shards_leaves_valid_repo(repo_url):
    leftovers = _kill_mid_commit(repo_url, "after_shards")
    assert {k.split("/")[0] for k in leftovers["objects"]} >= {"shards"}


def test_kill_at_random_time_leaves_valid_repo(tmp_path):
    """SIGKILL from outside at an arbitrary moment of a large commit."""
    url = f"file://{tmp_path}/repo"
    repo = Repo.init(url)
    base = repo.commit(make_text_records(["base"]), message="base").commit_id
    code = KILLER.replace('point = sys.argv[2]', 'point = "none"')
    for delay in (0.3, 0.8, 1.5):
        p = subprocess.Popen([sys.executable, "-c", code, url, "none"], env=_env())
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        fresh = Repo.open(url)
        tip = fresh.resolve("main")
        assert fresh.verify()["ok"]
        assert tip == base or fresh.read_commit(tip).parents == (base,)
        if tip != base:
            fresh.reset("main", base)
    json.dumps(Repo.open(url).gc(grace_seconds=0))
    assert Repo.open(url).verify()["ok"]
