"""A loopback TCP fault proxy for HTTP/1.1: sits between a client and a local server (the
SeaweedFS S3 port) and, on command, loses replies, resets connections mid-body, stalls or
refuses, so tests can prove what the client does when the network fails at the worst moment.

It speaks just enough HTTP to find where one request or response ends (Content-Length,
chunked, or until close), so it can act on "the next request matching a predicate" on a
kept-alive connection. Every fault is one-shot (or counted) and switched at run time:

    proxy = FaultProxy("http://127.0.0.1:8333")
    proxy.drop_reply(lambda r: r.method == "PUT" and r.path.endswith("/refs/heads/main"))
    ...                      # the PUT reaches the server; its reply never reaches the client
    assert proxy.fired("drop_reply") == 1

Bounded: only loopback on both sides, every socket has a timeout, stalls sleep at most the
seconds asked, and the proxy stops itself after `max_lifetime_s` (and on `close()`).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Request:
    """One HTTP request as the proxy saw it (headers lower-cased)."""

    method: str
    path: str  # unquoted, without the query
    query: str
    headers: dict[str, str]
    body: bytes = field(repr=False)


Predicate = Callable[[Request], bool]


def any_request(_: Request) -> bool:
    return True


@dataclass
class _Rule:
    action: str  # "drop_reply" | "reset_mid_body" | "stall"
    predicate: Predicate
    remaining: int
    seconds: float = 0.0


class _Closed(Exception):
    """The peer closed the connection (cleanly or not) before a whole message arrived."""


class _Reader:
    """Buffered reads from a socket, in the shapes HTTP framing needs."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Closed()
        self.buf += chunk

    def until(self, marker: bytes, limit: int = _MAX_HEAD) -> bytes:
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise _Closed()
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def to_eof(self) -> bytes:
        with contextlib.suppress(_Closed):
            while True:
                self._fill()
        out, self.buf = self.buf, b""
        return out


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


def _read_body(reader: _Reader, headers: dict[str, str], *, to_eof: bool) -> bytes:
    """The raw body bytes (chunk framing kept, so they can be forwarded verbatim)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = b""
        while True:
            size_line = reader.until(b"\r\n")
            out += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = reader.until(b"\r\n")
                    out += line
                    if line == b"\r\n":
                        return out
            out += reader.exactly(size + 2)
    if "content-length" in headers:
        return reader.exactly(int(headers["content-length"]))
    return reader.to_eof() if to_eof else b""


def _rst_close(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a clean FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """A threaded loopback proxy to `upstream` ("http://127.0.0.1:PORT"); see the module doc."""

    def __init__(self, upstream: str, *, io_timeout_s: float = 30.0, max_lifetime_s: float = 600.0):
        u = urlparse(upstream)
        if u.hostname not in _LOOPBACK or not u.port:
            raise ValueError(f"the fault proxy only forwards to loopback, not {upstream!r}")
        self.upstream = (u.hostname, u.port)
        self.io_timeout_s = io_timeout_s
        self._deadline = time.monotonic() + max_lifetime_s
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._refusing = False
        self._stop = threading.Event()
        self._fired: Counter[str] = Counter()
        self.requests: list[Request] = []
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        self._accept_thread.start()

    # -- switching behaviour ------------------------------------------------------------------
    def passthrough(self) -> None:
        """Forward everything unchanged from now on (clears pending faults and any outage)."""
        with self._lock:
            self._rules.clear()
            self._refusing = False

    def drop_reply(self, predicate: Predicate = any_request, count: int = 1) -> None:
        """Forward the next `count` matching requests, read the server's whole reply, then close
        the client connection without sending any of it: the server did the work, the client
        never hears."""
        self._add(_Rule("drop_reply", predicate, count))

    def reset_mid_body(self, predicate: Predicate = any_request, count: int = 1) -> None:
        """Send the head and half the body of the next `count` matching replies, then RST."""
        self._add(_Rule("reset_mid_body", predicate, count))

    def stall(self, seconds: float, predicate: Predicate = any_request, count: int = 1) -> None:
        """Hold the next `count` matching replies for `seconds` before sending them."""
        self._add(_Rule("stall", predicate, count, seconds))

    def refuse(self) -> None:
        """An outage: every new connection, and every request on an open one, is reset at once
        (nothing reaches the server) until `passthrough()`."""
        with self._lock:
            self._refusing = True

    def fired(self, action: str) -> int:
        """How many times `action` ("drop_reply", "reset_mid_body", "stall", "refuse") acted."""
        with self._lock:
            return self._fired[action]

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _take_rule(self, request: Request) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.remaining > 0 and rule.predicate(request):
                    rule.remaining -= 1
                    self._fired[rule.action] += 1
                    return rule
        return None

    def _refused(self) -> bool:
        with self._lock:
            if self._refusing:
                self._fired["refuse"] += 1
            return self._refusing

    # -- lifecycle ------------------------------------------------------------------------------
    def _alive(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def close(self) -> None:
        """Stop accepting, close every connection and wait (briefly) for the threads."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            _rst_close(s)
        for t in [self._accept_thread, *self._threads]:
            t.join(timeout=2)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _track(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(self.io_timeout_s)
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _untrack(self, sock: socket.socket | None, *, rst: bool = False) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.discard(sock)
        if rst:
            _rst_close(sock)
        else:
            with contextlib.suppress(OSError):
                sock.close()

    # -- the proxy ------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while self._alive():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            if self._refused():
                _rst_close(client)
                continue
            t = threading.Thread(target=self._serve, args=(self._track(client),), name="faultproxy-conn", daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            creader = _Reader(client)
            ureader: _Reader | None = None
            while self._alive():
                head = creader.until(b"\r\n\r\n")
                line, headers = _parse_head(head)
                body = _read_body(creader, headers, to_eof=False)
                method, target = line.split(" ")[:2]
                path, _, query = target.partition("?")
                request = Request(method, unquote(path), query, headers, body)
                with self._lock:
                    self.requests.append(request)
                if self._refused():
                    self._untrack(client, rst=True)
                    return
                rule = self._take_rule(request)
                if upstream is None:
                    upstream = self._track(socket.create_connection(self.upstream, timeout=self.io_timeout_s))
                    ureader = _Reader(upstream)
                upstream.sendall(head + body)
                rhead = ureader.until(b"\r\n\r\n")
                status_line, rheaders = _parse_head(rhead)
                status = int(status_line.split(" ")[1])
                no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                rbody = b"" if no_body else _read_body(ureader, rheaders, to_eof=True)
                server_closes = rheaders.get("connection", "").lower() == "close" or (
                    not no_body and "content-length" not in rheaders and "chunked" not in rheaders.get("transfer-encoding", ""))
                if rule is not None and rule.action == "drop_reply":
                    self._untrack(client)  # a clean close with nothing sent: "connection aborted"
                    return
                if rule is not None and rule.action == "reset_mid_body":
                    cut = len(rbody) // 2 if rbody else len(rhead) // 2
                    client.sendall(rhead + rbody[:cut] if rbody else rhead[:cut])
                    time.sleep(0.05)  # let the partial bytes reach the client before the RST
                    self._untrack(client, rst=True)
                    return
                if rule is not None and rule.action == "stall":
                    end = time.monotonic() + rule.seconds
                    while time.monotonic() < end and self._alive():
                        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
                client.sendall(rhead + rbody)
                if server_closes:
                    return
        except (_Closed, OSError, ValueError, IndexError):
            return  # a peer went away, timed out or spoke garbage: end this connection
        finally:
            self._untrack(client)
            self._untrack(upstream)
