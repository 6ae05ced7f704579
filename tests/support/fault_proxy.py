"""A small HTTP proxy in front of the real Cinder API that injects faults.

Each rule matches a method and a path pattern and, for its next ``times`` requests,
answers with an HTTP status without asking Cinder (``status``), asks Cinder and then
answers with the status anyway (``status`` with ``forward=True``: the work was done but
the answer is lost), or holds the answer back for ``delay`` seconds (a timeout on the
client's side). Every other request goes through unchanged.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Rule:
    method: str
    path: str  # a regular expression, searched in the request path
    times: int
    status: int = 500
    forward: bool = False
    delay: float = 0.0
    hits: int = 0


@dataclass
class FaultProxy:
    upstream: str  # scheme://host:port
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules.append(rule)
        return rule

    def match(self, method: str, path: str) -> Rule | None:
        with self.lock:
            self.seen.append((method, path))
            for rule in self.rules:
                if rule.method == method and re.search(rule.path, path) and rule.hits < rule.times:
                    rule.hits += 1
                    return rule
        return None

    def count(self, method: str, pattern: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.seen if m == method and re.search(pattern, p))


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(proxy.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            rule = proxy.match(self.command, self.path)
            if rule is not None and rule.delay:
                time.sleep(rule.delay)
            if rule is not None and not rule.forward and not rule.delay:
                self._answer(
                    rule.status,
                    b"injected",
                )
                return
            upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                if rule is not None and rule.forward:
                    self._answer(
                        rule.status,
                        b"injected after the work",
                    )
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            finally:
                upstream.close()

        def _answer(self, status: int, message: bytes) -> None:
            # Cinder's fault body: {"<kind>": {"message": ..., "code": ...}}
            body = b'{"computeFault": {"message": "%s", "code": %d}}' % (message, status)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _relay

    return Handler


@contextmanager
def fault_proxy(upstream: str) -> Iterator[tuple[FaultProxy, str]]:
    """A proxy to ``upstream`` on a free loopback port: (the proxy, its base URL)."""
    proxy = FaultProxy(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
