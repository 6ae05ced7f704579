"""The executor's pure decisions, and the agent's restore endpoints on fakes (no root)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from pathlib import Path

import pytest

from disk_snapshots.api.client import AgentClient
from disk_snapshots.api.client import AgentError
from disk_snapshots.api.server import serve
from disk_snapshots.config import TlsConfig
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.daemon.agent import Agent
from disk_snapshots.members import Member
from disk_snapshots.members import linked
from disk_snapshots.metrics import Metrics
from disk_snapshots.restore.journal import Journal
from disk_snapshots.restore.journal import new_restore_id
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.restore.plan import choose_leader
from disk_snapshots.restore.resume import RestoreFailed
from disk_snapshots.restore.resume import find_unfinished
from disk_snapshots.restore.resume import supersedes
from support.configdocs import snapshotter_doc
from support.configdocs import spec_defaults
from support.fakes import FakeMonit
from support.fakes import fake_snapshotter

A = Member("redis", 0, "id-a", "10.0.0.1", bootstrap=False)
B = Member("redis", 1, "id-b", "10.0.0.2", bootstrap=True)
C = Member("redis", 2, "id-c", "10.0.0.3", bootstrap=False)
DATA = Member("redis-data", 0, "id-d", "10.0.0.4", bootstrap=True)


def test_the_leader_groups_bootstrap_leads_with_a_peers_link() -> None:
    leader, why = choose_leader([A, B], [DATA], {"id-a": "leader", "id-d": "leader"})
    assert leader == "id-b"
    assert "bootstrap instance of the leader group" in why


def test_one_group_follows_the_role_reported_now() -> None:
    assert choose_leader([A, B, C], [], {"id-a": "follower", "id-c": "leader"})[0] == "id-c"
    # Followers stopped: a leader without replicas reports standalone.
    assert choose_leader([A, B, C], [], {"id-a": "standalone", "id-b": "unknown"})[0] == "id-a"


def test_no_single_leader_means_the_bootstrap_instance() -> None:
    leader, why = choose_leader([A, B, C], [], {"id-a": "leader", "id-c": "leader"})
    assert leader == "id-b" and "several members report leader" in why
    leader, why = choose_leader([A, B, C], [], {})
    assert leader == "id-b" and "no member reports leader" in why


def test_members_are_both_links_in_order(tmp_path: Path) -> None:
    doc = snapshotter_doc()

    def link(*instances: Member) -> dict[str, object]:
        return {
            "properties": {"api": {"port": 2453}, "service": {"profile": "redis"}},
            "instances": [
                {"name": i.group, "index": i.index, "id": i.id, "az": "z1"}
                | {"address": i.address, "bootstrap": i.bootstrap}
                for i in instances
            ],
        }

    doc["links"] = {"snapshotter": link(B, A), "peers": link(DATA, A)}
    members = linked(load_snapshotter_config(doc))
    assert [m.id for m in members] == ["id-b", "id-a", "id-d"]
    doc["links"] = {"snapshotter": None, "peers": None}
    alone = linked(load_snapshotter_config(doc))
    assert [m.label for m in alone] == ["redis-leader/0"]


LEADER = Member("redis-leader", 0, "id-l", "10.0.0.1")
FOLLOWER = Member("redis-data", 0, "id-f", "10.0.0.2")
PLAN = [
    PlanEntry(LEADER.label, LEADER.id, "leader", "copy", "snap-1"),
    PlanEntry(FOLLOWER.label, FOLLOWER.id, "follower", "resync", ""),
]
PLAN_JSON = [e.to_json() for e in PLAN]  # as the journal's JSON holds it


def journal(restore_id: str, phase: str = "copying", plan: bool = True) -> Journal:
    return Journal(restore_id, "snap-1", "snap-s", phase, plan=PLAN if plan else [])  # type: ignore[arg-type]


def test_an_unfinished_journal_is_resumed_with_its_plan() -> None:
    rid = "restore-20261129T080000Z-abcdef"
    found = find_unfinished({"id-l": (journal(rid), None), "id-f": (None, journal(rid, "done"))})
    assert found is not None
    assert found.restore_id == rid and found.plan == PLAN and found.finished == {"id-f"}
    assert find_unfinished({"id-l": (None, journal(rid, "done"))}) is None


def test_disagreeing_or_unreadable_journals_stop_everything() -> None:
    with pytest.raises(RestoreFailed, match="disagree"):
        find_unfinished(
            {
                "id-l": (journal("restore-20261129T080000Z-aaaaaa"), None),
                "id-f": (journal("restore-20261129T080000Z-bbbbbb"), None),
            }
        )
    unreadable = Journal("unknown", "unknown", "unknown", "failed")
    with pytest.raises(RestoreFailed, match="cannot be read"):
        find_unfinished({"id-l": (unreadable, None)})


def test_naming_other_snapshots_replaces_an_unfinished_restore() -> None:
    rid = "restore-20261129T080000Z-abcdef"
    resume = find_unfinished({"id-l": (journal(rid), None)})
    assert resume is not None
    members = (LEADER, FOLLOWER)
    assert not supersedes(resume, {}, members)
    assert not supersedes(resume, {"redis-leader/0": "snap-1"}, members)
    assert supersedes(resume, {"redis-leader/0": "snap-s"}, members)


def test_restore_ids_match_the_api_pattern() -> None:
    rid = new_restore_id(datetime(2026, 11, 29, 8, 0, tzinfo=UTC))
    assert rid.startswith("restore-20261129T080000Z-") and len(rid) == 31


# ---------------------------------------------------------------------------------------
# The agent's restore endpoints, on a fake provider and monit


@pytest.fixture
def agent(tmp_path: Path, tls: TlsConfig) -> Iterator[tuple[Agent, AgentClient, FakeMonit]]:
    snapshotter = fake_snapshotter(tmp_path, tls)
    monit = FakeMonit()
    agent = Agent(snapshotter, Metrics(), monit=monit)
    running = serve(agent, tls, "127.0.0.1", 0, poll_interval=0.02)
    try:
        yield agent, AgentClient.connect("127.0.0.1", running.port, tls), monit
    finally:
        running.stop()


RID = "restore-20261129T080000Z-abcdef"


def test_safety_needs_a_stopped_service_then_journals_once(
    agent: tuple[Agent, AgentClient, FakeMonit],
) -> None:
    a, client, monit = agent
    with pytest.raises(AgentError) as caught:
        client.restore_safety(RID, "snap-0000", "copy", "leader", "redis-leader/0", PLAN)
    assert caught.value.status == 409 and "must be stopped first" in caught.value.message
    client.service_stop(timeout=5)
    first = client.restore_safety(RID, "snap-0000", "copy", "leader", "redis-leader/0", PLAN)
    assert first["taken"] is True
    safety = a.snapshotter.provider.get(str(first["safety_snapshot_id"]))
    assert (safety.annotations.trigger, safety.annotations.consistency) == ("pre-restore", "clean")
    again = client.restore_safety(RID, "snap-0000", "copy", "leader", "redis-leader/0", PLAN)
    assert again["taken"] is False and again["safety_snapshot_id"] == safety.id
    journal = client.restore_journal()["journal"]
    assert (
        isinstance(journal, dict) and journal["phase"] == "planned" and journal["plan"] == PLAN_JSON
    )
    # A planned (not yet copied) disk never starts, whoever asks.
    with pytest.raises(AgentError) as refused:
        client.service_start(timeout=5)
    assert refused.value.status == 409 and "did not finish" in refused.value.message
    assert monit.states["redis"] == "not monitored"
    # Another restore may only replace it when it names it.
    other = "restore-20261129T090000Z-abcdef"
    with pytest.raises(AgentError, match="is unfinished"):
        client.restore_safety(other, "snap-0000", "copy", "leader", "redis-leader/0", PLAN)
    replaced = client.restore_safety(
        other, "snap-0000", "copy", "leader", "redis-leader/0", PLAN, replaces=RID
    )
    assert replaced["taken"] is True


def test_copy_validates_the_snapshot_and_the_journal(
    agent: tuple[Agent, AgentClient, FakeMonit],
) -> None:
    _, client, _ = agent
    with pytest.raises(AgentError, match="no journal of"):
        client.restore_copy(RID, "snap-0000", "snap-0001")
    client.service_stop(timeout=5)
    safety = str(
        client.restore_safety(RID, "snap-0404", "copy", "leader", "l/0", PLAN)["safety_snapshot_id"]
    )
    with pytest.raises(AgentError) as caught:
        client.restore_copy(RID, "snap-0404", safety)
    assert caught.value.status == 404
    with pytest.raises(AgentError, match="says copy snap-0404"):
        client.restore_copy(RID, "snap-0999", safety)


def test_bodies_are_validated(agent: tuple[Agent, AgentClient, FakeMonit]) -> None:
    _, client, _ = agent
    with pytest.raises(AgentError) as caught:
        client.call("POST", "/restore/safety", {"restore_id": "../x", "action": "wipe"})
    problems = " ".join(caught.value.problems)
    assert caught.value.status == 400
    assert "body.restore_id" in problems and "body.action" in problems
    with pytest.raises(AgentError) as caught:
        client.call("POST", "/restore/imports", {"phase": "whenever"})
    assert caught.value.status == 400
    with pytest.raises(AgentError) as caught:
        client.call("POST", "/restore/copy", {"restore_id": RID, "snapshot_id": "../../etc"})
    assert caught.value.status == 400


def test_verify_reads_its_own_restore_config(
    agent: tuple[Agent, AgentClient, FakeMonit], tmp_path: Path
) -> None:
    a, client, _ = agent
    with pytest.raises(AgentError, match=r"restore\.verify cannot be read"):
        client.restore_verify()
    path = a.snapshotter.paths.job_config("restore")
    path.parent.mkdir(parents=True)

    def verify(argv: list[str]) -> None:
        settings = spec_defaults("restore")["restore"] | {"verify": argv}
        path.write_text(json.dumps({"job": "restore", "properties": {"restore": settings}}))

    verify(["true"])
    assert client.restore_verify()["ran"] is True
    verify(["false"])
    with pytest.raises(AgentError, match=r"restore\.verify: false exited 1"):
        client.restore_verify()


def test_finish_closes_only_a_copied_journal(agent: tuple[Agent, AgentClient, FakeMonit]) -> None:
    a, client, _ = agent
    client.service_stop(timeout=5)
    client.restore_safety(RID, "", "resync", "follower", "redis-data/0", PLAN)
    assert client.restore_finish(RID)["finished"] is True
    assert client.restore_finish(RID)["finished"] is False  # again: already done
    assert Journal.read(a.snapshotter.disk.mount) is None
    client.service_start(timeout=5)
