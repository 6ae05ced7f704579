"""The agent API's HTTPS server: mutual TLS on ``api.port``, routing, errors to statuses.

Only clients with a certificate signed by the deployment's CA complete the TLS
handshake (tls.py); there is no other authentication and no anonymous endpoint.
Unknown paths are 404, known paths with another method 405; what a member side raises
(member_errors) becomes the status below, and a bug becomes a 500 that says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any
from typing import cast

from disk_snapshots import __version__
from disk_snapshots.api.routes import ROUTES
from disk_snapshots.api.routes import ApiError
from disk_snapshots.api.tls import server_context
from disk_snapshots.config import TlsConfig
from disk_snapshots.daemon.agent import Agent
from disk_snapshots.member_errors import Conflict
from disk_snapshots.member_errors import Failed
from disk_snapshots.member_errors import Invalid
from disk_snapshots.member_errors import MemberError
from disk_snapshots.member_errors import NotFound
from disk_snapshots.member_errors import TimedOut

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
# A client that connects and says nothing must not hold a thread forever.
SOCKET_TIMEOUT = 30.0
STATUS_OF: dict[type[MemberError], HTTPStatus] = {
    Invalid: HTTPStatus.BAD_REQUEST,
    NotFound: HTTPStatus.NOT_FOUND,
    Conflict: HTTPStatus.CONFLICT,
    Failed: HTTPStatus.BAD_GATEWAY,
    TimedOut: HTTPStatus.GATEWAY_TIMEOUT,
}


def status_of(err: MemberError) -> HTTPStatus:
    kind = next((k for k in type(err).__mro__ if k in STATUS_OF), None)
    return STATUS_OF[kind] if kind is not None else HTTPStatus.INTERNAL_SERVER_ERROR


class RequestHandler(BaseHTTPRequestHandler):
    server: ApiServer
    server_version = f"disk-snapshots/{__version__}"
    sys_version = ""
    timeout = SOCKET_TIMEOUT

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            for pattern, methods in ROUTES:
                match = pattern.fullmatch(path)
                if match is None:
                    continue
                if method not in methods:
                    raise ApiError(
                        HTTPStatus.METHOD_NOT_ALLOWED,
                        f"{method} is not allowed on {path}; allowed: {', '.join(methods)}",
                    )
                body = self._body() if method == "POST" else None
                status, answer = methods[method](self.server.agent, match, body)
                self._send(status, answer, allow=None)
                return
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        except ApiError as err:
            failure: dict[str, object] = {"error": err.message}
            if err.problems:
                failure["problems"] = err.problems
            allow = None
            if err.status == HTTPStatus.METHOD_NOT_ALLOWED:
                allow = next(", ".join(m) for p, m in ROUTES if p.fullmatch(path))
            self._send(err.status, failure, allow=allow)
        except MemberError as err:
            self._send(status_of(err), {"error": str(err)})
        except Exception as err:  # a bug must not take the daemon down; say so
            log.exception("%s %s crashed", method, path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {err}"})

    def _body(self) -> object:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return {}
        try:
            length = int(length_header)
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number") from None
        if length > MAX_BODY:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw.strip():
            return {}
        try:
            return cast(object, json.loads(raw))
        except ValueError as err:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "invalid request", [f"body: not valid JSON: {err}"]
            ) from None

    def _send(self, status: HTTPStatus, answer: object, allow: str | None = None) -> None:
        if isinstance(answer, str):
            data = answer.encode()
            kind = "text/plain; version=0.0.4; charset=utf-8"
        else:
            data = (json.dumps(answer, indent=1) + "\n").encode()
            kind = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("api %s %s", self.client_address[0], format % args)


class ApiServer(ThreadingHTTPServer):
    """Accepts plain TCP and does the TLS handshake in the request's own thread, so
    one slow or hostile client cannot stall the accept loop."""

    # Joined on close: a request in flight (a thaw!) finishes before the daemon exits.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], agent: Agent, context: ssl.SSLContext) -> None:
        self.agent = agent
        self.context = context
        super().__init__(address, RequestHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        raw = cast(socket.socket, request)
        raw.settimeout(SOCKET_TIMEOUT)
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as err:
            log.info("api %s: TLS refused: %s", client_address[0], err)
            return
        try:
            RequestHandler(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.shutdown(socket.SHUT_RDWR)
            tls.close()


@dataclass
class RunningApi:
    server: ApiServer
    thread: threading.Thread
    agent: Agent

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()
        # Thaws and ends set sessions before the server joins the request threads
        # waiting on them.
        self.agent.close()
        self.server.server_close()


def serve(
    agent: Agent, tls: TlsConfig, address: str, port: int, poll_interval: float = 0.5
) -> RunningApi:
    """Start the API in a thread; raises TlsSetupError or OSError (address in use).

    ``poll_interval`` is how late a stop is noticed; idle, the thread wakes that often.
    """
    server = ApiServer((address, port), agent, server_context(tls))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": poll_interval}, name="agent-api"
    )
    thread.start()
    return RunningApi(server, thread, agent)
