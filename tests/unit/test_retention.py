"""Retention: the rules select what to keep, and the guards (docs/catalog.md) hold for any
history."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Snapshot
from disk_snapshots.config import Retention
from disk_snapshots.retention import guard_keeps
from disk_snapshots.retention import plan_retention

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
INSTANCES = [
    ("redis-leader", 0, "id-leader-0"),
    ("redis-data", 0, "id-data-0"),
    ("redis-data", 1, "id-data-1"),
]
TRIGGERS = ["schedule:hourly", "pre-deploy", "manual", "pre-restore", "pre-stop"]


def snap(
    n: int,
    hours_ago: float,
    *,
    instance: int = 0,
    trigger: str = "schedule:hourly",
    consistency: str = "fs",
    role: str = "follower",
    set_id: str = "",
    set_state: str = "",
    state: str = "completed",
) -> Snapshot:
    group, index, instance_id = INSTANCES[instance]
    return Snapshot(
        id=f"snap-{n:04d}",
        state=state,  # type: ignore[arg-type]
        annotations=Annotations(
            deployment="redis",
            instance_group=group,
            instance_id=instance_id,
            index=index,
            az="z1",
            disk_cid=f"disk-{instance}",
            job="snapshotter",
            created_at=NOW - timedelta(hours=hours_ago),
            trigger=trigger,
            consistency=consistency,  # type: ignore[arg-type]
            role=role,  # type: ignore[arg-type]
            release_version="0.1.0",
            set_id=set_id,
            set_size=3 if set_id else 0,
            set_state=set_state,  # type: ignore[arg-type]
        ),
    )


def test_keep_last_keeps_the_newest() -> None:
    history = [snap(i, hours_ago=i) for i in range(10)]
    plan = plan_retention(history, {"schedule:hourly": Retention(keep_last=3)}, NOW)
    assert sorted(s.id for s in plan.delete) == [f"snap-{i:04d}" for i in range(3, 10)]
    assert plan.explain("snap-0000") == "keep_last 3"


def test_bucket_rules_keep_the_newest_of_each_period() -> None:
    # Two snapshots per day over five days: keep_daily 3 keeps the later one of the last 3 days.
    history = [snap(d * 2 + k, hours_ago=d * 24 + k * 6 + 1) for d in range(5) for k in range(2)]
    plan = plan_retention(history, {"schedule:hourly": Retention(keep_daily=3)}, NOW)
    kept = sorted(set(s.id for s in history) - {s.id for s in plan.delete})
    assert kept == ["snap-0000", "snap-0002", "snap-0004"]


def test_max_age_and_a_trigger_without_policy() -> None:
    history = [
        snap(0, 1, trigger="pre-restore"),
        snap(1, 24 * 40, trigger="pre-restore"),
        snap(2, 24 * 400, trigger="manual"),
    ]
    plan = plan_retention(history, {"pre-restore": Retention(max_age=timedelta(days=30))}, NOW)
    assert [s.id for s in plan.delete] == ["snap-0001"]
    assert plan.explain("snap-0002") == "no retention rule for manual"


def test_guards_override_rules() -> None:
    history = [
        snap(0, 1),
        snap(1, 2),
        snap(2, 3, consistency="app"),  # newest consistent of leader-0
        snap(3, 4, role="leader"),  # newest leader snapshot
        snap(4, 5, set_id="set-a", set_state="complete"),  # newest complete set
        snap(5, 6, set_id="set-b", set_state="incomplete"),
        snap(6, 7, trigger="pre-restore"),  # the way back from the last restore
        snap(7, 8),
    ]
    plan = plan_retention(
        history, {t: Retention(keep_last=1) for t in TRIGGERS}, NOW, protected=["snap-0007"]
    )
    assert sorted(s.id for s in plan.delete) == ["snap-0001", "snap-0005"]
    assert "newest app-consistent" in plan.explain("snap-0002")
    assert "a restore or a backup in progress depends on it" in plan.explain("snap-0007")


def test_only_the_named_instance_is_pruned() -> None:
    history = [snap(i, i, instance=i % 3) for i in range(9)]
    plan = plan_retention(
        history, {"schedule:hourly": Retention(keep_last=1)}, NOW, instance_id="id-data-0"
    )
    assert {s.annotations.instance_id for s in plan.delete} == {"id-data-0"}


@st.composite
def histories(draw: st.DrawFn) -> list[Snapshot]:
    count = draw(st.integers(min_value=0, max_value=40))
    result = []
    for n in range(count):
        set_id = draw(st.sampled_from(["", "", "set-1", "set-2"]))
        result.append(
            snap(
                n,
                hours_ago=draw(st.floats(min_value=0, max_value=24 * 90, allow_nan=False)),
                instance=draw(st.integers(min_value=0, max_value=2)),
                trigger=draw(st.sampled_from(TRIGGERS)),
                consistency=draw(st.sampled_from(["clean", "app", "fs", "crash"])),
                role=draw(st.sampled_from(["leader", "follower", "standalone", "unknown"])),
                set_id=set_id,
                set_state=draw(st.sampled_from(["complete", "incomplete"])) if set_id else "",
                state=draw(st.sampled_from(["completed", "completed", "pending", "error"])),
            )
        )
    return result


policies = st.dictionaries(
    st.sampled_from(TRIGGERS),
    st.builds(
        Retention,
        keep_last=st.none() | st.integers(0, 5),
        keep_hourly=st.none() | st.integers(0, 5),
        keep_daily=st.none() | st.integers(0, 5),
        keep_weekly=st.none() | st.integers(0, 3),
        keep_monthly=st.none() | st.integers(0, 3),
        max_age=st.none() | st.integers(0, 24 * 60).map(lambda h: timedelta(hours=h)),
    ),
)


@settings(max_examples=300, deadline=None)
@given(history=histories(), table=policies, protected=st.lists(st.integers(0, 40)))
def test_guards_hold_for_any_history(
    history: list[Snapshot], table: dict[str, Retention], protected: list[int]
) -> None:
    protected_ids = [f"snap-{n:04d}" for n in protected]
    plan = plan_retention(history, table, NOW, protected=protected_ids)
    deleted = {s.id for s in plan.delete}
    usable = [s for s in history if s.state != "error"]
    newest = lambda items: max(items, key=lambda s: (s.created_at, s.id)).id  # noqa: E731
    for _, _, instance_id in INSTANCES:
        consistent = [
            s
            for s in usable
            if s.annotations.instance_id == instance_id
            and s.annotations.consistency in ("app", "clean")
        ]
        if consistent:
            assert newest(consistent) not in deleted
        safety = [
            s
            for s in usable
            if s.annotations.instance_id == instance_id and s.annotations.trigger == "pre-restore"
        ]
        if safety:
            assert newest(safety) not in deleted
    leaders = [s for s in usable if s.annotations.role == "leader"]
    if leaders:
        assert newest(leaders) not in deleted
    complete = [s for s in usable if s.annotations.set_state == "complete"]
    if complete:
        newest_set = max(
            complete, key=lambda s: (s.created_at, s.annotations.set_id)
        ).annotations.set_id
        newest_set_moment = max(
            s.created_at for s in complete if s.annotations.set_id == newest_set
        )
        for set_id in {s.annotations.set_id for s in complete}:
            moment = max(s.created_at for s in complete if s.annotations.set_id == set_id)
            if (moment, set_id) >= (newest_set_moment, newest_set):
                assert not deleted & {s.id for s in complete if s.annotations.set_id == set_id}
    assert not deleted & set(protected_ids)
    # Every snapshot is either kept with a reason or deleted, never both.
    assert deleted | set(plan.keep) == {s.id for s in history}
    assert not deleted & set(plan.keep)
    # A trigger without a policy loses nothing.
    assert all(s.annotations.trigger in table for s in plan.delete)


@settings(max_examples=200, deadline=None)
@given(history=histories(), table=policies)
def test_pruning_again_deletes_nothing_more(
    history: list[Snapshot], table: dict[str, Retention]
) -> None:
    first = plan_retention(history, table, NOW)
    remaining = [s for s in history if s not in first.delete]
    assert plan_retention(remaining, table, NOW).delete == ()


def test_guard_keeps_ignores_failed_snapshots() -> None:
    assert guard_keeps([snap(0, 1, consistency="app", state="error")]) == {}


def test_policy_table_covers_set_triggers() -> None:
    from disk_snapshots.retention import policies_for

    hourly, manual = Retention(keep_last=24), Retention(keep_last=20)
    table = policies_for([("hourly", hourly)], {"manual": manual})
    assert table["schedule:hourly"] is hourly and table["set:hourly"] is hourly
    assert table["set:manual"] is manual


def test_a_plan_hold_keeps_a_snapshot_until_it_expires() -> None:
    history = [snap(i, hours_ago=i) for i in range(5)]
    held = replace(
        history[4],
        annotations=history[4].annotations.with_hold(NOW + timedelta(minutes=5), "restore-x"),
    )
    history[4] = held
    policies = {"schedule:hourly": Retention(keep_last=1)}
    plan = plan_retention(history, policies, NOW)
    assert sorted(s.id for s in plan.delete) == ["snap-0001", "snap-0002", "snap-0003"]
    assert "held by restore-x until" in plan.explain("snap-0004")
    # Once the hold has expired, the rules decide again.
    later = plan_retention(history, policies, NOW + timedelta(minutes=6))
    assert "snap-0004" in {s.id for s in later.delete}
