"""Backups as pure decisions: which snapshot a run copies, when a backup is overdue, which
backups retention deletes (for any history), the backups property, and the catalog."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from test_retention import INSTANCES
from test_retention import NOW
from test_retention import snap

from disk_snapshots.backups.decisions import NothingToBackUp
from disk_snapshots.backups.decisions import backup_of
from disk_snapshots.backups.decisions import choose_source
from disk_snapshots.backups.decisions import in_progress_sources
from disk_snapshots.backups.decisions import newest_completed
from disk_snapshots.backups.decisions import overdue
from disk_snapshots.catalog import Backup
from disk_snapshots.config import ConfigError
from disk_snapshots.config import RestoreConfig
from disk_snapshots.config import Retention
from disk_snapshots.config import TakeSnapshotConfig
from disk_snapshots.config import load_config
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.retention import plan_backup_retention
from disk_snapshots.retention import plan_retention
from disk_snapshots.table import render_table
from disk_snapshots.table import to_json
from support.configdocs import snapshotter_doc
from support.configdocs import spec_defaults

ME = INSTANCES[0][2]


def backup(
    n: int, hours_ago: float, *, instance: int = 0, state: str = "completed", started: float = 0
) -> Backup:
    source = snap(n, hours_ago, instance=instance, consistency="app")
    return Backup(
        id=f"bkp-{n:017x}",
        source_snapshot=source.id,
        annotations=source.annotations,
        state=state,  # type: ignore[arg-type]
        started_at=NOW - timedelta(hours=started or hours_ago),
        completed_at=NOW if state == "completed" else None,
        location="/backups",
    )


# -- which snapshot -----------------------------------------------------------------------


def test_instance_source_is_the_newest_app_consistent_snapshot_of_this_instance() -> None:
    catalog = [
        snap(1, 5, consistency="app"),
        snap(2, 4, consistency="clean"),
        snap(3, 3, consistency="fs"),  # frozen but not flushed: not app-consistent
        snap(4, 2, consistency="crash"),
        snap(5, 1, consistency="app", instance=1),  # another instance's
        snap(6, 1.5, consistency="clean", trigger="pre-restore"),
        snap(7, 0.5, consistency="app", state="error"),
        snap(8, 0.2, consistency="app", set_id="s1", set_state="incomplete"),
    ]
    assert choose_source(catalog, ME, "instance").id == "snap-0002"


def test_set_source_is_this_instances_member_of_the_newest_complete_set() -> None:
    catalog = [
        snap(1, 3, set_id="s1", set_state="complete", trigger="set:nightly"),
        snap(2, 2, set_id="s2", set_state="incomplete", trigger="set:nightly"),
        snap(3, 1, consistency="app"),
        snap(4, 1, set_id="s3", set_state="complete", instance=1, trigger="set:nightly"),
    ]
    assert choose_source(catalog, ME, "set").id == "snap-0001"


def test_nothing_to_back_up_says_what_was_looked_at() -> None:
    with pytest.raises(NothingToBackUp, match="this instance has 1 snapshot"):
        choose_source([snap(1, 1, consistency="crash")], ME, "instance")
    with pytest.raises(NothingToBackUp, match="member of a complete set"):
        choose_source([snap(1, 1, consistency="app")], ME, "set")


def test_a_snapshot_already_backed_up_or_copying_is_not_copied_again() -> None:
    done, copying = backup(1, 1), backup(1, 1, state="pending")
    failed = backup(1, 1, state="error")
    done2 = Backup(**{**done.__dict__, "id": "bkp-2"})
    assert backup_of([failed], "snap-0001") is None
    assert backup_of([failed, copying], "snap-0001") == copying
    assert backup_of([copying, done, failed], "snap-0001") == done
    assert backup_of([done2], "snap-0002") is None
    assert in_progress_sources([copying, done, failed]) == {"snap-0001"}


def test_overdue_is_pending_past_the_deadline() -> None:
    pending = backup(1, 1, state="pending", started=7)
    assert overdue(pending, timedelta(hours=6), NOW)
    assert not overdue(pending, timedelta(hours=8), NOW)
    assert not overdue(backup(1, 1, started=7), timedelta(hours=6), NOW)  # completed


# -- retention ----------------------------------------------------------------------------


def test_rules_apply_to_completed_backups_and_failed_ones_always_go() -> None:
    backups = [backup(n, hours) for n, hours in enumerate([1, 25, 49, 73, 97], 1)]
    backups += [backup(9, 2, state="error"), backup(10, 3, state="pending")]
    backups += [backup(11, 200, instance=1)]
    plan = plan_backup_retention(backups, Retention(keep_last=2), NOW, instance_id=ME)
    assert [b.id for b in plan.delete] == [
        "bkp-00000000000000005",
        "bkp-00000000000000004",
        "bkp-00000000000000003",
        "bkp-00000000000000009",
    ]
    assert "newest completed backup" in " ".join(plan.keep["bkp-00000000000000001"])
    assert plan.keep["bkp-0000000000000000a"] == ("still being copied",)
    assert plan.keep["bkp-0000000000000000b"] == ("another instance's backup",)


def test_an_empty_policy_keeps_every_completed_backup() -> None:
    backups = [backup(1, 1), backup(2, 500), backup(3, 3, state="error")]
    plan = plan_backup_retention(backups, Retention(), NOW, instance_id=ME)
    assert [b.id for b in plan.delete] == ["bkp-00000000000000003"]


HISTORY = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=24 * 120, allow_nan=False),
        st.integers(min_value=0, max_value=2),
        st.sampled_from(["completed", "completed", "completed", "pending", "error"]),
    ),
    max_size=40,
)
POLICY = st.builds(
    Retention,
    keep_last=st.none() | st.integers(0, 5),
    keep_hourly=st.none() | st.integers(0, 5),
    keep_daily=st.none() | st.integers(0, 10),
    keep_weekly=st.none() | st.integers(0, 5),
    keep_monthly=st.none() | st.integers(0, 3),
    max_age=st.none() | st.integers(0, 24 * 60).map(lambda h: timedelta(hours=h)),
)


@settings(max_examples=300, deadline=None)
@given(history=HISTORY, policy=POLICY)
def test_backup_retention_guards_hold_for_any_history(
    history: list[tuple[float, int, str]], policy: Retention
) -> None:
    backups = [backup(n, h, instance=i, state=s) for n, (h, i, s) in enumerate(history, 1)]
    plan = plan_backup_retention(backups, policy, NOW, instance_id=ME)
    deleted = {b.id for b in plan.delete}
    assert not deleted & set(plan.keep), "nothing is both kept and deleted"
    assert deleted | set(plan.keep) == {b.id for b in backups}, "every backup is decided"
    newest = newest_completed(backups, ME)
    if newest is not None:
        assert newest.id not in deleted, "never the newest completed backup"
    for b in backups:
        if b.id in deleted:
            assert b.annotations.instance_id == ME, "only this instance's backups"
            assert b.state != "pending", "never one still being copied"
        elif b.state == "error" and b.annotations.instance_id == ME:
            pytest.fail("a failed backup of this instance is always deleted")
    done = [b for b in backups if b.state == "completed" and b.annotations.instance_id == ME]
    if policy.keep_last:
        # Newest first, ties broken by id (as the catalog sorts).
        newest_first = sorted(done, key=lambda b: (b.created_at, b.id), reverse=True)
        assert not {b.id for b in newest_first[: policy.keep_last]} & deleted
    if policy.max_age is not None:
        assert not {b.id for b in done if NOW - b.created_at <= policy.max_age} & deleted


def test_snapshot_retention_keeps_a_snapshot_a_backup_is_copying() -> None:
    catalog = [snap(n, hours) for n, hours in enumerate([1, 2, 3], 1)]
    copying = in_progress_sources([backup(3, 3, state="pending")])
    policies = {"schedule:hourly": Retention(keep_last=1)}
    plain = plan_retention(catalog, policies, NOW, instance_id=ME)
    guarded = plan_retention(catalog, policies, NOW, instance_id=ME, protected=copying)
    assert "snap-0003" in {s.id for s in plain.delete}
    assert "snap-0003" not in {s.id for s in guarded.delete}


# -- the backups property -----------------------------------------------------------------


def snapshotter(**properties: Any) -> dict[str, Any]:
    doc = snapshotter_doc()
    for path, value in properties.items():
        node = doc["properties"]
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return doc


def test_the_spec_defaults_have_no_scheduled_backup() -> None:
    config = load_snapshotter_config(snapshotter_doc())
    assert config.backups.cron == ""
    assert config.backups.retention == Retention(keep_daily=7, keep_weekly=4)
    assert config.backups.deadline == timedelta(hours=6)
    assert config.provider.loopback_backup_store == ""


def test_a_backup_schedule_is_read() -> None:
    doc = snapshotter(
        provider__loopback__backup_store="/var/vcap/store-backups",
        backups__cron="15 3 * * *",
        backups__timezone="Europe/Berlin",
        backups__source="set",
        backups__deadline="90m",
        backups__retention={"keep_last": 3},
    )
    backups = load_snapshotter_config(doc).backups
    assert (backups.cron, backups.timezone, backups.source) == (
        "15 3 * * *",
        "Europe/Berlin",
        "set",
    )
    assert backups.deadline == timedelta(minutes=90)
    assert backups.schedule().name == "backup" and backups.schedule().jitter == 600


@pytest.mark.parametrize(
    ("properties", "problem"),
    [
        (
            {"backups__cron": "15 3 * * *"},
            "snapshotter.provider.loopback.backup_store: required when backups.cron is set",
        ),
        (
            {"provider__type": "aws-ebs", "backups__cron": "@daily"},
            "snapshotter.provider.aws.backup_region: required when backups.cron is set",
        ),
        ({"backups__cron": "every night"}, 'snapshotter.backups.cron: "every night" has 2 fields'),
        ({"backups__source": "newest"}, 'snapshotter.backups.source: "newest" is not allowed'),
        ({"backups__deadline": "30s"}, "snapshotter.backups.deadline: at least 1m"),
        ({"backups__deadline": "soon"}, 'snapshotter.backups.deadline: "soon" is not a duration'),
        ({"backups__keep": 3}, "snapshotter.backups.keep: unknown key"),
        ({"backups__retention": {"keep_last": -1}}, "keep_last: -1 is too small"),
        (
            {"provider__loopback__backup_store": "backups"},
            'snapshotter.provider.loopback.backup_store: "backups" is not an absolute path',
        ),
    ],
)
def test_bad_backup_properties_are_named(properties: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(snapshotter(**properties))
    assert any(line.startswith(problem) or problem in line for line in caught.value.problems), (
        caught.value.problems
    )


def errand(job: str, **properties: Any) -> dict[str, Any]:
    """An errand's rendered config from its spec's defaults, with ``properties`` set."""
    props = spec_defaults(job)
    (section,) = props.values()
    section.update(properties)
    return {"job": job, "properties": props}


def test_the_errands_new_properties() -> None:
    take = load_config(errand("take-snapshot"))
    assert isinstance(take, TakeSnapshotConfig) and take.backup is False
    take = load_config(errand("take-snapshot", backup=True))
    assert isinstance(take, TakeSnapshotConfig) and take.backup is True
    restore = load_config(errand("restore"))
    assert isinstance(restore, RestoreConfig) and restore.source == "auto"
    restore = load_config(errand("restore", source="backup"))
    assert isinstance(restore, RestoreConfig) and restore.source == "backup"
    with pytest.raises(ConfigError, match=r'restore\.source: "tape" is not allowed'):
        load_config(errand("restore", source="tape"))


# -- the catalog --------------------------------------------------------------------------


def test_the_catalog_shows_both_tiers() -> None:
    kept, gone = snap(1, 2, consistency="app"), snap(2, 30, consistency="app")
    backups = [backup(1, 2), backup(2, 30), backup(3, 1, state="pending")]
    text = render_table([kept], backups)
    lines = text.splitlines()
    assert lines[0].split()[-1] == "Backup"
    assert lines[1].endswith(f"{backups[0].id} (completed)")
    assert "1 snapshot" in lines
    header = next(
        i for i, line in enumerate(lines) if line.split()[:3] == ["Instance", "Backup", "ID"]
    )
    rows = lines[header + 1 : header + 4]
    assert f"{gone.id} (gone)" in rows[1] and "completed" in rows[1]
    assert "pending: " in rows[2]
    assert "3 backups" in lines
    records = json.loads(to_json([kept], backups))
    assert [r["tier"] for r in records] == ["snapshot", "backup", "backup", "backup"]
    assert records[2]["source_snapshot"] == gone.id
    assert records[3]["state"] == "pending"
    assert records[1]["annotations"] == records[0]["annotations"]
    assert render_table([kept]).splitlines()[-1] == "1 snapshot"  # tier off: no backups table
