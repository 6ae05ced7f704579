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


def test_job_state_env_holds_only_the_disk_size() -> None:
    assert plan.job_state_env(0) == '{"persistent_disk": 0}'


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


def test_instance_change_kinds() -> None:
    assert plan.instance_change(False, None, A, 0, 1024) == "create"
    assert plan.instance_change(True, A, A, 1024, 2048) == "disk-change"
    assert plan.instance_change(True, A, A, 1024, 1024) == "none"
    changed = plan.AppliedSpec(("redis",), "h2", A.packages, 1024)
    assert plan.instance_change(True, A, changed, 1024, 1024) == "update"


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
