"""Restore planning: the leader's data comes from whoever was leader at the target time."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Snapshot
from disk_snapshots.members import Member
from disk_snapshots.restore.plan import PlanError
from disk_snapshots.restore.plan import Policy
from disk_snapshots.restore.plan import plan_restore
from disk_snapshots.restore.target import Target

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
LEADER = Member("redis-leader", 0, "id-l0", "127.0.0.11")
DATA0 = Member("redis-data", 0, "id-d0", "127.0.0.12")
DATA1 = Member("redis-data", 1, "id-d1", "127.0.0.13")
MEMBERS = (LEADER, DATA0, DATA1)


def snap(
    n: int,
    member: Member,
    minutes: int,
    role: str,
    *,
    consistency: str = "app",
    deployment: str = "redis",
    set_id: str = "",
    set_state: str = "",
    state: str = "completed",
) -> Snapshot:
    return Snapshot(
        id=f"snap-{n:017x}",
        state=state,  # type: ignore[arg-type]
        annotations=Annotations(
            deployment=deployment,
            instance_group=member.group,
            instance_id=member.id,
            index=member.index,
            az="z1",
            disk_cid=f"disk-{member.id}",
            job="redis",
            created_at=T0 + timedelta(minutes=minutes),
            trigger="schedule:hourly",
            consistency=consistency,  # type: ignore[arg-type]
            role=role,  # type: ignore[arg-type]
            release_version="0.1.0",
            set_id=set_id,
            set_size=3 if set_id else 0,
            set_state=set_state,  # type: ignore[arg-type]
        ),
    )


def plan(catalog: list[Snapshot], target: str = "latest", **kwargs: object):  # type: ignore[no-untyped-def]
    return plan_restore(catalog, MEMBERS, LEADER.id, "redis", Target.parse(target), **kwargs)  # type: ignore[arg-type]


def test_after_failover_the_promoted_instances_snapshot_is_chosen() -> None:
    catalog = [
        snap(1, LEADER, 0, "leader"),
        snap(2, DATA1, 0, "follower"),
        # leader dies at +30; redis-data/1 is promoted
        snap(3, DATA1, 60, "leader"),
        snap(4, DATA0, 60, "follower"),
    ]
    p = plan(catalog)
    assert p.leader.member == LEADER
    assert p.leader.source is not None and p.leader.source.id == catalog[2].id
    assert "redis-data/1 was leader then, its data goes to redis-leader/0" in p.leader.reason
    assert [(s.member, s.action) for s in p.followers] == [(DATA0, "resync"), (DATA1, "resync")]
    assert "redis-data/1" in p.describe()


def test_time_target_goes_back_before_the_failover() -> None:
    catalog = [snap(1, LEADER, 0, "leader"), snap(3, DATA1, 60, "leader")]
    p = plan(catalog, "time:2026-11-29T08:30:00Z")
    assert p.leader.source == catalog[0]


def test_crash_incomplete_and_foreign_snapshots_are_never_chosen() -> None:
    good = snap(1, LEADER, 0, "leader")
    catalog = [
        good,
        snap(2, LEADER, 10, "leader", consistency="crash"),
        snap(3, LEADER, 20, "leader", set_id="set-a", set_state="incomplete"),
        snap(4, LEADER, 30, "leader", deployment="other"),
        snap(5, LEADER, 40, "leader", state="error"),
    ]
    assert plan(catalog).leader.source == good


def test_safety_snapshots_are_only_chosen_by_name() -> None:
    good = snap(1, LEADER, 0, "leader")
    safety = Snapshot(
        id="snap-00000000000000099",
        annotations=Annotations(
            **{
                **good.annotations.__dict__,
                "trigger": "pre-restore",
                "created_at": T0 + timedelta(minutes=5),
            }
        ),
    )
    assert plan([good, safety]).leader.source == good
    assert plan([good, safety], explicit={"redis-leader/0": safety.id}).leader.source == safety


def test_set_target_uses_the_sets_members() -> None:
    catalog = [
        snap(1, LEADER, 0, "leader", set_id="set-a", set_state="complete"),
        snap(2, DATA0, 0, "follower", set_id="set-a", set_state="complete"),
        snap(3, DATA1, 0, "follower", set_id="set-a", set_state="complete"),
        snap(4, LEADER, 10, "leader"),
    ]
    p = plan(catalog, "set:set-a", policy=Policy(followers="restore"))
    assert [s.source.id for s in p.steps if s.source] == [c.id for c in catalog[:3]]
    with pytest.raises(PlanError, match="set set-b does not exist"):
        plan(catalog, "set:set-b")
    catalog[0] = snap(1, LEADER, 0, "leader", set_id="set-c", set_state="incomplete")
    with pytest.raises(
        PlanError, match="set set-c cannot be restored: its set set-c is incomplete"
    ):
        plan(catalog, "set:set-c")


def test_failures_before_anything_is_touched() -> None:
    with pytest.raises(PlanError, match="no eligible snapshot taken as leader"):
        plan([snap(1, DATA0, 0, "follower")])
    with pytest.raises(PlanError, match="snapshot snap-404 does not exist"):
        plan([snap(1, LEADER, 0, "leader")], explicit={"redis-leader/0": "snap-404"})
    with pytest.raises(PlanError, match="names redis-ghost/0, which is not an instance"):
        plan([snap(1, LEADER, 0, "leader")], explicit={"redis-ghost/0": "snap-1"})
    with pytest.raises(PlanError, match="redis-data/0 has no eligible snapshot"):
        plan([snap(1, LEADER, 0, "leader")], policy=Policy(followers="restore"))


def test_explicit_ids_override_the_target() -> None:
    catalog = [
        snap(1, LEADER, 0, "leader"),
        snap(2, LEADER, 10, "leader"),
        snap(3, DATA0, 5, "follower"),
    ]
    p = plan(catalog, explicit={"redis-leader/0": catalog[0].id, "redis-data/id-d0": catalog[2].id})
    assert p.leader.source == catalog[0]
    assert p.followers[0].source == catalog[2] and p.followers[0].action == "copy"


@st.composite
def histories(draw: st.DrawFn) -> list[Snapshot]:
    """Snapshots over time with failovers: at each step one member leads, all may snapshot."""
    leader = draw(st.sampled_from(MEMBERS))
    catalog: list[Snapshot] = []
    for minute in range(draw(st.integers(1, 30))):
        if draw(st.booleans()) and draw(st.booleans()):
            leader = draw(st.sampled_from(MEMBERS))  # failover
        for member in MEMBERS:
            if draw(st.integers(0, 3)) == 0:
                catalog.append(
                    snap(
                        len(catalog) + 1,
                        member,
                        minute * 10,
                        "leader" if member == leader else "follower",
                        consistency=draw(st.sampled_from(["app", "app", "fs", "clean", "crash"])),
                        deployment=draw(st.sampled_from(["redis", "redis", "redis", "other"])),
                    )
                )
    return catalog


@settings(max_examples=300, deadline=None)
@given(
    catalog=histories(),
    minutes=st.integers(-10, 320),
    followers=st.sampled_from(["resync", "restore"]),
)
def test_plan_properties(catalog: list[Snapshot], minutes: int, followers: str) -> None:
    moment = T0 + timedelta(minutes=minutes)
    target = Target("time", moment=moment)
    eligible_leader = [
        s
        for s in catalog
        if s.annotations.role == "leader"
        and s.annotations.deployment == "redis"
        and s.annotations.consistency != "crash"
        and s.created_at <= moment
    ]
    try:
        p = plan_restore(catalog, MEMBERS, LEADER.id, "redis", target, Policy(followers=followers))  # type: ignore[arg-type]
    except PlanError:
        assert not eligible_leader or followers == "restore"
        return
    source = p.leader.source
    assert source is not None
    # The newest eligible leader snapshot, whichever instance took it.
    assert source == max(eligible_leader, key=lambda s: (s.created_at, s.id))
    assert p.leader.member == LEADER
    assert {s.member for s in p.steps} == set(MEMBERS)
    for step in p.followers:
        if step.source is not None:
            a = step.source.annotations
            assert a.instance_id == step.member.id and step.source.created_at <= moment
            assert a.deployment == "redis" and a.consistency != "crash"
