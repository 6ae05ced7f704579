"""The aws-ebs backup tier against moto: CopySnapshot into the backup region, tracked to
completed, listed from its tags, deleted, and copied back for a restore."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.catalog import Query
from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.providers.base import BackupTier
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.base import backup_tier
from disk_snapshots.providers.base import require_backup_tier
from disk_snapshots.providers.ebs_volumes import TEMPORARY_TAG
from disk_snapshots.providers.ec2 import COMPLETED_TAG
from disk_snapshots.providers.ec2 import SOURCE_REGION_TAG
from disk_snapshots.providers.ec2 import SOURCE_SNAPSHOT_TAG
from support.aws import BACKUP_REGION
from support.aws import REGION
from support.aws import FakeDevices
from support.aws import MakeProvider
from support.aws import World
from support.aws import report_state
from support.aws import sample_annotations


def raw(client: Any, snapshot_id: str) -> dict[str, Any]:
    return dict(client.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0])


def tags(snapshot: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}


def test_the_provider_is_a_backup_tier_only_with_a_backup_region(
    make_provider: MakeProvider, provider: AwsEbsProvider, world: World
) -> None:
    assert isinstance(provider, BackupTier)
    assert backup_tier(provider) is provider
    off = make_provider(instance_id=world.instance_id, backup_region="")
    assert backup_tier(off) is None
    with pytest.raises(ProviderError, match=r"provider.aws.backup_region is empty"):
        require_backup_tier(off)
    assert off.backups() == []
    taken = off.snapshot(world.disk, sample_annotations())
    with pytest.raises(ProviderError, match="backup_region is empty"):
        off.backup(taken.id)


def test_a_backup_is_a_tagged_copy_in_the_backup_region(
    provider: AwsEbsProvider, world: World, ec2_backup: Any
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations(note="nightly"))

    backup = provider.backup(taken.id)

    assert backup.source_snapshot == taken.id
    assert backup.annotations == taken.annotations
    assert backup.location == BACKUP_REGION
    assert backup.started_at is not None
    copied = tags(raw(ec2_backup, backup.id))
    for key, value in taken.annotations.to_tags().items():
        assert copied[key] == value
    assert copied[SOURCE_SNAPSHOT_TAG] == taken.id
    assert copied[SOURCE_REGION_TAG] == REGION
    assert copied["Name"].endswith("(backup)")


def test_a_pending_copy_is_tracked_to_completed_and_its_completion_recorded(
    provider: AwsEbsProvider, world: World, ec2_backup: Any
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    left = report_state(provider.client(BACKUP_REGION), "pending", 2)

    started = provider.backup(taken.id)  # reads the copy once: pending
    assert (started.state, started.detail, started.completed_at) == ("pending", "42% copied", None)
    assert provider.get_backup(started.id).state == "pending"
    assert left == [0]
    assert COMPLETED_TAG not in tags(raw(ec2_backup, started.id))

    done = provider.get_backup(started.id)
    assert done.state == "completed"
    assert done.completed_at is not None
    stamp = tags(raw(ec2_backup, started.id))[COMPLETED_TAG]
    assert provider.get_backup(started.id).completed_at == done.completed_at
    assert tags(raw(ec2_backup, started.id))[COMPLETED_TAG] == stamp  # written once


def test_a_failed_copy_is_reported_with_ebs_reason(provider: AwsEbsProvider, world: World) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    backup = provider.backup(taken.id)
    report_state(provider.client(BACKUP_REGION), "error", 5, message="KMS key disabled")
    failed = provider.get_backup(backup.id)
    assert (failed.state, failed.detail) == ("error", "KMS key disabled")
    assert [b.state for b in provider.backups()] == ["error"]


def test_backups_are_listed_by_tags_and_outlive_their_source(
    provider: AwsEbsProvider, world: World
) -> None:
    first = provider.snapshot(world.disk, sample_annotations(minutes_ago=10))
    second = provider.snapshot(world.disk, sample_annotations(minutes_ago=5, index=1))
    older, newer = provider.backup(first.id), provider.backup(second.id)
    provider.delete(first.id)  # retention in the disks' region never reaches the copy

    assert [s.id for s in provider.list()] == [second.id]
    assert [b.id for b in provider.backups()] == [newer.id, older.id]
    (only,) = provider.backups(Query(instance="redis-leader/0"))
    assert (only.id, only.source_snapshot) == (older.id, first.id)
    assert provider.backups(Query(deployment="other")) == []


def test_copies_with_damaged_tags_are_skipped_loudly(
    provider: AwsEbsProvider, world: World, ec2_backup: Any, caplog: pytest.LogCaptureFixture
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    backup = provider.backup(taken.id)
    ec2_backup.create_tags(
        Resources=[backup.id], Tags=[{"Key": f"{TAG_PREFIX}created_at", "Value": "soon"}]
    )
    assert provider.backups() == []
    assert backup.id in caplog.text


def test_delete_removes_ours_and_refuses_anything_else(
    provider: AwsEbsProvider, world: World, ec2_backup: Any
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    backup = provider.backup(taken.id)
    volume = ec2_backup.create_volume(AvailabilityZone=f"{BACKUP_REGION}a", Size=1)
    foreign = ec2_backup.create_snapshot(VolumeId=volume["VolumeId"])["SnapshotId"]

    with pytest.raises(UnknownBackup, match="not a disk-snapshots backup"):
        provider.delete_backup(foreign)
    with pytest.raises(UnknownBackup, match="not an EBS snapshot id"):
        provider.delete_backup("../../etc/passwd")
    provider.delete_backup(backup.id)
    assert provider.backups() == []
    assert raw(ec2_backup, foreign)["SnapshotId"] == foreign


def test_a_kms_key_makes_the_copy_encrypted(
    make_provider: MakeProvider, world: World, ec2_backup: Any
) -> None:
    provider = make_provider(instance_id=world.instance_id, kms_key_id="alias/backup")
    taken = provider.snapshot(world.disk, sample_annotations())
    copy = raw(ec2_backup, provider.backup(taken.id).id)
    assert copy["Encrypted"] is True
    assert copy["KmsKeyId"] == "alias/backup"


def test_a_pending_source_is_waited_for_and_a_failed_one_is_not_copied(
    provider: AwsEbsProvider, world: World
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    left = report_state(provider.client(), "pending", 2)
    assert provider.backup(taken.id).source_snapshot == taken.id
    assert left == [0]

    other = provider.snapshot(world.disk, sample_annotations(minutes_ago=1))
    report_state(provider.client(), "error", 10)
    with pytest.raises(ProviderError, match="state error: not copied"):
        provider.backup(other.id)
    assert [b.source_snapshot for b in provider.backups()] == [taken.id]


def test_a_restore_from_a_backup_copies_it_back_then_removes_the_copy_and_volume(
    provider: AwsEbsProvider, world: World, ec2: Any, devices: FakeDevices
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    backup = provider.backup(taken.id)
    provider.delete(taken.id)  # the disaster: only the backup is left

    with provider.materialize_backup(backup.id, "z1") as mounted:
        (copy_back,) = ec2.describe_snapshots(
            Filters=[{"Name": f"tag:{TEMPORARY_TAG}", "Values": ["true"]}]
        )["Snapshots"]
        assert tags(copy_back)[SOURCE_SNAPSHOT_TAG] == backup.id
        volumes = ec2.describe_volumes(
            Filters=[{"Name": "snapshot-id", "Values": [copy_back["SnapshotId"]]}]
        )["Volumes"]
        assert len(volumes) == 1 and volumes[0]["AvailabilityZone"] == world_zone(ec2, world)
        assert mounted in devices.mounted
        assert provider.list() == []  # a copy back is never listed as a snapshot

    assert ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
    assert (
        ec2.describe_volumes(
            Filters=[{"Name": "snapshot-id", "Values": [copy_back["SnapshotId"]]}]
        )["Volumes"]
        == []
    )


def world_zone(ec2: Any, world: World) -> str:
    instance = ec2.describe_instances(InstanceIds=[world.instance_id])["Reservations"][0]
    return str(instance["Instances"][0]["Placement"]["AvailabilityZone"])


def test_a_pending_backup_is_not_restored(provider: AwsEbsProvider, world: World) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    backup = provider.backup(taken.id)
    report_state(provider.client(BACKUP_REGION), "pending", 5)
    with (
        pytest.raises(ProviderError, match=r"is pending .*not restorable"),
        provider.materialize_backup(backup.id, "z1"),
    ):
        pytest.fail("a pending backup must not be materialized")


def test_a_copy_back_left_by_a_killed_restore_is_cleaned_up(
    provider: AwsEbsProvider, world: World, ec2: Any, devices: FakeDevices
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    backup = provider.backup(taken.id)
    copy_back = provider.backups_tier._copy_back(backup.id)  # as a killed restore leaves it

    assert provider.cleanup_leftovers(min_age=timedelta(hours=1)) == []  # too young
    assert [x.id for x in provider.cleanup_leftovers(min_age=timedelta(0))] == [copy_back]
    assert [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]] == [
        taken.id
    ]
