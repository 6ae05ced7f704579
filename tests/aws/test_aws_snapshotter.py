"""The snapshotter (what hooks, errands and the daemon call) with ``provider.type: aws-ebs``
(the ``snapshotter`` fixture: tests/aws/conftest.py)."""

from __future__ import annotations

from typing import Any

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.snapshot.snapshotter import Snapshotter
from support.aws import SECRET
from support.aws import World


def test_manual_and_pre_deploy_snapshots_carry_every_annotation(
    snapshotter: Snapshotter, world: World, ec2: Any
) -> None:
    taken = snapshotter.take("manual", note="before the migration").snapshot
    clean = snapshotter.take_clean("pre-deploy").snapshot

    for snapshot in (taken, clean):
        raw = ec2.describe_snapshots(SnapshotIds=[snapshot.id])["Snapshots"][0]
        tags = {t["Key"]: t["Value"] for t in raw["Tags"]}
        assert {k: v for k, v in tags.items() if k.startswith(TAG_PREFIX)} == (
            snapshot.annotations.to_tags()
        )
        assert raw["VolumeId"] == world.volume_id
        assert SECRET not in str(tags)
    assert taken.annotations.note == "before the migration"
    assert taken.annotations.deployment == "redis"
    assert taken.annotations.disk_cid == world.volume_id
    assert clean.annotations.consistency == "clean"
    assert [s.id for s in snapshotter.catalog()] == [clean.id, taken.id]


def test_prune_deletes_through_the_provider(snapshotter: Snapshotter) -> None:
    first = snapshotter.take("manual").snapshot
    second = snapshotter.take("manual").snapshot
    plan = snapshotter.prune()
    assert [s.id for s in plan.delete] == [first.id]
    assert [s.id for s in snapshotter.catalog()] == [second.id]
