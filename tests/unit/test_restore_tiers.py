"""Restore from backups: restore.source chooses the tier, never the point in time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from test_restore_plan import DATA0
from test_restore_plan import DATA1
from test_restore_plan import LEADER
from test_restore_plan import MEMBERS
from test_restore_plan import T0
from test_restore_plan import snap

from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Snapshot
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.restore.plan import PlanError
from disk_snapshots.restore.plan import Policy
from disk_snapshots.restore.plan import plan_restore
from disk_snapshots.restore.target import Target
from disk_snapshots.restore.tiers import points


def backup_of(snapshot: Snapshot, n: int, state: str = "completed") -> Backup:
    return Backup(
        id=f"bkp-{n:017x}",
        source_snapshot=snapshot.id,
        annotations=snapshot.annotations,
        state=state,  # type: ignore[arg-type]
        started_at=snapshot.created_at + timedelta(minutes=1),
        completed_at=snapshot.created_at + timedelta(minutes=3) if state == "completed" else None,
        location="/backups",
    )


def plan(catalog, backups, source, target="latest", policy=None, **kwargs):  # type: ignore[no-untyped-def]
    return plan_restore(
        catalog,
        MEMBERS,
        LEADER.id,
        "redis",
        Target.parse(target),
        policy or Policy(),
        backups=backups,
        source=source,
        **kwargs,
    )


# The catalog after a failover: redis-data/1 was promoted at +30 and snapshotted as leader.
OLD_LEADER = snap(1, LEADER, 0, "leader")
PROMOTED = snap(3, DATA1, 60, "leader")
FOLLOWER = snap(4, DATA0, 60, "follower")
CATALOG = [OLD_LEADER, snap(2, DATA1, 0, "follower"), PROMOTED, FOLLOWER]
BACKUPS = [backup_of(s, n) for n, s in enumerate(CATALOG, 1)]


def test_auto_takes_the_snapshot_when_it_exists() -> None:
    p = plan(CATALOG, BACKUPS, "auto")
    assert p.leader.source == PROMOTED and p.leader.backup is None
    assert "it still exists" in p.leader.tier
    assert p.leader.entry().backup_id == ""


def test_auto_takes_the_backup_when_the_snapshots_are_gone_and_still_the_promoted_leaders() -> None:
    p = plan([], BACKUPS, "auto")
    assert p.leader.source is not None and p.leader.source.id == PROMOTED.id
    assert p.leader.backup == BACKUPS[2]
    assert "redis-data/1 was leader then, its data goes to redis-leader/0" in p.leader.reason
    assert "the snapshot is gone" in p.leader.tier
    entry = p.leader.entry()
    assert (entry.snapshot_id, entry.backup_id) == (PROMOTED.id, BACKUPS[2].id)
    text = p.describe()
    assert f"copy {PROMOTED.id} from backup {BACKUPS[2].id}" in text
    assert "restore.source: auto" in text


def test_auto_mixes_tiers_per_point_and_the_newest_point_wins() -> None:
    # Only the newer snapshots were lost: the newest point comes from its backup.
    p = plan([OLD_LEADER], BACKUPS, "auto")
    assert p.leader.source is not None and p.leader.source.id == PROMOTED.id
    assert p.leader.backup == BACKUPS[2]
    # A time before the failover: the old leader's snapshot still exists, no backup needed.
    p = plan([OLD_LEADER], BACKUPS, "auto", "time:2026-11-29T08:30:00Z")
    assert p.leader.source == OLD_LEADER and p.leader.backup is None


def test_a_failed_snapshot_is_replaced_by_its_backup_in_auto() -> None:
    failed = snap(3, DATA1, 60, "leader", state="error")
    p = plan([OLD_LEADER, failed], BACKUPS, "auto")
    assert p.leader.backup == BACKUPS[2]
    assert "the snapshot failed" in p.leader.tier


def test_source_backup_uses_backups_even_when_snapshots_exist() -> None:
    p = plan(CATALOG, BACKUPS, "backup", policy=Policy(followers="restore"))
    assert p.leader.backup == BACKUPS[2]
    assert [s.backup for s in p.followers] == [BACKUPS[3], BACKUPS[2]]
    assert all("restore.source is backup" in s.tier for s in p.steps)


def test_source_snapshot_ignores_backups() -> None:
    with pytest.raises(PlanError, match="no eligible snapshot taken as leader"):
        plan([], BACKUPS, "snapshot")


def test_pending_and_failed_backups_hold_nothing_to_restore() -> None:
    unfinished = [backup_of(PROMOTED, 1, "pending"), backup_of(OLD_LEADER, 2, "error")]
    with pytest.raises(PlanError, match="no eligible snapshot taken as leader"):
        plan([], unfinished, "auto")


def test_backups_inherit_the_snapshots_eligibility() -> None:
    crash = snap(5, LEADER, 90, "leader", consistency="crash")
    incomplete = snap(6, LEADER, 100, "leader", set_id="s", set_state="incomplete")
    backups = [*BACKUPS, backup_of(crash, 5), backup_of(incomplete, 6)]
    assert plan([], backups, "backup").leader.backup == BACKUPS[2]


def test_restore_snapshots_may_name_the_snapshot_or_its_backup() -> None:
    by_snapshot = plan([], BACKUPS, "auto", explicit={"redis-leader/0": OLD_LEADER.id})
    by_backup = plan([], BACKUPS, "auto", explicit={"redis-leader/0": BACKUPS[0].id})
    for p in (by_snapshot, by_backup):
        assert p.leader.source is not None and p.leader.source.id == OLD_LEADER.id
        assert p.leader.backup == BACKUPS[0]


def test_the_newest_completed_backup_of_a_snapshot_is_used() -> None:
    again = backup_of(PROMOTED, 9)
    again = Backup(**{**again.__dict__, "completed_at": T0 + timedelta(hours=5)})
    p = plan([], [*BACKUPS, again, backup_of(PROMOTED, 10, "pending")], "auto")
    assert p.leader.backup == again


def test_the_plan_entry_carries_the_backup_through_the_journal() -> None:
    entry = PlanEntry("redis-leader/0", "id-l0", "leader", "copy", PROMOTED.id, BACKUPS[2].id)
    assert PlanEntry.from_json(entry.to_json()) == entry
    # A journal written before backups existed has no backup_id: the snapshot, as before.
    old = {k: v for k, v in entry.to_json().items() if k != "backup_id"}
    assert PlanEntry.from_json(old).backup_id == ""


def test_an_unknown_source_is_refused() -> None:
    with pytest.raises(PlanError, match=r"restore\.source 'tape' is not one of"):
        plan(CATALOG, BACKUPS, "tape")


@settings(max_examples=200, deadline=None)
@given(lost=st.sets(st.integers(min_value=0, max_value=3)))
def test_auto_chooses_the_same_point_as_snapshot_whatever_was_lost(lost: set[int]) -> None:
    """The tiers decide where the data comes from, never which point in time."""
    kept = [s for n, s in enumerate(CATALOG) if n not in lost]
    p = plan(kept, BACKUPS, "auto", policy=Policy(followers="restore"))
    full = plan(CATALOG, [], "snapshot", policy=Policy(followers="restore"))
    assert [s.source.id for s in p.steps if s.source] == [
        s.source.id for s in full.steps if s.source
    ]
    for step in p.steps:
        assert step.source is not None
        assert (step.backup is None) == (step.source.id in {s.id for s in kept})


def test_points_say_which_snapshots_are_gone() -> None:
    tiers = points([OLD_LEADER], BACKUPS, "auto")
    assert tiers.gone == {CATALOG[1].id, PROMOTED.id, FOLLOWER.id}
    assert tiers.snapshot_of(BACKUPS[2].id) == PROMOTED.id
    assert tiers.snapshot_of(PROMOTED.id) == PROMOTED.id
