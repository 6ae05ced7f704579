"""A stand-in for the Director's HTTP API, just enough for the real bosh CLI to run the
commands the operator's command uses, offline: the CLI's own code then prints the
``--json`` it prints against a real Director, and every request it made is recorded.

What it answers follows cloudfoundry/bosh ``src/bosh-director/lib/bosh/director``:
``GET /info`` (``api/controllers/info_controller.rb``, basic auth); long operations
redirect to a task (``302 Location: /tasks/N``) whose state and ``output?type=event``
/ ``type=result`` the CLI reads (``api/controllers/tasks_controller.rb``, with Range);
``GET /deployments/D/instances?format=full`` is a ``vms`` task whose result is one JSON
line per instance (``jobs/vm_state.rb``); ``GET /disks`` the orphans
(``orphan_disk_manager.rb`` ``list_orphan_disks``); ``POST /deployments/D/ssh`` (setup,
cleanup); ``PUT /disks/CID/attachments`` (``jobs/attach_disk.rb``, its refusal of an
instance that is not stopped); ``PUT /deployments/D/jobs/G/ID?state=`` (stop, start).
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlparse

from support.tls import make_tls

USER, SECRET = "admin", "fake-director-secret"


@dataclass
class Task:
    state: str
    result: str = ""
    events: str = ""


@dataclass
class FakeDirector:
    vms: list[dict[str, Any]] = field(default_factory=list)
    orphans: list[dict[str, Any]] = field(default_factory=list)
    stopped: set[str] = field(default_factory=set)  # instance ids in 'bosh stopped' state
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    tasks: dict[int, Task] = field(default_factory=dict)
    url: str = ""
    ca: str = ""

    def task(self, state: str, result: str = "", error: str = "") -> int:
        events = ""
        if error:
            events = json.dumps({"time": 0, "error": {"code": 100, "message": error}}) + "\n"
        number = len(self.tasks) + 1
        self.tasks[number] = Task(state, result, events)
        return number

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], body: str = ""
    ) -> tuple[int, object]:
        """(status, body or task number to redirect to) for one request."""
        if method == "GET" and path == "/disks":
            return 200, self.orphans
        if method == "GET" and path.endswith("/instances") and query.get("format") == ["full"]:
            return 302, self.task("done", "".join(json.dumps(v) + "\n" for v in self.vms))
        if method == "POST" and path.endswith("/ssh"):
            target = json.loads(body or "{}").get("target") or {}
            return 302, self.task("done", json.dumps(self._ssh_hosts(target)))
        if method == "PUT" and path.startswith("/disks/") and path.endswith("/attachments"):
            return 302, self._attach(query)
        if method == "PUT" and "/jobs/" in path:
            state = query.get("state", [""])[0]
            instance_id = path.rsplit("/", 1)[-1]
            (self.stopped.add if state == "stopped" else self.stopped.discard)(instance_id)
            return 302, self.task("done")
        return 404, {"code": 70000, "description": f"no route {method} {path}"}

    def _attach(self, query: dict[str, list[str]]) -> int:
        job, instance_id = query["job"][0], query["instance_id"][0]
        if instance_id not in self.stopped:
            return self.task(
                "error",
                error=f"Instance '{job}/{instance_id}' in deployment '{query['deployment'][0]}' "
                "must be in 'bosh stopped' state",
            )
        return self.task("done", "attached")

    def _ssh_hosts(self, target: dict[str, Any]) -> list[dict[str, Any]]:
        """The instances the SSH target names (a group, one index or id, or all), as the
        Director's ssh job selects them (jobs/ssh.rb)."""
        chosen = [
            vm
            for vm in self.vms
            if target.get("job") in (None, vm["job_name"])
            and (not target.get("ids") or set(target["ids"]) & {vm["id"], str(vm["index"])})
        ]
        return [
            {
                "command": "setup",
                "status": "success",
                "ip": "127.0.0.1",
                "host_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyOfTheFakeDirector",
                "id": vm["id"],
                "index": vm["index"],
                "job": vm["job_name"],
            }
            for vm in chosen
        ]


def _handler(director: FakeDirector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads director.requests."""

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self, method: str) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            director.requests.append((method, self.path, body))
            if parsed.path == "/info":
                info = {
                    "name": "fake",
                    "uuid": "fake-uuid",
                    "version": "282.0.0",
                    "user_authentication": {"type": "basic", "options": {}},
                }
                return self._send(200, json.dumps(info).encode())
            expected = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self._send(401, b'{"code":401,"description":"Not authorized"}')
            if parsed.path.startswith("/tasks/"):
                return self._task(parsed.path, parse_qs(parsed.query))
            status, answer = director.answer(method, parsed.path, parse_qs(parsed.query), body)
            if status == 302:
                return self._send(302, b"", {"Location": f"/tasks/{answer}"})
            self._send(status, json.dumps(answer).encode())

        def _task(self, path: str, query: dict[str, list[str]]) -> None:
            parts = path.split("/")
            task = director.tasks[int(parts[2])]
            if len(parts) == 3:
                state = {"id": int(parts[2]), "state": task.state, "started_at": 0}
                return self._send(200, json.dumps(state).encode())
            data = (task.events if query.get("type") == ["event"] else task.result).encode()
            offset = int((self.headers.get("Range") or "bytes=0-")[6:].rstrip("-") or 0)
            if self.headers.get("Range") and offset >= len(data):
                return self._send(416, b"")
            self._send(206 if self.headers.get("Range") else 200, data[offset:])

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

    return Handler


@contextmanager
def running(director: FakeDirector) -> Iterator[FakeDirector]:
    """Serve ``director`` over HTTPS on 127.0.0.1 with a CA of its own."""
    tls = make_tls("fake-director")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_text(tls.certificate)
        key.write_text(tls.private_key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(director))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        director.url, director.ca = f"https://127.0.0.1:{server.server_address[1]}", tls.ca
        try:
            yield director
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
