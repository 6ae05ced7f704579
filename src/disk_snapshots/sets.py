"""Snapshot sets: one consistent cut across every instance of a deployment (DESIGN §1, §7).

The coordinator (the bootstrap instance, errands.coordinator) drives every member
through the agent API: quiesce all (flush + freeze, in parallel, under a lease) →
snapshot all → thaw all (always, also after errors) → mark every member's snapshot
``complete`` only if every member succeeded, else ``incomplete`` with the reason.

Leases, and who marks a set incomplete when something dies:

- A member's freeze is held by a thread of its own daemon, inside ``quiesce.frozen``,
  so the lease file names the daemon as holder and the freeze watchdog process thaws
  the disk at the lease deadline, or at once if the daemon itself dies.
- The holding thread also ends the freeze at the lease deadline when no thaw came (the
  coordinator died or lost the network). The member then marks its own snapshot, if
  it took one, ``incomplete``: nobody else is left to do it.
- After a thaw the member waits for the coordinator's verdict (``decision_window``: the
  other members' freezes end within a lease, and then the verdict is one call away); a
  coordinator that died between thaw and verdict leaves the member to mark itself
  ``incomplete`` too. A member that marked itself incomplete refuses a late
  ``complete`` (409), and the coordinator then marks the whole set incomplete.
- A daemon that dies with a set in flight finds the set's record in its data
  directory at the next start and marks that snapshot incomplete.

So a set is ``complete`` only when the coordinator saw every step succeed, and every
other ending reaches ``incomplete`` without anyone having to survive.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Literal
from typing import Protocol

from disk_snapshots import fsops
from disk_snapshots.agent_client import AgentClient
from disk_snapshots.agent_client import AgentError
from disk_snapshots.agent_client import AgentUnreachable
from disk_snapshots.agent_client import TlsSetupError
from disk_snapshots.agent_client import client_context
from disk_snapshots.annotations import MAX_TAG_VALUE
from disk_snapshots.annotations import Role
from disk_snapshots.annotations import SetState
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.config import Schedule
from disk_snapshots.config import SnapshotterConfig
from disk_snapshots.metrics import Metrics
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.quiesce import FreezeOutcome
from disk_snapshots.quiesce import QuiesceError
from disk_snapshots.quiesce import consistency_of
from disk_snapshots.quiesce import frozen
from disk_snapshots.services import ServiceError
from disk_snapshots.snapshotter import Snapshotter

log = logging.getLogger(__name__)

# Set ids end up in URL paths, file names and tags: no "/", no leading dot.
SET_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
# How long a thawed member waits for the coordinator's verdict before it marks its
# snapshot incomplete on its own, beyond the two leases (its own, the slowest member's)
# the coordinator may still be inside of.
DECISION_GRACE = 5.0
# Longest a quiesce request waits for flush + watchdog + freeze.
QUIESCE_WAIT = 70.0
RECENT_SESSIONS = 20


class SetError(RuntimeError):
    """The set could not be started at all (no TLS, no members)."""


class MemberConflict(RuntimeError):
    """The request does not fit this member's set state (HTTP 409)."""


class MemberNotFound(RuntimeError):
    """No such set on this member (HTTP 404)."""


# ---------------------------------------------------------------------------------------
# Pure decisions


@dataclass(frozen=True)
class Member:
    name: str
    index: int
    id: str
    address: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.name}/{self.index}"


def members_of(config: SnapshotterConfig) -> tuple[Member, ...]:
    """Every instance the ``snapshotter`` and ``peers`` links name, and this one."""
    found: dict[str, Member] = {}
    for link_name in ("snapshotter", "peers"):
        link = config.links.get(link_name)
        if link is None:
            continue
        for i in link.instances:
            found.setdefault(i.id, Member(i.name, i.index, i.id, i.address, link.api_port))
    spec = config.spec
    found.setdefault(spec.id, Member(spec.name, spec.index, spec.id, spec.address, config.api.port))
    return tuple(sorted(found.values(), key=lambda m: (m.name, m.index, m.id)))


def decision_window(lease_seconds: int) -> float:
    """Seconds a thawed member waits for the verdict before it marks itself incomplete."""
    return 2 * lease_seconds + DECISION_GRACE


def new_set_id(name: str, now: datetime, token: str) -> str:
    """``<name>-<UTC time>-<token>``: sortable by time, unique across coordinators."""
    return f"{name}-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{token}"


def clean_text(text: str, limit: int = MAX_TAG_VALUE) -> str:
    """One line that fits a tag: command output may hold newlines and control characters."""
    flat = " ".join("".join(c if ord(c) >= 32 else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass
class MemberResult:
    member: Member
    quiesced: bool = False
    snapshot_id: str = ""
    thawed: bool = False
    frozen_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return self.quiesced and bool(self.snapshot_id) and self.thawed and not self.errors


def decide(results: Sequence[MemberResult]) -> tuple[SetState, str]:
    """``complete`` only if every member quiesced, snapshotted and thawed without error."""
    if results and all(r.ok() for r in results):
        return "complete", ""
    if not results:
        return "incomplete", "no members"
    problems: list[str] = []
    for r in results:
        if r.errors:
            problems += [f"{r.member.label}: {e}" for e in r.errors]
        elif not r.ok():
            missing = "not quiesced" if not r.quiesced else "no snapshot"
            problems.append(f"{r.member.label}: {missing if not r.snapshot_id else 'not thawed'}")
    return "incomplete", clean_text("; ".join(problems))


# ---------------------------------------------------------------------------------------
# The coordinator


class AgentApi(Protocol):
    def quiesce(self, set_id: str, lease_seconds: int, coordinator: str) -> dict[str, object]: ...

    def snapshot_member(
        self, set_id: str, set_size: int, trigger: str, note: str = "", thaw: bool = False
    ) -> dict[str, object]: ...

    def thaw(self, set_id: str) -> dict[str, object]: ...

    def set_state(self, set_id: str, state: str, reason: str = "") -> dict[str, object]: ...


@dataclass
class SetOutcome:
    set_id: str
    trigger: str
    state: SetState
    reason: str
    results: list[MemberResult]

    @property
    def longest_freeze(self) -> float:
        return max((r.frozen_seconds for r in self.results), default=0.0)


CALL_ERRORS = (AgentError, AgentUnreachable)


def _why(err: Exception) -> str:
    if isinstance(err, AgentError):
        return err.message + (f" ({'; '.join(err.problems)})" if err.problems else "")
    return str(err)


def coordinate(
    members: Sequence[Member],
    connect: Callable[[Member], AgentApi],
    *,
    name: str,
    lease_seconds: int,
    coordinator: str,
    note: str = "",
    on_phase: Callable[[str, str], None] | None = None,
) -> SetOutcome:
    """Quiesce all → snapshot all → thaw all (always) → mark all complete or incomplete."""
    set_id = new_set_id(name, datetime.now(UTC), secrets.token_hex(3))
    trigger = f"set:{name}"
    results = [MemberResult(m) for m in members]
    clients = {m.id: connect(m) for m in members}

    def phase(label: str, work: Callable[[MemberResult], None], chosen: list[MemberResult]) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
            list(pool.map(work, chosen))
        if on_phase is not None:
            on_phase(label, set_id)

    def quiesce(r: MemberResult) -> None:
        try:
            clients[r.member.id].quiesce(set_id, lease_seconds, coordinator)
            r.quiesced = True
        except CALL_ERRORS as err:
            r.errors.append(f"quiesce failed: {_why(err)}")

    def thawed(r: MemberResult, answer: dict[str, object]) -> None:
        r.thawed = answer.get("thawed") is True
        seconds = answer.get("frozen_seconds", 0.0)
        r.frozen_seconds = float(seconds) if isinstance(seconds, int | float) else 0.0

    def snapshot(r: MemberResult) -> None:
        # Every member is frozen now, so all freezes share this instant: each member's
        # snapshot is its state at that instant whenever it is taken during its freeze,
        # and it may thaw right after its own snapshot without waiting for the others.
        try:
            answer = clients[r.member.id].snapshot_member(
                set_id, len(members), trigger, note, thaw=True
            )
            r.snapshot_id = str(answer.get("snapshot_id", ""))
            thawed(r, answer)
        except CALL_ERRORS as err:
            r.errors.append(f"snapshot failed: {_why(err)}")

    def thaw(r: MemberResult) -> None:
        try:
            thawed(r, clients[r.member.id].thaw(set_id))
        except CALL_ERRORS as err:
            # A member that refused the quiesce holds nothing to thaw; say nothing twice.
            if r.quiesced or isinstance(err, AgentUnreachable):
                r.errors.append(f"thaw failed: {_why(err)}")

    log.info("set %s: %d member(s), lease %ds", set_id, len(members), lease_seconds)
    try:
        phase("quiesced", quiesce, results)
        phase("snapshotted", snapshot, [r for r in results if r.quiesced])
    finally:
        # Every member not known to be thawed, not just those that said "frozen": a
        # quiesce that timed out on our side may still have frozen its disk.
        phase("thawed", thaw, [r for r in results if not r.thawed])
    state, reason = decide(results)
    state, reason = _mark(results, clients, set_id, state, reason)
    if on_phase is not None:
        on_phase("marked", set_id)
    log.info("set %s: %s%s", set_id, state, f" ({reason})" if reason else "")
    return SetOutcome(set_id, trigger, state, reason, results)


def _mark(
    results: list[MemberResult],
    clients: dict[str, AgentApi],
    set_id: str,
    state: SetState,
    reason: str,
) -> tuple[SetState, str]:
    taken = [r for r in results if r.snapshot_id]
    refused: list[str] = []

    def mark(r: MemberResult, verdict: SetState, why: str) -> None:
        try:
            clients[r.member.id].set_state(set_id, verdict, why)
        except AgentError as err:
            if verdict == "complete" and err.status == 409:
                refused.append(f"{r.member.label}: {err.message}")
            else:
                r.errors.append(f"marking {verdict} failed: {_why(err)}")
        except AgentUnreachable as err:
            # The member marks itself incomplete when no verdict arrives (decision_window).
            r.errors.append(f"marking {verdict} failed: {err}")

    with ThreadPoolExecutor(max_workers=max(1, len(taken))) as pool:
        list(pool.map(lambda r: mark(r, state, reason), taken))
    if state == "complete" and (refused or any(r.errors for r in taken)):
        # A member had already given up on the set (its lease expired): the others
        # were marked complete a moment ago and must not stay so.
        state, reason = decide(results)
        if refused:
            reason = clean_text("; ".join([*refused, reason] if reason != "" else refused))
        with ThreadPoolExecutor(max_workers=max(1, len(taken))) as pool:
            list(pool.map(lambda r: mark(r, "incomplete", reason), taken))
        state = "incomplete"
    return state, reason


def run_set(
    snapshotter: Snapshotter,
    name: str,
    *,
    note: str = "",
    on_phase: Callable[[str, str], None] | None = None,
) -> SetOutcome:
    """Coordinate one set from this instance, with the members and TLS of its config."""
    config = snapshotter.config
    if not config.api.tls.enabled:
        raise SetError(
            "a snapshot set needs the agent API, and api.tls is not set "
            "(add manifests/operations/agent-api-tls.yml)"
        )
    try:
        context = client_context(config.api.tls)
    except TlsSetupError as err:
        raise SetError(str(err)) from None
    spec = config.spec
    return coordinate(
        members_of(config),
        lambda m: AgentClient(m.address, m.port, context),
        name=name,
        lease_seconds=config.quiesce.freeze_timeout,
        coordinator=f"{spec.name}/{spec.index} ({spec.id})",
        note=note,
        on_phase=on_phase,
    )


def is_coordinator(config: SnapshotterConfig) -> tuple[bool, str]:
    # errands imports this module; import late to keep the dependency one-way at import time.
    from disk_snapshots.errands import coordinator

    return coordinator(config)


def run_set_schedule(snapshotter: Snapshotter, schedule: Schedule, metrics: Metrics) -> bool:
    """A ``scope: set`` schedule: the coordinator runs the set, every other instance waits."""
    leads, who = is_coordinator(snapshotter.config)
    if not leads:
        log.info(
            "schedule %s: the set is coordinated by %s; nothing to do on this instance",
            schedule.name,
            who,
        )
        return True
    started = time.monotonic()
    try:
        outcome = run_set(snapshotter, schedule.name)
    except SetError as err:
        log.error("schedule %s: no set taken: %s", schedule.name, err)
        metrics.inc("disk_snapshots_failures_total", schedule=schedule.name)
        return False
    if outcome.state != "complete":
        log.error(
            "schedule %s: set %s incomplete: %s", schedule.name, outcome.set_id, outcome.reason
        )
        metrics.inc("disk_snapshots_failures_total", schedule=schedule.name)
        return False
    metrics.set(
        "disk_snapshots_last_success_timestamp_seconds", time.time(), schedule=schedule.name
    )
    metrics.set(
        "disk_snapshots_last_duration_seconds", time.monotonic() - started, schedule=schedule.name
    )
    metrics.set(
        "disk_snapshots_last_freeze_seconds", outcome.longest_freeze, schedule=schedule.name
    )
    log.info(
        "schedule %s: set %s complete, %d members, longest freeze %.3fs",
        schedule.name,
        outcome.set_id,
        len(outcome.results),
        outcome.longest_freeze,
    )
    return True


# ---------------------------------------------------------------------------------------
# The member side (served by disk_snapshots.api)

SessionState = Literal["quiescing", "frozen", "snapshotting", "thawed", "expired", "failed"]


@dataclass
class Session:
    set_id: str
    coordinator: str
    lease_seconds: int
    started: float = field(default_factory=time.monotonic)
    state: SessionState = "quiescing"
    role: Role = "unknown"
    flushed: bool = False
    froze: bool = False
    outcome: FreezeOutcome | None = None
    snapshot: Snapshot | None = None
    frozen_seconds: float = 0.0
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    verdict: SetState = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: threading.Event = field(default_factory=threading.Event)  # frozen, or failed
    release: threading.Event = field(default_factory=threading.Event)  # thaw asked
    thawed: threading.Event = field(default_factory=threading.Event)
    decided: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def holding(self) -> bool:
        return self.state in ("quiescing", "frozen", "snapshotting")


@dataclass
class SetMember:
    """This instance's part in sets: a freeze held across requests, under a lease."""

    snapshotter: Snapshotter
    metrics: Metrics
    decision_seconds: float | None = None  # None: decision_window(lease)
    _sessions: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: threading.Event = field(default_factory=threading.Event)

    @property
    def records(self) -> Path:
        """Sets in flight, on ephemeral disk: what a restarted daemon must finish."""
        return self.snapshotter.paths.data / "sets"

    def _record(self, session: Session) -> Path:
        return self.records / f"{session.set_id}.json"

    def recover(self) -> list[str]:
        """Mark the snapshots of sets a previous daemon left in flight incomplete."""
        marked = []
        for record in sorted(self.records.glob("*.json")) if self.records.is_dir() else []:
            try:
                data = json.loads(record.read_text())
                snapshot = self.snapshotter.provider.get(str(data["snapshot_id"]))
                if not snapshot.annotations.set_state:
                    self.snapshotter.provider.update(
                        snapshot.id,
                        snapshot.annotations.with_set_state(
                            "incomplete",
                            f"the snapshotter daemon of {self._me()} stopped while set "
                            f"{snapshot.annotations.set_id} was in flight",
                        ),
                    )
                    marked.append(snapshot.id)
            except (OSError, ValueError, KeyError, ProviderError) as err:
                log.warning("set record %s: %s", record, err)
            record.unlink(missing_ok=True)
        return marked

    def _me(self) -> str:
        spec = self.snapshotter.config.spec
        return f"{spec.name}/{spec.index}"

    def active(self) -> Session | None:
        with self._lock:
            return next((s for s in self._sessions.values() if s.holding), None)

    def _session(self, set_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(set_id)
        if session is None:
            raise MemberNotFound(f"set {set_id} was not quiesced on this instance")
        return session

    def quiesce(self, set_id: str, lease_seconds: int, coordinator: str) -> dict[str, object]:
        """Flush and freeze under a lease; returns once frozen (MemberConflict otherwise)."""
        if self._closing.is_set():
            raise MemberConflict("the snapshotter daemon is stopping")
        # The member's own freeze_timeout caps the lease: its operator decided how long
        # this disk may block writers, whatever a coordinator asks.
        lease = min(lease_seconds, self.snapshotter.config.quiesce.freeze_timeout)
        with self._lock:
            busy = next((s for s in self._sessions.values() if s.holding), None)
            if busy is not None:
                raise MemberConflict(
                    f"set {busy.set_id} (from {busy.coordinator}) is in progress on this instance"
                )
            if set_id in self._sessions:
                raise MemberConflict(f"set {set_id} was already quiesced on this instance")
            session = Session(set_id=set_id, coordinator=coordinator, lease_seconds=lease)
            self._sessions[set_id] = session
            self._forget_old()
        session.thread = threading.Thread(target=self._hold, args=(session,), name=f"set-{set_id}")
        session.thread.start()
        if not session.ready.wait(QUIESCE_WAIT):
            session.release.set()
            raise MemberConflict(f"flush and freeze did not finish within {QUIESCE_WAIT:.0f}s")
        if session.state != "frozen":
            raise MemberConflict(session.error or f"the set is {session.state} on this instance")
        return {
            "set_id": set_id,
            "frozen": session.froze,
            "lease_seconds": lease,
            "role": session.role,
            "consistency": consistency_of(session.flushed, session.froze),
            "warnings": list(session.warnings),
        }

    def _forget_old(self) -> None:
        done = [k for k, s in self._sessions.items() if not s.holding and s.decided.is_set()]
        for key in done[: max(0, len(self._sessions) - RECENT_SESSIONS)]:
            thread = self._sessions.pop(key).thread
            if thread is not None:
                thread.join()

    @contextlib.contextmanager
    def _freeze(self, session: Session) -> Iterator[FreezeOutcome | None]:
        s = self.snapshotter
        if not s.config.quiesce.freeze:
            yield None
            return
        s.paths.logs.mkdir(parents=True, exist_ok=True)
        with frozen(
            s.disk.mount,
            session.lease_seconds,
            s.paths.data,
            s.paths.logs / "watchdog.log",
        ) as outcome:
            yield outcome

    def _hold(self, session: Session) -> None:
        """The thread that owns one set's flush → freeze → (wait) → thaw → resume."""
        service = self.snapshotter.service
        released = False
        try:
            try:
                session.role = service.role()
            except ServiceError as err:
                session.warnings.append(clean_text(f"role unknown: {err}"))
            try:
                session.flushed = service.flush()
            except ServiceError as err:
                if self.snapshotter.config.quiesce.on_failure == "abort":
                    session.error = clean_text(f"flush failed: {err}")
                    session.state = "failed"
                    return
                session.warnings.append(clean_text(f"flush failed: {err}"))
            # Writes the provider would otherwise flush inside the freeze (loopback: the
            # image's dirty pages) go out now, while the disk still takes writes.
            if self.snapshotter.config.quiesce.freeze:
                fsops.syncfs(self.snapshotter.disk.mount)
            self.snapshotter.provider.prepare(self.snapshotter.disk)
            # The lease bounds the freeze, not the flush before it.
            session.started = time.monotonic()
            with self._freeze(session) as outcome:
                session.outcome = outcome
                session.froze = outcome is not None
                session.state = "frozen"
                session.ready.set()
                remaining = session.started + session.lease_seconds - time.monotonic()
                released = session.release.wait(max(0.0, remaining))
                with session.lock:
                    if not released:
                        # Blocks a snapshot from starting; one in progress is checked after.
                        session.state = "expired"
            if outcome is not None:
                session.frozen_seconds = outcome.frozen_seconds
        except (QuiesceError, ProviderError, OSError) as err:
            session.error = clean_text(f"freeze failed: {err}")
            session.state = "failed"
        finally:
            if session.flushed:
                try:
                    service.resume()
                except ServiceError as err:
                    session.warnings.append(clean_text(f"resume failed: {err}"))
            if session.state not in ("failed", "expired"):
                session.state = "thawed"
            session.ready.set()
            session.thawed.set()
        if session.state == "expired":
            log.warning(
                "set %s: the lease of %ds expired without a thaw from %s; thawed",
                session.set_id,
                session.lease_seconds,
                session.coordinator,
            )
            self._decide_alone(
                session,
                f"the lease of {session.lease_seconds}s on {self._me()} expired without a thaw "
                f"from the coordinator {session.coordinator}",
            )
        elif session.snapshot is not None and not self._wait_verdict(session):
            self._decide_alone(
                session,
                f"the snapshotter daemon of {self._me()} stopped before the coordinator "
                "reported the set's outcome"
                if self._closing.is_set()
                else f"the coordinator {session.coordinator} did not report the set's "
                f"outcome to {self._me()} within {self._window(session):.0f}s of the thaw",
            )
        session.decided.set()

    def _window(self, session: Session) -> float:
        if self.decision_seconds is not None:
            return self.decision_seconds
        return decision_window(session.lease_seconds)

    def _wait_verdict(self, session: Session) -> bool:
        deadline = time.monotonic() + self._window(session)
        while time.monotonic() < deadline and not self._closing.is_set():
            if session.decided.wait(0.2):
                return True
        return session.decided.is_set()

    def _decide_alone(self, session: Session, reason: str) -> None:
        with session.lock:
            if session.verdict or session.snapshot is None:
                return
            session.verdict = "incomplete"
            session.error = clean_text(reason)
            snapshot = session.snapshot
        try:
            self.snapshotter.provider.update(
                snapshot.id, snapshot.annotations.with_set_state("incomplete", clean_text(reason))
            )
            self._record(session).unlink(missing_ok=True)
        except (ProviderError, OSError) as err:
            log.error("set %s: cannot mark %s incomplete: %s", session.set_id, snapshot.id, err)
        log.warning("set %s: marked %s incomplete: %s", session.set_id, snapshot.id, reason)

    def snapshot(
        self, set_id: str, set_size: int, trigger: str, note: str, thaw: bool = False
    ) -> dict[str, object]:
        """This member's snapshot of the set; with ``thaw``, thawed right after it."""
        answer = self._snapshot(set_id, set_size, trigger, note)
        if thaw:
            answer |= self.thaw(set_id)
        return answer

    def _snapshot(self, set_id: str, set_size: int, trigger: str, note: str) -> dict[str, object]:
        session = self._session(set_id)
        with session.lock:
            if session.state != "frozen":
                raise MemberConflict(
                    f"set {set_id} is {session.state} on this instance, not frozen"
                    + (f": {session.error}" if session.error else "")
                )
            if session.snapshot is not None:
                raise MemberConflict(f"set {set_id} already has snapshot {session.snapshot.id}")
            session.state = "snapshotting"
        s = self.snapshotter
        try:
            annotations = s.annotations(
                trigger=trigger,
                consistency=consistency_of(session.flushed, session.froze),
                role=session.role,
                moment=datetime.now(UTC),
                note=note,
                set_id=set_id,
                set_size=set_size,
            )
            taken = s.provider.snapshot(s.disk, annotations)
        except (ProviderError, OSError, ValueError) as err:
            with session.lock:
                session.state = "frozen" if session.state == "snapshotting" else session.state
            raise MemberConflict(clean_text(f"snapshot failed: {err}")) from None
        with session.lock:
            held = session.state == "snapshotting" and (
                session.outcome is None or session.outcome.held()
            )
            if session.state == "snapshotting":
                session.state = "frozen"
            if held:
                session.snapshot = taken
        if not held:
            s.provider.delete(taken.id)
            raise MemberConflict(
                f"the freeze of {s.disk.mount} ended (lease {session.lease_seconds}s) before "
                f"the snapshot was fixed; snapshot {taken.id} deleted"
            )
        self.records.mkdir(parents=True, exist_ok=True)
        self._record(session).write_text(json.dumps({"snapshot_id": taken.id, "set_id": set_id}))
        s.record_role(session.role)
        self.metrics.inc("disk_snapshots_taken_total", trigger=trigger)
        return {
            "set_id": set_id,
            "snapshot_id": taken.id,
            "consistency": annotations.consistency,
            "role": annotations.role,
            "created_at": annotations.created_at.isoformat(),
        }

    def thaw(self, set_id: str) -> dict[str, object]:
        session = self._session(set_id)
        session.release.set()
        if not session.thawed.wait(30):
            raise MemberConflict(f"set {set_id}: the thaw did not finish within 30s")
        if session.state == "expired":
            raise MemberConflict(
                f"the lease of {session.lease_seconds}s expired before the thaw; this instance "
                "thawed on its own and marks its snapshot incomplete"
            )
        if session.state == "failed" and not session.froze:
            raise MemberConflict(session.error or "nothing was frozen")
        if session.froze:
            trigger = session.snapshot.annotations.trigger if session.snapshot else ""
            if trigger:
                self.metrics.set(
                    "disk_snapshots_last_freeze_seconds", session.frozen_seconds, trigger=trigger
                )
        return {
            "set_id": set_id,
            "thawed": True,
            "frozen_seconds": session.frozen_seconds,
            "snapshot_id": session.snapshot.id if session.snapshot else "",
            "warnings": list(session.warnings),
        }

    def mark(self, set_id: str, state: SetState, reason: str) -> dict[str, object]:
        """The coordinator's verdict on this member's snapshot of the set."""
        with self._lock:
            session = self._sessions.get(set_id)
        reason = clean_text(reason)
        if session is None:
            return self._mark_from_catalog(set_id, state, reason)
        with session.lock:
            if session.snapshot is None:
                raise MemberNotFound(f"this instance took no snapshot in set {set_id}")
            if session.verdict == "incomplete" and state == "complete":
                raise MemberConflict(
                    f"this instance already marked its snapshot incomplete: {session.error}"
                )
            session.verdict = state
            snapshot = session.snapshot
        try:
            updated = self.snapshotter.provider.update(
                snapshot.id, snapshot.annotations.with_set_state(state, reason)
            )
        finally:
            session.decided.set()
        self._record(session).unlink(missing_ok=True)
        return {"set_id": set_id, "snapshot_id": updated.id, "set_state": state}

    def _mark_from_catalog(self, set_id: str, state: SetState, reason: str) -> dict[str, object]:
        # The daemon restarted since the set ran: the catalog still knows the snapshot.
        s = self.snapshotter
        mine = s.provider.list(Query(set_id=set_id, instance=s.config.spec.id))
        if not mine:
            raise MemberNotFound(f"this instance has no snapshot in set {set_id}")
        snapshot = mine[0]
        if snapshot.annotations.set_state == "incomplete" and state == "complete":
            raise MemberConflict(
                "this instance already marked its snapshot incomplete: "
                + snapshot.annotations.set_reason
            )
        s.provider.update(snapshot.id, snapshot.annotations.with_set_state(state, reason))
        return {"set_id": set_id, "snapshot_id": snapshot.id, "set_state": state}

    def describe(self) -> dict[str, object] | None:
        session = self.active()
        if session is None:
            return None
        return {
            "set_id": session.set_id,
            "state": session.state,
            "coordinator": session.coordinator,
            "lease_seconds": session.lease_seconds,
        }

    def close(self, timeout: float = 30.0) -> None:
        """Thaw whatever is held and end every session (the daemon is stopping)."""
        self._closing.set()
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.release.set()
        for session in sessions:
            if session.thread is not None:
                # The thread thaws, sees the daemon closing and marks its snapshot itself.
                session.thread.join(timeout)
