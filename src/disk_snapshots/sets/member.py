"""A member's side of a set: its freeze, held across the coordinator's requests under a lease.

Leases, and who marks a set incomplete when something dies:

- A member's freeze is held by a thread of its own daemon, inside ``quiesce.quiesced``,
  so the lease file names the daemon as holder and the freeze watchdog process thaws
  the disk at the lease deadline, or at once if the daemon itself dies.
- The holding thread also ends the freeze at the lease deadline when no thaw came (the
  coordinator died or lost the network). The member then marks its own snapshot, if
  it took one, ``incomplete``: nobody else is left to do it.
- After a thaw the member waits for the coordinator's verdict (``decision_window``: the
  other members' freezes end within a lease, and then the verdict is one call away); a
  coordinator that died between thaw and verdict leaves the member to mark itself
  ``incomplete`` too. A member that marked itself incomplete refuses a late
  ``complete`` (Conflict), and the coordinator then marks the whole set incomplete.
- A daemon that dies with a set in flight finds the set's record in its data
  directory at the next start and marks that snapshot incomplete.

So a set is ``complete`` only when the coordinator saw every step succeed, and every
other ending reaches ``incomplete`` without anyone having to survive.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Literal

from disk_snapshots import metrics as m
from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import Role
from disk_snapshots.annotations import SetState
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.member_errors import Conflict
from disk_snapshots.member_errors import NotFound
from disk_snapshots.metrics import Metrics
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.group_snapshots import GroupSnapshots
from disk_snapshots.sets.decisions import clean_text
from disk_snapshots.sets.decisions import decision_window
from disk_snapshots.snapshot.quiesce import FlushRefused
from disk_snapshots.snapshot.quiesce import FreezeOutcome
from disk_snapshots.snapshot.quiesce import QuiesceError
from disk_snapshots.snapshot.quiesce import consistency_of
from disk_snapshots.snapshot.quiesce import quiesced
from disk_snapshots.snapshot.snapshotter import Snapshotter

log = logging.getLogger(__name__)

# Longest a quiesce request waits for flush + watchdog + freeze.
QUIESCE_WAIT = 70.0
RECENT_SESSIONS = 20


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
            raise NotFound(f"set {set_id} was not quiesced on this instance")
        return session

    def quiesce(self, set_id: str, lease_seconds: int, coordinator: str) -> dict[str, object]:
        """Flush and freeze under a lease; returns once frozen (Conflict otherwise)."""
        if self._closing.is_set():
            raise Conflict("the snapshotter daemon is stopping")
        # The member's own freeze_timeout caps the lease: its operator decided how long
        # this disk may block writers, whatever a coordinator asks.
        lease = min(lease_seconds, self.snapshotter.config.quiesce.freeze_timeout)
        with self._lock:
            busy = next((s for s in self._sessions.values() if s.holding), None)
            if busy is not None:
                raise Conflict(
                    f"set {busy.set_id} (from {busy.coordinator}) is in progress on this instance"
                )
            if set_id in self._sessions:
                raise Conflict(f"set {set_id} was already quiesced on this instance")
            session = Session(set_id=set_id, coordinator=coordinator, lease_seconds=lease)
            self._sessions[set_id] = session
            self._forget_old()
        session.thread = threading.Thread(target=self._hold, args=(session,), name=f"set-{set_id}")
        session.thread.start()
        if not session.ready.wait(QUIESCE_WAIT):
            session.release.set()
            raise Conflict(f"flush and freeze did not finish within {QUIESCE_WAIT:.0f}s")
        if session.state != "frozen":
            raise Conflict(session.error or f"the set is {session.state} on this instance")
        return {
            "set_id": set_id,
            "frozen": session.froze,
            "lease_seconds": lease,
            "role": session.role,
            "consistency": consistency_of(session.flushed, session.froze),
            "warnings": [clean_text(w) for w in session.warnings],
        }

    def _forget_old(self) -> None:
        done = [k for k, s in self._sessions.items() if not s.holding and s.decided.is_set()]
        for key in done[: max(0, len(self._sessions) - RECENT_SESSIONS)]:
            thread = self._sessions.pop(key).thread
            if thread is not None:
                thread.join()

    def _hold(self, session: Session) -> None:
        """The thread that owns one set's flush → freeze → (wait) → thaw → resume."""
        try:
            with quiesced(self.snapshotter.freezer(), session.lease_seconds) as state:
                session.role, session.flushed = state.role, state.flushed
                session.outcome, session.froze = state.freeze, state.freeze is not None
                session.warnings = state.warnings  # resume adds to it after the thaw
                session.started = state.since
                session.state = "frozen"
                session.ready.set()
                remaining = session.started + session.lease_seconds - time.monotonic()
                released = session.release.wait(max(0.0, remaining))
                with session.lock:
                    if not released:
                        # Blocks a snapshot from starting; one in progress is checked after.
                        session.state = "expired"
            if session.outcome is not None:
                session.frozen_seconds = session.outcome.frozen_seconds
        except FlushRefused as err:
            session.error = clean_text(f"flush failed: {err.cause}")
            session.state = "failed"
        except (QuiesceError, ProviderError, OSError) as err:
            session.error = clean_text(f"freeze failed: {err}")
            session.state = "failed"
        finally:
            if session.state not in ("failed", "expired"):
                session.state = "thawed"
            session.ready.set()
            session.thawed.set()
        self._await_verdict(session)
        session.decided.set()

    def _await_verdict(self, session: Session) -> None:
        """After the thaw: mark this member's snapshot incomplete if nobody else will."""
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
        self,
        set_id: str,
        set_size: int,
        trigger: str,
        note: str,
        thaw: bool = False,
        claim: str = "",
    ) -> dict[str, object]:
        """This member's snapshot of the set; with ``thaw``, thawed right after it. With
        ``claim``, the coordinator took one group snapshot of every member (sets/group.py):
        this disk's member snapshot ``claim`` is annotated instead of a snapshot taken."""
        answer = self._snapshot(set_id, set_size, trigger, note, claim)
        if thaw:
            answer |= self.thaw(set_id)
        return answer

    def _take(self, annotations: Annotations, claim: str) -> Snapshot:
        s = self.snapshotter
        if not claim:
            return s.provider.snapshot(s.disk, annotations)
        if not isinstance(s.provider, GroupSnapshots):
            raise ProviderError(
                f"the {s.provider.name} provider of this instance has no group snapshots to claim"
            )
        return s.provider.claim_group_member(claim, s.disk, annotations)

    def _snapshot(
        self, set_id: str, set_size: int, trigger: str, note: str, claim: str
    ) -> dict[str, object]:
        session = self._session(set_id)
        with session.lock:
            if session.state != "frozen":
                raise Conflict(
                    f"set {set_id} is {session.state} on this instance, not frozen"
                    + (f": {session.error}" if session.error else "")
                )
            if session.snapshot is not None:
                raise Conflict(f"set {set_id} already has snapshot {session.snapshot.id}")
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
            taken = self._take(annotations, claim)
        except (ProviderError, OSError, ValueError) as err:
            with session.lock:
                session.state = "frozen" if session.state == "snapshotting" else session.state
            raise Conflict(clean_text(f"snapshot failed: {err}")) from None
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
            raise Conflict(
                f"the freeze of {s.disk.mount} ended (lease {session.lease_seconds}s) before "
                f"the snapshot was fixed; snapshot {taken.id} deleted"
            )
        self.records.mkdir(parents=True, exist_ok=True)
        self._record(session).write_text(json.dumps({"snapshot_id": taken.id, "set_id": set_id}))
        s.record_role(session.role)
        self.metrics.inc(m.TAKEN, trigger=trigger)
        return {
            "set_id": set_id,
            "snapshot_id": taken.id,
            "consistency": taken.annotations.consistency,
            "role": taken.annotations.role,
            # A claimed member's is the group snapshot's instant, not this request's.
            "created_at": taken.annotations.created_at.isoformat(),
        }

    def thaw(self, set_id: str) -> dict[str, object]:
        session = self._session(set_id)
        session.release.set()
        if not session.thawed.wait(30):
            raise Conflict(f"set {set_id}: the thaw did not finish within 30s")
        if session.state == "expired":
            raise Conflict(
                f"the lease of {session.lease_seconds}s expired before the thaw; this instance "
                "thawed on its own and marks its snapshot incomplete"
            )
        if session.state == "failed" and not session.froze:
            raise Conflict(session.error or "nothing was frozen")
        if session.froze:
            trigger = session.snapshot.annotations.trigger if session.snapshot else ""
            if trigger:
                self.metrics.set(m.LAST_FREEZE, session.frozen_seconds, trigger=trigger)
        return {
            "set_id": set_id,
            "thawed": True,
            "frozen_seconds": session.frozen_seconds,
            "snapshot_id": session.snapshot.id if session.snapshot else "",
            "warnings": [clean_text(w) for w in session.warnings],
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
                raise NotFound(f"this instance took no snapshot in set {set_id}")
            if session.verdict == "incomplete" and state == "complete":
                raise Conflict(
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
            raise NotFound(f"this instance has no snapshot in set {set_id}")
        snapshot = mine[0]
        if snapshot.annotations.set_state == "incomplete" and state == "complete":
            raise Conflict(
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
