"""The snapshotter (what hooks, errands and the daemon call) with ``provider.type: aws-ebs``.

Without root there is no frozen filesystem here: quiesce.freeze is off and the service
profile is ``none``; the freeze itself is covered on real disks in tests/disks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.providers import make_provider
from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.services import make_service
from support.aws import SECRET
from support.aws import World
from support.configdocs import snapshotter_doc


@pytest.fixture
def snapshotter(endpoint: str, world: World, tmp_path: Path) -> Iterator[Snapshotter]:
    doc = snapshotter_doc()
    props = doc["properties"]
    props["provider"] |= {
        "type": "aws-ebs",
        "aws": {
            "region": "eu-west-1",
            "endpoint": endpoint,
            "access_key_id": "AKIDTESTING",
            "secret_access_key": SECRET,
            "kms_key_id": "",
            "backup_region": "eu-central-1",
            "instance_id": world.instance_id,
        },
    }
    props["service"]["profile"] = "none"
    props["quiesce"]["freeze"] = False
    props["retention"] = {"manual": {"keep_last": 1}}
    config = load_snapshotter_config(doc)
    provider = make_provider(config.provider, world.disk)
    assert isinstance(provider, AwsEbsProvider)
    with provider:
        yield Snapshotter(
            config=config,
            disk=world.disk,
            provider=provider,
            service=make_service(config.service),
            paths=Paths(tmp_path),
        )


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
