"""Backup runs with ``provider.type: aws-ebs`` against moto: a copy tracked to completed,
retention in the backup region, an overdue copy reported, and a restore planned from
backups once the disks' region lost its snapshots."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.awsrequest import HTTPHeaders

from disk_snapshots import metrics as m
from disk_snapshots.backups.runner import BackupRunner
from disk_snapshots.members import Member
from disk_snapshots.metrics import Metrics
from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.restore.plan import plan_restore
from disk_snapshots.restore.target import Target
from disk_snapshots.snapshot.snapshotter import Snapshotter
from support.aws import BACKUP_REGION
from support.aws import report_state


def backup_client(snapshotter: Snapshotter) -> Any:
    assert isinstance(snapshotter.provider, AwsEbsProvider)
    return snapshotter.provider.client(BACKUP_REGION)


def runner(snapshotter: Snapshotter, **kwargs: Any) -> BackupRunner:
    return BackupRunner(snapshotter, Metrics(), poll=0.0, **kwargs)


def test_a_scheduled_run_tracks_the_copy_to_completed(snapshotter: Snapshotter) -> None:
    taken = snapshotter.take_clean("manual").snapshot
    left = report_state(backup_client(snapshotter), "pending", 3)
    r = runner(snapshotter)

    outcome = r.run()

    assert outcome.ok, outcome.message
    assert left == [0]  # it kept looking until EBS said completed
    assert outcome.backup is not None and outcome.backup.state == "completed"
    assert outcome.backup.source_snapshot == taken.id
    assert outcome.backup.completed_at is not None
    assert "completed in eu-central-1" in outcome.message
    assert r.metrics is not None
    assert r.metrics.get(m.BACKUPS_COMPLETED) == 1
    assert r.metrics.get(m.BACKUP_NEWEST) == taken.created_at.timestamp()
    # Run again with nothing new: no second copy of the same snapshot.
    again = r.run()
    assert again.ok and "already backed up" in again.message
    assert len(snapshotter.backups()) == 1


def test_retention_in_the_backup_region_keeps_the_newest(snapshotter: Snapshotter) -> None:
    r = runner(snapshotter)
    made = []
    for _ in range(4):
        snapshot = snapshotter.take_clean("manual").snapshot
        outcome = r.run(snapshot.id)
        assert outcome.ok, outcome.message
        assert outcome.backup is not None
        made.append(outcome.backup.id)
    assert [b.id for b in snapshotter.backups()] == made[:-3:-1]  # keep_last 2, newest first
    assert r.metrics is not None and r.metrics.get(m.BACKUP_RETENTION_DELETED) == 2


def test_a_copy_still_pending_at_the_deadline_is_reported_failed(snapshotter: Snapshotter) -> None:
    snapshotter.take_clean("manual")
    report_state(backup_client(snapshotter), "pending", 100)
    later = datetime.now(UTC) + timedelta(hours=7)
    r = runner(snapshotter, clock=lambda: later)

    outcome = r.run()

    assert not outcome.ok and outcome.reason == "deadline"
    assert "backups.deadline passed" in outcome.message
    assert r.metrics is not None
    assert r.metrics.get(m.BACKUP_FAILURES, reason="deadline") == 1
    # The daemon's look at pending backups does not report the same one twice.
    assert r.check_pending() == []


def test_snapshot_retention_keeps_a_snapshot_whose_copy_is_pending(
    snapshotter: Snapshotter,
) -> None:
    first = snapshotter.take_clean("manual").snapshot
    report_state(backup_client(snapshotter), "pending", 100)
    assert not runner(snapshotter, clock=lambda: datetime.now(UTC) + timedelta(hours=7)).run().ok
    for _ in range(3):
        snapshotter.take_clean("manual")
    plan = snapshotter.prune()  # manual: keep_last 1
    assert len(plan.delete) == 2
    assert "a backup in progress depends on it" in plan.explain(first.id)
    assert first.id in {s.id for s in snapshotter.catalog()}


def test_no_snapshot_to_back_up_is_a_failure_that_says_why(snapshotter: Snapshotter) -> None:
    r = runner(snapshotter)
    outcome = r.run()
    assert not outcome.ok and outcome.reason == "no-source"
    assert "this instance has 0 snapshot(s)" in outcome.message
    assert r.metrics is not None and r.metrics.get(m.BACKUP_FAILURES, reason="no-source") == 1


def test_a_restore_plan_from_the_backup_region_after_the_snapshots_are_gone(
    snapshotter: Snapshotter,
) -> None:
    snapshotter.record_role("leader")  # as the service's probe would have said
    taken = snapshotter.take_clean("manual").snapshot
    outcome = runner(snapshotter).run()
    assert outcome.backup is not None
    snapshotter.provider.delete(taken.id)
    spec = snapshotter.config.spec
    me = Member(spec.name, spec.index, spec.id, spec.address)

    plan = plan_restore(
        snapshotter.catalog(),
        [me],
        me.id,
        spec.deployment,
        Target.parse("latest"),
        backups=snapshotter.backups(),
        source="auto",
    )

    assert plan.leader.backup is not None and plan.leader.backup.id == outcome.backup.id
    assert plan.leader.entry().snapshot_id == taken.id
    assert f"tier: backup {outcome.backup.id} in {BACKUP_REGION}" in plan.describe()


def test_when_the_backup_region_does_not_answer_snapshot_retention_deletes_nothing(
    snapshotter: Snapshotter, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        snapshotter.take_clean("manual")
    assert isinstance(snapshotter.provider, AwsEbsProvider)

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        response = AWSResponse("http://ec2", 503, HTTPHeaders(), None)
        return response, {"Error": {"Code": "Unavailable", "Message": "region down"}}

    handler: Any = refuse
    client = snapshotter.provider.client(BACKUP_REGION)
    client.meta.events.register("before-call.ec2.DescribeSnapshots", handler)

    plan = snapshotter.prune()  # manual: keep_last 1 would delete two

    assert plan.delete == ()
    assert len(snapshotter.catalog()) == 3
    assert "retention deletes nothing now" in caplog.text
