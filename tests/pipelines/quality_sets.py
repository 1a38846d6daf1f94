"""Labelled sets built from real files on a Debian machine, for the quality tests of issue
18 and `benchmarks/bench_quality.py` (which imports this module): image near-duplicates on
the Adwaita icon theme. Each builder returns None when its files are missing (the caller
skips with a reason)."""

from __future__ import annotations

import os

import numpy as np

ADWAITA = "/usr/share/icons/Adwaita"


def adwaita_icons(
    root: str = ADWAITA, alias_tolerance: int = 0
) -> tuple[list[str], list, np.ndarray] | None:
    """(paths, decoded RGBA images, icon label per image) of every PNG of the theme.

    Ground truth: the sizes of one icon (`48x48/actions/edit-copy.png` and
    `16x16/actions/edit-copy.png`) are duplicates; different icons are not, except names
    that are aliases of one picture (pixel-identical at some size, such as
    `*-rtl-symbolic` and `*-symbolic-rtl`): a person sees one icon there, so they share a
    label. With `alias_tolerance` > 0, names whose RGBA values differ by at most that much
    at every pixel at some size are aliases too: 16 joins 10 more pairs, the same drawing
    rendered twice with anti-aliasing differences of at most 11 of 255 (`go-home` and
    `user-home`, `camera-video` and `folder-videos`); the next closest pair differs by 26.
    """
    from PIL import Image

    if not os.path.isdir(root):
        return None
    paths = sorted(
        os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".png")
    )
    if len(paths) < 100:
        return None
    names = [os.path.relpath(p, root).split("/", 1)[1] for p in paths]
    images = []
    for p in paths:
        with Image.open(p) as im:
            im.load()
            images.append(im.copy())
    parent = {n: n for n in names}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first: dict[tuple, str] = {}
    for n, im in zip(names, images):
        key = (im.size, im.convert("RGBA").tobytes())
        if key in first:
            parent[find(n)] = find(first[key])
        else:
            first[key] = n
    if alias_tolerance > 0:
        by_size: dict[tuple, list[int]] = {}
        for k, im in enumerate(images):
            by_size.setdefault(im.size, []).append(k)
        for ks in by_size.values():
            px = np.stack([np.asarray(images[k].convert("RGBA"), np.int16).ravel() for k in ks])
            for a in range(len(ks) - 1):
                close = np.abs(px[a + 1 :] - px[a]).max(axis=1) <= alias_tolerance
                for b in np.flatnonzero(close).tolist():
                    parent[find(names[ks[a]])] = find(names[ks[a + 1 + b]])
    roots = [find(n) for n in names]
    ids = {r: i for i, r in enumerate(sorted(set(roots)))}
    return paths, images, np.array([ids[r] for r in roots])


def pairwise_pr_keys(keys: np.ndarray, labels: np.ndarray, rules) -> tuple[float, float]:
    """(precision, recall) over all pairs: predicted duplicate = `phash.near_images` of the
    two image keys (the pipeline's pairwise rule), true duplicate = same label."""
    from pipelines.dedup.phash import near_images

    n = len(keys)
    tp = fp = fn = 0
    for i in range(n - 1):
        rest = keys[i + 1 :]
        pred = near_images(
            np.repeat(keys[i : i + 1], len(rest), axis=0), rest, rules.phash_max_distance
        )[1]
        same = labels[i + 1 :] == labels[i]
        tp += int(np.count_nonzero(pred & same))
        fp += int(np.count_nonzero(pred & ~same))
        fn += int(np.count_nonzero(~pred & same))
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


def pairwise_pr(hashes: np.ndarray, labels: np.ndarray, max_distance: int) -> tuple[float, float]:
    """(precision, recall) over all pairs: predicted duplicate = Hamming distance <=
    `max_distance`, true duplicate = same label."""
    from pipelines.dedup.lsh import popcount64

    h = np.asarray(hashes, np.uint64)
    n = len(h)
    tp = fp = fn = 0
    for i in range(n - 1):
        d = popcount64(h[i + 1 :] ^ h[i])
        pred = d <= max_distance
        same = labels[i + 1 :] == labels[i]
        tp += int(np.count_nonzero(pred & same))
        fp += int(np.count_nonzero(pred & ~same))
        fn += int(np.count_nonzero(~pred & same))
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


# ---------------------------------------------------------------- PII

DOC_ROOT = "/usr/share/doc"
_REAL_EMAIL = None


def real_texts(limit: int = 600, max_bytes: int = 6000, root: str = DOC_ROOT) -> list[str] | None:
    """Debian copyright files and changelogs (gzipped), each cut to `max_bytes` at a line
    end, the real e-mail addresses in them replaced by a plain word (they would be true
    e-mails the labels do not know). None when fewer than 50 are found."""
    import glob
    import gzip
    import re

    global _REAL_EMAIL
    if _REAL_EMAIL is None:
        _REAL_EMAIL = re.compile(r"\S+@\S+")
    files = sorted(glob.glob(f"{root}/*/copyright"))[: limit // 2]
    files += sorted(glob.glob(f"{root}/*/changelog.Debian.gz"))[: limit - len(files)]
    out = []
    for f in files:
        try:
            raw = gzip.open(f).read() if f.endswith(".gz") else open(f, "rb").read()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        if len(text) > max_bytes:
            text = text[: text.rfind("\n", 0, max_bytes) + 1]
        text = _REAL_EMAIL.sub("someone", text)
        if text.strip():
            out.append(text)
    return out if len(out) >= 50 else None


# the kinds of `pipelines.filters.pii`, repeated so the set builds without that module
# (benchmarks/bench_quality.py measures older code on it too)
PII_KINDS = ("email", "api_key", "iban", "card", "ipv6", "ipv4", "phone")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _luhn_complete(rng, prefix: str, length: int) -> str:
    luhn_valid = _luhn_valid
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    return next(body + str(d) for d in range(10) if luhn_valid(body + str(d)))


def _iban(rng, country: str, length: int, letters: int = 0) -> str:
    import string

    bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(letters))
    bban += "".join(str(rng.randrange(10)) for _ in range(length - 4 - letters))
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    return f"{country}{check:02d}{bban}"


def _alnum(rng, n: int, alphabet: str | None = None) -> str:
    import string

    alphabet = alphabet or string.ascii_letters + string.digits
    return "".join(rng.choice(alphabet) for _ in range(n))


def synthetic_pii(rng, kind: str) -> str:
    """One made-up value of a PII kind, in one of the formats people write."""
    import string

    if kind == "email":
        local = rng.choice(["jane.doe", "j_smith+news", "admin", "x1999", "maria.garcia"])
        dom = rng.choice(
            ["example.org", "mail.example.com", "uni-bonn.de", "posteo.net", "a.co.uk"]
        )
        return rng.choice(["{}@{}", "<{}@{}>", "mailto:{}@{}"]).format(local, dom)
    if kind == "phone":
        d = lambda n: "".join(str(rng.randrange(10)) for _ in range(n))  # noqa: E731
        return rng.choice(
            [
                f"+1 {d(3)}-555-{d(4)}",
                f"({rng.randrange(200, 999)}) 555-{d(4)}",
                f"{rng.randrange(200, 999)}-555-{d(4)}",
                f"+44 20 {d(4)} {d(4)}",
                f"+49 30 {d(6)}",
                f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
                f"0{d(2)} {d(2)} {d(2)} {d(2)} {d(2)}",
                f"{rng.randrange(200, 999)}.{d(3)}.{d(4)}",
                f"+81-3-{d(4)}-{d(4)}",
                f"+1-800-555-{d(4)}",
            ]
        )
    if kind == "ipv4":
        a = [rng.randrange(1, 255) for _ in range(4)]
        return (
            rng.choice(["{}.{}.{}.{}", "{}.{}.{}.{}", "{}.{}.{}.{}:8080"]).format(*a).split(":")[0]
        )
    if kind == "ipv6":
        h = lambda: format(rng.randrange(1, 0xFFFF), "x")  # noqa: E731
        return rng.choice(
            [
                f"2001:db8::{h()}",
                f"fe80::{h()}:{h()}:{h()}:{h()}",
                ":".join(format(rng.randrange(0x10000), "04x") for _ in range(8)),
                f"2001:db8:{h()}:{h()}::{h()}",
                f"::ffff:192.0.2.{rng.randrange(1, 255)}",
            ]
        )
    if kind == "card":
        num = rng.choice(
            [
                _luhn_complete(rng, "4", 16),
                _luhn_complete(rng, "5" + str(rng.randrange(1, 6)), 16),
                _luhn_complete(rng, "37", 15),
            ]
        )
        if len(num) == 15:
            return rng.choice([num, f"{num[:4]} {num[4:10]} {num[10:]}"])
        sep = rng.choice(["", " ", "-"])
        return sep.join(num[i : i + 4] for i in range(0, 16, 4))
    if kind == "iban":
        country, length, letters = rng.choice(
            [
                ("DE", 22, 0),
                ("FR", 27, 0),
                ("NL", 18, 4),
                ("GB", 22, 4),
                ("ES", 24, 0),
                ("IT", 27, 1),
            ]
        )
        iban = _iban(rng, country, length, letters)
        if country == "IT":  # the letter comes first in an Italian BBAN
            iban = _iban_it(rng)
        return rng.choice([iban, " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))])
    if kind == "api_key":
        up = string.ascii_uppercase + string.digits
        return rng.choice(
            [
                "AKIA" + _alnum(rng, 16, up),
                "ghp_" + _alnum(rng, 36),
                "github_pat_" + _alnum(rng, 22) + "_" + _alnum(rng, 59),
                "xoxb-" + _alnum(rng, 11, string.digits) + "-" + _alnum(rng, 24),
                "sk_live_" + _alnum(rng, 24),
                "AIza" + _alnum(rng, 35, string.ascii_letters + string.digits + "_-"),
                "eyJhbGciOiJIUzI1NiJ9.eyJ" + _alnum(rng, 30) + "." + _alnum(rng, 43),
                "glpat-" + _alnum(rng, 20),
            ]
        )
    raise ValueError(kind)


def _iban_it(rng) -> str:
    import string

    bban = rng.choice(string.ascii_uppercase) + "".join(str(rng.randrange(10)) for _ in range(22))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + "IT00")) % 97
    return f"IT{check:02d}{bban}"


# look-alikes planted beside the PII: none of them may be redacted
HARD_NEGATIVES = [
    "Copyright: 1999-2022",
    "Copyright (C) 2001, 2003-2005",
    "Boston, MA 02110-1301 USA",
    "$Id: strftime.c,v 1.2.2.1 2003/01/01 12:00:00 joe Exp $",
    "version 1.0.0.3",
    "released 2022-11-05 12:30:45 +0100",
    "on 05/11/2022",
    "build 20221105.1-2",
    "section 4.2.1.3",
    "(1.2.10-3+deb12u1)",
    "OID 1.3.6.1.4.1.311",
    "at 12:30:45",
    "std::vector<int>",
    "ISBN 978-3-16-148410-0",
    "icon@2x.png",
    "pages 1999-2004",
]


def pii_corpus(seed: int = 0, per_doc: int = 4, limit: int = 600):
    """Real texts with synthetic PII and look-alikes planted between their lines' words.

    Returns (texts, labels) with labels[i] a list of (start, end, kind) UTF-8 byte spans of
    the planted PII in texts[i], or None when the real texts are missing.
    """
    import random

    KINDS = PII_KINDS
    base = real_texts(limit)
    if base is None:
        return None
    rng = random.Random(seed)
    texts, labels = [], []
    k = 0
    for text in base:
        words = text.split(" ")
        slots = sorted(rng.sample(range(1, len(words)), min(per_doc, len(words) - 1)))
        pieces: list[bytes] = []
        spans = []
        pos = 0
        last = 0
        for slot in slots:
            chunk = (" ".join(words[last:slot]) + " ").encode()
            pieces.append(chunk)
            pos += len(chunk)
            if rng.random() < 0.25:
                neg = rng.choice(HARD_NEGATIVES).encode() + b" "
                pieces.append(neg)
                pos += len(neg)
            kind = KINDS[k % len(KINDS)]
            k += 1
            value = synthetic_pii(rng, kind).encode()
            if value.startswith(b"<"):
                value_span = (pos + 1, pos + len(value) - 1)
            elif value.startswith(b"mailto:"):
                value_span = (pos + 7, pos + len(value))
            else:
                value_span = (pos, pos + len(value))
            pieces.append(value + b" ")
            spans.append((*value_span, kind))
            pos += len(value) + 1
            last = slot
        pieces.append(" ".join(words[last:]).encode())
        texts.append(b"".join(pieces).decode())
        labels.append(spans)
    return texts, labels


def pii_scores(found: list[list[tuple[int, int, str]]], labels) -> dict[str, dict[str, float]]:
    """Per kind: precision, recall, true/false positives, false negatives. A found span is
    right when it covers a planted value of its kind whole (a partial redaction leaks)."""
    stats = {k: {"tp": 0, "fp": 0, "fn": 0} for k in PII_KINDS}
    for got, want in zip(found, labels):
        matched = set()
        for s, e, kind in got:
            hit = next(
                (
                    i
                    for i, (ls, le, lk) in enumerate(want)
                    if lk == kind and s <= ls and e >= le and i not in matched
                ),
                None,
            )
            if hit is None:
                stats[kind]["fp"] += 1
            else:
                matched.add(hit)
                stats[kind]["tp"] += 1
        for i, (_, _, lk) in enumerate(want):
            if i not in matched:
                stats[lk]["fn"] += 1
    for st in stats.values():
        st["precision"] = st["tp"] / max(1, st["tp"] + st["fp"])
        st["recall"] = st["tp"] / max(1, st["tp"] + st["fn"])
    return stats


# ---------------------------------------------------------------- unspaced scripts


def cjk_near_duplicates(n_docs: int = 300, length: int = 400, edits: float = 0.02, seed: int = 0):
    """A generated corpus of texts written without spaces (CJK ideographs, kana and
    punctuation; Thai for a sixth of them), each with one near-duplicate: `edits` of its
    characters substituted, inserted or deleted. Returns (texts, pairs): texts[2i] and
    texts[2i + 1] are near-duplicates, any other pair is not."""
    import random

    rng = random.Random(seed)
    han = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    kana = [chr(c) for c in range(0x3041, 0x3097)]
    thai = [chr(c) for c in range(0x0E01, 0x0E2F)] + [chr(c) for c in range(0x0E30, 0x0E3A)]
    punct = ["、", "。", "「", "」", "，"]
    texts = []
    for i in range(n_docs):
        alphabet = thai if i % 6 == 5 else (han * 3 + kana)
        words = []
        while sum(map(len, words)) < length:
            w = "".join(rng.choice(alphabet) for _ in range(rng.choice((1, 2, 2, 3))))
            words.append(w)
            if alphabet is not thai and rng.random() < 0.08:
                words.append(rng.choice(punct))
        doc = "".join(words)[:length]
        chars = list(doc)
        for _ in range(max(1, int(len(chars) * edits))):
            k = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.5:
                chars[k] = rng.choice(alphabet)
            elif op < 0.75:
                chars.insert(k, rng.choice(alphabet))
            else:
                del chars[k]
        texts += [doc, "".join(chars)]
    return texts, [(2 * i, 2 * i + 1) for i in range(n_docs)]
