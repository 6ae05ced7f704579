"""The agent API's endpoints: each validates its request and calls one member-side method.

Every body is a JSON object read through ``validate.Reader`` (errors name the field,
400); what a member side answers goes back as JSON, what it raises is mapped to a
status by server.py.

    GET  /status                  identity, role, service state, disk, last snapshots
    POST /snapshots               {trigger, note} → 202 {id} of an operation
    GET  /operations/<id>         running | succeeded | failed, with the result
    POST /sets/<set_id>/quiesce   {lease_seconds, coordinator} → once flushed and frozen
    POST /sets/<set_id>/snapshot  {set_size, trigger, note, thaw, snapshot_id?} → the snapshot id
                                  (and, with thaw true, thawed right after it); with
                                  snapshot_id, this disk's member of the set's group snapshot
                                  is claimed and annotated instead of a snapshot being taken
    POST /sets/<set_id>/thaw      {} → thawed, frozen seconds (again if already thawed)
    POST /sets/<set_id>/state     {state: complete|incomplete, reason}
    POST /service/stop            {timeout} → once monit reports every service job stopped
    POST /service/start           {timeout} → once monit reports every service job running
                                  (refused while a restore journal blocks start)
    GET  /metrics                 Prometheus text format

Restore (the errand's coordinator drives these on every member, restore/coordinator.py):

    GET  /restore/journal         this disk's restore journal, the last finished one, and
                                  whether an import is pending
    POST /restore/safety          {restore_id, snapshot_id, backup_id?, action, role, instance,
                                  plan, replaces?} → a clean pre-restore snapshot (the service must
                                  be stopped) and the journal, phase planned; the same again is
                                  a no-op; an unfinished journal of another restore is only
                                  replaced when named in ``replaces``
    POST /restore/copy            {restore_id, snapshot_id, safety_snapshot_id} → 202 {id} of an
                                  operation: materialize the snapshot (or the backup of it the
                                  journal names), copy it onto this disk
    POST /restore/imports         {phase: pre_start|post_start} → service.import commands run
    POST /restore/verify          {} → the colocated restore job's restore.verify argv, run here
    POST /restore/finish          {restore_id} → the journal closed (kept as restore-last.json)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Literal
from typing import cast

from disk_snapshots import triggers
from disk_snapshots.annotations import MAX_TAG_VALUE
from disk_snapshots.annotations import SET_ID
from disk_snapshots.annotations import SetState
from disk_snapshots.annotations import text_problem
from disk_snapshots.daemon.agent import Agent
from disk_snapshots.member_errors import NotFound
from disk_snapshots.restore.journal import RESTORE_ID
from disk_snapshots.restore.member import ImportPhase
from disk_snapshots.restore.plan import ACTIONS
from disk_snapshots.restore.plan import PLAN_ROLES
from disk_snapshots.restore.plan import Action
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.restore.plan import PlanRole
from disk_snapshots.validate import Problems
from disk_snapshots.validate import Reader

_OPERATION_ID = r"op-[0-9a-f]{16}"
_SNAPSHOT_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}"
_PLAN_KEYS = ("instance", "id", "role", "action", "snapshot_id", "backup_id")


class ApiError(Exception):
    """A request the HTTP layer itself refuses: bad path, method or body."""

    def __init__(self, status: HTTPStatus, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []


Handler = Callable[[Agent, re.Match[str], object], tuple[HTTPStatus, object]]


# ---------------------------------------------------------------------------------------
# Request bodies: validated, every problem named by its path.


def _body_reader(document: object, allowed: tuple[str, ...]) -> tuple[Reader, dict[str, Reader]]:
    problems = Problems()
    body = Reader(document, "body", problems)
    return body, body.mapping(allowed=allowed)


def _fail_if(body: Reader) -> None:
    if body.problems.lines:
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid request", body.problems.lines)


def _text(entries: dict[str, Reader], key: str, limit: int = MAX_TAG_VALUE) -> str:
    """Free text that may become a tag (annotations.text_problem: one limit everywhere)."""
    if key not in entries:
        return ""
    value = entries[key]
    text = value.string()
    problem = text_problem(text, limit)
    if problem:
        value.fail(problem)
    return text


def _set_id(value: str) -> str:
    if not re.fullmatch(SET_ID, value):
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            "invalid request",
            [f"path.set_id: {value!r} does not match {SET_ID}"],
        )
    return value


# ---------------------------------------------------------------------------------------
# The endpoints


def _status(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    return HTTPStatus.OK, agent.status()


def _post_snapshots(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, entries = _body_reader(body, ("trigger", "note"))
    trigger = triggers.MANUAL
    if "trigger" in entries:
        trigger = entries["trigger"].string(
            pattern=f"{triggers.MANUAL}|{triggers.SCHEDULE_TRIGGER}", fallback=triggers.MANUAL
        )
        schedules = {triggers.schedule_trigger(s.name) for s in agent.snapshotter.config.schedules}
        if trigger != triggers.MANUAL and trigger not in schedules:
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
        raise NotFound(f"no operation {match['id']} (finished ones expire)")
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
    reader, entries = _body_reader(body, ("set_size", "trigger", "note", "thaw", "snapshot_id"))
    size = reader.get("set_size").integer(minimum=1, maximum=1000)
    trigger = reader.get("trigger").string(pattern=triggers.SET_TRIGGER, allow_empty=False)
    note = _text(entries, "note")
    thaw = entries["thaw"].boolean() if "thaw" in entries else False
    claim = ""
    if "snapshot_id" in entries:
        claim = entries["snapshot_id"].string(pattern=_SNAPSHOT_ID, allow_empty=False)
    _fail_if(reader)
    return HTTPStatus.OK, agent.sets.snapshot(set_id, size, trigger, note, thaw, claim)


def _thaw(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    set_id = _set_id(match["set_id"])
    reader, _ = _body_reader(body, ())
    _fail_if(reader)
    return HTTPStatus.OK, agent.sets.thaw(set_id)


def _set_state(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    set_id = _set_id(match["set_id"])
    reader, entries = _body_reader(body, ("state", "reason"))
    state = reader.get("state").string(choices=("complete", "incomplete"))
    reason = _text(entries, "reason")
    if state == "incomplete" and not reason:
        reader.get("reason").fail("required when state is incomplete: say why")
    _fail_if(reader)
    return HTTPStatus.OK, agent.sets.mark(set_id, cast(SetState, state), reason)


def _service(action: Literal["stop", "start"]) -> Handler:
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
        raise NotFound("metrics are disabled (metrics.enabled: false)")
    return HTTPStatus.OK, agent.metrics.render()


def _restore_journal(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    return HTTPStatus.OK, agent.restore.journal()


def _plan_entry(item: Reader) -> PlanEntry | None:
    """One entry of the plan every journal records; None (problems recorded) when invalid."""
    entry = item.mapping(allowed=_PLAN_KEYS)
    role = item.get("role").string(choices=PLAN_ROLES)
    action = item.get("action").string(choices=ACTIONS)
    texts = {key: _text(entry, key) for key in ("instance", "id", "snapshot_id", "backup_id")}
    if not role or not action:
        return None
    return PlanEntry(
        texts["instance"],
        texts["id"],
        cast(PlanRole, role),
        cast(Action, action),
        texts["snapshot_id"],
        texts["backup_id"],
    )


def _restore_safety(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, entries = _body_reader(
        body,
        (
            "restore_id",
            "snapshot_id",
            "backup_id",
            "action",
            "role",
            "instance",
            "plan",
            "replaces",
        ),
    )
    restore_id = reader.get("restore_id").string(pattern=RESTORE_ID, allow_empty=False)
    replaces = ""
    if "replaces" in entries:
        replaces = entries["replaces"].string(pattern=RESTORE_ID)
    action = reader.get("action").string(choices=ACTIONS)
    snapshot_id = _text(entries, "snapshot_id")
    if snapshot_id and not re.fullmatch(_SNAPSHOT_ID, snapshot_id):
        entries["snapshot_id"].fail(f"{snapshot_id!r} is not a snapshot id")
    if action == "copy" and not snapshot_id:
        reader.get("snapshot_id").fail("required when action is copy")
    backup_id = _text(entries, "backup_id")
    if backup_id and not re.fullmatch(_SNAPSHOT_ID, backup_id):
        entries["backup_id"].fail(f"{backup_id!r} is not a backup id")
    role = reader.get("role").string(choices=PLAN_ROLES)
    instance = _text(entries, "instance", 128)
    plan = [_plan_entry(item) for item in reader.get("plan").items()]
    _fail_if(reader)
    me = agent.snapshotter.config.spec.id
    mine = PlanEntry(
        instance, me, cast(PlanRole, role), cast(Action, action), snapshot_id, backup_id
    )
    valid = [e for e in plan if e is not None]  # all of them: _fail_if passed
    return HTTPStatus.OK, agent.restore.safety(restore_id, mine, valid, replaces)


def _restore_copy(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, _ = _body_reader(body, ("restore_id", "snapshot_id", "safety_snapshot_id"))
    restore_id = reader.get("restore_id").string(pattern=RESTORE_ID, allow_empty=False)
    snapshot_id = reader.get("snapshot_id").string(pattern=_SNAPSHOT_ID, allow_empty=False)
    safety = reader.get("safety_snapshot_id").string(pattern=_SNAPSHOT_ID, allow_empty=False)
    _fail_if(reader)
    return HTTPStatus.ACCEPTED, agent.restore.copy(restore_id, snapshot_id, safety)


def _restore_imports(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, _ = _body_reader(body, ("phase",))
    phase = reader.get("phase").string(choices=("pre_start", "post_start"))
    _fail_if(reader)
    return HTTPStatus.OK, agent.restore.imports(cast(ImportPhase, phase))


def _restore_verify(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, _ = _body_reader(body, ())
    _fail_if(reader)
    return HTTPStatus.OK, agent.restore.verify()


def _restore_finish(agent: Agent, match: re.Match[str], body: object) -> tuple[HTTPStatus, object]:
    reader, _ = _body_reader(body, ("restore_id",))
    restore_id = reader.get("restore_id").string(pattern=RESTORE_ID, allow_empty=False)
    _fail_if(reader)
    return HTTPStatus.OK, agent.restore.finish(restore_id)


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
