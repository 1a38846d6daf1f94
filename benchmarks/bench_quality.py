"""Ingest quality on real files (issue 18), before and after, side by side (run by hand).

    .venv/bin/python benchmarks/bench_quality.py [--before REV] [--peer-python PATH]

Prints, for this tree and for the code at `--before` (default: the commit before issue 18's
changes, read with `git show`, nothing checked out):

- image near-dup precision/recall on the Adwaita icon theme (sizes of one icon are
  duplicates, different icons are not; aliases of one picture count as one icon), pairs
  over all images, by the tree's own pairwise rule (the thumbnail rule of
  `pipelines/dedup/phash.py`; pHash distance <= 4 before it);
- PII precision/recall per kind on Debian copyright files and changelogs with synthetic
  PII and look-alikes planted (`tests/pipelines/quality_sets.py`), and, with
  `--peer-python` (a Python where `scrubadub` is installed), scrubadub 2.0 on the same set;
- near-duplicate recall on generated CJK/Thai texts (1% and 2% of characters edited);
- clean throughput (docs/s, CPU time) of the text filter on bench_ingest's corpus.

The ingest throughput with MinHash is `benchmarks/bench_ingest.py` (run it on both trees).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "pipelines"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

BEFORE = "938c9d2"  # the tip before issue 18's quality changes


def checkout_before(rev: str) -> str:
    """The packages of `rev` in a temporary directory (git archive), for a subprocess."""
    out = tempfile.mkdtemp(prefix="dv-before-")
    tar = subprocess.run(
        ["git", "-C", ROOT, "archive", rev, "pipelines", "dataversion"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", out], input=tar, check=True)
    return out


# ---------------------------------------------------------------- measurements (in a child)


def measure_phash() -> dict:
    """Pairwise P/R of the tree's image rule: the thumbnail rule (`phash.near_images`)
    where the tree has it, a pHash Hamming distance <= 4 before it."""
    import numpy as np
    from quality_sets import adwaita_icons, pairwise_pr, pairwise_pr_keys

    from pipelines.filters.image import check_image

    icons = adwaita_icons()
    if icons is None:
        return {"skipped": "no Adwaita icon theme (apt-get install -y adwaita-icon-theme)"}
    paths, _, labels = icons
    t = time.process_time()
    results = [check_image(open(p, "rb").read()) for p in paths]
    dt = time.process_time() - t
    hashes = np.array([r.phash for r in results], np.uint64)
    try:
        from pipelines.config import DedupRules
        from pipelines.dedup.phash import image_keys
    except ImportError:  # a tree before the thumbnail rule
        p, r = pairwise_pr(hashes, labels, 4)
        rule = "pHash distance <= 4"
    else:
        keys = image_keys(hashes, [r.thumb for r in results])
        p, r = pairwise_pr_keys(keys, labels, DedupRules())
        rule = "thumbnail rule"
    return {
        "images": len(paths),
        "precision": p,
        "recall": r,
        "images_per_s": len(paths) / dt,
        "rule": rule,
    }


def measure_pii() -> dict:
    from quality_sets import pii_corpus, pii_scores

    corpus = pii_corpus(seed=0)
    if corpus is None:
        return {"skipped": "no Debian copyright files or changelogs"}
    texts, labels = corpus
    try:
        from pipelines.filters.pii import find_pii

        found = [find_pii(t.encode()) for t in texts]
    except ImportError:  # the code before: placeholders only, spans recovered by diffing
        from pipelines.filters.text import redact_pii

        found = [_spans_from_placeholders(t, redact_pii(t)[0]) for t in texts]
    return {"docs": len(texts), "scores": pii_scores(found, labels)}


def _spans_from_placeholders(before: str, after: str) -> list[tuple[int, int, str]]:
    """Byte spans of `before` that `after` replaced by <KIND> placeholders (difflib)."""
    import difflib
    import re

    spans = []
    ops = difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in ops:
        if tag != "replace":
            continue
        for m in re.finditer(r"<(EMAIL|PHONE|IPV4|CARD)>", after[j1:j2]):
            s = len(before[:i1].encode())
            spans.append((s, s + len(before[i1:i2].encode()), m.group(1).lower()))
            break
    return spans


def measure_cjk() -> dict:
    import numpy as np
    from quality_sets import cjk_near_duplicates

    from pipelines.config import DedupRules
    from pipelines.dedup.lsh import minhash_clusters
    from pipelines.dedup.minhash import minhash_signatures

    rules = DedupRules()
    out = {}
    for edits in (0.01, 0.02):
        texts, pairs = cjk_near_duplicates(edits=edits)
        sigs = minhash_signatures(texts)
        reps = minhash_clusters(
            sigs, np.arange(len(texts)), bands=rules.bands, threshold=rules.text_threshold
        )
        out[f"recall_{edits:.0%}_edits"] = float(np.mean([reps[a] == reps[b] for a, b in pairs]))
    return out


def measure_clean() -> dict:
    from bench_ingest import corpus

    from pipelines.filters.text import clean_texts

    raw = [d.encode() for d in corpus(20000)]
    best = 1e9
    for _ in range(3):
        t = time.process_time()
        for i in range(0, len(raw), 2048):
            clean_texts(raw[i : i + 2048])
        best = min(best, time.process_time() - t)
    return {"docs_per_s": len(raw) / best}


MEASURES = {"phash": measure_phash, "pii": measure_pii, "cjk": measure_cjk, "clean": measure_clean}


def child(which: str) -> None:
    print(json.dumps(MEASURES[which](), default=float))


def run_child(tree: str, which: str, python: str = sys.executable) -> dict:
    env = {**os.environ, "PYTHONPATH": tree}
    res = subprocess.run(
        [python, os.path.abspath(__file__), "--child", which, "--tree", tree],
        capture_output=True,
        text=True,
        env=env,
    )
    if res.returncode:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the peer library


def measure_scrubadub(python: str) -> dict:
    """scrubadub 2.0's default detectors on the same labelled set, in its own Python."""
    from quality_sets import pii_corpus, pii_scores

    texts, labels = pii_corpus(seed=0)
    code = (
        "import json,sys,scrubadub\n"
        "texts=json.load(sys.stdin)\n"
        "s=scrubadub.Scrubber()\n"
        "out=[[(f.beg,f.end,f.type) for f in s.iter_filth(t)] for t in texts]\n"
        "print(json.dumps(out))\n"
    )
    t = time.monotonic()
    res = subprocess.run(
        [python, "-c", code], input=json.dumps(texts), capture_output=True, text=True
    )
    dt = time.monotonic() - t
    if res.returncode:
        return {"error": res.stderr.strip().splitlines()[-1]}
    kind_of = {"email": "email", "phone": "phone", "credit_card": "card", "credential": "api_key"}
    found = []
    for text, spans in zip(texts, json.loads(res.stdout)):
        enc = []
        for beg, end, typ in spans:
            if typ in kind_of:
                s = len(text[:beg].encode())
                enc.append((s, s + len(text[beg:end].encode()), kind_of[typ]))
        found.append(enc)
    scores = pii_scores(found, labels)
    return {"docs_per_s": len(texts) / dt, "scores": scores, "kinds": sorted(set(kind_of.values()))}


# ---------------------------------------------------------------- report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default=BEFORE, help="git revision to compare with")
    ap.add_argument("--peer-python", default=None, help="a python with scrubadub installed")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tree", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, args.tree)
        child(args.child)
        return
    print(f"load average at start: {os.getloadavg()}")
    before = checkout_before(args.before)
    res = {w: (run_child(before, w), run_child(ROOT, w)) for w in MEASURES}

    b, a = res["phash"]
    print(f"\nimage near-dups on the Adwaita icons (pairs; {b.get('rule')} -> {a.get('rule')})")
    if "skipped" in a:
        print(f"  skipped: {a['skipped']}")
    else:
        print(f"  {a['images']} images")
        for k in ("precision", "recall", "images_per_s"):
            print(f"  {k:<12} {b.get(k, float('nan')):10.4f} -> {a[k]:10.4f}")

    print("\nPII on Debian copyright files + changelogs, planted values   precision / recall")
    b, a = res["pii"]
    peer = measure_scrubadub(args.peer_python) if args.peer_python else None
    if "skipped" in a:
        print(f"  skipped: {a['skipped']}")
    else:
        head = f"  {'kind':<8} {'before':>15} {'after':>15}"
        if peer and "scores" in peer:
            head += f" {'scrubadub 2.0':>15}"
        print(head + f"   ({a['docs']} docs)")
        for kind, s in a["scores"].items():
            o = b.get("scores", {}).get(kind)
            line = f"  {kind:<8} {_pr(o):>15} {_pr(s):>15}"
            if peer and "scores" in peer:
                line += f" {_pr(peer['scores'][kind]) if kind in peer['kinds'] else 'n/a':>15}"
            print(line)
        if peer:
            print(f"  scrubadub: {peer.get('docs_per_s', 0):,.0f} docs/s {peer.get('error', '')}")

    print("\nCJK/Thai near-duplicates (generated, MinHash 0.8)   before -> after")
    b, a = res["cjk"]
    for k, v in a.items():
        print(f"  {k:<18} {b.get(k, float('nan')):.3f} -> {v:.3f}")

    b, a = res["clean"]
    print(
        f"\ntext cleaning + redaction, one core (CPU time): {b.get('docs_per_s', 0):,.0f} -> "
        f"{a.get('docs_per_s', 0):,.0f} docs/s ({a.get('docs_per_s', 0) / max(1, b.get('docs_per_s', 1)):.2f}x)"
    )
    print(f"load average at end: {os.getloadavg()}")


def _pr(s: dict | None) -> str:
    if not s or s.get("tp", 0) + s.get("fn", 0) == 0:
        return "-"
    return f"{s['precision']:.3f} / {s['recall']:.3f}"


if __name__ == "__main__":
    main()
