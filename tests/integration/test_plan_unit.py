"""Decision logic of the local Director and agent (no processes, no root)."""

from __future__ import annotations

import pytest

from localbosh import plan
from localbosh.director import watch_time

A = plan.AppliedSpec(("redis",), "h1", {"python3": "p1", "deps": "d1"}, 1024)


def test_update_drain_args_changed_hash_and_sorted_changed_packages() -> None:
    new = plan.AppliedSpec(("redis",), "h2", {"python3": "p2", "deps": "d1", "new": "n"}, 1024)
    assert plan.update_drain_args(A, new) == ["job_changed", "hash_changed", "new", "python3"]


def test_update_drain_args_unchanged_hash() -> None:
    assert plan.update_drain_args(A, A) == ["job_changed", "hash_unchanged"]


def test_update_drain_args_first_apply_is_new() -> None:
    assert plan.update_drain_args(None, A)[:2] == ["job_new", "hash_new"]
    no_jobs = plan.AppliedSpec((), None, {}, 0)
    assert plan.update_drain_args(no_jobs, A)[:2] == ["job_new", "hash_new"]


def test_job_state_env_is_go_json_with_only_the_disk_size() -> None:
    assert plan.job_state_env(0) == '{"persistent_disk":0}'
    assert plan.job_state_env(1024) == '{"persistent_disk":1024}'


@pytest.mark.parametrize("out,value", [("0\n", 0), (" -5 ", -5), ("30", 30)])
def test_drain_output_signed_integer(out: str, value: int) -> None:
    assert plan.parse_drain_output(out) == value


@pytest.mark.parametrize("out", ["", "ok", "1.5", "1\n2", "+3"])
def test_drain_output_not_an_integer(out: str) -> None:
    with pytest.raises(plan.DrainOutputError, match="Script did not return a signed integer"):
        plan.parse_drain_output(out)


def test_parallel_failure_message_matches_the_agent() -> None:
    assert (
        plan.parallel_failure_message("pre-start", ["b"], ["a", "c"])
        == "1 of 3 pre-start scripts failed. Failed Jobs: b. Successful Jobs: a, c."
    )
    assert (
        plan.parallel_failure_message("drain", ["a"], [])
        == "1 of 1 drain scripts failed. Failed Jobs: a."
    )


def facts(**kw: object) -> plan.Facts:
    base: dict[str, object] = {
        "state": "started",
        "has_vm": True,
        "job_state": "running",
        "update_completed": True,
        "old": A,
        "new": A,
        "disk_size": 1024,
    }
    base.update(kw)
    return plan.Facts(**base)  # type: ignore[arg-type]


def test_nothing_changed_nothing_happens() -> None:
    p = plan.procedure(facts(), "started")
    assert not p.changed and p.stop is None and not p.apply and p.final_state == "started"


def test_new_instance_gets_a_vm_its_disk_and_starts() -> None:
    p = plan.procedure(facts(has_vm=False, job_state=None, old=None, disk_size=0), "started")
    assert p.create_vm and p.change_disk and p.apply and p.start and p.stop is None


def test_changed_properties_update_in_place_with_an_update_drain() -> None:
    new = plan.AppliedSpec(("redis",), "h2", A.packages, 1024)
    p = plan.procedure(facts(new=new), "started")
    assert p.changes == {"configuration"}
    assert (p.stop, p.intent) == ("update", "keep_vm")
    assert p.apply and p.start and not p.recreate_vm and not p.create_vm


def test_failing_processes_or_a_failed_update_are_a_full_update_with_drain() -> None:
    # A restore left Redis stopped: the agent says failing, the spec is unchanged.
    failing = plan.procedure(facts(job_state="failing"), "started")
    assert failing.changes == {"state"} and failing.stop == "update" and failing.start
    # The agent's stopped file does not spare the drain: the Director's record says started.
    stopped_by_agent = plan.procedure(facts(job_state="stopped"), "started")
    assert stopped_by_agent.stop == "update"
    dirty = plan.procedure(facts(update_completed=False), "started")
    assert dirty.changes == {"dirty"} and dirty.stop == "update" and dirty.start


def test_stop_drains_for_shutdown_and_returns_before_converging() -> None:
    p = plan.procedure(facts(), "stopped")
    assert (p.stop, p.intent, p.final_state) == ("shutdown", "keep_vm", "stopped")
    assert not p.apply and not p.start and not p.change_disk and not p.detach


def test_deploy_to_a_soft_stopped_instance_applies_and_migrates_nothing() -> None:
    new = plan.AppliedSpec(("redis",), "h2", A.packages, 2048)
    p = plan.procedure(facts(state="stopped", job_state="stopped", new=new), "stopped")
    assert p.changed and p.final_state == "stopped"
    assert p.stop is None and not p.apply and not p.change_disk and not p.recreate_vm


def test_hard_stop_detaches_and_a_deploy_leaves_it_detached() -> None:
    hard = plan.procedure(facts(), "detached")
    assert (hard.stop, hard.intent) == ("shutdown", "delete_vm")
    assert hard.detach and hard.final_state == "detached" and not hard.apply
    new = plan.AppliedSpec(("redis",), "h2", A.packages, 1024)
    later = plan.procedure(
        facts(state="detached", has_vm=False, job_state=None, new=new), "detached"
    )
    assert later.changed and later.final_state == "detached"
    assert not later.create_vm and not later.apply and later.stop is None


def test_start_of_a_detached_instance_creates_its_vm() -> None:
    p = plan.procedure(facts(state="detached", has_vm=False, job_state=None), "started")
    assert p.create_vm and p.apply and p.start and p.stop is None and p.final_state == "started"


def test_recreate_of_a_stopped_instance_ends_started_without_a_drain() -> None:
    p = plan.procedure(facts(state="stopped", job_state="stopped"), "recreate")
    assert p.recreate_vm and p.start and p.final_state == "started" and p.stop is None
    running = plan.procedure(facts(), "recreate")
    assert (running.stop, running.intent) == ("shutdown", "delete_vm") and running.recreate_vm


def test_restart_drains_as_an_update_and_ends_started() -> None:
    p = plan.procedure(facts(), "restart")
    assert p.changes == {"restart"} and p.stop == "update" and p.start
    stopped = plan.procedure(facts(state="stopped", job_state="stopped"), "restart")
    assert stopped.stop is None and stopped.start and stopped.final_state == "started"


def test_disk_change_is_a_shutdown_drain_and_a_migration() -> None:
    new = plan.AppliedSpec(A.jobs, A.configuration_hash, A.packages, 2048)
    p = plan.procedure(facts(new=new), "started")
    assert "persistent_disk" in p.changes and p.stop == "shutdown" and p.change_disk


def _candidates() -> list[plan.ErrandCandidate]:
    return [
        plan.ErrandCandidate(plan.Ident("web", 0, "w0"), "stopped", True),
        plan.ErrandCandidate(plan.Ident("node", 0, "n0"), "started", True),
        plan.ErrandCandidate(plan.Ident("node", 1, "n1"), "detached", False),
    ]


def test_errands_check_every_instance_for_stopped_without_a_filter() -> None:
    with pytest.raises(plan.SelectionError, match=r"Instance\(s\) 'web/w0' is stopped"):
        plan.errand_targets("e", _candidates(), {"node"}, [])
    # With a filter only the selected instances are checked.
    targets = plan.errand_targets("e", _candidates(), {"node"}, ["node"])
    assert targets.run == (plan.Ident("node", 0, "n0"),)
    assert targets.skipped == (plan.Ident("node", 1, "n1"),)  # no VM: skipped, not failed


def test_errand_selection_errors() -> None:
    started = [c for c in _candidates() if c.state != "stopped"]
    with pytest.raises(plan.SelectionError, match="Errand 'nope' doesn't exist"):
        plan.errand_targets("nope", started, set(), [])
    with pytest.raises(
        plan.SelectionError, match=r"No instances match selection criteria: \[node/7\]"
    ):
        plan.errand_targets("e", started, {"node"}, ["node/7"])
    first = plan.errand_targets("e", started, {"node"}, ["node/first"])
    assert first.run == (plan.Ident("node", 0, "n0"),)


def test_scale_removes_highest_indexes_and_dropped_groups() -> None:
    have = [plan.Placement("a", 0), plan.Placement("a", 1), plan.Placement("a", 2)]
    have.append(plan.Placement("gone", 0))
    keep, create, delete = plan.scale(have, {"a": 2, "b": 1})
    assert keep == [plan.Placement("a", 0), plan.Placement("a", 1)]
    assert create == [plan.Placement("b", 0)]
    assert delete == [plan.Placement("a", 2), plan.Placement("gone", 0)]


def test_update_order_manifest_groups_then_canary_first() -> None:
    ps = [plan.Placement("data", 1), plan.Placement("data", 0), plan.Placement("leader", 0)]
    assert plan.update_order(["leader", "data"], ps) == [
        plan.Placement("leader", 0),
        plan.Placement("data", 0),
        plan.Placement("data", 1),
    ]


def test_select_by_group_index_uuid_and_first() -> None:
    insts = [plan.Ident("g", 0, "b-uuid"), plan.Ident("g", 1, "a-uuid"), plan.Ident("h", 0, "c")]
    assert plan.select(insts, "g/1") == [insts[1]]
    assert plan.select(insts, "g/b-uuid") == [insts[0]]
    assert plan.select(insts, "g/first") == [insts[1]]  # smallest uuid, not index 0
    assert plan.select(insts, "g") == insts[:2]
    with pytest.raises(plan.SelectionError):
        plan.select(insts, "g/7")
    with pytest.raises(plan.SelectionError):
        plan.select(insts, "nope")


def test_watch_time_takes_the_upper_bound_in_seconds() -> None:
    assert watch_time({"update": {"canary_watch_time": "1000-30000"}}, canary=True) == 30
    assert watch_time({"update": {"update_watch_time": 5000}}, canary=False) == 5
    assert watch_time({}, canary=False) == 30
