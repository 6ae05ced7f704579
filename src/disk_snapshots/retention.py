"""Which snapshots retention deletes: a pure function of the catalog, the policies and now.

Rules are evaluated per instance and per trigger (each schedule, ``pre-deploy``,
``manual``...): a snapshot survives if any rule of its group keeps it. On top of the
rules, guards keep what an operator would need after things went wrong, whatever
the policies say (docs/catalog.md): the newest consistent snapshot of every instance, the
newest snapshot taken as leader, every member of the newest complete set, the newest
pre-restore safety snapshot of every instance (the way back from the last restore),
anything a restore in progress names, and anything a restore's plan holds (the hold
is an annotation on the snapshot, so every instance's retention sees it).

Backups (plan_backup_retention) follow the same rules, per instance, with their own
guard: never the newest completed backup of an instance, never one still being copied.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime

from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Snapshot
from disk_snapshots.config import Retention
from disk_snapshots.triggers import MANUAL
from disk_snapshots.triggers import PRE_RESTORE
from disk_snapshots.triggers import schedule_trigger
from disk_snapshots.triggers import set_trigger

Bucket = Callable[[datetime], object]

BUCKETS: tuple[tuple[str, Bucket], ...] = (
    ("keep_hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("keep_daily", lambda t: (t.year, t.month, t.day)),
    ("keep_weekly", lambda t: t.isocalendar()[:2]),
    ("keep_monthly", lambda t: (t.year, t.month)),
)


@dataclass(frozen=True)
class RetentionPlan:
    keep: Mapping[str, tuple[str, ...]]  # snapshot id -> why it stays
    delete: tuple[Snapshot, ...]  # oldest first

    def explain(self, snapshot_id: str) -> str:
        reasons = self.keep.get(snapshot_id)
        return ", ".join(reasons) if reasons else "deleted: no rule keeps it"


def is_empty(policy: Retention) -> bool:
    return all(getattr(policy, name) is None for name in _RULES)


_RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "max_age")


def rule_keeps(
    group: Sequence[Snapshot | Backup], policy: Retention, now: datetime
) -> dict[str, str]:
    """Snapshot (or backup) id -> the rule that keeps it, for one group sorted newest first."""
    kept: dict[str, str] = {}
    if policy.keep_last is not None:
        for snapshot in group[: policy.keep_last]:
            kept.setdefault(snapshot.id, f"keep_last {policy.keep_last}")
    for name, bucket_of in BUCKETS:
        count = getattr(policy, name)
        if count is None:
            continue
        seen: set[object] = set()
        for snapshot in group:
            if len(seen) >= count:
                break
            bucket = bucket_of(snapshot.created_at.astimezone(UTC))
            if bucket not in seen:
                seen.add(bucket)
                kept.setdefault(snapshot.id, f"{name} {count}")
    if policy.max_age is not None:
        for snapshot in group:
            if now - snapshot.created_at <= policy.max_age:
                kept.setdefault(snapshot.id, f"younger than max_age {policy.max_age}")
    return kept


def guard_keeps(catalog: Iterable[Snapshot]) -> dict[str, str]:
    """Snapshot id -> the guard that protects it, over a whole deployment's catalog."""
    usable = [s for s in catalog if s.state != "error"]
    newest_first = sorted(usable, key=lambda s: (s.created_at, s.id), reverse=True)
    guarded: dict[str, str] = {}
    consistent_seen: set[str] = set()
    safety_seen: set[str] = set()
    leader_seen: set[str] = set()
    for s in newest_first:
        a = s.annotations
        if a.consistency in ("app", "clean") and a.instance_id not in consistent_seen:
            consistent_seen.add(a.instance_id)
            guarded.setdefault(s.id, f"newest {a.consistency}-consistent snapshot of {a.instance}")
        if a.trigger == PRE_RESTORE and a.instance_id not in safety_seen:
            safety_seen.add(a.instance_id)
            guarded.setdefault(s.id, f"newest pre-restore safety snapshot of {a.instance}")
        if a.role == "leader" and a.deployment not in leader_seen:
            leader_seen.add(a.deployment)
            guarded.setdefault(s.id, f"newest snapshot taken as leader in {a.deployment}")
    sets: dict[tuple[str, str], list[Snapshot]] = defaultdict(list)
    for s in usable:
        if s.annotations.set_id and s.annotations.set_state == "complete":
            sets[(s.annotations.deployment, s.annotations.set_id)].append(s)
    newest_set: dict[str, tuple[datetime, str]] = {}
    for (deployment, set_id), members in sets.items():
        moment = max(m.created_at for m in members)
        if deployment not in newest_set or (moment, set_id) > newest_set[deployment]:
            newest_set[deployment] = (moment, set_id)
    for deployment, (_, set_id) in newest_set.items():
        for member in sets[(deployment, set_id)]:
            guarded.setdefault(member.id, f"member of the newest complete set {set_id}")
    return guarded


def holds(catalog: Iterable[Snapshot], now: datetime) -> dict[str, str]:
    """Snapshot id -> the plan hold that keeps it now (restore/hold.py)."""
    return {
        s.id: f"held by {s.annotations.hold_by} until {s.annotations.hold_until}"
        for s in catalog
        if s.annotations.held(now)
    }


def plan_retention(
    catalog: Iterable[Snapshot],
    policies: Mapping[str, Retention],
    now: datetime,
    *,
    instance_id: str | None = None,
    protected: Collection[str] = (),
) -> RetentionPlan:
    """Decide what to delete.

    ``policies`` maps a trigger (``schedule:hourly``, ``pre-deploy``, ``manual``...) to
    its retention; a trigger without a policy, or with an empty one, keeps everything.
    ``instance_id`` limits deletion to one instance's snapshots (each daemon prunes its
    own disk), while the guards still look at the whole catalog given.
    """
    snapshots = list(catalog)
    keep: dict[str, list[str]] = defaultdict(list)
    for snapshot_id, reason in guard_keeps(snapshots).items():
        keep[snapshot_id].append(reason)
    for snapshot_id, reason in holds(snapshots, now).items():
        keep[snapshot_id].append(reason)
    for s in snapshots:
        if s.id in protected:
            keep[s.id].append("a restore or a backup in progress depends on it")

    groups: dict[tuple[str, str], list[Snapshot]] = defaultdict(list)
    for s in snapshots:
        if instance_id is None or s.annotations.instance_id == instance_id:
            groups[(s.annotations.instance_id, s.annotations.trigger)].append(s)
        else:
            keep[s.id].append("another instance's snapshot")

    delete: list[Snapshot] = []
    for (_, trigger), group in groups.items():
        group.sort(key=lambda s: (s.created_at, s.id), reverse=True)
        policy = policies.get(trigger)
        if policy is None or is_empty(policy):
            for s in group:
                keep[s.id].append(f"no retention rule for {trigger}")
            continue
        kept = rule_keeps(group, policy, now)
        for s in group:
            if s.id in kept:
                keep[s.id].append(kept[s.id])
            elif s.id not in keep:
                delete.append(s)
    delete.sort(key=lambda s: (s.created_at, s.id))
    return RetentionPlan(
        keep={k: tuple(v) for k, v in keep.items()},
        delete=tuple(delete),
    )


def policies_for(
    schedules: Iterable[tuple[str, Retention]], per_trigger: Mapping[str, Retention]
) -> dict[str, Retention]:
    """The policy table plan_retention takes: each schedule's own, then the per-trigger ones.

    A schedule's set snapshots (``set:<name>``) follow that schedule's retention, and
    manual sets (``set:manual``, from the take-snapshot errand) follow ``manual``'s.
    """
    table: dict[str, Retention] = {}
    for name, policy in schedules:
        table[schedule_trigger(name)] = policy
        table[set_trigger(name)] = policy
    table.update(per_trigger)
    if MANUAL in per_trigger:
        table.setdefault(set_trigger(MANUAL), per_trigger[MANUAL])
    return table


@dataclass(frozen=True)
class BackupRetentionPlan:
    keep: Mapping[str, tuple[str, ...]]  # backup id -> why it stays
    delete: tuple[Backup, ...]  # oldest first


def plan_backup_retention(
    backups: Iterable[Backup], policy: Retention, now: datetime, *, instance_id: str
) -> BackupRetentionPlan:
    """Decide which of one instance's backups to delete.

    The rules see the completed backups, newest point in time first (a backup's time is
    its source snapshot's). Never deleted: the newest completed backup of the instance,
    a backup still being copied, another instance's. A failed backup holds nothing and
    is always deleted. An empty policy keeps every completed backup.
    """
    keep: dict[str, list[str]] = defaultdict(list)
    delete: list[Backup] = []
    mine: list[Backup] = []
    for b in backups:
        if b.annotations.instance_id != instance_id:
            keep[b.id].append("another instance's backup")
        elif b.state == "pending":
            keep[b.id].append("still being copied")
        elif b.state == "error":
            delete.append(b)
        else:
            mine.append(b)
    mine.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    if mine:
        keep[mine[0].id].append(f"newest completed backup of {mine[0].annotations.instance}")
    kept = {b.id: "no backups.retention rule" for b in mine} if is_empty(policy) else {}
    kept |= rule_keeps(mine, policy, now)
    for b in mine:
        if b.id in kept:
            keep[b.id].append(kept[b.id])
        elif b.id not in keep:
            delete.append(b)
    delete.sort(key=lambda b: (b.created_at, b.id))
    return BackupRetentionPlan({k: tuple(v) for k, v in keep.items()}, tuple(delete))
