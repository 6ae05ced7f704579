"""The backup tier: CopySnapshot into another region, one catalog record for both tiers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.catalog import Query
from disk_snapshots.providers.aws_ebs import SOURCE_REGION_TAG
from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.ec2 import SOURCE_SNAPSHOT_TAG
from disk_snapshots.table import render_table
from disk_snapshots.table import to_json
from support.aws import BACKUP_REGION
from support.aws import REGION
from support.aws import MakeProvider
from support.aws import World
from support.aws import sample_annotations


def raw(client: Any, snapshot_id: str) -> dict[str, Any]:
    return dict(client.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0])


def tags(snapshot: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}


def test_copy_appears_in_the_backup_region_with_the_tags(
    provider: AwsEbsProvider, world: World, ec2_backup: Any
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations(note="nightly"))

    record = provider.copy_to_backup(taken.id)

    assert record.id == taken.id
    assert record.backup_region == BACKUP_REGION
    copy = raw(ec2_backup, record.backup_id)
    copied = tags(copy)
    for key, value in taken.annotations.to_tags().items():
        assert copied[key] == value
    assert copied[SOURCE_SNAPSHOT_TAG] == taken.id
    assert copied[SOURCE_REGION_TAG] == REGION
    assert copied["Name"].endswith("(backup)")
    assert "Encrypted" not in copy or copy["Encrypted"] is False


def test_the_catalog_shows_both_tiers_as_one_record(provider: AwsEbsProvider, world: World) -> None:
    copied = provider.snapshot(world.disk, sample_annotations(minutes_ago=10))
    alone = provider.snapshot(world.disk, sample_annotations(minutes_ago=5))
    backup = provider.copy_to_backup(copied.id)

    listed = provider.list(Query(deployment="redis"))

    assert [(s.id, s.backup_id, s.backup_region) for s in listed] == [
        (alone.id, "", ""),
        (copied.id, backup.backup_id, BACKUP_REGION),
    ]
    assert provider.get(copied.id).backup_id == backup.backup_id
    assert provider.get(alone.id).backup_id == ""


def test_copies_outlive_their_source_and_stay_listed(
    provider: AwsEbsProvider, world: World
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    backup = provider.copy_to_backup(taken.id)
    provider.delete(taken.id)  # retention in the disks' region never reaches the copy

    assert provider.list() == []
    (copy,) = provider.list_backups()
    assert copy.snapshot.id == backup.backup_id
    assert copy.source_id == taken.id
    assert copy.source_region == REGION
    assert copy.region == BACKUP_REGION
    assert copy.snapshot.annotations == taken.annotations


def test_a_kms_key_makes_the_copy_encrypted(
    make_provider: MakeProvider, world: World, ec2_backup: Any
) -> None:
    provider = make_provider(instance_id=world.instance_id, kms_key_id="alias/backup")
    taken = provider.snapshot(world.disk, sample_annotations())
    record = provider.copy_to_backup(taken.id)
    copy = raw(ec2_backup, record.backup_id)
    assert copy["Encrypted"] is True
    assert copy["KmsKeyId"] == "alias/backup"


def test_a_pending_source_is_waited_for(provider: AwsEbsProvider, world: World) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    pending = [2]

    def still_pending(parsed: dict[str, Any], **_: Any) -> None:
        if pending[0] > 0:
            pending[0] -= 1
            for snapshot in parsed.get("Snapshots", []):
                snapshot["State"] = "pending"

    provider.client().meta.events.register("after-call.ec2.DescribeSnapshots", still_pending)
    record = provider.copy_to_backup(taken.id)
    assert pending == [0]
    assert record.backup_id


def test_a_failed_source_is_not_copied(provider: AwsEbsProvider, world: World) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())

    def failed(parsed: dict[str, Any], **_: Any) -> None:
        for snapshot in parsed.get("Snapshots", []):
            snapshot["State"] = "error"

    provider.client().meta.events.register("after-call.ec2.DescribeSnapshots", failed)
    with pytest.raises(ProviderError, match="state error: not copied"):
        provider.copy_to_backup(taken.id)
    assert provider.list_backups() == []


def test_no_backup_region_no_backup(make_provider: MakeProvider, world: World) -> None:
    provider = make_provider(instance_id=world.instance_id, backup_region="")
    taken = provider.snapshot(world.disk, sample_annotations())
    with pytest.raises(ProviderError, match="backup_region is empty"):
        provider.copy_to_backup(taken.id)
    assert provider.list_backups() == []
    assert provider.list()[0].backup_id == ""


def test_copies_with_damaged_tags_are_skipped_loudly(
    provider: AwsEbsProvider, world: World, ec2_backup: Any, caplog: pytest.LogCaptureFixture
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    backup = provider.copy_to_backup(taken.id)
    ec2_backup.create_tags(
        Resources=[backup.backup_id], Tags=[{"Key": f"{TAG_PREFIX}created_at", "Value": "soon"}]
    )
    assert provider.list_backups() == []
    assert backup.backup_id in caplog.text
    assert provider.list()[0].backup_id == ""


def test_the_table_has_a_backup_column(provider: AwsEbsProvider, world: World) -> None:
    copied = provider.snapshot(world.disk, sample_annotations(minutes_ago=1))
    alone = provider.snapshot(world.disk, sample_annotations())
    backup = provider.copy_to_backup(copied.id)
    listed = provider.list()

    lines = render_table(listed).splitlines()
    assert lines[0].split()[-1] == "Backup"
    assert lines[1].startswith("redis-leader/0") and alone.id in lines[1]
    assert lines[1].endswith("-")
    assert lines[2].endswith(f"{backup.backup_id} ({BACKUP_REGION})")
    records = {r["id"]: r for r in json.loads(to_json(listed))}
    assert records[copied.id]["backup_id"] == backup.backup_id
    assert records[copied.id]["backup_region"] == BACKUP_REGION
    assert records[alone.id]["backup_id"] == ""
