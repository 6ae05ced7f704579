"""Restore planning: a pure function of (catalog, topology, target, policy) → ordered plan.

"The right snapshot" is the hard part of restoring a replicated service. After a
failover, the newest leader data is on whichever instance was *leader* at the target
time, not on the instance that is leader by configuration. So the leader's data comes
from the newest eligible snapshot taken with role leader (or standalone) at or before
the target, whichever instance took it, and is copied onto the disk of the instance
that will lead once the service starts. Followers either resync from it or get their
own snapshot from the same time. Every choice is explained in words (DESIGN §8).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from disk_snapshots.catalog import Snapshot

LEADER_ROLES = ("leader", "standalone")


class PlanError(ValueError):
    """No safe plan exists; nothing has been touched. The message says why and what to do."""


@dataclass(frozen=True)
class Member:
    """An instance the restore acts on (from the snapshotter links)."""

    group: str
    index: int
    id: str
    address: str

    @property
    def name(self) -> str:
        return f"{self.group}/{self.index}"

    def matches(self, key: str) -> bool:
        """``group/index`` or ``group/id``, as restore.snapshots keys name an instance."""
        group, _, which = key.partition("/")
        return group == self.group and which in (str(self.index), self.id)


@dataclass(frozen=True)
class Target:
    kind: Literal["latest", "set", "time"]
    set_id: str = ""
    moment: datetime | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        """restore.target as config.py validated it: latest, set:<id>, time:<ISO 8601>."""
        if text == "latest":
            return cls("latest")
        kind, _, rest = text.partition(":")
        if kind == "set":
            return cls("set", set_id=rest)
        if kind == "time":
            return cls("time", moment=datetime.fromisoformat(rest.replace("Z", "+00:00")))
        raise PlanError(f"restore.target {text!r}: expected latest, set:<id> or time:<ISO 8601>")

    def describe(self) -> str:
        if self.kind == "set":
            return f"set {self.set_id}"
        if self.kind == "time" and self.moment is not None:
            return f"the newest state at or before {self.moment.isoformat()}"
        return "the newest state"


@dataclass(frozen=True)
class Policy:
    followers: Literal["resync", "restore"] = "resync"
    allow_crash: bool = False


@dataclass(frozen=True)
class Step:
    member: Member
    role: Literal["leader", "follower"]
    action: Literal["copy", "resync"]
    source: Snapshot | None
    reason: str


@dataclass(frozen=True)
class Plan:
    deployment: str
    target: Target
    leader: Step
    followers: tuple[Step, ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        return (self.leader, *self.followers)

    def overwritten(self) -> tuple[Member, ...]:
        """Every disk whose content the restore replaces (copy, or a resync that discards it)."""
        return tuple(step.member for step in self.steps)

    def describe(self) -> str:
        lines = [f"Restore plan for deployment {self.deployment}: {self.target.describe()}"]
        for n, step in enumerate(self.steps, 1):
            source = step.source.id if step.source else "-"
            lines.append(f"  {n}. {step.member.name} ({step.role}): {step.action} {source}")
            lines.append(f"     {step.reason}")
        lines.append("Order: safety snapshot of every disk above; stop followers; stop the leader;")
        lines.append("       copy; start the leader and wait until it leads; start the followers.")
        return "\n".join(lines)


def _label(snapshot: Snapshot) -> str:
    a = snapshot.annotations
    return (
        f"{snapshot.id} ({a.trigger}, {a.consistency}, taken by {a.instance} as {a.role} "
        f"at {a.created_at.strftime('%Y-%m-%d %H:%M:%S UTC')})"
    )


def _ineligible(snapshot: Snapshot, deployment: str, policy: Policy) -> str | None:
    """Why a snapshot may not be restored, or None when it may."""
    a = snapshot.annotations
    if a.deployment != deployment:
        return f"it belongs to deployment {a.deployment}"
    if snapshot.state == "error":
        return "the provider reports it failed"
    if a.trigger == "pre-restore":
        # It holds the state a restore was undoing; going back to it is a deliberate act.
        return "it is a pre-restore safety snapshot (name it in restore.snapshots to go back)"
    if a.consistency == "crash" and not policy.allow_crash:
        return "it is only crash-consistent"
    if a.set_id and a.set_state != "complete":
        return f"its set {a.set_id} is {a.set_state or 'not confirmed complete'}"
    return None


def plan_restore(
    catalog: Sequence[Snapshot],
    members: Sequence[Member],
    leader_id: str,
    deployment: str,
    target: Target,
    policy: Policy = Policy(),
    explicit: Mapping[str, str] | None = None,
) -> Plan:
    """Choose, per member, what its disk gets. Raises PlanError before anything is touched."""
    explicit = dict(explicit or {})
    by_id = {s.id: s for s in catalog}
    leader = next((m for m in members if m.id == leader_id), None)
    if leader is None:
        raise PlanError(f"the leader instance {leader_id} is not among the restore's instances")
    for key in explicit:
        if not any(m.matches(key) for m in members):
            raise PlanError(
                f"restore.snapshots names {key}, which is not an instance of {deployment}"
            )

    def explicit_for(member: Member) -> Snapshot | None:
        key = next((k for k in explicit if member.matches(k)), None)
        if key is None:
            return None
        snapshot = by_id.get(explicit[key])
        if snapshot is None:
            raise PlanError(f"restore.snapshots {key}: snapshot {explicit[key]} does not exist")
        if snapshot.annotations.deployment != deployment:
            raise PlanError(
                f"restore.snapshots {key}: snapshot {snapshot.id} belongs to deployment "
                f"{snapshot.annotations.deployment}, not {deployment}"
            )
        return snapshot

    eligible = [s for s in catalog if _ineligible(s, deployment, policy) is None]
    if target.kind == "set":
        members_of_set = [s for s in catalog if s.annotations.set_id == target.set_id]
        if not members_of_set:
            raise PlanError(f"set {target.set_id} does not exist in deployment {deployment}")
        why = _ineligible(members_of_set[0], deployment, policy)
        if why:
            raise PlanError(f"set {target.set_id} cannot be restored: {why}")
        eligible = members_of_set
    elif target.kind == "time" and target.moment is not None:
        moment = target.moment
        eligible = [s for s in eligible if s.created_at <= moment]
    newest_first = sorted(eligible, key=lambda s: (s.created_at, s.id), reverse=True)

    chosen = explicit_for(leader)
    if chosen is not None:
        reason = f"named in restore.snapshots: {_label(chosen)}"
        if chosen.annotations.role not in LEADER_ROLES:
            reason += "; note: it was not taken as leader"
    else:
        chosen = next((s for s in newest_first if s.annotations.role in LEADER_ROLES), None)
        if chosen is None:
            raise PlanError(
                f"no eligible snapshot taken as leader for {target.describe()} in {deployment} "
                "(crash-consistent snapshots, incomplete sets and other deployments are "
                "never chosen); name one in restore.snapshots"
            )
        taker = chosen.annotations.instance
        reason = f"newest snapshot taken as leader: {_label(chosen)}"
        if taker != leader.name:
            reason += f"; {taker} was leader then, its data goes to {leader.name}, which leads now"
    leader_step = Step(leader, "leader", "copy", chosen, reason)

    followers: list[Step] = []
    for member in members:
        if member.id == leader.id:
            continue
        own = explicit_for(member)
        if own is not None:
            followers.append(
                Step(member, "follower", "copy", own, f"named in restore.snapshots: {_label(own)}")
            )
        elif policy.followers == "resync":
            followers.append(
                Step(
                    member,
                    "follower",
                    "resync",
                    None,
                    f"restore.followers is resync: replicates from {leader.name}",
                )
            )
        else:
            mine = next((s for s in newest_first if s.annotations.instance_id == member.id), None)
            if mine is None:
                raise PlanError(
                    f"restore.followers is restore, but {member.name} has no eligible snapshot "
                    f"for {target.describe()}; use resync or name one in restore.snapshots"
                )
            followers.append(
                Step(
                    member,
                    "follower",
                    "copy",
                    mine,
                    f"its own snapshot from the same time: {_label(mine)}",
                )
            )
    return Plan(deployment, target, leader_step, tuple(followers))
