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
                                  (refused while a restore journal blocks start)
    GET  /metrics                 Prometheus text format

Restore (DESIGN §8; the errand's coordinator drives these on every member):

    GET  /restore/journal         this disk's restore journal, the last finished one, and
                                  whether an import is pending
    POST /restore/safety          {restore_id, snapshot_id, action, role, instance, plan,
                                  replaces?} → a clean pre-restore snapshot (the service must
                                  be stopped) and the journal, phase planned; the same again is
                                  a no-op; an unfinished journal of another restore is only
                                  replaced when named in ``replaces``
    POST /restore/copy            {restore_id, snapshot_id, safety_snapshot_id} → 202 {id} of an
                                  operation: materialize the snapshot, copy it onto this disk
    POST /restore/imports         {phase: pre_start|post_start} → service.import commands run
    POST /restore/verify          {} → the colocated restore job's restore.verify argv, run here
    POST /restore/finish          {restore_id} → the journal closed (kept as restore-last.json)
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import ssl
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
from disk_snapshots.config import ConfigError
from disk_snapshots.config import RestoreConfig
from disk_snapshots.config import TlsConfig
from disk_snapshots.config import load_config
from disk_snapshots.hooks import SNAPSHOT_ERRORS
from disk_snapshots.hooks import run_imports
from disk_snapshots.metrics import Metrics
from disk_snapshots.operations import Busy
from disk_snapshots.operations import Operations
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.restore_copy import Journal
from disk_snapshots.restore_copy import PlanEntry
from disk_snapshots.restore_copy import RestoreCopyError
from disk_snapshots.restore_copy import copy_tree
from disk_snapshots.services import ServiceError
from disk_snapshots.services import run_argv
from disk_snapshots.sets import SET_ID
from disk_snapshots.sets import MemberConflict
from disk_snapshots.sets import MemberNotFound
from disk_snapshots.sets import SetMember
from disk_snapshots.snapshotter import Snapshotter
from disk_snapshots.snapshotter import pending_import_marker
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
RESTORE_ID = r"restore-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}"
_SNAPSHOT_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}"
_PLAN_KEYS = ("instance", "id", "role", "action", "snapshot_id")
# Imports and verify are operator commands; they get what pre-start gives its imports.
RESTORE_COMMAND_SECONDS = 600


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
        return run_argv([binary, *args], "monit", self.timeout, error=MonitError)

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
    restore_lock: threading.Lock = field(default_factory=threading.Lock)
    # restore id → the operation copying it, so a rerun of a killed errand finds the copy
    restore_copies: dict[str, str] = field(default_factory=dict)
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
        if action == "start":
            journal = Journal.read(self.snapshotter.disk.mount)
            if journal is not None and journal.blocks_start:
                raise ApiError(HTTPStatus.CONFLICT, journal.refusal())
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

    # Restore (the errand's coordinator calls these in its order; each checks its own
    # preconditions, because a rerun after a kill may call them in any state).

    def _require_stopped(self) -> None:
        jobs = self.snapshotter.config.service.jobs
        try:
            summary = self.monit.summary()
        except MonitError as err:
            raise ApiError(HTTPStatus.BAD_GATEWAY, str(err)) from None
        running = {j: summary.get(j, "unknown to monit") for j in jobs}
        running = {j: st for j, st in running.items() if st != "not monitored"}
        if running:
            detail = ", ".join(f"{j}: {st}" for j, st in sorted(running.items()))
            raise ApiError(
                HTTPStatus.CONFLICT,
                f"the service must be stopped first (POST /service/stop); monit says {detail}",
            )

    def restore_journal(self) -> dict[str, object]:
        store = self.snapshotter.disk.mount
        journal, last = Journal.read(store), Journal.read_last(store)
        copying = ""
        if journal is not None:
            copying = self.restore_copies.get(journal.restore_id, "")
        return {
            "journal": journal.to_json() if journal else None,
            "last": last.to_json() if last else None,
            "pending_import": pending_import_marker(store).exists(),
            "copy_operation": copying,
        }

    def restore_safety(
        self,
        restore_id: str,
        snapshot_id: str,
        action: str,
        role: str,
        instance: str,
        plan: list[PlanEntry],
        replaces: str = "",
    ) -> dict[str, object]:
        store = self.snapshotter.disk.mount
        with self.restore_lock:
            existing = Journal.read(store)
            if existing is not None and not (replaces and existing.restore_id == replaces):
                if existing.restore_id == restore_id:
                    return {
                        "safety_snapshot_id": existing.safety_snapshot_id,
                        "taken": False,
                        "journal": existing.to_json(),
                    }
                raise ApiError(
                    HTTPStatus.CONFLICT,
                    f"restore {existing.restore_id} on this disk is unfinished "
                    f"(phase {existing.phase}); rerun the errand to finish it, or name other "
                    "snapshots in restore.snapshots to replace it",
                )
            self._require_stopped()
            try:
                safety = self.snapshotter.take_clean(
                    "pre-restore", note=f"before {restore_id}"[:255]
                )
            except SNAPSHOT_ERRORS as err:
                raise ApiError(
                    HTTPStatus.BAD_GATEWAY, f"pre-restore safety snapshot failed: {err}"
                ) from None
            journal = Journal(
                restore_id,
                snapshot_id,
                safety.id,
                "planned",
                action=action,
                role=role,
                instance=instance,
                plan=plan,
            )
            if action == "resync":
                # Nothing is copied onto this disk: it may start, and replicates once it does.
                journal.write(store, "copied", "resync: the disk is kept and replicates")
            else:
                journal.write(store, "planned")
            return {"safety_snapshot_id": safety.id, "taken": True, "journal": journal.to_json()}

    def restore_copy(
        self, restore_id: str, snapshot_id: str, safety_snapshot_id: str
    ) -> dict[str, object]:
        s = self.snapshotter
        store = s.disk.mount
        with self.restore_lock:
            journal = Journal.read(store)
            if journal is None or journal.restore_id != restore_id:
                found = journal.restore_id if journal else "none"
                raise ApiError(
                    HTTPStatus.CONFLICT,
                    f"no journal of {restore_id} on this disk (found: {found}); "
                    "POST /restore/safety comes first",
                )
            if (journal.action, journal.snapshot_id, journal.safety_snapshot_id) != (
                "copy",
                snapshot_id,
                safety_snapshot_id,
            ):
                raise ApiError(
                    HTTPStatus.CONFLICT,
                    f"the journal of {restore_id} says {journal.action} {journal.snapshot_id} "
                    f"(safety {journal.safety_snapshot_id}), not copy {snapshot_id} "
                    f"(safety {safety_snapshot_id})",
                )
            running = self.operations.get(self.restore_copies.get(restore_id, ""))
            if running is not None and running.state == "running":
                return running.to_json()
            try:
                snapshot = s.provider.get(snapshot_id)
            except UnknownSnapshot as err:
                raise ApiError(HTTPStatus.NOT_FOUND, str(err)) from None
            except ProviderError as err:
                raise ApiError(HTTPStatus.BAD_GATEWAY, str(err)) from None
            if snapshot.annotations.deployment != s.config.spec.deployment:
                raise ApiError(
                    HTTPStatus.BAD_REQUEST,
                    f"snapshot {snapshot_id} belongs to deployment "
                    f"{snapshot.annotations.deployment}, not {s.config.spec.deployment}",
                )
            self._require_stopped()
            already = journal.phase in ("copied", "started")

            def work() -> dict[str, object]:
                if already:
                    return {"snapshot_id": snapshot_id, "copied": False, "phase": journal.phase}
                started = time.monotonic()
                try:
                    with s.provider.materialize(snapshot_id, s.config.spec.az) as source:
                        copy_tree(source, store, journal)
                except ProviderError as err:
                    journal.write(store, "failed", f"materializing {snapshot_id}: {err}")
                    raise RestoreCopyError(
                        f"materializing snapshot {snapshot_id} failed: {err}. The service "
                        f"stays stopped; the safety snapshot {safety_snapshot_id} holds the "
                        "data from before the restore."
                    ) from None
                marker = pending_import_marker(store)
                marker.write_text(
                    json.dumps({"reason": f"{restore_id} restored {snapshot_id}"}) + "\n"
                )
                return {
                    "snapshot_id": snapshot_id,
                    "copied": True,
                    "seconds": round(time.monotonic() - started, 3),
                    "phase": "copied",
                }

            try:
                operation = self.operations.start(
                    "restore-copy", work, errors=(RestoreCopyError, ProviderError, OSError)
                )
            except Busy as err:
                raise ApiError(HTTPStatus.CONFLICT, str(err)) from None
            self.restore_copies[restore_id] = operation.id
            return operation.to_json()

    def restore_imports(self, phase: str) -> dict[str, object]:
        service = self.snapshotter.config.service
        store = self.snapshotter.disk.mount
        commands = service.import_pre_start if phase == "pre_start" else service.import_post_start
        if phase == "pre_start":
            # The same order as a BOSH start: files are imported before processes exist.
            self._require_stopped()
        try:
            run_imports(commands, f"import.{phase}")
        except (ServiceError, OSError) as err:
            raise ApiError(HTTPStatus.BAD_GATEWAY, str(err)) from None
        if phase == "post_start":
            pending_import_marker(store).unlink(missing_ok=True)
        return {"phase": phase, "commands": len(commands)}

    def restore_verify(self) -> dict[str, object]:
        path = self.snapshotter.paths.job_config("restore")
        try:
            config = load_config(path)
        except ConfigError as err:
            raise ApiError(
                HTTPStatus.CONFLICT,
                f"restore.verify cannot be read on this instance: {err.report(str(path))}",
            ) from None
        if not isinstance(config, RestoreConfig):
            raise ApiError(HTTPStatus.CONFLICT, f"{path} is not the restore job's config")
        if not config.verify:
            return {"ran": False, "argv": [], "output": ""}
        try:
            output = run_argv(config.verify, "restore.verify", timeout=RESTORE_COMMAND_SECONDS)
        except ServiceError as err:
            raise ApiError(HTTPStatus.BAD_GATEWAY, str(err)) from None
        return {"ran": True, "argv": list(config.verify), "output": output[-2000:]}

    def restore_finish(self, restore_id: str) -> dict[str, object]:
        store = self.snapshotter.disk.mount
        with self.restore_lock:
            journal = Journal.read(store)
            if journal is None:
                last = Journal.read_last(store)
                if last is not None and last.restore_id == restore_id:
                    return {"finished": False, "journal": last.to_json()}
                raise ApiError(HTTPStatus.CONFLICT, f"no journal of {restore_id} on this disk")
            if journal.restore_id != restore_id:
                raise ApiError(
                    HTTPStatus.CONFLICT,
                    f"the journal on this disk is of {journal.restore_id}, not {restore_id}",
                )
            if journal.blocks_start:
                raise ApiError(HTTPStatus.CONFLICT, journal.refusal())
            journal.finish(store)
            return {"finished": True, "journal": journal.to_json()}


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


def _restore_journal(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    return HTTPStatus.OK, agent.restore_journal()


def _restore_safety(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, entries = _body_reader(
        body, ("restore_id", "snapshot_id", "action", "role", "instance", "plan", "replaces")
    )
    restore_id = reader.get("restore_id").string(pattern=RESTORE_ID, allow_empty=False)
    replaces = ""
    if "replaces" in entries:
        replaces = entries["replaces"].string(pattern=RESTORE_ID)
    action = reader.get("action").string(choices=("copy", "resync"))
    snapshot_id = _text(entries, "snapshot_id")
    if snapshot_id and not re.fullmatch(_SNAPSHOT_ID, snapshot_id):
        entries["snapshot_id"].fail(f"{snapshot_id!r} is not a snapshot id")
    if action == "copy" and not snapshot_id:
        reader.get("snapshot_id").fail("required when action is copy")
    role = reader.get("role").string(choices=("leader", "follower"))
    instance = _text(entries, "instance", 128)
    plan: list[PlanEntry] = []
    for item in reader.get("plan").items():
        entry = item.mapping(allowed=_PLAN_KEYS)
        plan.append({key: _text(entry, key, 256) for key in entry})
    _fail_if(reader)
    return HTTPStatus.OK, agent.restore_safety(
        restore_id, snapshot_id, action, role, instance, plan, replaces
    )


def _restore_copy(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, _ = _body_reader(body, ("restore_id", "snapshot_id", "safety_snapshot_id"))
    restore_id = reader.get("restore_id").string(pattern=RESTORE_ID, allow_empty=False)
    snapshot_id = reader.get("snapshot_id").string(pattern=_SNAPSHOT_ID, allow_empty=False)
    safety = reader.get("safety_snapshot_id").string(pattern=_SNAPSHOT_ID, allow_empty=False)
    _fail_if(reader)
    return HTTPStatus.ACCEPTED, agent.restore_copy(restore_id, snapshot_id, safety)


def _restore_imports(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, _ = _body_reader(body, ("phase",))
    phase = reader.get("phase").string(choices=("pre_start", "post_start"))
    _fail_if(reader)
    return HTTPStatus.OK, agent.restore_imports(phase)


def _restore_verify(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, _ = _body_reader(body, ())
    _fail_if(reader)
    return HTTPStatus.OK, agent.restore_verify()


def _restore_finish(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, _ = _body_reader(body, ("restore_id",))
    restore_id = reader.get("restore_id").string(pattern=RESTORE_ID, allow_empty=False)
    _fail_if(reader)
    return HTTPStatus.OK, agent.restore_finish(restore_id)


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
    (re.compile(r"/restore/journal"), {"GET": _restore_journal}),
    (re.compile(r"/restore/safety"), {"POST": _restore_safety}),
    (re.compile(r"/restore/copy"), {"POST": _restore_copy}),
    (re.compile(r"/restore/imports"), {"POST": _restore_imports}),
    (re.compile(r"/restore/verify"), {"POST": _restore_verify}),
    (re.compile(r"/restore/finish"), {"POST": _restore_finish}),
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
