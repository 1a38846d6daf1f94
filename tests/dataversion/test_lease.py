"""The store lease: compare-and-swap semantics on every store, expiry takeover, heartbeat,
and two real processes contending for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from dataversion.errors import ConflictError
from dataversion.lease import Lease, LeaseLostError, LeaseRecord, lease_key, read_lease
from dataversion.stores import MemoryStore, open_store


@pytest.fixture
def store(repo_url):
    s = open_store(repo_url, create=True)
    yield s
    s.close()


class FakeClock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_one_holder_at_a_time(store):
    a, b = Lease(store, "main", ttl=30, owner="a"), Lease(store, "main", ttl=30, owner="b")
    assert a.try_acquire({"slot": "s1"})
    assert a.previous is None
    assert not b.try_acquire()
    assert b.previous.owner == "a"  # who holds it, for the skip message
    rec = read_lease(store, "main")
    assert rec.owner == "a" and not rec.released and rec.data == {"slot": "s1"}
    a.release()
    assert read_lease(store, "main").released
    assert b.try_acquire()
    assert b.previous.owner == "a" and b.previous.data == {"slot": "s1"}  # read atomically with the swap
    with pytest.raises(ConflictError):
        with Lease(store, "main", ttl=30, owner="c"):
            pass
    b.release()
    with Lease(store, "main", ttl=30, owner="c") as c:
        assert c.held
    assert read_lease(store, "main").released


def test_expired_lease_is_taken_over_and_the_old_holder_cannot_clobber_it(store):
    clock = FakeClock()
    a = Lease(store, "main", ttl=10, owner="a", clock=clock)
    b = Lease(store, "main", ttl=10, owner="b", clock=clock)
    assert a.try_acquire()
    clock.t += 9.9
    assert not b.try_acquire()  # not yet expired
    clock.t += 0.2
    assert b.try_acquire()  # a stopped renewing: b takes over
    assert b.previous.owner == "a"
    with pytest.raises(LeaseLostError):
        a.renew()
    assert a.lost.is_set() and not a.held
    a.release()  # must not free b's lease
    rec = read_lease(store, "main")
    assert rec.owner == "b" and not rec.released


def test_renew_after_a_takeover_is_a_conflict(store):
    clock = FakeClock()
    a = Lease(store, "main", ttl=10, owner="a", clock=clock)
    assert a.try_acquire()
    # b takes over a lease that a still believes live (e.g. a's clock runs slow).
    clock.t += 11
    b = Lease(store, "main", ttl=10, owner="b", clock=clock)
    assert b.try_acquire()
    clock.t -= 5
    with pytest.raises(LeaseLostError):
        a.renew()  # the version a holds is gone: the CAS fails
    assert read_lease(store, "main").owner == "b"


def test_heartbeat_keeps_the_lease_beyond_its_ttl(store):
    a = Lease(store, "feature/x", ttl=0.6, owner="a")
    b = Lease(store, "feature/x", ttl=0.6, owner="b")
    assert a.try_acquire()
    a.start_heartbeat(0.1)
    time.sleep(1.2)
    assert not b.try_acquire() and a.held
    a.release()
    assert b.try_acquire()
    b.release()


def test_threads_racing_for_a_free_lease_one_wins(store):
    store.put(lease_key("main"), LeaseRecord("old", "n", 0, 0, 0, 1, released=True).to_bytes())
    leases = [Lease(store, "main", ttl=30, owner=f"t{i}") for i in range(8)]
    results: list[bool] = [False] * len(leases)
    barrier = threading.Barrier(len(leases))

    def contend(i: int) -> None:
        barrier.wait()
        results[i] = leases[i].try_acquire()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 1
    assert read_lease(store, "main").owner == f"t{results.index(True)}"


def test_unreadable_lease_is_free():
    store = MemoryStore()
    store.put(lease_key("main"), b"{not json")
    a = Lease(store, "main", ttl=5, owner="a")
    assert a.try_acquire()
    assert read_lease(store, "main").owner == "a"


def test_lease_never_writes_unconditionally():
    class NoPlainPut(MemoryStore):
        def put(self, key, data):
            raise AssertionError(f"plain put of {key}")

        def delete(self, key):
            raise AssertionError(f"delete of {key}")

    store = NoPlainPut()
    clock = FakeClock()
    a, b = Lease(store, "main", ttl=1, owner="a", clock=clock), Lease(store, "main", ttl=1, owner="b", clock=clock)
    assert a.try_acquire()
    a.renew()
    clock.t += 2
    assert b.try_acquire()
    b.release()
    assert a.try_acquire()
    a.release()


_CONTENDER = textwrap.dedent("""
    import json, os, sys, time
    from dataversion.lease import Lease
    from dataversion.stores import open_store
    url, name, out, barrier, turns = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    lease = Lease(open_store(url), "main", ttl=2.0, owner=name)
    open(os.path.join(barrier, name), "w").close()
    while len(os.listdir(barrier)) < 2:  # start together: both are running before either tries
        time.sleep(0.01)
    refused = 0
    with open(out, "a") as f:
        for _ in range(turns):
            while not lease.try_acquire():
                refused += 1
                time.sleep(0.01)
            lease.start_heartbeat(0.3)
            start = time.time()
            time.sleep(0.15)
            end = time.time()
            lease.release()
            f.write(json.dumps([name, start, end, refused]) + "\\n"); f.flush()
""")


def test_two_processes_never_hold_the_lease_at_once(store, tmp_path):
    """Two processes each take the lease a fixed number of times (not for a fixed time, which
    a loaded machine can starve), starting together; their holds never overlap."""
    out, barrier = tmp_path / "held.jsonl", tmp_path / "barrier"
    barrier.mkdir()
    turns = 6
    procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, store.url, name, str(out), str(barrier), str(turns)])
             for name in ("p1", "p2")]
    for p in procs:
        assert p.wait(120) == 0
    spans = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda s: s[1])
    assert sorted(s[0] for s in spans) == ["p1"] * turns + ["p2"] * turns
    assert max(s[3] for s in spans) > 0  # someone found the lease held: a real contention
    for (_, _, end, _), (_, start, _, _) in zip(spans, spans[1:]):
        assert end <= start, "two processes held the lease at the same time"


def test_killed_holder_blocks_only_until_expiry(store):
    code = textwrap.dedent("""
        import sys, time
        from dataversion.lease import Lease
        from dataversion.stores import open_store
        lease = Lease(open_store(sys.argv[1]), "main", ttl=1.0, owner="victim")
        assert lease.try_acquire()
        lease.start_heartbeat(0.2)
        print("held", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code, store.url], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    time.sleep(1.3)  # the heartbeat keeps it alive past its ttl
    b = Lease(store, "main", ttl=5, owner="b")
    assert not b.try_acquire()
    p.kill()
    p.wait()
    killed_at = time.time()
    assert b.acquire(timeout=5, poll=0.05)
    assert time.time() - killed_at <= 1.5  # at most one ttl (plus a poll) after the last heartbeat
    assert b.previous.owner == "victim"
    b.release()
