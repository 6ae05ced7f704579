"""The ``aws-ebs`` provider: EBS snapshots whose tags are the catalog (DESIGN §4, §5).

On AWS the BOSH disk CID is the EBS volume id. A snapshot is ``CreateSnapshot`` with every
annotation as a ``disk-snapshots:*`` tag in the same call, so no snapshot ever exists
without its annotations. EBS fixes the point in time when CreateSnapshot returns (state
``pending``); the copy to S3 continues after the freeze is released.

The backup tier is ``CopySnapshot`` into ``provider.aws.backup_region``: the copy carries
the same tags plus where it came from, and ``list`` joins both regions into one record
(``Snapshot.backup_id``/``backup_region``).

Credentials are the instance profile unless keys are configured; they reach boto3 and
nothing else (no log line, no error message, no repr carries the secret).
"""

from __future__ import annotations

import builtins
import logging
import random
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import contextmanager
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError
from botocore.exceptions import NoCredentialsError

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import State
from disk_snapshots.catalog import select
from disk_snapshots.config import AwsSettings
from disk_snapshots.instance import Disk
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.nvme import DeviceSeam
from disk_snapshots.providers.nvme import LinuxDevices

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef
    from mypy_boto3_ec2.type_defs import SnapshotTypeDef
    from mypy_boto3_ec2.type_defs import TagTypeDef

log = logging.getLogger(__name__)

SNAPSHOT_ID = re.compile(r"^snap-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
VOLUME_ID = re.compile(r"^vol-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")

SCHEMA_TAG = TAG_PREFIX + "schema"
SOURCE_SNAPSHOT_TAG = TAG_PREFIX + "source_snapshot"
SOURCE_REGION_TAG = TAG_PREFIX + "source_region"
TEMPORARY_TAG = TAG_PREFIX + "temporary"
MATERIALIZED_BY_TAG = TAG_PREFIX + "materialized_by"
# Tags this provider writes besides the annotations; update() keeps them.
PROVIDER_TAGS = ("Name", SOURCE_SNAPSHOT_TAG, SOURCE_REGION_TAG)

IMDS = "http://169.254.169.254"
# Device names AttachVolume accepts for data volumes; Nitro ignores the name, Xen maps
# sdX to xvdX, and both refuse one already in use on the instance.
DEVICE_NAMES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")

# Botocore's standard mode retries these itself; if they are what finally comes back,
# the budget is spent and the message says so.
THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "EC2ThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
    }
)
# EBS limits how often one volume may be snapshotted; botocore does not know this code.
PER_VOLUME_RATE = "SnapshotCreationPerVolumeRateExceeded"
BAD_CREDENTIALS = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "RequestExpired",
    }
)
DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})
SNAPSHOT_NOT_FOUND = frozenset({"InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"})

EBS_STATES: Mapping[str, State] = {
    "pending": "pending",
    "completed": "completed",
    "recovering": "pending",
    "error": "error",
    "recoverable": "error",
}


def check_snapshot_id(snapshot_id: object) -> str:
    """Refuse anything but an EBS snapshot id before it reaches an API call."""
    if not isinstance(snapshot_id, str) or not SNAPSHOT_ID.match(snapshot_id):
        raise UnknownSnapshot(
            f"{snapshot_id!r} is not an EBS snapshot id (expected snap- and 8 or 17 hex digits)"
        )
    return snapshot_id


def tags_of(raw: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in raw.get("Tags") or ()}


def tag_list(tags: Mapping[str, str]) -> builtins.list[TagTypeDef]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def annotation_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Our tags minus the provider's bookkeeping: what a copy or an update carries over."""
    return {k: v for k, v in tags.items() if k.startswith(TAG_PREFIX) and k not in PROVIDER_TAGS}


def display_name(a: Annotations) -> str:
    """The console's Name column: enough to recognise a snapshot without opening its tags."""
    moment = a.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{a.deployment}/{a.instance_group}/{a.index} {a.trigger} {moment}"[:256]


@dataclass(frozen=True)
class BackupCopy:
    """A snapshot in the backup region, with the snapshot it was copied from."""

    snapshot: Snapshot  # id and state are the copy's
    region: str
    source_id: str
    source_region: str
    copied_at: datetime | None


def imds_instance_id(endpoint: str = IMDS, timeout: float = 2.0) -> str:
    """This VM's instance id from the metadata service, version 2 (token first)."""
    # IMDS is link-local: an HTTP proxy from the environment must never see these requests.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    base = endpoint.rstrip("/")
    try:
        token_request = urllib.request.Request(  # noqa: S310 - the endpoint is ours, http by design
            f"{base}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        with opener.open(token_request, timeout=timeout) as response:
            token = str(response.read().decode())
        id_request = urllib.request.Request(  # noqa: S310
            f"{base}/latest/meta-data/instance-id",
            headers={"X-aws-ec2-metadata-token": token},
        )
        with opener.open(id_request, timeout=timeout) as response:
            instance_id = str(response.read().decode()).strip()
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ProviderError(
            f"cannot read this VM's instance id from the metadata service ({base}, IMDSv2): "
            f"{err}; set provider.aws.instance_id if the metadata service is unreachable"
        ) from None
    if not INSTANCE_ID.match(instance_id):
        raise ProviderError(
            f"the metadata service at {base} returned {instance_id[:40]!r}, not an instance id"
        )
    return instance_id


class AwsEbsProvider:
    name = "aws-ebs"

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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.region:
            raise ProviderError("provider.aws.region is required for the aws-ebs provider")
        self.region = settings.region
        self.backup_region = settings.backup_region
        self.endpoint = settings.endpoint or None
        self.kms_key_id = settings.kms_key_id
        self.devices: DeviceSeam = devices or LinuxDevices()
        self.metadata_endpoint = metadata_endpoint
        self.work_dir = work_dir
        # Short on purpose: snapshot() runs inside the freeze (quiesce.freeze_timeout,
        # 10 s by default), so a volume EBS keeps refusing is reported, not waited out.
        self.rate_limit_delays = tuple(rate_limit_delays)
        self.poll_interval = poll_interval
        self.volume_timeout = volume_timeout
        self.device_timeout = device_timeout
        self.sleep = sleep
        self._instance_id = settings.instance_id
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

    # -- errors ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "<secret>") if self._secret else text

    def _error(self, err: Exception, action: str, region: str) -> ProviderError:
        """One clear message per failure, never carrying the secret key."""
        if isinstance(err, NoCredentialsError):
            return ProviderError(
                f"{action}: no AWS credentials: the VM has no instance profile and "
                "provider.aws.access_key_id/secret_access_key are empty"
            )
        if isinstance(err, ClientError):
            error = err.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            message = self._scrub(str(error.get("Message", "")))
            if code in SNAPSHOT_NOT_FOUND:
                return UnknownSnapshot(f"{action}: no such snapshot in {region} ({message})")
            if code in BAD_CREDENTIALS:
                return ProviderError(
                    f"{action}: AWS rejected the credentials in {region} ({code}: {message}); "
                    "check provider.aws.access_key_id/secret_access_key, or the instance "
                    "profile when they are empty"
                )
            if code in DENIED:
                return ProviderError(
                    f"{action}: the credentials lack permission in {region} ({code}: {message}); "
                    "grant the instance profile or user the EC2 snapshot actions"
                )
            if code in THROTTLING:
                attempts = err.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
                return ProviderError(
                    f"{action}: EC2 in {region} kept throttling ({code}) after {attempts + 1} "
                    "attempts with backoff; try again later or take fewer snapshots at once"
                )
            return ProviderError(f"{action} failed in {region}: {code}: {message}")
        if isinstance(err, BotoCoreError):
            return ProviderError(f"{action} failed in {region}: {self._scrub(str(err))}")
        return ProviderError(f"{action} failed in {region}: {self._scrub(str(err))}")

    @contextmanager
    def _calling(self, action: str, region: str | None = None) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as err:
            raise self._error(err, action, region or self.region) from None

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
        with self._calling(f"DescribeVolumes of {volume_id}"):
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
                    raise self._error(err, action, self.region) from None
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
                raise self._error(err, action, self.region) from None
        return Snapshot(
            id=check_snapshot_id(response["SnapshotId"]),
            annotations=annotations,
            state=EBS_STATES.get(response.get("State", "pending"), "pending"),
            size_bytes=_gib(response.get("VolumeSize")),
        )

    def _describe(self, snapshot_id: str, region: str | None = None) -> SnapshotTypeDef:
        check_snapshot_id(snapshot_id)
        region = region or self.region
        with self._calling(f"DescribeSnapshots of {snapshot_id}", region):
            found = self.client(region).describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
        if not found:
            raise UnknownSnapshot(f"snapshot {snapshot_id} does not exist in {region}")
        return found[0]

    def _ours(self, snapshot_id: str) -> tuple[SnapshotTypeDef, dict[str, str]]:
        raw = self._describe(snapshot_id)
        tags = tags_of(raw)
        if SCHEMA_TAG not in tags:
            raise UnknownSnapshot(
                f"snapshot {snapshot_id} in {self.region} has no {SCHEMA_TAG} tag: it was not "
                "taken by disk-snapshots, so this release will not read, change or delete it"
            )
        return raw, tags

    def _record(self, raw: Mapping[str, Any], tags: Mapping[str, str]) -> Snapshot:
        return Snapshot(
            id=check_snapshot_id(raw.get("SnapshotId")),
            annotations=Annotations.from_tags(tags),
            state=EBS_STATES.get(str(raw.get("State", "")), "error"),
            size_bytes=_gib(raw.get("VolumeSize")),
        )

    def get(self, snapshot_id: str) -> Snapshot:
        raw, tags = self._ours(snapshot_id)
        try:
            snapshot = self._record(raw, tags)
        except AnnotationError as err:
            raise ProviderError(f"snapshot {snapshot_id} has damaged tags: {err}") from None
        if self.backup_region:
            copies = self._backups({SOURCE_SNAPSHOT_TAG: snapshot_id})
            if snapshot_id in copies:
                copy = copies[snapshot_id]
                return _with_backup(snapshot, copy)
        return snapshot

    def update(self, snapshot_id: str, annotations: Annotations) -> Snapshot:
        """Overwrite the annotation tags (every field is written, so none goes stale)."""
        raw, _ = self._ours(snapshot_id)
        tags = annotations.to_tags() | {"Name": display_name(annotations)}
        with self._calling(f"CreateTags on {snapshot_id}"):
            self.client().create_tags(Resources=[snapshot_id], Tags=tag_list(tags))
        return self._record(raw, tags)

    def delete(self, snapshot_id: str) -> None:
        """DeleteSnapshot, only of a snapshot carrying our tags."""
        self._ours(snapshot_id)
        with self._calling(f"DeleteSnapshot of {snapshot_id}"):
            self.client().delete_snapshot(SnapshotId=snapshot_id)

    def _pages(
        self, region: str, filters: builtins.list[FilterTypeDef]
    ) -> Iterator[builtins.list[SnapshotTypeDef]]:
        paginator = self.client(region).get_paginator("describe_snapshots")
        with self._calling("DescribeSnapshots", region):
            for page in paginator.paginate(
                OwnerIds=["self"], Filters=filters, PaginationConfig={"PageSize": 1000}
            ):
                yield page.get("Snapshots", [])

    def list(self, query: Query | None = None) -> builtins.list[Snapshot]:
        """Our snapshots in the disks' region, from their tags alone, newest first."""
        query = query or Query()
        found: builtins.list[Snapshot] = []
        skipped = 0
        for page in self._pages(self.region, _filters(_tag_equals(query), SCHEMA_TAG)):
            for raw in page:
                try:
                    found.append(self._record(raw, tags_of(raw)))
                except (AnnotationError, UnknownSnapshot) as err:
                    # Someone else's or a damaged snapshot: skip it, but never silently.
                    skipped += 1
                    log.warning("ignoring EBS snapshot %s: %s", raw.get("SnapshotId"), err)
        if skipped:
            log.warning("%d EBS snapshot(s) with damaged disk-snapshots tags ignored", skipped)
        chosen = select(found, query)
        if not self.backup_region or not chosen:
            return chosen
        copies = self._backups(_tag_equals(query))
        return [_with_backup(s, copies[s.id]) if s.id in copies else s for s in chosen]

    # -- backup tier ----------------------------------------------------------------------

    def _backups(self, equals: Mapping[str, str]) -> dict[str, BackupCopy]:
        """Source id -> its newest copy in the backup region."""
        copies: dict[str, BackupCopy] = {}
        for copy in self.list_backups(equals):
            known = copies.get(copy.source_id)
            if known is None or _rank(copy) > _rank(known):
                copies[copy.source_id] = copy
        return copies

    def list_backups(self, equals: Mapping[str, str] | None = None) -> builtins.list[BackupCopy]:
        """Every copy of ours in the backup region, including copies whose source is gone."""
        if not self.backup_region:
            return []
        filters = _filters(equals or {}, SOURCE_SNAPSHOT_TAG)
        copies: builtins.list[BackupCopy] = []
        for page in self._pages(self.backup_region, filters):
            for raw in page:
                tags = tags_of(raw)
                try:
                    snapshot = self._record(raw, tags)
                    source = check_snapshot_id(tags.get(SOURCE_SNAPSHOT_TAG, ""))
                except (AnnotationError, UnknownSnapshot) as err:
                    log.warning(
                        "ignoring EBS snapshot %s in %s: %s",
                        raw.get("SnapshotId"),
                        self.backup_region,
                        err,
                    )
                    continue
                copies.append(
                    BackupCopy(
                        snapshot=snapshot,
                        region=self.backup_region,
                        source_id=source,
                        source_region=tags.get(SOURCE_REGION_TAG, ""),
                        copied_at=raw.get("StartTime"),
                    )
                )
        return copies

    def copy_to_backup(self, snapshot_id: str, *, timeout: float = 3600.0) -> Snapshot:
        """CopySnapshot into the backup region; returns the catalog record with both tiers.

        EBS copies only completed snapshots, so this waits for the source first: call it
        after the snapshot, never inside a freeze.
        """
        if not self.backup_region:
            raise ProviderError(
                "provider.aws.backup_region is empty: there is no backup tier to copy to"
            )
        raw, tags = self._ours(snapshot_id)
        snapshot = self._record(raw, tags)
        if snapshot.state == "pending":
            snapshot = self._wait_snapshot(snapshot_id, timeout)
        if snapshot.state != "completed":
            raise ProviderError(f"snapshot {snapshot_id} is in state {snapshot.state}: not copied")
        copy_tags = (
            annotation_tags(tags)
            | {"Name": display_name(snapshot.annotations) + " (backup)"}
            | {SOURCE_SNAPSHOT_TAG: snapshot_id, SOURCE_REGION_TAG: self.region}
        )
        action = f"CopySnapshot of {snapshot_id} from {self.region}"
        with self._calling(action, self.backup_region):
            if self.kms_key_id:
                response = self.client(self.backup_region).copy_snapshot(
                    SourceSnapshotId=snapshot_id,
                    SourceRegion=self.region,
                    Description=f"disk-snapshots backup of {snapshot_id} from {self.region}",
                    Encrypted=True,
                    KmsKeyId=self.kms_key_id,
                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(copy_tags)}],
                )
            else:
                response = self.client(self.backup_region).copy_snapshot(
                    SourceSnapshotId=snapshot_id,
                    SourceRegion=self.region,
                    Description=f"disk-snapshots backup of {snapshot_id} from {self.region}",
                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(copy_tags)}],
                )
        backup_id = check_snapshot_id(response["SnapshotId"])
        log.info("%s: backup copy %s in %s", snapshot_id, backup_id, self.backup_region)
        return Snapshot(
            id=snapshot.id,
            annotations=snapshot.annotations,
            state=snapshot.state,
            size_bytes=snapshot.size_bytes,
            backup_id=backup_id,
            backup_region=self.backup_region,
        )

    def _wait_snapshot(self, snapshot_id: str, timeout: float) -> Snapshot:
        deadline = time.monotonic() + timeout
        while True:
            raw, tags = self._ours(snapshot_id)
            snapshot = self._record(raw, tags)
            if snapshot.state != "pending":
                return snapshot
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"snapshot {snapshot_id} is still pending after {timeout:.0f}s "
                    f"({raw.get('Progress', '?')} done)"
                )
            self.sleep(self.poll_interval)

    # -- materialize ----------------------------------------------------------------------

    def instance_id(self) -> str:
        """This VM's id: the property when set, else the metadata service (asked once)."""
        if not self._instance_id:
            self._instance_id = imds_instance_id(self.metadata_endpoint)
        return self._instance_id

    def _instance(self, instance_id: str) -> tuple[str, set[str]]:
        """The instance's availability zone and the device names already in use on it."""
        with self._calling(f"DescribeInstances of {instance_id}"):
            reservations = self.client().describe_instances(InstanceIds=[instance_id])
        for reservation in reservations.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                zone = instance.get("Placement", {}).get("AvailabilityZone", "")
                used = {m.get("DeviceName", "") for m in instance.get("BlockDeviceMappings", [])}
                return zone, used
        raise ProviderError(f"instance {instance_id} does not exist in {self.region}")

    def _volume(self, volume_id: str) -> Mapping[str, Any]:
        with self._calling(f"DescribeVolumes of {volume_id}"):
            volumes = self.client().describe_volumes(VolumeIds=[volume_id])["Volumes"]
        if not volumes:
            raise ProviderError(f"volume {volume_id} does not exist in {self.region}")
        return volumes[0]

    def _wait_volume(
        self, volume_id: str, done: Callable[[Mapping[str, Any]], bool], what: str
    ) -> None:
        deadline = time.monotonic() + self.volume_timeout
        while True:
            volume = self._volume(volume_id)
            if volume.get("State") == "error":
                raise ProviderError(f"volume {volume_id} went into state error while {what}")
            if done(volume):
                return
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"volume {volume_id} not {what} after {self.volume_timeout:.0f}s "
                    f"(state {volume.get('State')})"
                )
            self.sleep(self.poll_interval)

    @contextmanager
    def materialize(self, snapshot_id: str, az: str = "") -> Iterator[Path]:
        """A new volume from the snapshot, attached here and mounted read-only; gone on exit.

        The volume is tagged temporary (with its source and this instance) the moment it
        is created, so one left by a crash is found by ``cleanup_leftovers``.
        """
        raw, tags = self._ours(snapshot_id)
        snapshot = self._record(raw, tags)
        if snapshot.state == "pending":
            snapshot = self._wait_snapshot(snapshot_id, self.volume_timeout)
        if snapshot.state != "completed":
            raise ProviderError(f"snapshot {snapshot_id} is in state {snapshot.state}")
        instance_id = self.instance_id()
        zone, used = self._instance(instance_id)
        # BOSH AZ names ("z1") are not EC2 zones; only an EC2 zone name can contradict.
        if az.startswith(self.region) and az != zone:
            raise ProviderError(
                f"cannot materialize in {az}: instance {instance_id} is in {zone}, and a "
                "volume attaches only in its own zone"
            )
        device_name = next((d for d in DEVICE_NAMES if d not in used), None)
        if device_name is None:
            raise ProviderError(f"instance {instance_id} has no free device name for a volume")
        tags = {
            "Name": f"disk-snapshots materialize {snapshot_id}",
            TEMPORARY_TAG: "true",
            SOURCE_SNAPSHOT_TAG: snapshot_id,
            MATERIALIZED_BY_TAG: instance_id,
        }
        with self._calling(f"CreateVolume from {snapshot_id} in {zone}"):
            volume_id = self.client().create_volume(
                SnapshotId=snapshot_id,
                AvailabilityZone=zone,
                VolumeType="gp3",
                TagSpecifications=[{"ResourceType": "volume", "Tags": tag_list(tags)}],
            )["VolumeId"]
        attached = False
        mountpoint: Path | None = None
        mounted = False
        completed = False
        try:
            self._wait_volume(volume_id, lambda v: v.get("State") == "available", "available")
            with self._calling(f"AttachVolume of {volume_id} to {instance_id}"):
                self.client().attach_volume(
                    VolumeId=volume_id, InstanceId=instance_id, Device=device_name
                )
            attached = True
            self._wait_volume(volume_id, _attached_to(instance_id), f"attached to {instance_id}")
            device = self.devices.find(volume_id, device_name, self.device_timeout)
            self.work_dir.mkdir(parents=True, exist_ok=True)
            mountpoint = Path(tempfile.mkdtemp(prefix=f"{snapshot_id}-", dir=self.work_dir))
            self.devices.mount_readonly(device, mountpoint)
            mounted = True
            yield mountpoint
            completed = True
        finally:
            problems = self._tear_down(volume_id, instance_id, attached, mountpoint, mounted)
            if problems:
                message = (
                    f"cleaning up after materializing {snapshot_id}: {'; '.join(problems)}; "
                    f"the volume is tagged {TEMPORARY_TAG}=true for cleanup_leftovers"
                )
                if completed:
                    raise ProviderError(message)
                # The error that got us here is the one to report; this one is logged.
                log.error("%s", message)

    def _tear_down(
        self,
        volume_id: str,
        instance_id: str,
        attached: bool,
        mountpoint: Path | None,
        mounted: bool,
    ) -> builtins.list[str]:
        """Unmount, detach, wait, delete: each step only when the one before it held."""
        problems: builtins.list[str] = []
        if mounted and mountpoint is not None:
            try:
                self.devices.unmount(mountpoint)
            except (ProviderError, OSError) as err:
                # Detaching a mounted volume can leave it stuck "busy"; leave it attached.
                return [f"unmount of {mountpoint} failed ({err}); volume {volume_id} left attached"]
        if mountpoint is not None:
            _remove_empty(mountpoint)
        try:
            if attached:
                with self._calling(f"DetachVolume of {volume_id}"):
                    self.client().detach_volume(VolumeId=volume_id, InstanceId=instance_id)
                self._wait_volume(volume_id, lambda v: v.get("State") == "available", "detached")
            with self._calling(f"DeleteVolume of {volume_id}"):
                self.client().delete_volume(VolumeId=volume_id)
        except ProviderError as err:
            problems.append(f"{err}; volume {volume_id} left behind")
        return problems

    def _unmount_leftovers(self, volume: Mapping[str, Any]) -> builtins.list[str]:
        """Unmount what a failed materialize left mounted from this volume's snapshot."""
        source = tags_of(volume).get(SOURCE_SNAPSHOT_TAG, "")
        if not SNAPSHOT_ID.match(source) or not self.work_dir.is_dir():
            return []
        problems: builtins.list[str] = []
        for mountpoint in sorted(self.work_dir.glob(f"{source}-*")):
            try:
                if self.devices.is_mounted(mountpoint):
                    self.devices.unmount(mountpoint)
                _remove_empty(mountpoint)
            except (ProviderError, OSError) as err:
                problems.append(
                    f"unmount of {mountpoint} failed ({err}); volume {volume['VolumeId']} "
                    "left attached"
                )
        return problems

    def cleanup_leftovers(self, min_age: timedelta = timedelta(minutes=30)) -> builtins.list[str]:
        """Detach and delete temporary volumes this instance left behind; returns their ids.

        ``min_age`` spares a volume a materialize running right now may still be using.
        """
        instance_id = self.instance_id()
        filters: builtins.list[FilterTypeDef] = [
            {"Name": f"tag:{TEMPORARY_TAG}", "Values": ["true"]},
            {"Name": f"tag:{MATERIALIZED_BY_TAG}", "Values": [instance_id]},
        ]
        with self._calling("DescribeVolumes of temporary volumes"):
            pages = self.client().get_paginator("describe_volumes").paginate(Filters=filters)
            volumes = [v for page in pages for v in page.get("Volumes", [])]
        now = datetime.now(UTC)
        removed: builtins.list[str] = []
        failed: builtins.list[str] = []
        for volume in volumes:
            volume_id = volume["VolumeId"]
            created = volume.get("CreateTime")
            if isinstance(created, datetime) and now - created < min_age:
                continue
            attached = any(
                a.get("InstanceId") == instance_id and a.get("State") in ("attaching", "attached")
                for a in volume.get("Attachments", [])
            )
            problems = self._unmount_leftovers(volume) if attached else []
            if not problems:
                problems = self._tear_down(volume_id, instance_id, attached, None, False)
            if problems:
                failed.extend(problems)
            else:
                log.info("removed leftover temporary volume %s", volume_id)
                removed.append(volume_id)
        if failed:
            raise ProviderError("leftover temporary volumes not removed: " + "; ".join(failed))
        return removed


def _attached_to(instance_id: str) -> Callable[[Mapping[str, Any]], bool]:
    def check(volume: Mapping[str, Any]) -> bool:
        return any(
            a.get("InstanceId") == instance_id and a.get("State") == "attached"
            for a in volume.get("Attachments", [])
        )

    return check


def _rank(copy: BackupCopy) -> tuple[bool, datetime]:
    """A completed copy is the one to restore from; among equals, the newest."""
    return (
        copy.snapshot.state == "completed",
        copy.copied_at or datetime.min.replace(tzinfo=UTC),
    )


def _with_backup(snapshot: Snapshot, copy: BackupCopy) -> Snapshot:
    return Snapshot(
        id=snapshot.id,
        annotations=snapshot.annotations,
        state=snapshot.state,
        size_bytes=snapshot.size_bytes,
        backup_id=copy.snapshot.id,
        backup_region=copy.region,
    )


def _remove_empty(directory: Path) -> None:
    # rmdir, never rmtree: if the unmount silently did not happen, the snapshot's files
    # are below, and they are not ours to delete.
    with suppress(OSError):
        directory.rmdir()


def _gib(size: object) -> int | None:
    return size * 2**30 if isinstance(size, int) else None


def _tag_equals(query: Query) -> dict[str, str]:
    """The query fields EC2 can filter on by exact tag value, so less comes back."""
    fields = {
        "deployment": query.deployment,
        "instance_group": query.instance_group,
        "role": query.role,
        "trigger": query.trigger,
        "set_id": query.set_id,
    }
    return {TAG_PREFIX + k: v for k, v in fields.items() if v is not None}


def _filters(equals: Mapping[str, str], key: str) -> builtins.list[FilterTypeDef]:
    """Snapshots carrying tag ``key``, with these exact tag values."""
    filters: builtins.list[FilterTypeDef] = [{"Name": "tag-key", "Values": [key]}]
    for name, value in equals.items():
        filters.append({"Name": f"tag:{name}", "Values": [value]})
    return filters
