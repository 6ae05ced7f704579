"""The agent API: HTTPS with mutual TLS on ``api.port`` (DESIGN §7).

Only clients with a certificate signed by the deployment's CA complete the TLS
handshake; there is no other authentication and no anonymous endpoint. Every body
is a JSON object read through ``validate.Reader`` (errors name the field, 400),
unknown paths are 404 and known paths with another method 405.

    GET  /status                  identity, role, service state, disk, last snapshots
    POST /snapshots               {trigger, note} → 202 {id} of an operation
    GET  /operations/<id>         running | succeeded | failed, with the result
    POST /sets/<set_id>/quiesce   {lease_seconds, coordinator} → once flushed and frozen
    POST /sets/<set_id>/snapshot  {set_size, trigger, note, thaw} → the snapshot id (and, with
                                  thaw true, thawed right after it)
    POST /sets/<set_id>/thaw      {} → thawed, frozen seconds (again if already thawed)
    POST /sets/<set_id>/state     {state: complete|incomplete, reason}
    POST /service/stop            {timeout} → once monit reports every service job stopped
    POST /service/start           {timeout} → once monit reports every service job running
    GET  /metrics                 Prometheus text format
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from typing import Protocol
from typing import cast

from disk_snapshots import __version__
from disk_snapshots.agent_client import server_context
from disk_snapshots.annotations import SetState
from disk_snapshots.catalog import Query
from disk_snapshots.config import TlsConfig
from disk_snapshots.hooks import SNAPSHOT_ERRORS
from disk_snapshots.metrics import Metrics
from disk_snapshots.operations import Busy
from disk_snapshots.operations import Operations
from disk_snapshots.services import ServiceError
from disk_snapshots.sets import SET_ID
from disk_snapshots.sets import MemberConflict
from disk_snapshots.sets import MemberNotFound
from disk_snapshots.sets import SetMember
from disk_snapshots.snapshotter import Snapshotter
from disk_snapshots.validate import Problems
from disk_snapshots.validate import Reader

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
# A client that connects and says nothing must not hold a thread forever.
SOCKET_TIMEOUT = 30.0
LAST_SNAPSHOTS = 5
MONIT = Path("/var/vcap/bosh/bin/monit")
_NAMED_TRIGGER = r"schedule:[a-z0-9][a-z0-9_-]{0,62}"
_SET_TRIGGER = r"set:[a-z0-9][a-z0-9_-]{0,62}"
_OPERATION_ID = r"op-[0-9a-f]{16}"


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []


class MonitError(RuntimeError):
    """monit is not there, or refused."""


class Monit(Protocol):
    """The seam to the VM's monit: tests replace it, the VM has the real one."""

    def summary(self) -> dict[str, str]:
        """Service name → ``running``, ``not monitored`` or what monit says otherwise."""
        ...

    def stop(self, name: str) -> None: ...

    def start(self, name: str) -> None: ...


@dataclass
class MonitCli:
    binary: Path = MONIT
    timeout: float = 30.0

    def _run(self, *args: str) -> str:
        binary = str(self.binary) if self.binary.exists() else "monit"
        try:
            proc = subprocess.run(
                [binary, *args],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise MonitError(f"monit is not installed ({self.binary} does not exist)") from None
        except subprocess.TimeoutExpired:
            raise MonitError(
                f"monit {' '.join(args)} did not answer within {self.timeout:.0f}s"
            ) from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()[-300:]
            raise MonitError(f"monit {' '.join(args)} exited {proc.returncode}: {detail}")
        return proc.stdout

    def summary(self) -> dict[str, str]:
        return parse_summary(self._run("summary", "-B"))

    def stop(self, name: str) -> None:
        self._run("stop", name)

    def start(self, name: str) -> None:
        self._run("start", name)


def parse_summary(text: str) -> dict[str, str]:
    """``monit summary -B`` (5.2x tables) or the older ``Process 'name' status`` lines."""
    states: dict[str, str] = {}
    lines = text.splitlines()
    header = next((line for line in lines if "Service Name" in line and "Status" in line), None)
    if header is not None:
        status_at, type_at = header.index("Status"), header.index("Type")
        for line in lines[lines.index(header) + 1 :]:
            if line[type_at:].strip() == "Process":
                states[line[:status_at].strip()] = _normal(line[status_at:type_at])
        return states
    for line in lines:
        match = re.match(r"\s*Process '([^']+)'\s+(.*)$", line)
        if match:
            states[match.group(1)] = _normal(match.group(2))
    return states


def _normal(status: str) -> str:
    text = status.strip().lower()
    return "running" if text in ("ok", "running") else text


@dataclass
class Agent:
    """What the endpoints do, apart from HTTP."""

    snapshotter: Snapshotter
    metrics: Metrics
    monit: Monit = field(default_factory=MonitCli)
    operations: Operations = field(default_factory=Operations)
    service_lock: threading.Lock = field(default_factory=threading.Lock)
    sets: SetMember = field(init=False)

    def __post_init__(self) -> None:
        self.sets = SetMember(self.snapshotter, self.metrics)

    def close(self) -> None:
        self.sets.close()
        late = self.operations.close()
        if late:
            log.warning("operations still running at shutdown: %s", ", ".join(late))

    def status(self) -> dict[str, object]:
        s = self.snapshotter
        spec = s.config.spec
        try:
            role: str = s.service.role()
            role_error = ""
        except ServiceError as err:
            role, role_error = "unknown", str(err)
        service: dict[str, object] = {"profile": s.config.service.profile}
        try:
            summary = self.monit.summary()
            service["jobs"] = {j: summary.get(j, "unknown to monit") for j in s.config.service.jobs}
        except MonitError as err:
            service["jobs"] = {j: "unknown" for j in s.config.service.jobs}
            service["error"] = str(err)
        try:
            mine = s.provider.list(Query(deployment=spec.deployment, instance=spec.id))
            last: list[dict[str, object]] | str = [
                {
                    "id": x.id,
                    "created_at": x.annotations.created_at.isoformat(),
                    "trigger": x.annotations.trigger,
                    "consistency": x.annotations.consistency,
                    "role": x.annotations.role,
                    "set_id": x.annotations.set_id,
                    "set_state": x.annotations.set_state,
                }
                for x in mine[:LAST_SNAPSHOTS]
            ]
        except SNAPSHOT_ERRORS as err:
            last = f"catalog unavailable: {err}"
        return {
            "instance": {
                "deployment": spec.deployment,
                "name": spec.name,
                "index": spec.index,
                "id": spec.id,
                "az": spec.az,
                "address": spec.address,
                "bootstrap": spec.bootstrap,
            },
            "role": role,
            "role_error": role_error,
            "service": service,
            "disk": {"cid": s.disk.cid, "mount": str(s.disk.mount)},
            "last_snapshots": last,
            "set": self.sets.describe(),
            "version": __version__,
        }

    def take(self, trigger: str, note: str) -> dict[str, object]:
        s = self.snapshotter

        def work() -> dict[str, object]:
            started = time.monotonic()
            try:
                taken = s.take(trigger, note=note)
            except SNAPSHOT_ERRORS:
                self.metrics.inc("disk_snapshots_failures_total", trigger=trigger)
                raise
            self.metrics.inc("disk_snapshots_taken_total", trigger=trigger)
            self.metrics.set(
                "disk_snapshots_last_success_timestamp_seconds", time.time(), trigger=trigger
            )
            self.metrics.set(
                "disk_snapshots_last_duration_seconds", time.monotonic() - started, trigger=trigger
            )
            self.metrics.set(
                "disk_snapshots_last_freeze_seconds", taken.frozen_seconds, trigger=trigger
            )
            plan = s.prune()
            a = taken.snapshot.annotations
            return {
                "snapshot_id": taken.snapshot.id,
                "consistency": a.consistency,
                "role": a.role,
                "frozen_seconds": taken.frozen_seconds,
                "warnings": taken.warnings,
                "retention_deleted": [x.id for x in plan.delete],
            }

        try:
            return self.operations.start("snapshot", work, errors=SNAPSHOT_ERRORS).to_json()
        except Busy as err:
            raise ApiError(HTTPStatus.CONFLICT, str(err)) from None

    def service(self, action: str, timeout: int) -> dict[str, object]:
        """monit stop/start every ``service.jobs`` process and wait for it, with a deadline."""
        jobs = self.snapshotter.config.service.jobs
        want = "not monitored" if action == "stop" else "running"
        if not self.service_lock.acquire(blocking=False):
            raise ApiError(HTTPStatus.CONFLICT, "another service stop/start is in progress")
        try:
            deadline = time.monotonic() + timeout
            try:
                for job in jobs:
                    (self.monit.stop if action == "stop" else self.monit.start)(job)
                while True:
                    states = self.monit.summary()
                    pending = {j: states.get(j, "unknown to monit") for j in jobs}
                    pending = {j: st for j, st in pending.items() if st != want}
                    if not pending:
                        return {"action": action, "jobs": {j: want for j in jobs}}
                    if time.monotonic() > deadline:
                        detail = ", ".join(f"{j}: {st}" for j, st in sorted(pending.items()))
                        raise ApiError(
                            HTTPStatus.GATEWAY_TIMEOUT,
                            f"not {want} within {timeout}s: {detail}",
                        )
                    time.sleep(0.2)
            except MonitError as err:
                raise ApiError(HTTPStatus.BAD_GATEWAY, str(err)) from None
        finally:
            self.service_lock.release()


# ---------------------------------------------------------------------------------------
# Request bodies: validated, every problem named by its path.


def _body_reader(document: object, allowed: tuple[str, ...]) -> tuple[Reader, dict[str, Reader]]:
    problems = Problems()
    body = Reader(document, "body", problems)
    return body, body.mapping(allowed=allowed)


def _fail_if(body: Reader) -> None:
    if body.problems.lines:
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid request", body.problems.lines)


def _text(entries: dict[str, Reader], key: str, limit: int = 255) -> str:
    if key not in entries:
        return ""
    value = entries[key]
    text = value.string()
    if len(text) > limit:
        value.fail(f"at most {limit} characters")
    elif any(ord(c) < 32 for c in text):
        value.fail("control characters are not allowed")
    return text


def _set_id(value: str) -> str:
    if not re.fullmatch(SET_ID, value):
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            "invalid request",
            [f"path.set_id: {value!r} does not match {SET_ID}"],
        )
    return value


Handler = Callable[[Agent, re.Match[str], object], tuple[HTTPStatus, object]]


def _status(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    return HTTPStatus.OK, agent.status()


def _post_snapshots(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, entries = _body_reader(body, ("trigger", "note"))
    trigger = "manual"
    if "trigger" in entries:
        trigger = entries["trigger"].string(pattern=f"manual|{_NAMED_TRIGGER}", fallback="manual")
        schedules = {f"schedule:{s.name}" for s in agent.snapshotter.config.schedules}
        if trigger != "manual" and trigger not in schedules:
            entries["trigger"].fail(
                f"{trigger!r} names no schedule of this instance; "
                f"allowed: manual{''.join(', ' + s for s in sorted(schedules))}"
            )
    note = _text(entries, "note")
    _fail_if(reader)
    return HTTPStatus.ACCEPTED, agent.take(trigger, note)


def _get_operation(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    operation = agent.operations.get(match["id"])
    if operation is None:
        raise ApiError(HTTPStatus.NOT_FOUND, f"no operation {match['id']} (finished ones expire)")
    return HTTPStatus.OK, operation.to_json()


def _quiesce(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    set_id = _set_id(match["set_id"])
    reader, entries = _body_reader(body, ("lease_seconds", "coordinator"))
    lease = reader.get("lease_seconds").integer(minimum=1, maximum=300)
    coordinator = _text(entries, "coordinator", 128) or "unnamed coordinator"
    _fail_if(reader)
    return HTTPStatus.OK, agent.sets.quiesce(set_id, lease, coordinator)


def _set_snapshot(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    set_id = _set_id(match["set_id"])
    reader, entries = _body_reader(body, ("set_size", "trigger", "note", "thaw"))
    size = reader.get("set_size").integer(minimum=1, maximum=1000)
    trigger = reader.get("trigger").string(pattern=_SET_TRIGGER, allow_empty=False)
    note = _text(entries, "note")
    thaw = entries["thaw"].boolean() if "thaw" in entries else False
    _fail_if(reader)
    return HTTPStatus.OK, agent.sets.snapshot(set_id, size, trigger, note, thaw)


def _thaw(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    set_id = _set_id(match["set_id"])
    reader, _ = _body_reader(body, ())
    _fail_if(reader)
    return HTTPStatus.OK, agent.sets.thaw(set_id)


def _set_state(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    set_id = _set_id(match["set_id"])
    reader, entries = _body_reader(body, ("state", "reason"))
    state = reader.get("state").string(choices=("complete", "incomplete"))
    reason = _text(entries, "reason", 256)
    if state == "incomplete" and not reason:
        reader.get("reason").fail("required when state is incomplete: say why")
    _fail_if(reader)
    return HTTPStatus.OK, agent.sets.mark(set_id, cast(SetState, state), reason)


def _service(action: str) -> Handler:
    def handle(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
        reader, entries = _body_reader(body, ("timeout",))
        timeout = 120
        if "timeout" in entries:
            timeout = entries["timeout"].integer(minimum=1, maximum=600, fallback=120)
        _fail_if(reader)
        return HTTPStatus.OK, agent.service(action, timeout)

    return handle


def _metrics(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    if not agent.snapshotter.config.metrics_enabled:
        raise ApiError(HTTPStatus.NOT_FOUND, "metrics are disabled (metrics.enabled: false)")
    return HTTPStatus.OK, agent.metrics.render()


ROUTES: tuple[tuple[re.Pattern[str], dict[str, Handler]], ...] = (
    (re.compile(r"/status"), {"GET": _status}),
    (re.compile(r"/snapshots"), {"POST": _post_snapshots}),
    (re.compile(rf"/operations/(?P<id>{_OPERATION_ID})"), {"GET": _get_operation}),
    (re.compile(r"/sets/(?P<set_id>[^/]+)/quiesce"), {"POST": _quiesce}),
    (re.compile(r"/sets/(?P<set_id>[^/]+)/snapshot"), {"POST": _set_snapshot}),
    (re.compile(r"/sets/(?P<set_id>[^/]+)/thaw"), {"POST": _thaw}),
    (re.compile(r"/sets/(?P<set_id>[^/]+)/state"), {"POST": _set_state}),
    (re.compile(r"/service/stop"), {"POST": _service("stop")}),
    (re.compile(r"/service/start"), {"POST": _service("start")}),
    (re.compile(r"/metrics"), {"GET": _metrics}),
)


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
        except MemberConflict as err:
            self._send(HTTPStatus.CONFLICT, {"error": str(err)})
        except MemberNotFound as err:
            self._send(HTTPStatus.NOT_FOUND, {"error": str(err)})
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
