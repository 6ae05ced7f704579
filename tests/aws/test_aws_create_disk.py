"""create_disk: the replace restore's new disk, an EBS volume made from the snapshot in this
instance's zone, like the disk it replaces, tagged, and available before it is handed over.

EC2 is moto's. A snapshot taken by another instance (the promoted one, in another zone)
makes a volume here all the same: EBS snapshots belong to the region."""

from __future__ import annotations

from typing import Any

import pytest

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.providers.base import CreatesDisks
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.ec2 import SOURCE_SNAPSHOT_TAG
from support.aws import REGION
from support.aws import ZONE
from support.aws import World
from support.aws import sample_annotations


def test_a_volume_from_a_snapshot_of_another_zone_is_made_in_this_instances_zone(
    provider: AwsEbsProvider, world: World, ec2: Any
) -> None:
    assert isinstance(provider, CreatesDisks)
    other_zone = f"{REGION}b" if f"{REGION}b" != ZONE else f"{REGION}c"
    theirs = ec2.create_volume(AvailabilityZone=other_zone, Size=10, VolumeType="gp3", Iops=4000)
    annotations = sample_annotations(group="redis-data", index=1, disk_cid=theirs["VolumeId"])
    source = ec2.create_snapshot(VolumeId=theirs["VolumeId"])["SnapshotId"]
    ec2.create_tags(
        Resources=[source],
        Tags=[{"Key": k, "Value": v} for k, v in annotations.to_tags().items()],
    )
    ec2.modify_volume(VolumeId=world.volume_id, VolumeType="gp3", Iops=5000)
    labels = annotations.to_tags() | {TAG_PREFIX + "restore_id": "restore-20261202T180000Z-abcdef"}

    made = provider.create_disk(source, world.disk, labels)

    (volume,) = ec2.describe_volumes(VolumeIds=[made.cid])["Volumes"]
    assert volume["AvailabilityZone"] == ZONE == made.zone
    assert volume["State"] == "available" and volume["SnapshotId"] == source
    assert volume["VolumeType"] == "gp3" and made.size_mib == volume["Size"] * 1024
    tags = {t["Key"]: t["Value"] for t in volume["Tags"]}
    assert tags[SOURCE_SNAPSHOT_TAG] == source
    assert tags[TAG_PREFIX + "restore_id"] == "restore-20261202T180000Z-abcdef"
    assert tags[TAG_PREFIX + "instance_group"] == "redis-data"
    assert not any(k.endswith("temporary") for k in tags)


def test_a_snapshot_that_is_not_ours_makes_no_volume(
    provider: AwsEbsProvider, world: World, ec2: Any
) -> None:
    foreign = ec2.create_snapshot(VolumeId=world.volume_id)["SnapshotId"]
    before = len(ec2.describe_volumes()["Volumes"])
    with pytest.raises(ProviderError, match="not taken by disk-snapshots"):
        provider.create_disk(foreign, world.disk, {})
    assert len(ec2.describe_volumes()["Volumes"]) == before
