"""Set coordination without disks or network: members, the verdict, and the coordinator's
order of steps against fake agents (thaw always; complete only if every step held)."""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import cast

import pytest

from disk_snapshots.annotations import MAX_TAG_VALUE
from disk_snapshots.api.client import AgentError
from disk_snapshots.api.client import AgentUnreachable
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.members import Member
from disk_snapshots.members import with_myself
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.group_snapshots import GroupSnapshots
from disk_snapshots.providers.group_snapshots import VolumeGroup
from disk_snapshots.sets.coordinator import SetOutcome
from disk_snapshots.sets.coordinator import coordinate
from disk_snapshots.sets.decisions import MemberResult
from disk_snapshots.sets.decisions import clean_text
from disk_snapshots.sets.decisions import decide
from disk_snapshots.sets.decisions import new_set_id
from disk_snapshots.sets.group import GroupCut
from disk_snapshots.vm.instance import Disk
from support.cluster import MEMBERS
from support.cluster import member_doc
from support.tls import make_tls

A = Member("redis-leader", 0, "a", "127.0.0.2", 2453)
B = Member("redis-data", 0, "b", "127.0.0.3", 2453)
C = Member("redis-data", 1, "c", "127.0.0.4", 2453)


def test_members_are_both_links_and_this_instance(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    doc = member_doc(MEMBERS[1], MEMBERS, make_tls(), 2999, root, root)
    members = with_myself(load_snapshotter_config(doc))
    assert [(m.label, m.address, m.port) for m in members] == [
        ("redis-data/0", "127.0.0.3", 2999),
        ("redis-data/1", "127.0.0.4", 2999),
        ("redis-leader/0", "127.0.0.2", 2999),
    ]
    doc["links"] = {"snapshotter": None, "peers": None}
    [alone] = with_myself(load_snapshotter_config(doc))
    assert alone.label == "redis-data/0"


def test_set_ids_sort_by_time_and_fit_tags() -> None:
    at = datetime(2026, 11, 29, 2, 30, tzinfo=UTC)
    assert new_set_id("nightly-set", at, "a1b2c3") == "nightly-set-20261129T023000Z-a1b2c3"


def test_verdict() -> None:
    ok = [MemberResult(m, quiesced=True, snapshot_id=f"snap-{m.id}", thawed=True) for m in (A, B)]
    assert decide(ok) == ("complete", "")
    failed = MemberResult(C, errors=["quiesce failed: flush failed: redis is down"])
    assert decide([*ok, failed]) == (
        "incomplete",
        "redis-data/1: quiesce failed: flush failed: redis is down",
    )
    unthawed = MemberResult(C, quiesced=True, snapshot_id="snap-c")
    assert decide([*ok, unthawed]) == ("incomplete", "redis-data/1: not thawed")
    assert decide([]) == ("incomplete", "no members")


def test_reasons_are_one_line_and_fit_a_tag() -> None:
    assert clean_text("exit 1:\nline two\tthree") == "exit 1: line two three"
    long = clean_text("x" * 400)
    assert len(long) == MAX_TAG_VALUE and long.endswith("...")


@dataclass
class FakeAgent:
    member: Member
    fail: dict[str, Exception] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    verdicts: list[tuple[str, str]] = field(default_factory=list)

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def quiesce(self, set_id: str, lease_seconds: int, coordinator: str) -> dict[str, object]:
        self._step("quiesce")
        return {"frozen": True}

    def status(self) -> dict[str, object]:
        self._step("status")
        return {"disk": {"cid": f"disk-{self.member.id}", "volume_id": f"vol-{self.member.id}"}}

    def snapshot_member(
        self,
        set_id: str,
        set_size: int,
        trigger: str,
        note: str = "",
        thaw: bool = False,
        claim: str = "",
    ) -> dict[str, object]:
        self._step(f"claim {claim}" if claim else "snapshot")
        assert trigger == "set:nightly" and set_size == 3 and thaw
        return {"snapshot_id": claim or f"snap-{self.member.id}"} | self.thaw(set_id, "+thaw")

    def thaw(self, set_id: str, step: str = "thaw") -> dict[str, object]:
        self._step(step)
        return {"thawed": True, "frozen_seconds": 0.05}

    def set_state(self, set_id: str, state: str, reason: str = "") -> dict[str, object]:
        self.verdicts.append((state, reason))
        if state == "complete" and "complete" in self.fail:
            raise self.fail["complete"]
        return {}


def run(agents: dict[str, FakeAgent]) -> tuple[str, str]:
    outcome = coordinate(
        [A, B, C],
        lambda m: agents[m.id],
        name="nightly",
        lease_seconds=10,
        coordinator="redis-leader/0",
    )
    assert outcome.trigger == "set:nightly"
    return outcome.state, outcome.reason


def test_all_members_succeed() -> None:
    agents = {m.id: FakeAgent(m) for m in (A, B, C)}
    assert run(agents) == ("complete", "")
    for agent in agents.values():
        assert agent.calls == ["quiesce", "snapshot", "+thaw"]
        assert agent.verdicts == [("complete", "")]


def test_a_member_whose_flush_fails_makes_the_set_incomplete_and_says_why() -> None:
    agents = {m.id: FakeAgent(m) for m in (A, B, C)}
    agents["c"].fail["quiesce"] = AgentError(
        "127.0.0.4:2453", 409, "flush failed: redis: connection refused"
    )
    state, reason = run(agents)
    assert state == "incomplete"
    assert reason == "redis-data/1: quiesce failed: flush failed: redis: connection refused"
    assert agents["a"].calls == ["quiesce", "snapshot", "+thaw"]
    assert agents["c"].calls == ["quiesce", "thaw"]  # thawed anyway: it may hold a freeze
    assert agents["a"].verdicts == [("incomplete", reason)]
    assert agents["c"].verdicts == []  # it took no snapshot to mark


def test_thaw_runs_when_a_snapshot_fails_and_when_a_member_is_unreachable() -> None:
    agents = {m.id: FakeAgent(m) for m in (A, B, C)}
    agents["a"].fail["snapshot"] = AgentError("127.0.0.2:2453", 409, "snapshot failed: disk gone")
    agents["b"].fail["+thaw"] = AgentUnreachable("127.0.0.3:2453: timed out")
    agents["b"].fail["thaw"] = AgentUnreachable("127.0.0.3:2453: timed out")
    state, reason = run(agents)
    assert state == "incomplete"
    assert "redis-leader/0: snapshot failed: snapshot failed: disk gone" in reason
    assert "redis-data/0: thaw failed: 127.0.0.3:2453: timed out" in reason
    assert agents["a"].calls == ["quiesce", "snapshot", "thaw"]  # its snapshot failed
    assert agents["b"].calls == ["quiesce", "snapshot", "+thaw", "thaw"]  # tried twice
    assert agents["c"].calls == ["quiesce", "snapshot", "+thaw"]


def test_a_member_that_gave_up_turns_the_whole_set_incomplete() -> None:
    agents = {m.id: FakeAgent(m) for m in (A, B, C)}
    agents["b"].fail["complete"] = AgentError(
        "127.0.0.3:2453", 409, "this instance already marked its snapshot incomplete: lease"
    )
    state, reason = run(agents)
    assert state == "incomplete"
    assert reason.startswith("redis-data/0: this instance already marked its snapshot incomplete")
    for agent in agents.values():
        assert agent.verdicts[-1] == ("incomplete", reason)


@pytest.mark.parametrize("phase", ["quiesced", "snapshotted", "thawed", "marked"])
def test_phases_are_reported_in_order(phase: str) -> None:
    agents = {m.id: FakeAgent(m) for m in (A, B, C)}
    seen: list[str] = []
    coordinate(
        [A, B, C],
        lambda m: agents[m.id],
        name="nightly",
        lease_seconds=10,
        coordinator="x",
        on_phase=lambda name, set_id: seen.append(name),
    )
    assert phase in seen
    assert seen == ["quiesced", "snapshotted", "thawed", "marked"]


@dataclass
class FakeGroups:
    """The GroupSnapshots side of a provider, recording the order of its calls."""

    calls: list[str]
    fail: dict[str, ProviderError] = field(default_factory=dict)

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    @contextmanager
    def volume_group(self, disks: Sequence[Disk], deployment: str) -> Iterator[VolumeGroup]:
        self._step("gather " + ",".join(d.volume_id for d in disks))
        yield VolumeGroup("group-1", deployment, tuple(d.volume_id for d in disks))
        self._step("scatter")

    def snapshot_group(self, group: VolumeGroup, set_id: str) -> dict[str, str]:
        self._step("group snapshot")
        return {v: f"member-{v}" for v in group.volume_ids}

    def claim_group_member(self, snapshot_id: str, disk: Disk, annotations: object) -> object:
        raise AssertionError("members claim through their own API, not the coordinator")

    def release_group_member(self, snapshot_id: str) -> None:
        self._step(f"release {snapshot_id}")


def run_grouped(agents: dict[str, FakeAgent], groups: FakeGroups) -> SetOutcome:
    calls = groups.calls

    class Recording(FakeAgent):
        def _step(self, name: str) -> None:
            calls.append(f"{self.member.id} {name}")
            super()._step(name)

    for key, agent in agents.items():
        agents[key] = Recording(agent.member, agent.fail, agent.calls, agent.verdicts)
    return coordinate(
        [A, B, C],
        lambda m: agents[m.id],
        name="nightly",
        lease_seconds=10,
        coordinator="redis-leader/0",
        group=GroupCut(cast(GroupSnapshots, groups), "redis"),
    )


def test_a_group_snapshot_is_taken_once_every_member_is_frozen() -> None:
    groups = FakeGroups([])
    agents = {m.id: FakeAgent(m) for m in (A, B, C)}
    outcome = run_grouped(agents, groups)
    assert (outcome.state, outcome.cut) == ("complete", "group snapshot")
    calls = groups.calls
    # The volumes join the group before anyone freezes; the one cut comes after every
    # quiesce, the claims after the cut, and the volumes leave after every thaw.
    assert calls.index("gather vol-a,vol-b,vol-c") > max(calls.index(f"{m} status") for m in "abc")
    assert calls.index("gather vol-a,vol-b,vol-c") < min(calls.index(f"{m} quiesce") for m in "abc")
    assert calls.count("group snapshot") == 1
    assert calls.index("group snapshot") > max(calls.index(f"{m} quiesce") for m in "abc")
    for m in "abc":
        assert calls.index(f"{m} claim member-vol-{m}") > calls.index("group snapshot")
        assert calls.index(f"{m} +thaw") < calls.index("scatter")
    assert [r.snapshot_id for r in outcome.results] == [
        "member-vol-a",
        "member-vol-b",
        "member-vol-c",
    ]
    assert not [c for c in calls if c.startswith("release")]


def test_no_group_snapshot_unless_every_member_froze() -> None:
    groups = FakeGroups([])
    agents = {m.id: FakeAgent(m) for m in (A, B, C)}
    agents["c"].fail["quiesce"] = AgentError("127.0.0.4:2453", 409, "flush failed: redis down")
    outcome = run_grouped(agents, groups)
    assert outcome.state == "incomplete"
    assert outcome.reason == (
        "redis-data/1: quiesce failed: flush failed: redis down; "
        "no group snapshot without every member frozen"
    )
    assert "group snapshot" not in groups.calls
    assert groups.calls[-1] == "scatter"  # the volumes left the group all the same
    assert [c for c in groups.calls if "claim" in c] == []
    assert all(f"{m} thaw" in groups.calls for m in "abc")


def test_a_member_that_cannot_claim_leaves_its_cut_released_and_the_set_incomplete() -> None:
    groups = FakeGroups([])
    agents = {m.id: FakeAgent(m) for m in (A, B, C)}
    agents["b"].fail["claim member-vol-b"] = AgentError(
        "127.0.0.3:2453", 409, "set x is expired on this instance, not frozen"
    )
    outcome = run_grouped(agents, groups)
    assert outcome.state == "incomplete"
    assert "redis-data/0: snapshot failed: set x is expired" in outcome.reason
    assert groups.calls.index("release member-vol-b") > groups.calls.index("scatter")
    assert [c for c in groups.calls if c.startswith("release")] == ["release member-vol-b"]
    assert agents["a"].verdicts == [("incomplete", outcome.reason)]


def test_volumes_that_cannot_be_gathered_freeze_nothing_and_say_why() -> None:
    groups = FakeGroups([])
    groups.fail["gather vol-a,vol-b,vol-c"] = ProviderError(
        "this cloud has no default group type: set provider.openstack.group_type"
    )
    agents = {m.id: FakeAgent(m) for m in (A, B, C)}
    outcome = run_grouped(agents, groups)
    assert outcome.state == "incomplete"
    assert outcome.reason == (
        "no group snapshot: this cloud has no default group type: set provider.openstack.group_type"
    )
    assert not [c for c in groups.calls if c.endswith("quiesce") or "claim" in c]
