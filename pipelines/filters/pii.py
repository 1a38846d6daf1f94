"""Personal data and secrets in text: found, typed, replaced by placeholders.

Kinds (`KINDS`) and what counts as one:

- `email`: local@domain.tld (a domain whose last label is a file extension, `icon@2x.png`,
  is no address);
- `phone`: 7 to 15 digits written with separators (`+1 415-555-2671`, `(030) 1234 5678`,
  `555.123.4567`) or a leading `+`. Not a phone: a bare digit run, a date
  (`2022-11-05`, `05/11/2022`), years and year ranges (`1999-2022`, `1999 2003`), a US
  ZIP+4 postal code (`MA 02110-1301`), a version (after `v`, `version`, `release`...);
- `ipv4`: four octets 0-255, not part of a longer dotted number (`1.3.6.1.4.1`) and not a
  version (`$Id: strftime.c,v 1.2.2.1`, `version 1.0.0.3`);
- `ipv6`: eight hex groups, or fewer with one `::` (with at least two groups or an
  embedded IPv4 address: a lone `::1` or `a::b` is too common in code to be an address);
- `card`: 13 to 19 digits, optionally in groups separated by one space or dash, starting
  like a card network's numbers (IIN ranges) and passing the Luhn check;
- `iban`: a country code, two check digits and the account (spaces every four allowed),
  of the country's length where known, passing the ISO 13616 mod-97 check;
- `api_key`: secrets recognized by their issuer's prefix: AWS access key ids (`AKIA`,
  `ASIA`), GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`), Slack
  (`xoxb-`, `xoxp-`, ...), Stripe (`sk_live_`, `rk_live_`, `sk_test_`), Google API keys
  (`AIza`), GitLab (`glpat-`), npm (`npm_`), JSON web tokens (`eyJ...`), PEM private keys.

Speed: a batch is scanned as one UTF-8 buffer. Python's regex engine costs ~20 ns per
character scanned, so no rule scans the whole text: numpy passes find the few places
where a kind can start (an '@', a run of digits and separators, a hex group followed by a
colon, two capitals and two digits, a token prefix after a word boundary), and the rules
run on those places only. Overlaps resolve by priority (`KINDS` order): the digits of an
e-mail or a key are not also a phone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

KINDS = ("email", "api_key", "iban", "card", "ipv6", "ipv4", "phone")
PLACEHOLDERS = {k: f"<{k.upper()}>" for k in KINDS}
_PRIORITY = {k: i for i, k in enumerate(KINDS)}
_PLACEHOLDER_BYTES = {k: v.encode() for k, v in PLACEHOLDERS.items()}

# ---------------------------------------------------------------- checksums


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (card numbers pass it)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_prefix_valid(digits: str) -> bool:
    """The number starts like a card of a network that issues them (IIN ranges: Visa 4,
    Mastercard 51-55 and 2221-2720, Amex 34/37, Diners 30/36/38/39, JCB 35, Discover 6011,
    64-65, UnionPay 62, Maestro 50/56-58/63/67)."""
    d2 = int(digits[:2])
    if digits[0] == "4" or 50 <= d2 <= 58 or d2 in (30, 34, 35, 36, 37, 38, 39, 62, 63, 64, 65, 67):
        return True
    return digits.startswith("6011") or 2221 <= int(digits[:4]) <= 2720


# ISO 13616 lengths of the countries most often seen; others: 15 to 34 characters
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21,
    "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27,
    "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15,
    "PL": 28, "PT": 25, "RO": 24, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "TR": 26, "UA": 29,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    """An IBAN without spaces: known country length, mod-97 check (ISO 13616)."""
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    want = IBAN_LENGTHS.get(iban[:2])
    if want is not None and len(iban) != want:
        return False
    moved = iban[4:] + iban[:4]
    n = "".join(str(int(c, 36)) for c in moved)
    return int(n) % 97 == 1


# ---------------------------------------------------------------- rules on bytes

_EMAIL_LOCAL = np.zeros(256, bool)
_EMAIL_LOCAL[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")] = True
_EMAIL_DOMAIN = re.compile(rb"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.([A-Za-z]{2,})")
_FILE_EXTENSIONS = frozenset(
    b"png jpg jpeg gif svg webp bmp ico tif tiff pdf txt html htm css js json xml py c h "
    b"so zip gz xz bz2 tar deb rpm".split()
)

_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rb"(?<![0-9.])" + _OCTET + rb"(?:\." + _OCTET + rb"){3}(?![0-9]|\.[0-9])")
# one separator style per number: 4-4-4-4(-3), Amex 4-6-5, Diners 4-6-4, or no separator
_CARD = re.compile(
    rb"(?<![0-9])(?:[0-9]{13,19}"
    rb"|[0-9]{4}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:\1[0-9]{1,3})?"
    rb"|[0-9]{4}([ -])[0-9]{6}\2[0-9]{4,5})(?![0-9])"
)
_PHONE = re.compile(
    rb"(?<![0-9+])(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{1,4}){1,5}(?![0-9])"
)
_DATE = re.compile(
    rb"(?:[0-9]{4}[-./][0-9]{1,2}[-./][0-9]{1,2}|[0-9]{1,2}[-./][0-9]{1,2}[-./][0-9]{2,4})"
)
_YEARS = re.compile(
    rb"(?:1[89][0-9]{2}|2[01][0-9]{2})(?:[ ]?[-/][ ]?|[ ])(?:1[89][0-9]{2}|2[01][0-9]{2}|[0-9]{2})"
)
_YEAR_FIRST = re.compile(rb"(?:1[89][0-9]{2}|20[0-9]{2})(?:-[0-9]{2,4})? ")
_ZIP4 = re.compile(rb"[0-9]{5}-[0-9]{4}")
_NOT_PHONE = re.compile(
    b"(?:"
    + _DATE.pattern
    + b"|"
    + _ZIP4.pattern
    + rb"\Z|"
    + _YEARS.pattern
    + rb"\Z|"
    + _YEAR_FIRST.pattern
    + b")"
)
_VERSION_BEFORE = re.compile(
    rb"(?:\bv|\bversion|\bver|\brev|\brevision|\brelease|\bsection|\bpolicy|\bisbn|,v"
    rb"|\bclause|\bc\.f\.r|\bcfr|\bdfars|\bfar|\bparagraph)(?:[ .:]|[ ]to[ ])?[ \t]*$",
    re.IGNORECASE,
)
_IPV6 = re.compile(
    rb"(?<![0-9A-Fa-f:.])(?:"
    rb"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
    rb"|(?:[0-9A-Fa-f]{1,4}:){1,6}(?::[0-9A-Fa-f]{1,4}){1,6}"
    rb"|(?:[0-9A-Fa-f]{1,4}:){2,7}:"
    rb"|:(?::[0-9A-Fa-f]{1,4}){2,7}"
    rb"|(?:[0-9A-Fa-f]{1,4}:){1,6}:?(?:[0-9]{1,3}\.){3}[0-9]{1,3}"
    rb"|::(?:[fF]{4}:)?(?:[0-9]{1,3}\.){3}[0-9]{1,3}"
    rb")(?![0-9A-Fa-f:]|\.[0-9])"
)
_IBAN = re.compile(
    rb"([A-Z]{2}[0-9]{2})((?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?)(?![A-Za-z0-9])"
)
_SECRET = re.compile(
    rb"(?:(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}"
    rb"|gh[pousr]_[A-Za-z0-9]{36,255}"
    rb"|github_pat_[A-Za-z0-9_]{50,255}"
    rb"|xox[abposr]-[0-9A-Za-z-]{10,250}"
    rb"|xapp-[0-9A-Za-z-]{10,250}"
    rb"|(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,247}"
    rb"|AIza[0-9A-Za-z_-]{35}"
    rb"|glpat-[0-9A-Za-z_-]{20,64}"
    rb"|npm_[A-Za-z0-9]{36}"
    rb"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    rb"|-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[^\x00]{0,8192}?-----END (?:[A-Z]+ )*PRIVATE KEY-----"
    rb")(?![A-Za-z0-9_])"
)
_WORD = np.zeros(256, bool)
_WORD[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")] = True
_HEX = np.zeros(256, bool)
_HEX[list(b"0123456789abcdefABCDEF")] = True
_UPPER = np.zeros(256, bool)
_UPPER[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")] = True
_DIGIT = np.zeros(256, bool)
_DIGIT[list(b"0123456789")] = True
# bytes of a numeric span [0-9 ().+-], and those it may start with [0-9+(]
_SPAN_BYTE = np.zeros(256, bool)
_SPAN_BYTE[list(b"0123456789 ().+-")] = True
_OPEN_BYTE = np.zeros(256, bool)
_OPEN_BYTE[list(b"+(")] = True
_NON_DIGIT = re.compile(rb"[^0-9]")
_DIGIT_LO, _DIGIT_HI = np.uint8(ord("0")), np.uint8(10)
_WIN = 8  # bytes looked at around each digit in numpy; longer stretches are walked in Python

Span = tuple[int, int, str]  # (start, end, kind): byte offsets


def _emails(data: bytes, b: np.ndarray, out: list[Span]) -> None:
    """Anchored at each '@': the local part is the run of local-part bytes before it."""
    domain = _EMAIL_DOMAIN.match
    prev_end = 0
    for a in np.flatnonzero(b == 64).tolist():
        if a < prev_end:
            continue
        s = a
        while s > prev_end and _EMAIL_LOCAL[data[s - 1]]:
            s -= 1
        if s == a:
            continue
        m = domain(data, a + 1)
        if m is None or m.group(1).lower() in _FILE_EXTENSIONS:
            continue
        while data[s] == 46:  # a local part does not start with '.'
            s += 1
        if s < a:
            out.append((s, m.end(), "email"))
            prev_end = m.end()


def _secrets(data: bytes, b: np.ndarray, out: list[Span]) -> None:
    """Candidates from rare bytes, compared as scalars over the buffer (SIMD, no table
    lookups): '_' (ghp_, github_pat_, sk_live_, npm_), '-' (xoxb-, xapp-, glpat-, PEM
    headers), 'A' (AKIA, ASIA, AIza...), 'J' (eyJ); each then matched at its token start."""
    n = len(b)
    cands: list[np.ndarray] = []
    und = np.flatnonzero(b == 95)
    if len(und):
        for back in (3, 6, 2):  # gh?_ npm_ / github_ / sk_ rk_
            i = und - back
            cands.append(i[i >= 0])
    hy = np.flatnonzero(b == 45)
    if len(hy):
        h = hy[(hy >= 4) & (hy < n - 6)]
        x = h[(b[h - 4] == 120) & (b[h - 3] == 111) & (b[h - 2] == 120)]  # xox?-
        xa = h[(b[h - 4] == 120) & (b[h - 1] == 112)]  # xapp-
        gl = h[h >= 5]
        gl = gl[(b[gl - 5] == 103) & (b[gl - 1] == 116)]  # glpat-
        pem = hy[hy < n - 5]
        pem = pem[(b[pem + 1] == 45) & (b[pem + 5] == 66)]  # -----B
        cands += [x - 4, xa - 4, gl - 5, pem]
    cap_a = np.flatnonzero(b[: max(0, n - 19)] == 65)  # AKIA... and AIza... are 20+ bytes
    if len(cap_a):
        cands.append(cap_a)
    cap_j = np.flatnonzero(b == 74)
    if len(cap_j):
        j = cap_j[cap_j >= 2]
        cands.append(j[(b[j - 1] == 121) & (b[j - 2] == 101)] - 2)  # eyJ
    if not cands:
        return
    starts = np.unique(np.concatenate(cands))
    if len(starts) and starts[0] == 0:
        ok = np.concatenate(([True], ~_WORD[b[starts[1:] - 1]]))
    else:
        ok = ~_WORD[b[starts - 1]]
    ok |= b[starts] == 45  # a PEM header may follow anything
    match = _SECRET.match
    end = 0
    for i in starts[ok].tolist():
        if i < end:
            continue
        m = match(data, i)
        if m is not None:
            out.append((i, m.end(), "api_key"))
            end = m.end()


def _ibans(data: bytes, b: np.ndarray, d: np.ndarray, out: list[Span]) -> None:
    """Candidates: two digits (`d`: digit positions) after two capitals at a word start."""
    c = d[:-1][(d[1:] - d[:-1]) == 1] - 2  # where "CCdd" would start
    c = c[c >= 0]
    if not len(c):
        return
    c = c[_UPPER[b[c]] & _UPPER[b[c + 1]]]
    if len(c) and c[0] == 0:
        c = np.concatenate(([0], c[1:][~_WORD[b[c[1:] - 1]]]))
    elif len(c):
        c = c[~_WORD[b[c - 1]]]
    match = _IBAN.match
    for i in c.tolist():
        m = match(data, i)
        if m is None:
            continue
        compact = m.group(0).replace(b" ", b"").decode("ascii")
        # the longest prefix that is a valid IBAN (a trailing word may follow the account)
        for length in range(len(compact), 14, -1):
            if iban_valid(compact[:length]):
                j, seen = i, 0  # back from the compact length to the spaced text
                while seen < length:
                    if data[j] != 32:
                        seen += 1
                    j += 1
                out.append((i, j, "iban"))
                break


def _ipv6(data: bytes, b: np.ndarray, out: list[Span]) -> None:
    colons = np.flatnonzero(b == 58)
    if len(colons) < 2:
        return
    near = np.flatnonzero(np.diff(colons) <= 5)  # two colons at most 4 hex digits apart
    match = _IPV6.match
    end = 0
    for k in near.tolist():
        c = int(colons[k])
        if c < end:
            continue
        lo = c
        while lo > 0 and c - lo < 4 and _HEX[b[lo - 1]]:
            lo -= 1
        m = match(data, lo, min(len(data), c + 48))
        if m is None:
            continue
        end = m.end()
        addr = m.group(0)
        groups = [g for g in addr.split(b":") if g]
        if not any(48 <= ch <= 57 for ch in addr):
            continue  # dead::beef, a::b: hex words, not addresses
        if addr.count(b":") == 7 or b"." in addr or (b"::" in addr and len(groups) >= 2):
            out.append((m.start(), m.end(), "ipv6"))


def _numeric_spans(b: np.ndarray, d: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, digits) of the runs of [0-9 ().+-] in `b` that hold 4+ digits, from
    their first [0-9+(] to their last digit, when 7+ bytes long (`d`: the digit positions).

    The regex's class C = [0-9 ().+-] has no multi-byte UTF-8 character. In a maximal run
    of C characters the regex matches at most once: from the first character of the run
    in [0-9+(] (p) to the last digit of the run (q), when q - p >= 6 (greedy `{5,}`
    backtracks to the last digit; a later start only shortens the match; after the match
    the run holds no digit). So: group the digits into C runs, extend each group left over
    the run's non-digit characters to find p.
    """
    n = len(b)
    if len(d) < 4:
        return []
    # consecutive digits are in one run iff every byte between them is in C
    gap = d[1:] - d[:-1] - 1
    same = gap == 0
    near = np.flatnonzero((gap > 0) & (gap <= _WIN))
    if len(near):
        ar = np.arange(_WIN)
        pos = d[near, None] + 1 + ar
        inside = ar < gap[near, None]
        inc = _SPAN_BYTE[b[np.minimum(pos, n - 1)]] | ~inside
        same[near] = inc.all(axis=1)
    far = np.flatnonzero(gap > _WIN)
    if len(far):
        # rare: the first _WIN bytes after the digit all in C; the rest is walked below
        pos = d[far, None] + 1 + np.arange(_WIN)
        maybe = far[_SPAN_BYTE[b[pos]].all(axis=1)]
        for k in maybe.tolist():
            lo, hi = int(d[k]) + 1, int(d[k + 1])
            same[k] = bool(_SPAN_BYTE[b[lo:hi]].all())
    # groups of digits in one run: [g0[i], g1[i]] indices into d
    brk = np.flatnonzero(~same)
    g0 = np.concatenate(([0], brk + 1))
    g1 = np.concatenate((brk, [len(d) - 1]))
    keep = (g1 - g0) >= 3
    g0, g1 = g0[keep], g1[keep]
    if not len(g0):
        return []
    first, last = d[g0], d[g1]
    # walk left from the first digit over the run's other C bytes: p is the leftmost
    # '+' or '(' there, else the first digit
    ar = np.arange(1, _WIN + 1)
    pos = first[:, None] - ar
    valid = pos >= 0
    vals = b[np.maximum(pos, 0)]
    inrun = _SPAN_BYTE[vals] & valid
    # inrun prefix (contiguous from the digit leftwards)
    run = np.logical_and.accumulate(inrun, axis=1)
    opens = run & _OPEN_BYTE[vals]
    p = first.copy()
    has = opens.any(axis=1)
    if has.any():
        # leftmost '+'/'(' in the run: the largest offset
        far_off = _WIN - 1 - np.argmax(opens[:, ::-1], axis=1)
        p[has] = first[has] - 1 - far_off[has]
    out = []
    long_left = np.flatnonzero(run[:, -1])
    p_list = p.tolist()
    for k in long_left.tolist():  # the run goes on beyond the window: walk it
        f = int(first[k])
        s = f - _WIN - 1
        while s >= 0 and _SPAN_BYTE[b[s]]:
            s -= 1
        seg = b[s + 1 : f]
        o = np.flatnonzero(_OPEN_BYTE[seg])
        p_list[k] = s + 1 + int(o[0]) if len(o) else f
    for pk, q, nd in zip(p_list, last.tolist(), (g1 - g0 + 1).tolist()):
        if q - pk >= 6:
            out.append((pk, q + 1, nd))
    return out


def _is_range(a: bytes, b: bytes) -> bool:
    """`a-b` reads as a range: equal lengths of 5 or more, b above a, and the first half of
    their digits shared (a phone's two groups are not ordered like that)."""
    n = len(a)
    return n >= 5 and len(b) == n and b > a and a[: (n + 1) // 2] == b[: (n + 1) // 2]


# a Debian changelog header: "package (version) distribution; urgency=..."
_CHANGELOG_HEADER = re.compile(rb"(?:^|\n)[a-z0-9][a-z0-9.+-]* \($")


def _is_version_context(data: bytes, start: int) -> bool:
    return _VERSION_BEFORE.search(data[max(0, start - 16) : start]) is not None


# why a phone candidate is rejected: its first word is something else, its digits are
# something else, the whole match is something else
_BEFORE, _SELF, _WHOLE = "before", "self", "whole"


def _not_phone(p: bytes, data: bytes, start: int) -> bool:
    """Whether the digits `p` (at `start` of `data`) are no phone number: a date, years, a
    postal code, a version, or part of a longer number (the context before is judged by
    `_phone_in`)."""
    digits = len(p) - len(p.translate(None, b"0123456789"))
    if not 7 <= digits <= 15 or digits == len(p):  # bare digit runs: counts, ids, times
        return True
    if _NOT_PHONE.match(p):
        return True
    groups = _GROUPS.findall(p)
    if all(len(g) == 4 and g.startswith((b"19", b"20")) for g in groups):
        return True  # years: 1999 2003, 1999-2022
    if len(groups[-1]) < 2:
        return True  # versions and section numbers end in one digit; phones do not
    if b"." in p and any(len(g) < 2 for g in groups):
        return True  # 1.2.10: a version, not 555.123.4567
    if len(groups) == 2 and p == groups[0] + b"-" + groups[1] and _is_range(groups[0], groups[1]):
        return True  # 64040-64044: a range of numbers (ids, ports, pages)
    end = start + len(p)
    after = data[end : end + 2]
    if after[:1] in (b".", b":", b",") and after[1:2].isdigit():
        return True  # part of a longer number, or the hour of a time
    return _glued_after(after)


_CARD_SHAPE = re.compile(rb"[0-9]{4}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?![0-9])")
_GROUPS = re.compile(rb"[0-9]+")
_GROUP_END = re.compile(rb"[0-9](?=[ .()-]+[0-9])")
_LAST_YEAR = re.compile(rb"[ ](?:1[89][0-9]{2}|20[0-9]{2})$")


def _phone_in(m: re.Match, data: bytes, base: int) -> tuple[int, int] | None | str:
    """The phone number a `_PHONE` match holds: the whole match or its longest prefix
    ending at a digit group that passes the context rules (a prefix not ending in a
    separate year first: `555-4173 2003` is a phone and a year). `_BEFORE` when the
    context before rules the first word out (a version, a word, an ISBN), `_WHOLE` when
    the whole match is something else."""
    full = m.group(0).rstrip(b" .-")
    start = base + m.start()
    before = data[max(0, start - 2) : start]
    if (
        before[-1:].isalpha()
        or before[-1:] == b"_"
        or (before[-1:] in (b"-", b"/") and before[:1].isalpha())
        or (before[-1:] == b"." and before[:1].isdigit())  # the tail of 13.0.50.20221012
        or (b"." in full.split(b" ", 1)[0] and _is_version_context(data, start))
        or b"ISBN" in data[max(0, start - 6) : start].upper()
    ):
        return _BEFORE
    if (
        full.startswith((b"978", b"979"))
        and len(full) - len(full.translate(None, b"0123456789")) == 13
    ):
        return _WHOLE  # an ISBN-13
    if _CARD_SHAPE.match(full):
        return _WHOLE  # shaped like a card that is none (Luhn): no phone either
    if not _not_phone(full, data, start):
        return start, start + len(full)
    ends = [g.end() for g in _GROUP_END.finditer(full)][::-1]
    for allow_year in (False, True):
        for n in ends:
            p = full[:n]
            if not allow_year and _LAST_YEAR.search(p):
                continue
            if not _not_phone(p, data, start):
                return start, start + n
    return None


def _glued_after(after: bytes) -> bool:
    return after[:1].isalpha() or (after[:1] in (b"-", b"_", b".") and after[1:2].isalpha())


def _glued(data: bytes, start: int, end: int) -> bool:
    """A number written into a word: `gost3411-2012`, `CVE-2023-38472`, `3411-2012-const`."""
    before = data[max(0, start - 2) : start]
    after = data[end : end + 2]
    return (
        (before[-1:].isalpha() or before[-1:] == b"_")
        or (before[-1:] in (b"-", b"_", b"/") and before[:1].isalpha())
        or after[:1].isalpha()
        or (after[:1] in (b"-", b"_", b".") and after[1:2].isalpha())
    )


def _next_word(seg: bytes, i: int) -> int:
    j = seg.find(b" ", i)
    return len(seg) if j < 0 else j + 1


def _numeric_span(data: bytes, s: int, e: int, nd: int, kinds: frozenset, out: list[Span]) -> None:
    """IPv4 addresses, cards and phones in one numeric span `data[s:e]` (`nd` digits)."""
    seg = data[s:e]
    if (
        nd < 13
        and "phone" in kinds
        and _COMMON_PHONE.fullmatch(seg)
        and _clean_phone_context(data, s, e, seg)
    ):
        out.append((s, e, "phone"))  # the common case, judged without the general rules
        return
    taken: list[tuple[int, int]] = []
    if "ipv4" in kinds and b"." in seg:
        for m in _IPV4.finditer(seg):
            a, z = s + m.start(), s + m.end()
            version = (
                _is_version_context(data, a)
                or data[z : z + 1] in (b"-", b"+", b"~")
                or data[a - 1 : a].isalpha()
                or _CHANGELOG_HEADER.search(data[max(0, a - 80) : a]) is not None
            )
            if not version:
                out.append((a, z, "ipv4"))
            taken.append((m.start(), m.end()))  # a version is no card or phone either
    if nd < 7:
        return
    if "card" in kinds and nd >= 13:
        pos = 0
        while (m := _CARD.search(seg, pos)) is not None:
            pos = m.start() + 1
            text = m.group(0)
            tries = [text]
            sep = m.group(1)
            if sep and text.count(sep) == 4:  # 4-4-4-4 and a short tail
                tries.append(text[: text.rfind(sep)])
            for t in tries:
                a, z = s + m.start(), s + m.start() + len(t)
                digits = _NON_DIGIT.sub(b"", t).decode()
                if (
                    card_prefix_valid(digits)
                    and luhn_valid(digits)
                    and _free(taken, m.start(), m.start() + len(t))
                    and not _glued(data, a, z)
                ):
                    out.append((a, z, "card"))
                    taken.append((m.start(), m.start() + len(t)))
                    pos = m.start() + len(t)
                    break
    if "phone" in kinds:
        pos = 0
        while (m := _PHONE.search(seg, pos)) is not None:
            got = _phone_in(m, data, s)
            if got == _BEFORE:
                pos = _next_word(seg, m.start())  # the first word is something else
            elif got == _WHOLE:
                pos = m.end()
            elif got is None or not _free(taken, got[0] - s, got[1] - s):
                pos = m.start() + 1
            else:
                out.append((got[0], got[1], "phone"))
                taken.append((got[0] - s, got[1] - s))
                pos = got[1] - s
            pos = max(pos, m.start() + 1)


def _free(taken: list[tuple[int, int]], a: int, z: int) -> bool:
    return all(z <= x or a >= y for x, y in taken)


# (415) 555-2671, 415-555-2671, +1 415 555 2671, 555.123.4567, +44 20 7946 0958
_COMMON_PHONE = re.compile(
    rb"(?:\+[0-9]{1,3}[ -]?)?(?:\([0-9]{2,4}\) ?|[0-9]{2,4}[ .-])[0-9]{3,4}[ .-][0-9]{4}"
)


def _clean_phone_context(data: bytes, s: int, e: int, seg: bytes) -> bool:
    before = data[max(0, s - 2) : s]
    if before[-1:].isalnum() or before[-1:] in (b"_", b".", b"-", b"/"):
        return False
    after = data[e : e + 2]
    if after[:1] in (b".", b":", b",", b"-", b"_") and after[1:2].isalnum():
        return False
    if after[:1].isalpha() or b"ISBN" in data[max(0, s - 6) : s].upper():
        return False
    return not (b"." in seg and _is_version_context(data, s))


def find_pii(data: bytes, kinds: Sequence[str] = KINDS) -> list[Span]:
    """Non-overlapping (start, end, kind) byte spans of the PII in a UTF-8 buffer, sorted."""
    kinds = frozenset(kinds)
    b = np.frombuffer(data, np.uint8)
    found: list[Span] = []
    if "email" in kinds and b"@" in data:
        _emails(data, b, found)
    if "api_key" in kinds:
        _secrets(data, b, found)
    d = np.flatnonzero((b >= 48) & (b <= 57))
    if "iban" in kinds and len(d) >= 2:
        _ibans(data, b, d, found)
    if "ipv6" in kinds and b":" in data:
        _ipv6(data, b, found)
    if kinds & {"ipv4", "card", "phone"}:
        for s, e, nd in _numeric_spans(b, d):
            _numeric_span(data, s, e, nd, kinds, found)
    if not found:
        return []
    found.sort()
    kept: list[Span] = [found[0]]
    for sp in found[1:]:
        last = kept[-1]
        if sp[0] >= last[1]:
            kept.append(sp)
        elif _PRIORITY[sp[2]] < _PRIORITY[last[2]]:
            # overlaps the last kept span and ranks higher: it replaces every kept span
            # it overlaps, unless one of them ranks higher still
            j = len(kept)
            while j and kept[j - 1][1] > sp[0]:
                j -= 1
            if all(_PRIORITY[k[2]] > _PRIORITY[sp[2]] for k in kept[j:]):
                del kept[j:]
                kept.append(sp)
    return kept


def redact_texts(
    texts: Sequence[str], kinds: Sequence[str] = KINDS, raws: Sequence[bytes | None] | None = None
) -> list[tuple[str, dict[str, int]]]:
    """(redacted text, {kind: replacements}) per text; `raws[i]`, when given, is the UTF-8
    of `texts[i]` (saves an encode). One scan over the whole batch."""
    edits = redaction_edits(texts, kinds, raws)
    return [edits.get(i) or (t, {}) for i, t in enumerate(texts)]


def redaction_edits(
    texts: Sequence[str], kinds: Sequence[str] = KINDS, raws: Sequence[bytes | None] | None = None
) -> dict[int, tuple[str, dict[str, int]]]:
    """Only the texts that change: {index: (redacted text, {kind: replacements})}."""
    n = len(texts)
    if n == 0:
        return {}
    if raws is None:
        parts = [t.encode("utf-8", "surrogatepass") for t in texts]
    else:
        parts = [
            r if r is not None else t.encode("utf-8", "surrogatepass") for t, r in zip(texts, raws)
        ]
    joined = b"\x00".join(parts)  # no rule matches across a NUL
    spans = find_pii(joined, kinds)
    if not spans:
        return {}
    lens = np.fromiter(map(len, parts), np.int64, n) + 1
    starts = (np.cumsum(lens) - lens).tolist()
    docs = np.searchsorted(starts, [sp[0] for sp in spans], side="right") - 1
    edits: dict[int, tuple[str, dict[str, int]]] = {}
    k = 0
    docs_l = docs.tolist()
    while k < len(spans):
        j = docs_l[k]
        base = starts[j]
        src = parts[j]
        pieces = []
        pos = 0
        counts: dict[str, int] = {}
        while k < len(spans) and docs_l[k] == j:
            s, e, kind = spans[k]
            k += 1
            s -= base
            e -= base
            if e > len(src):
                continue  # crossed a text boundary (a NUL kept by the cleaning rules)
            pieces.append(src[pos:s])
            pieces.append(_PLACEHOLDER_BYTES[kind])
            counts[kind] = counts.get(kind, 0) + 1
            pos = e
        if counts:
            pieces.append(src[pos:])
            edits[j] = (b"".join(pieces).decode("utf-8", "surrogatepass"), counts)
    return edits


def redact_pii(text: str, kinds: Sequence[str] = KINDS) -> tuple[str, dict[str, int]]:
    """One text: (redacted text, {kind: replacements})."""
    return redact_texts([text], kinds)[0]
