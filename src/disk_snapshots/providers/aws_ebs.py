"""The ``aws-ebs`` provider: EBS snapshots whose tags are the catalog (docs/catalog.md).

On AWS the BOSH disk CID is the EBS volume id. A snapshot is ``CreateSnapshot`` with every
annotation as a ``disk-snapshots:*`` tag in the same call, so no snapshot ever exists
without its annotations. EBS fixes the point in time when CreateSnapshot returns (state
``pending``); the copy to S3 continues after the freeze is released.

The backup tier is ``CopySnapshot`` into ``provider.aws.backup_region``, tracked until EBS
reports it completed, listed from the backup region by its tags (ebs_backups.py).

Credentials are the instance profile unless keys are configured; they reach boto3 and
nothing else (no log line, no error message, no repr carries the secret).
"""

from __future__ import annotations

import builtins
import logging
import random
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import AbstractContextManager
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError

from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import select
from disk_snapshots.config import AwsSettings
from disk_snapshots.providers.base import Leftover
from disk_snapshots.providers.base import NewDisk
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.ebs_backups import EbsBackups
from disk_snapshots.providers.ebs_volumes import IMDS
from disk_snapshots.providers.ebs_volumes import UNMARKED_GRACE
from disk_snapshots.providers.ebs_volumes import EbsVolumes
from disk_snapshots.providers.ec2 import EBS_STATES
from disk_snapshots.providers.ec2 import PER_VOLUME_RATE
from disk_snapshots.providers.ec2 import SCHEMA_TAG
from disk_snapshots.providers.ec2 import VOLUME_ID
from disk_snapshots.providers.ec2 import check_snapshot_id
from disk_snapshots.providers.ec2 import display_name
from disk_snapshots.providers.ec2 import error as ec2_error
from disk_snapshots.providers.ec2 import gib
from disk_snapshots.providers.ec2 import snapshot_record
from disk_snapshots.providers.ec2 import tag_filters
from disk_snapshots.providers.ec2 import tag_list
from disk_snapshots.providers.ec2 import tags_of
from disk_snapshots.providers.nvme import DeviceSeam
from disk_snapshots.providers.nvme import LinuxDevices
from disk_snapshots.vm.instance import Disk

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef
    from mypy_boto3_ec2.type_defs import SnapshotTypeDef

log = logging.getLogger(__name__)


class AwsEbsProvider:
    name = "aws-ebs"
    backup_property = "provider.aws.backup_region"

    def __init__(
        self,
        settings: AwsSettings,
        *,
        devices: DeviceSeam | None = None,
        metadata_endpoint: str = IMDS,
        work_dir: Path = Path("/var/vcap/data/snapshotter/materialize"),
        max_attempts: int = 5,
        rate_limit_delays: Sequence[float] = (1.0, 2.0, 4.0),
        poll_interval: float = 2.0,
        volume_timeout: float = 600.0,
        device_timeout: float = 120.0,
        copy_back_timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.region:
            raise ProviderError("provider.aws.region is required for the aws-ebs provider")
        self.region = settings.region
        self.backup_region = settings.backup_region
        self.endpoint = settings.endpoint or None
        self.kms_key_id = settings.kms_key_id
        # Short on purpose: snapshot() runs inside the freeze (quiesce.freeze_timeout,
        # 10 s by default), so a volume EBS keeps refusing is reported, not waited out.
        self.rate_limit_delays = tuple(rate_limit_delays)
        self.poll_interval = poll_interval
        self.volume_timeout = volume_timeout
        self.sleep = sleep
        self.volumes = EbsVolumes(
            ec2=self,
            devices=devices or LinuxDevices(),
            work_dir=work_dir,
            metadata_endpoint=metadata_endpoint,
            known_instance_id=settings.instance_id,
            poll_interval=poll_interval,
            volume_timeout=volume_timeout,
            device_timeout=device_timeout,
            sleep=sleep,
        )
        # Kept only to scrub it from messages that might echo a request back.
        self._secret = settings.secret_access_key
        if settings.access_key_id:
            self._session = boto3.session.Session(
                aws_access_key_id=settings.access_key_id,
                aws_secret_access_key=settings.secret_access_key,
            )
        else:
            # The default chain: environment, then the VM's instance profile.
            self._session = boto3.session.Session()
        self._config = Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=5,
            read_timeout=30,
            user_agent_extra="disk-snapshots",
        )
        self._clients: dict[str, EC2Client] = {}
        self.backups_tier = EbsBackups(self, copy_back_timeout=copy_back_timeout)

    @classmethod
    def from_config(cls, settings: AwsSettings) -> AwsEbsProvider:
        return cls(settings)

    def __repr__(self) -> str:
        return f"AwsEbsProvider(region={self.region!r}, backup_region={self.backup_region!r})"

    def __enter__(self) -> AwsEbsProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pools (boto3 clients hold sockets until then)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def client(self, region: str | None = None) -> EC2Client:
        """The EC2 client for ``region`` (default: the disks' region), made once."""
        region = region or self.region
        if region not in self._clients:
            self._clients[region] = self._session.client(
                "ec2", region_name=region, endpoint_url=self.endpoint, config=self._config
            )
        return self._clients[region]

    @contextmanager
    def calling(self, action: str, region: str | None = None) -> Iterator[None]:
        """One clear ProviderError for a botocore failure inside (ec2.error)."""
        try:
            yield
        except (ClientError, BotoCoreError) as err:
            raise ec2_error(err, action, region or self.region, self._secret) from None

    # -- snapshots ------------------------------------------------------------------------

    def _volume_id(self, disk: Disk) -> str:
        volume_id = disk.volume_id
        if not VOLUME_ID.match(volume_id):
            raise ProviderError(
                f"disk {disk.cid} has no EBS volume id ({volume_id!r}): is this instance on AWS?"
            )
        return volume_id

    def prepare(self, disk: Disk) -> None:
        """Everything but CreateSnapshot, before the freeze.

        Fetching instance-profile credentials, the TLS handshake and a missing volume or
        permission all surface here, while writes still go on, so that inside the freeze
        only one request on a warm connection remains.
        """
        volume_id = self._volume_id(disk)
        with self.calling(f"DescribeVolumes of {volume_id}"):
            self.client().describe_volumes(VolumeIds=[volume_id])

    def snapshot(self, disk: Disk, annotations: Annotations) -> Snapshot:
        """CreateSnapshot with the annotations as tags; returns while EBS is still copying."""
        volume_id = self._volume_id(disk)
        tags = annotations.to_tags() | {"Name": display_name(annotations)}
        action = f"CreateSnapshot of {volume_id}"
        client = self.client()
        delays = iter(self.rate_limit_delays)
        attempts = 0
        while True:
            attempts += 1
            try:
                response = client.create_snapshot(
                    VolumeId=volume_id,
                    Description=f"disk-snapshots {annotations.trigger} of {annotations.instance}",
                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
                )
                break
            except ClientError as err:
                code = err.response.get("Error", {}).get("Code", "")
                if code != PER_VOLUME_RATE:
                    raise ec2_error(err, action, self.region, self._secret) from None
                delay = next(delays, None)
                if delay is None:
                    raise ProviderError(
                        f"{action}: EBS refused {attempts} times ({PER_VOLUME_RATE}): snapshots "
                        f"of one volume must be some seconds apart; no snapshot of {volume_id} "
                        "was taken"
                    ) from None
                # Jitter so that instances throttled together do not retry together.
                wait = delay * (0.5 + random.random() / 2)  # noqa: S311 - not cryptographic
                log.warning("%s: %s, retrying in %.1fs", action, PER_VOLUME_RATE, wait)
                self.sleep(wait)
            except BotoCoreError as err:
                raise ec2_error(err, action, self.region, self._secret) from None
        return Snapshot(
            id=check_snapshot_id(response["SnapshotId"]),
            annotations=annotations,
            state=EBS_STATES.get(response.get("State", "pending"), "pending"),
            size_bytes=gib(response.get("VolumeSize")),
        )

    def describe(self, snapshot_id: str, region: str | None = None) -> SnapshotTypeDef:
        check_snapshot_id(snapshot_id)
        region = region or self.region
        with self.calling(f"DescribeSnapshots of {snapshot_id}", region):
            found = self.client(region).describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
        if not found:
            raise UnknownSnapshot(f"snapshot {snapshot_id} does not exist in {region}")
        return found[0]

    def ours(self, snapshot_id: str) -> tuple[SnapshotTypeDef, dict[str, str]]:
        raw = self.describe(snapshot_id)
        tags = tags_of(raw)
        if SCHEMA_TAG not in tags:
            raise UnknownSnapshot(
                f"snapshot {snapshot_id} in {self.region} has no {SCHEMA_TAG} tag: it was not "
                "taken by disk-snapshots, so this release will not read, change or delete it"
            )
        return raw, tags

    def get(self, snapshot_id: str) -> Snapshot:
        raw, tags = self.ours(snapshot_id)
        try:
            return snapshot_record(raw, tags)
        except AnnotationError as err:
            raise ProviderError(f"snapshot {snapshot_id} has damaged tags: {err}") from None

    def update(self, snapshot_id: str, annotations: Annotations) -> Snapshot:
        """Overwrite the annotation tags (every field is written, so none goes stale)."""
        raw, _ = self.ours(snapshot_id)
        tags = annotations.to_tags() | {"Name": display_name(annotations)}
        with self.calling(f"CreateTags on {snapshot_id}"):
            self.client().create_tags(Resources=[snapshot_id], Tags=tag_list(tags))
        return snapshot_record(raw, tags)

    def delete(self, snapshot_id: str) -> None:
        """DeleteSnapshot, only of a snapshot carrying our tags."""
        self.ours(snapshot_id)
        with self.calling(f"DeleteSnapshot of {snapshot_id}"):
            self.client().delete_snapshot(SnapshotId=snapshot_id)

    def pages(
        self, region: str, filters: builtins.list[FilterTypeDef]
    ) -> Iterator[builtins.list[SnapshotTypeDef]]:
        paginator = self.client(region).get_paginator("describe_snapshots")
        with self.calling("DescribeSnapshots", region):
            for page in paginator.paginate(
                OwnerIds=["self"], Filters=filters, PaginationConfig={"PageSize": 1000}
            ):
                yield page.get("Snapshots", [])

    def list(self, query: Query | None = None) -> builtins.list[Snapshot]:
        """Our snapshots in the disks' region, from their tags alone, newest first."""
        query = query or Query()
        found: builtins.list[Snapshot] = []
        skipped = 0
        for page in self.pages(self.region, tag_filters(query.exact_tags(), SCHEMA_TAG)):
            for raw in page:
                try:
                    found.append(snapshot_record(raw, tags_of(raw)))
                except (AnnotationError, UnknownSnapshot) as err:
                    # Someone else's or a damaged snapshot: skip it, but never silently.
                    skipped += 1
                    log.warning("ignoring EBS snapshot %s: %s", raw.get("SnapshotId"), err)
        if skipped:
            log.warning("%d EBS snapshot(s) with damaged disk-snapshots tags ignored", skipped)
        return select(found, query)

    def wait_done(
        self, snapshot_id: str, timeout: float, region: str | None = None
    ) -> SnapshotTypeDef:
        """The snapshot as EC2 describes it once it is no longer pending (EBS makes volumes
        and copies only from completed ones); ProviderError at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            raw = self.describe(snapshot_id, region)
            if EBS_STATES.get(str(raw.get("State", "")), "error") != "pending":
                return raw
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"snapshot {snapshot_id} in {region or self.region} is still pending "
                    f"after {timeout:.0f}s ({raw.get('Progress', '?')} done)"
                )
            self.sleep(self.poll_interval)

    # -- materialize ----------------------------------------------------------------------

    def instance_id(self) -> str:
        return self.volumes.instance_id()

    @contextmanager
    def materialize(self, snapshot_id: str, az: str = "") -> Iterator[Path]:
        """A new volume from the snapshot, attached here and mounted read-only; gone on exit
        (ebs_volumes.py). A pending snapshot is waited for: EBS makes volumes only from
        completed ones."""
        raw, _ = self.ours(snapshot_id)
        if EBS_STATES.get(str(raw.get("State"))) == "pending":
            raw = self.wait_done(snapshot_id, self.volume_timeout)
        state = EBS_STATES.get(str(raw.get("State")), "error")
        if state != "completed":
            raise ProviderError(f"snapshot {snapshot_id} is in state {state}")
        with self.volumes.mounted(snapshot_id, az) as mountpoint:
            yield mountpoint

    def leftovers(self, min_age: timedelta = UNMARKED_GRACE) -> builtins.list[Leftover]:
        return self.volumes.leftovers(min_age)

    def cleanup_leftovers(self, min_age: timedelta = UNMARKED_GRACE) -> builtins.list[Leftover]:
        """Temporary volumes, and backups copied back for a restore, that a killed process
        on this instance left behind."""
        released = self.volumes.cleanup_leftovers(min_age)
        if self.backup_region:
            released += [
                Leftover("copied-back backup", snapshot_id, f"in {self.region}")
                for snapshot_id in self.backups_tier.cleanup_leftovers(min_age)
            ]
        return released

    def create_disk(self, snapshot_id: str, like: Disk, labels: Mapping[str, str]) -> NewDisk:
        """A volume from the snapshot for ``bosh attach-disk`` (ebs_volumes.py); a pending
        snapshot is waited for first, as for materialize."""
        raw, _ = self.ours(snapshot_id)
        if EBS_STATES.get(str(raw.get("State"))) == "pending":
            self.wait_done(snapshot_id, self.volume_timeout)
        return self.volumes.create_disk(snapshot_id, self._volume_id(like), labels)

    # -- the backup tier (ebs_backups.py) -------------------------------------------------

    @property
    def backup_location(self) -> str:
        return self.backup_region

    def backup(self, snapshot_id: str, timeout: float | None = None) -> Backup:
        return self.backups_tier.backup(snapshot_id, timeout)

    def backups(self, query: Query | None = None) -> builtins.list[Backup]:
        return self.backups_tier.list(query)

    def get_backup(self, backup_id: str) -> Backup:
        return self.backups_tier.get(backup_id)

    def delete_backup(self, backup_id: str) -> None:
        self.backups_tier.delete(backup_id)

    def materialize_backup(self, backup_id: str, az: str = "") -> AbstractContextManager[Path]:
        return self.backups_tier.materialize(backup_id, az)
