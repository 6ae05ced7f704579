"""The local deployment on the aws-ebs provider, against moto's EC2 server (issue 7).

manifests/local/operations/aws-ebs.yml switches both groups' snapshotters to aws-ebs and
makes localbosh give every persistent disk an EBS volume in moto (localbosh.ec2). Manual
(take-snapshot errand) and pre-deploy (drain) snapshots must land in moto as EBS
snapshots of those volumes, with every annotation as a `disk-snapshots:*` tag.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from lbtest import REPO
from lbtest import LocalBosh
from lbtest import needs_root
from lbtest import wait_in_sync

from disk_snapshots.annotations import SCHEMA
from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import Annotations
from localbosh.ec2 import Volumes
from localbosh.state import Layout
from support.moto import ec2_client
from support.moto import moto_server

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

MANIFEST = REPO / "manifests" / "local" / "redis-ha.yml"
AWS_EBS = REPO / "manifests" / "local" / "operations" / "aws-ebs.yml"
REGION = "eu-west-1"
ZONE = "eu-west-1a"
ROLES = {"redis-leader": "leader", "redis-data": "follower"}


@pytest.fixture
def moto_url(tmp_path: Path) -> Iterator[str]:
    """moto's EC2 server on loopback for this test; stopped even when the test fails.

    Requested before `localbosh`, so it is torn down after the deployment is deleted."""
    with moto_server(log=tmp_path / "moto_server.log") as url:
        yield url


@pytest.fixture
def ec2(moto_url: str) -> Iterator[Any]:
    with ec2_client(moto_url, REGION) as client:
        yield client


def deploy(lb: LocalBosh, url: str, instance_id: str, *ops: Path) -> None:
    extra = [arg for path in ops for arg in ("-o", str(path))]
    lb.run(
        "-d",
        "redis",
        "deploy",
        str(MANIFEST),
        "-o",
        str(AWS_EBS),
        *extra,
        "-v",
        f"aws_endpoint={url}",
        "-v",
        f"aws_region={REGION}",
        "-v",
        "aws_access_key_id=testing",
        "-v",
        "aws_secret_access_key=testing",
        "-v",
        f"aws_instance_id={instance_id}",
        timeout=3600,  # compiles the packages on a cold cache
    )


def our_snapshots(ec2: Any) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], Filters=[{"Name": "tag-key", "Values": [f"{TAG_PREFIX}schema"]}]
    )
    return [s for page in pages for s in page["Snapshots"]]


def tags(snapshot: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}


def test_manual_and_pre_deploy_snapshots_are_ebs_snapshots_tagged_with_every_annotation(
    moto_url: str, ec2: Any, localbosh: LocalBosh, tmp_path: Path
) -> None:
    started = datetime.now(UTC).replace(microsecond=0)
    # Only restore's materialize attaches volumes to the instance; one id serves all three.
    instance_id = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, Placement={"AvailabilityZone": ZONE}
    )["Instances"][0]["InstanceId"]

    deploy(localbosh, moto_url, instance_id)
    wait_in_sync(localbosh)
    insts = {f"{i['group']}/{i['index']}": i for i in localbosh.state("redis")["instances"]}
    assert sorted(insts) == ["redis-data/0", "redis-data/1", "redis-leader/0"]
    # Every persistent disk has its own EBS volume, sized like the disk, in the AZ's zone.
    volumes = Volumes(Layout(localbosh.home).root)
    volume_of = {name: volumes.volume_id(i["disk_cid"]) for name, i in insts.items()}
    assert all(volume_of.values()) and len(set(volume_of.values())) == 3, volume_of
    described = ec2.describe_volumes(VolumeIds=list(volume_of.values()))["Volumes"]
    assert {(v["AvailabilityZone"], v["Size"]) for v in described} == {(ZONE, 1)}
    hint = localbosh.run(
        "-d", "redis", "ssh", "redis-data/1", "-c", "cat /var/vcap/bosh/settings.json"
    ).stdout
    disk = insts["redis-data/1"]["disk_cid"]
    assert json.loads(hint)["disks"]["persistent"][disk]["volume_id"] == volume_of["redis-data/1"]

    errand = localbosh.run("-d", "redis", "run-errand", "take-snapshot", check=False)
    assert errand.returncode == 0, errand.stdout + errand.stderr
    assert "3 errand(s)" in errand.stdout

    # A changed snapshotter property: every instance is updated, so drain snapshots it.
    changed = tmp_path / "freeze-timeout.yml"
    changed.write_text(
        yaml.safe_dump(
            [
                {
                    "type": "replace",
                    "path": f"/instance_groups/name={group}/jobs/name=snapshotter"
                    "/properties/quiesce?/freeze_timeout",
                    "value": 11,
                }
                for group in ROLES
            ]
        )
    )
    deploy(localbosh, moto_url, instance_id, changed)

    snapshots = our_snapshots(ec2)
    fields = {TAG_PREFIX + f.name for f in dataclasses.fields(Annotations)}
    for trigger in ("manual", "pre-deploy"):
        taken = [s for s in snapshots if tags(s)[f"{TAG_PREFIX}trigger"] == trigger]
        by_instance = {
            f"{tags(s)[f'{TAG_PREFIX}instance_group']}/{tags(s)[f'{TAG_PREFIX}index']}": s
            for s in taken
        }
        assert sorted(by_instance) == sorted(insts) and len(taken) == 3, (trigger, taken)
        for name, snapshot in by_instance.items():
            inst, tag = insts[name], tags(snapshot)
            assert snapshot["VolumeId"] == volume_of[name]
            missing = fields - set(tag)
            assert not missing, f"{trigger} snapshot of {name} lacks tags {sorted(missing)}"
            expected = {
                "deployment": "redis",
                "instance_group": inst["group"],
                "instance_id": inst["id"],
                "index": str(inst["index"]),
                "az": "z1",
                "disk_cid": inst["disk_cid"],
                "job": "redis",
                "trigger": trigger,
                "consistency": "app",
                "role": ROLES[inst["group"]],
                "schema": str(SCHEMA),
            }
            assert {k: tag[TAG_PREFIX + k] for k in expected} == expected, (trigger, name)
            assert tag[f"{TAG_PREFIX}release_version"]
            assert "Name" in tag
            # The tags alone rebuild the annotations (the catalog is the provider's tags).
            annotations = Annotations.from_tags(tag)
            assert started <= annotations.created_at <= datetime.now(UTC)

    localbosh.run("-d", "redis", "delete-deployment")
    # Orphaned disks keep their volumes (as on AWS) until clean-up deletes both.
    assert len(ec2.describe_volumes(VolumeIds=list(volume_of.values()))["Volumes"]) == 3
    localbosh.run("clean-up", "--all")
    left = ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": ["localbosh:disk_cid"]}])
    assert left["Volumes"] == [], f"volumes left behind: {left['Volumes']}"
    assert all(volumes.volume_id(i["disk_cid"]) is None for i in insts.values())
