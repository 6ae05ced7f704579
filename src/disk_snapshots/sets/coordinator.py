"""The coordinator's side of a set: drive every member's agent API, then give the verdict.

Quiesce all → snapshot all → thaw all (always, also after errors) → mark every member's
snapshot ``complete`` only if every member succeeded, else ``incomplete`` with the
reason. Members work in parallel within each phase; the phases are strictly ordered.
With a provider that has group snapshots the snapshot phase is one group snapshot that
each member then claims (sets/group.py); other providers take one snapshot per member.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Protocol

from disk_snapshots import metrics as m
from disk_snapshots.annotations import SetState
from disk_snapshots.annotations import text_problem
from disk_snapshots.api.client import AgentClient
from disk_snapshots.api.client import AgentError
from disk_snapshots.api.client import AgentUnreachable
from disk_snapshots.api.tls import TlsSetupError
from disk_snapshots.api.tls import client_context
from disk_snapshots.config import Schedule
from disk_snapshots.errors import ReleaseError
from disk_snapshots.errors import UsageError
from disk_snapshots.members import Member
from disk_snapshots.members import coordinator
from disk_snapshots.members import with_myself
from disk_snapshots.metrics import Metrics
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.group_snapshots import GroupSnapshots
from disk_snapshots.sets.decisions import MemberResult
from disk_snapshots.sets.decisions import clean_text
from disk_snapshots.sets.decisions import decide
from disk_snapshots.sets.decisions import new_set_id
from disk_snapshots.sets.group import GroupCut
from disk_snapshots.sets.group import disk_of
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.triggers import set_trigger

log = logging.getLogger(__name__)

CALL_ERRORS = (AgentError, AgentUnreachable)


class SetError(ReleaseError, RuntimeError):
    """The set could not be started at all (no TLS, no members)."""


class AgentApi(Protocol):
    def status(self) -> dict[str, object]: ...

    def quiesce(self, set_id: str, lease_seconds: int, coordinator: str) -> dict[str, object]: ...

    def snapshot_member(
        self,
        set_id: str,
        set_size: int,
        trigger: str,
        note: str = "",
        thaw: bool = False,
        claim: str = "",
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
    # How the storage was cut: "group snapshot" (one for every member) or "per member".
    cut: str = "per member"
    warnings: list[str] = field(default_factory=list)

    @property
    def longest_freeze(self) -> float:
        return max((r.frozen_seconds for r in self.results), default=0.0)


def _why(err: Exception) -> str:
    if isinstance(err, AgentError):
        return err.message + (f" ({'; '.join(err.problems)})" if err.problems else "")
    return str(err)


def _each(work: Callable[[MemberResult], None], chosen: list[MemberResult]) -> None:
    with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
        list(pool.map(work, chosen))


@dataclass
class _Steps:
    """One set's calls to its members; each step records its outcome on the result."""

    set_id: str
    trigger: str
    size: int
    lease_seconds: int
    coordinator: str
    note: str
    clients: dict[str, AgentApi]
    group: GroupCut | None = None

    def disk(self, r: MemberResult) -> None:
        if self.group is None:
            return
        try:
            self.group.disks[r.member.id] = disk_of(self.clients[r.member.id].status())
        except CALL_ERRORS as err:
            r.errors.append(f"status failed: {_why(err)}")
        except ProviderError as err:
            r.errors.append(f"no volume for a group snapshot: {err}")

    def quiesce(self, r: MemberResult) -> None:
        try:
            self.clients[r.member.id].quiesce(self.set_id, self.lease_seconds, self.coordinator)
            r.quiesced = True
        except CALL_ERRORS as err:
            r.errors.append(f"quiesce failed: {_why(err)}")

    def snapshot(self, r: MemberResult) -> None:
        # Every member is frozen now, so all freezes share this instant: each member's
        # snapshot is its state at that instant whenever it is taken during its freeze,
        # and it may thaw right after its own snapshot without waiting for the others.
        try:
            claim = self.group.claims.get(r.member.id, "") if self.group else ""
            answer = self.clients[r.member.id].snapshot_member(
                self.set_id, self.size, self.trigger, self.note, thaw=True, claim=claim
            )
            r.snapshot_id = str(answer.get("snapshot_id", ""))
            _thawed(r, answer)
        except CALL_ERRORS as err:
            r.errors.append(f"snapshot failed: {_why(err)}")

    def thaw(self, r: MemberResult) -> None:
        try:
            _thawed(r, self.clients[r.member.id].thaw(self.set_id))
        except CALL_ERRORS as err:
            # A member that refused the quiesce holds nothing to thaw; say nothing twice.
            if r.quiesced or isinstance(err, AgentUnreachable):
                r.errors.append(f"thaw failed: {_why(err)}")

    def mark(self, r: MemberResult, verdict: SetState, why: str, refused: list[str]) -> None:
        try:
            self.clients[r.member.id].set_state(self.set_id, verdict, why)
        except AgentError as err:
            if verdict == "complete" and err.status == 409:
                refused.append(f"{r.member.label}: {err.message}")
            else:
                r.errors.append(f"marking {verdict} failed: {_why(err)}")
        except AgentUnreachable as err:
            # The member marks itself incomplete when no verdict arrives (decision_window).
            r.errors.append(f"marking {verdict} failed: {err}")


def _thawed(r: MemberResult, answer: dict[str, object]) -> None:
    r.thawed = answer.get("thawed") is True
    seconds = answer.get("frozen_seconds", 0.0)
    r.frozen_seconds = float(seconds) if isinstance(seconds, int | float) else 0.0


def coordinate(
    members: Sequence[Member],
    connect: Callable[[Member], AgentApi],
    *,
    name: str,
    lease_seconds: int,
    coordinator: str,
    note: str = "",
    on_phase: Callable[[str, str], None] | None = None,
    group: GroupCut | None = None,
) -> SetOutcome:
    """Quiesce all → snapshot all → thaw all (always) → mark all complete or incomplete.

    With ``group`` the snapshots are one group snapshot, taken once every member is frozen.
    """
    problem = text_problem(note)
    if problem:
        # Checked before any member flushes or freezes: every member would refuse it.
        raise UsageError(f"note: {problem}")
    set_id = new_set_id(name, datetime.now(UTC), secrets.token_hex(3))
    trigger = set_trigger(name)
    results = [MemberResult(m) for m in members]
    clients = {m.id: connect(m) for m in members}
    steps = _Steps(set_id, trigger, len(members), lease_seconds, coordinator, note, clients, group)

    def phase(label: str, work: Callable[[MemberResult], None], chosen: list[MemberResult]) -> None:
        _each(work, chosen)
        if on_phase is not None:
            on_phase(label, set_id)

    log.info("set %s: %d member(s), lease %ds", set_id, len(members), lease_seconds)
    warnings: list[str] = []
    try:
        if group is None:
            phase("quiesced", steps.quiesce, results)
            phase("snapshotted", steps.snapshot, [r for r in results if r.quiesced])
        else:
            _group_phases(group, steps, results, phase)
    finally:
        # Every member not known to be thawed, not just those that said "frozen": a
        # quiesce that timed out on our side may still have frozen its disk.
        phase("thawed", steps.thaw, [r for r in results if not r.thawed])
        if group is not None:
            warnings = group.scatter()
    if group is not None:
        warnings += group.release_unclaimed({r.snapshot_id for r in results})
    state, reason = decide(results)
    if group is not None and group.failure:
        state, reason = "incomplete", group.failure
    state, reason = _mark(results, steps, state, reason)
    if on_phase is not None:
        on_phase("marked", set_id)
    for warning in warnings:
        log.warning("set %s: %s", set_id, warning)
    log.info("set %s: %s%s", set_id, state, f" ({reason})" if reason else "")
    cut = "group snapshot" if group is not None else "per member"
    return SetOutcome(set_id, trigger, state, reason, results, cut, warnings)


def _group_phases(
    group: GroupCut,
    steps: _Steps,
    results: list[MemberResult],
    phase: Callable[[str, Callable[[MemberResult], None], list[MemberResult]], None],
) -> None:
    """Volumes → group (before any freeze) → quiesce → one group snapshot → claims."""
    _each(steps.disk, results)
    if any(r.errors for r in results):
        group.failure = "no group snapshot: not every member named its volume"
        return
    gathered = group.gather([r.member for r in results])
    if gathered is None:
        return
    phase("quiesced", steps.quiesce, results)
    unfrozen = [r for r in results if not r.quiesced]
    if unfrozen:
        why = decide(unfrozen)[1]
        group.failure = clean_text(f"{why}; no group snapshot without every member frozen")
    else:
        group.take(gathered, steps.set_id, [r.member for r in results])
    phase("snapshotted", steps.snapshot, [r for r in results if r.member.id in group.claims])


def _mark(
    results: list[MemberResult], steps: _Steps, state: SetState, reason: str
) -> tuple[SetState, str]:
    taken = [r for r in results if r.snapshot_id]
    refused: list[str] = []
    _each(lambda r: steps.mark(r, state, reason, refused), taken)
    if state == "complete" and (refused or any(r.errors for r in taken)):
        # A member had already given up on the set (its lease expired): the others
        # were marked complete a moment ago and must not stay so.
        state, reason = decide(results)
        if refused:
            reason = clean_text("; ".join([*refused, reason] if reason != "" else refused))
        _each(lambda r: steps.mark(r, "incomplete", reason, refused), taken)
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
    provider = snapshotter.provider
    group = GroupCut(provider, spec.deployment) if isinstance(provider, GroupSnapshots) else None
    return coordinate(
        with_myself(config),
        lambda member: AgentClient(member.address, member.port, context),
        name=name,
        lease_seconds=config.quiesce.freeze_timeout,
        coordinator=f"{spec.name}/{spec.index} ({spec.id})",
        note=note,
        on_phase=on_phase,
        group=group,
    )


def run_set_schedule(snapshotter: Snapshotter, schedule: Schedule, metrics: Metrics) -> bool:
    """A ``scope: set`` schedule: the coordinator runs the set, every other instance waits."""
    leads, who = coordinator(snapshotter.config)
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
        metrics.inc(m.FAILURES, schedule=schedule.name)
        return False
    if outcome.state != "complete":
        log.error(
            "schedule %s: set %s incomplete: %s", schedule.name, outcome.set_id, outcome.reason
        )
        metrics.inc(m.FAILURES, schedule=schedule.name)
        return False
    m.record_snapshot(
        metrics, started=started, frozen_seconds=outcome.longest_freeze, schedule=schedule.name
    )
    log.info(
        "schedule %s: set %s complete, %d members (%s), longest freeze %.3fs",
        schedule.name,
        outcome.set_id,
        len(outcome.results),
        outcome.cut,
        outcome.longest_freeze,
    )
    return True
