"""Restore planning: a pure function of (catalog, members, leader, target, policy) → plan.

"The right snapshot" is the hard part of restoring a replicated service. After a
failover, the newest leader data is on whichever instance was *leader* at the target
time, not on the instance that is leader by configuration. So the leader's data comes
from the newest eligible snapshot taken with role leader (or standalone) at or before
the target, whichever instance took it, and is copied onto the disk of the instance
that will lead once the service starts. Followers either resync from it or get their
own snapshot from the same time. Every choice is explained in words.

The data comes from one of two tiers (``restore.source``): the snapshots, the backups,
or ``auto``: each point in time from its snapshot when that still exists, else from
its backup (tiers.py). Which points exist does not change how one is chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Snapshot
from disk_snapshots.errors import ReleaseError
from disk_snapshots.members import Member
from disk_snapshots.members import bootstrap_of
from disk_snapshots.restore.target import Target
from disk_snapshots.restore.tiers import SOURCES
from disk_snapshots.restore.tiers import Points
from disk_snapshots.restore.tiers import Source
from disk_snapshots.restore.tiers import points
from disk_snapshots.triggers import PRE_RESTORE

LEADER_ROLES = ("leader", "standalone")
PlanRole = Literal["leader", "follower"]
Action = Literal["copy", "resync"]
PLAN_ROLES: tuple[PlanRole, ...] = ("leader", "follower")
ACTIONS: tuple[Action, ...] = ("copy", "resync")


class PlanError(ReleaseError, ValueError):
    """No safe plan exists; nothing has been touched. The message says why and what to do."""


@dataclass(frozen=True)
class Policy:
    followers: Literal["resync", "restore"] = "resync"
    # How the caller's operator names the two choices, for messages that say what to
    # change: the errand's properties, or the operator's command's --snapshot/--followers.
    snapshots_option: str = "restore.snapshots"
    followers_option: str = "restore.followers"


@dataclass(frozen=True)
class PlanEntry:
    """One instance's part of a restore, as the plan says it and every journal records it."""

    instance: str  # group/index
    id: str
    role: PlanRole
    action: Action
    snapshot_id: str = ""  # empty for resync
    # When the data comes from the backup tier: the backup of snapshot_id to read.
    backup_id: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "instance": self.instance,
            "id": self.id,
            "role": self.role,
            "action": self.action,
            "snapshot_id": self.snapshot_id,
            "backup_id": self.backup_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> PlanEntry:
        """ValueError names what is wrong (a journal on disk or an API body is untrusted)."""
        role, action = str(data.get("role", "")), str(data.get("action", ""))
        if role not in PLAN_ROLES:
            raise ValueError(f"plan entry role {role!r} is not one of {', '.join(PLAN_ROLES)}")
        if action not in ACTIONS:
            raise ValueError(f"plan entry action {action!r} is not one of {', '.join(ACTIONS)}")
        return cls(
            instance=str(data.get("instance", "")),
            id=str(data.get("id", "")),
            role=role,
            action=action,
            snapshot_id=str(data.get("snapshot_id", "")),
            backup_id=str(data.get("backup_id", "")),
        )


@dataclass(frozen=True)
class Step:
    member: Member
    role: PlanRole
    action: Action
    source: Snapshot | None
    reason: str
    backup: Backup | None = None  # the data comes from this backup of ``source``
    tier: str = ""  # why that tier, in words

    def entry(self) -> PlanEntry:
        source = self.source.id if self.source else ""
        backup = self.backup.id if self.backup else ""
        return PlanEntry(self.member.label, self.member.id, self.role, self.action, source, backup)

    def what(self) -> str:
        source = self.source.id if self.source else "-"
        return f"{source} from backup {self.backup.id}" if self.backup else source


@dataclass(frozen=True)
class Plan:
    deployment: str
    target: Target
    leader: Step
    followers: tuple[Step, ...]
    source: Source = "snapshot"

    @property
    def steps(self) -> tuple[Step, ...]:
        return (self.leader, *self.followers)

    def entries(self) -> tuple[PlanEntry, ...]:
        return tuple(step.entry() for step in self.steps)

    def choices(self) -> list[str]:
        """The plan without its order: the title, then each instance's choice and why."""
        lines = [
            f"Restore plan for deployment {self.deployment}: {self.target.describe()} "
            f"(restore.source: {self.source})"
        ]
        for n, step in enumerate(self.steps, 1):
            lines.append(f"  {n}. {step.member.label} ({step.role}): {step.action} {step.what()}")
            lines.append(f"     {step.reason}")
            if step.tier:
                lines.append(f"     {step.tier}")
        return lines

    def describe(self) -> str:
        lines = self.choices()
        # What Runner.execute does, in its order.
        lines.append("Order: stop the followers, then the leader; take a clean safety snapshot")
        lines.append("       of every disk above; copy; start the leader and wait until it leads;")
        lines.append("       start the followers and wait until they are in sync with it.")
        return "\n".join(lines)


def choose_leader(
    group: Sequence[Member], peers: Sequence[Member], roles: Mapping[str, str]
) -> tuple[str, str]:
    """Which instance leads after the restore (its id), and why, in words.

    With a ``peers`` link the topology is a leader group and a data group: the leader
    group's bootstrap instance leads by configuration, whatever a failover did since.
    One group with changing roles: the member that reports leader now (or, failing
    that, the only one that reports standalone); else the bootstrap instance.
    """
    if not group:
        raise PlanError("the snapshotter link names no instance")
    boot = bootstrap_of(group)
    if peers:
        return boot.id, f"{boot.label} leads: it is the bootstrap instance of the leader group"
    for wanted in ("leader", "standalone"):
        found = [m for m in group if roles.get(m.id) == wanted]
        if len(found) == 1:
            return found[0].id, f"{found[0].label} leads: it reports role {wanted} now"
        if len(found) > 1:
            names = ", ".join(m.label for m in found)
            return boot.id, (
                f"{boot.label} leads: several members report {wanted} ({names}), so the "
                "bootstrap instance is chosen"
            )
    return (
        boot.id,
        f"{boot.label} leads: no member reports leader now; it is the bootstrap instance",
    )


def _label(snapshot: Snapshot) -> str:
    a = snapshot.annotations
    return (
        f"{snapshot.id} ({a.trigger}, {a.consistency}, taken by {a.instance} as {a.role} "
        f"at {a.created_at.strftime('%Y-%m-%d %H:%M:%S UTC')})"
    )


def _ineligible(snapshot: Snapshot, deployment: str) -> str | None:
    """Why a snapshot may not be restored, or None when it may."""
    a = snapshot.annotations
    if a.deployment != deployment:
        return f"it belongs to deployment {a.deployment}"
    if snapshot.state == "error":
        return "the provider reports it failed"
    if a.trigger == PRE_RESTORE:
        # It holds the state a restore was undoing; going back to it is a deliberate act.
        return "it is a pre-restore safety snapshot (name it in restore.snapshots to go back)"
    if a.consistency == "crash":
        return "it is only crash-consistent"
    if a.set_id and a.set_state != "complete":
        return f"its set {a.set_id} is {a.set_state or 'not confirmed complete'}"
    return None


@dataclass(frozen=True)
class _Choices:
    """What the planner may choose from: the eligible snapshots, and the operator's names."""

    deployment: str
    target: Target
    newest_first: tuple[Snapshot, ...]
    by_id: Mapping[str, Snapshot]
    explicit: Mapping[str, str]
    tiers: Points
    option: str = "restore.snapshots"

    def named(self, member: Member) -> Snapshot | None:
        """The snapshot restore.snapshots names for ``member``, if any."""
        key = next((k for k in self.explicit if member.matches(k)), None)
        if key is None:
            return None
        snapshot = self.by_id.get(self.tiers.snapshot_of(self.explicit[key]))
        if snapshot is None:
            raise PlanError(f"{self.option} {key}: snapshot {self.explicit[key]} does not exist")
        if snapshot.annotations.deployment != self.deployment:
            raise PlanError(
                f"{self.option} {key}: snapshot {snapshot.id} belongs to deployment "
                f"{snapshot.annotations.deployment}, not {self.deployment}"
            )
        return snapshot

    def step(self, member: Member, role: PlanRole, chosen: Snapshot, reason: str) -> Step:
        """A copy of ``chosen``, from whichever tier holds it."""
        backup, why = self.tiers.via(chosen.id)
        return Step(member, role, "copy", chosen, reason, backup, why)


def _choices(
    tiers: Points,
    deployment: str,
    target: Target,
    explicit: Mapping[str, str],
    option: str,
) -> _Choices:
    catalog = tiers.catalog
    eligible = [s for s in catalog if _ineligible(s, deployment) is None]
    if target.kind == "set":
        members_of_set = [s for s in catalog if s.annotations.set_id == target.set_id]
        if not members_of_set:
            raise PlanError(f"set {target.set_id} does not exist in deployment {deployment}")
        why = _ineligible(members_of_set[0], deployment)
        if why:
            raise PlanError(f"set {target.set_id} cannot be restored: {why}")
        eligible = members_of_set
    elif target.kind == "time" and target.moment is not None:
        moment = target.moment
        eligible = [s for s in eligible if s.created_at <= moment]
    newest_first = sorted(eligible, key=lambda s: (s.created_at, s.id), reverse=True)
    by_id = {s.id: s for s in catalog}
    return _Choices(deployment, target, tuple(newest_first), by_id, explicit, tiers, option)


def _leader_step(leader: Member, choices: _Choices) -> Step:
    chosen = choices.named(leader)
    if chosen is not None:
        reason = f"named in {choices.option}: {_label(chosen)}"
        if chosen.annotations.role not in LEADER_ROLES:
            reason += "; note: it was not taken as leader"
        return choices.step(leader, "leader", chosen, reason)
    chosen = next((s for s in choices.newest_first if s.annotations.role in LEADER_ROLES), None)
    if chosen is None:
        raise PlanError(
            f"no eligible snapshot taken as leader for {choices.target.describe()} in "
            f"{choices.deployment} (crash-consistent snapshots, incomplete sets and other "
            f"deployments are never chosen); name one in {choices.option}"
        )
    taker = chosen.annotations.instance
    reason = f"newest snapshot taken as leader: {_label(chosen)}"
    if taker != leader.label:
        reason += f"; {taker} was leader then, its data goes to {leader.label}, which leads now"
    return choices.step(leader, "leader", chosen, reason)


def _follower_step(member: Member, leader: Member, choices: _Choices, policy: Policy) -> Step:
    own = choices.named(member)
    if own is not None:
        return choices.step(member, "follower", own, f"named in {choices.option}: {_label(own)}")
    if policy.followers == "resync":
        why = f"{policy.followers_option} is resync: replicates from {leader.label}"
        return Step(member, "follower", "resync", None, why)
    mine = next((s for s in choices.newest_first if s.annotations.instance_id == member.id), None)
    if mine is None:
        raise PlanError(
            f"{policy.followers_option} is restore, but {member.label} has no eligible "
            f"snapshot for {choices.target.describe()}; use resync or name one in "
            f"{choices.option}"
        )
    return choices.step(
        member, "follower", mine, f"its own snapshot from the same time: {_label(mine)}"
    )


def plan_restore(
    catalog: Sequence[Snapshot],
    members: Sequence[Member],
    leader_id: str,
    deployment: str,
    target: Target,
    policy: Policy = Policy(),
    explicit: Mapping[str, str] | None = None,
    backups: Sequence[Backup] = (),
    source: Source = "snapshot",
) -> Plan:
    """Choose, per member, what its disk gets, from the snapshots, the backups or (``auto``)
    both. Raises PlanError before anything is touched."""
    explicit = dict(explicit or {})
    leader = next((m for m in members if m.id == leader_id), None)
    if leader is None:
        raise PlanError(f"the leader instance {leader_id} is not among the restore's instances")
    for key in explicit:
        if not any(m.matches(key) for m in members):
            raise PlanError(
                f"{policy.snapshots_option} names {key}, which is not an instance of {deployment}"
            )
    if source not in SOURCES:
        raise PlanError(f"restore.source {source!r} is not one of {', '.join(SOURCES)}")
    tiers = points(catalog, backups, source)
    choices = _choices(tiers, deployment, target, explicit, policy.snapshots_option)
    leader_step = _leader_step(leader, choices)
    followers = tuple(
        _follower_step(m, leader, choices, policy) for m in members if m.id != leader.id
    )
    return Plan(deployment, target, leader_step, followers, source)
