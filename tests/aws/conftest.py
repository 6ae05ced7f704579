"""The aws-ebs provider against moto's EC2 server: one server per session, reset per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots import providers
from disk_snapshots.config import AwsSettings
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.instance import Disk
from disk_snapshots.vm.services import make_service
from support.aws import BACKUP_REGION
from support.aws import REGION
from support.aws import SECRET
from support.aws import ZONE
from support.aws import FakeDevices
from support.aws import MakeProvider
from support.aws import World
from support.aws import settings
from support.configdocs import snapshotter_doc
from support.moto import ec2_client
from support.moto import moto_server
from support.moto import reset


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with moto_server(log=log) as url:
        yield url


@pytest.fixture
def endpoint(moto_url: str) -> str:
    reset(moto_url)
    return moto_url


@pytest.fixture
def ec2(endpoint: str) -> Iterator[Any]:
    """A plain client for arranging the world and checking it, beside the provider."""
    with ec2_client(endpoint, REGION) as client:
        yield client


@pytest.fixture
def ec2_backup(endpoint: str) -> Iterator[Any]:
    with ec2_client(endpoint, BACKUP_REGION) as client:
        yield client


@pytest.fixture
def world(ec2: Any, tmp_path: Path) -> World:
    """This VM and its persistent disk, as EC2 knows them."""
    # Any id will do: moto validates AMIs only when asked to.
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, Placement={"AvailabilityZone": ZONE}
    )["Instances"][0]
    volume = ec2.create_volume(AvailabilityZone=ZONE, Size=10)
    ec2.attach_volume(
        VolumeId=volume["VolumeId"], InstanceId=instance["InstanceId"], Device="/dev/sdb"
    )
    # Snapshots write the filesystem back first (syncfs): the mount point must exist.
    (tmp_path / "store").mkdir()
    disk = Disk(cid=volume["VolumeId"], mount=tmp_path / "store", hint={})
    return World(instance["InstanceId"], volume["VolumeId"], disk)


@pytest.fixture
def devices() -> FakeDevices:
    return FakeDevices()


@pytest.fixture
def make_provider(endpoint: str, devices: FakeDevices, tmp_path: Path) -> Iterator[MakeProvider]:
    made: list[AwsEbsProvider] = []

    def make(**overrides: Any) -> AwsEbsProvider:
        names = AwsSettings.__dataclass_fields__
        aws = {k: overrides.pop(k) for k in list(overrides) if k in names}
        options: dict[str, Any] = {
            "devices": devices,
            "work_dir": tmp_path / "materialize",
            "poll_interval": 0.0,
            "rate_limit_delays": (0.01, 0.01),
        }
        aws.setdefault("endpoint", endpoint)
        provider = AwsEbsProvider(settings(**aws), **(options | overrides))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.fixture
def provider(make_provider: MakeProvider, world: World) -> AwsEbsProvider:
    return make_provider(instance_id=world.instance_id)


@pytest.fixture
def snapshotter(endpoint: str, world: World, tmp_path: Path) -> Iterator[Snapshotter]:
    """This VM's snapshotter with ``provider.type: aws-ebs`` (backups to BACKUP_REGION).

    Without root there is no frozen filesystem here: quiesce.freeze is off and the
    service profile is ``none``; the freeze itself is covered on real disks in tests/disks.
    """
    doc = snapshotter_doc()
    props = doc["properties"]
    props["provider"] |= {
        "type": "aws-ebs",
        "aws": {
            "region": REGION,
            "endpoint": endpoint,
            "access_key_id": "AKIDTESTING",
            "secret_access_key": SECRET,
            "kms_key_id": "",
            "backup_region": BACKUP_REGION,
            "instance_id": world.instance_id,
        },
    }
    props["service"]["profile"] = "none"
    props["quiesce"]["freeze"] = False
    props["retention"] = {"manual": {"keep_last": 1}}
    props["backups"] |= {"cron": "@daily", "retention": {"keep_last": 2}, "deadline": "6h"}
    config = load_snapshotter_config(doc)
    provider = providers.make_provider(config.provider, world.disk)
    assert isinstance(provider, AwsEbsProvider)
    provider.poll_interval = 0.0
    with provider:
        yield Snapshotter(
            config=config,
            disk=world.disk,
            provider=provider,
            service=make_service(config.service),
            paths=Paths(tmp_path),
        )
