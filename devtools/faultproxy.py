"""A fault-injecting HTTP reverse proxy for tests: S3 brownouts, resets, stalls and corrupt bodies on demand.

It forwards every request unchanged (method, path, query, headers including ``Host`` so SigV4
signatures still verify, the body byte for byte, chunked framing included) to ``upstream``
and answers with upstream's response, except where a :class:`Rule` matches. Threaded, bound
to 127.0.0.1 on a free port. ``with FaultProxy(s3.endpoint_url) as proxy: proxy.add(Rule(...))``.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"})
S3_CODES = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied", 404: "NoSuchKey", 507: "InsufficientStorage"}


@dataclass
class Rule:
    """One fault: which requests it hits, what it does, how often. It counts its ``hits``.

    ``status`` answers with that HTTP status and an S3 XML error (``code``, default from the
    status); ``reset`` closes the connection without answering; ``corrupt`` forwards and flips
    one byte of the response body; ``landed`` forwards the request before failing its answer
    (the write took effect, the client cannot know); ``delay_s`` holds the request that long first (alone: then
    forwards it). ``after`` lets the first matches through, ``times`` bounds how many requests it hits, ``for_s`` the window (from the
    first match) during which it hits, ``probability`` the share it hits (seeded by ``seed``).
    """

    method: str | None = None
    path: str = ".*"  # regex searched in the path + query
    status: int | None = None
    code: str | None = None
    times: int | None = None
    for_s: float | None = None
    probability: float = 1.0
    delay_s: float = 0.0
    reset: bool = False
    corrupt: bool = False
    after: int = 0  # let this many matching requests through before hitting any
    landed: bool = False  # forward first (the request takes effect), then fail the answer: a lost response
    seed: int = 0
    hits: int = 0
    seen: int = 0
    started: float | None = None
    _rng: random.Random = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"Rule.probability must be in [0, 1], not {self.probability}")
        if self.status is None and not (self.reset or self.corrupt or self.delay_s):
            raise ValueError("Rule does nothing: give status, reset, corrupt or delay_s")
        self._regex = re.compile(self.path)
        self._rng = random.Random(self.seed)

    def take(self, method: str, target: str, now: float) -> bool:
        """Does this rule hit this request (and count it)? Called under the proxy's lock."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if not self._regex.search(target):
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        if self.for_s is not None:
            self.started = now if self.started is None else self.started
            if now - self.started > self.for_s:
                return False
        if self.probability < 1.0 and self._rng.random() >= self.probability:
            return False
        self.hits += 1
        return True

    @property
    def error_body(self) -> bytes:
        code = self.code or S3_CODES.get(self.status, "InternalError")
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>injected by faultproxy</Message><RequestId>faultproxy</RequestId></Error>").encode()


class FaultProxy:
    """The proxy server; ``url`` is its endpoint, ``add``/``clear`` change its rules while it runs."""

    def __init__(self, upstream: str, timeout_s: float = 60.0):
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"FaultProxy upstream must be an http:// URL, not {upstream!r}")
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.timeout_s = timeout_s
        self.rules: list[Rule] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def match(self, method: str, target: str) -> Rule | None:
        """The first rule that hits this request, or None (forward it untouched)."""
        with self._lock:
            self.requests += 1
            now = time.monotonic()
            return next((r for r in self.rules if r.take(method, target, now)), None)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        pass

    Handler.proxy = proxy
    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects
    proxy: FaultProxy

    def log_message(self, *args) -> None:  # quiet in tests
        pass

    def _any(self) -> None:
        body = self._read_body()
        rule = self.proxy.match(self.command, self.path)
        if rule is not None and rule.delay_s:
            time.sleep(rule.delay_s)
        if rule is not None and rule.landed:
            self._forward(body)
        if rule is not None and rule.reset:
            self._reset()
            return
        if rule is not None and rule.status is not None:
            self._answer(rule.status, [("Content-Type", "application/xml")], rule.error_body)
            return
        status, headers, payload = self._forward(body)
        if rule is not None and rule.corrupt and payload:
            i = len(payload) // 2
            payload = payload[:i] + bytes([payload[i] ^ 0xFF]) + payload[i + 1 :]
        self._answer(status, headers, payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _any

    def _read_body(self) -> bytes:
        """The request body as sent: Content-Length bytes, or the raw chunked framing up to its last chunk."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = bytearray()
            while True:
                size_line = self.rfile.readline()
                raw += size_line
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        line = self.rfile.readline()
                        raw += line
                        if line in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=self.proxy.timeout_s)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in ("connection", "keep-alive", "proxy-connection"):
                    conn.putheader(name, value)
            conn.endheaders()
            if body:
                conn.send(body)
            resp = conn.getresponse()
            payload = resp.read()
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            return resp.status, headers, payload
        finally:
            conn.close()

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status)
        has_length = False
        for name, value in headers:
            if name.lower() == "content-length":
                has_length = True
                if self.command != "HEAD":
                    value = str(len(payload))
            self.send_header(name, value)
        if not has_length:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)
        self.wfile.flush()

    def _reset(self) -> None:
        """Close the connection with a TCP RST (SO_LINGER 0), answering nothing."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
