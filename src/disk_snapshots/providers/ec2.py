"""EC2 as the aws modules see it: id shapes, tags, records, and one clear error per failure.

aws_ebs.py (snapshots), ebs_backups.py (their copies in the backup region) and
ebs_volumes.py (volumes made from snapshots on this VM) share these; no message they
build ever carries the secret key.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import UTC
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError
from botocore.exceptions import NoCredentialsError

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import State
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef
    from mypy_boto3_ec2.type_defs import TagTypeDef

SNAPSHOT_ID = re.compile(r"^snap-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
VOLUME_ID = re.compile(r"^vol-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
# The snapshot a backup copy or a temporary volume was made from.
SOURCE_SNAPSHOT_TAG = TAG_PREFIX + "source_snapshot"
SCHEMA_TAG = TAG_PREFIX + "schema"
SOURCE_REGION_TAG = TAG_PREFIX + "source_region"
# When a backup copy was first seen completed (ebs_backups.py); EC2 does not record it.
COMPLETED_TAG = TAG_PREFIX + "backup_completed_at"
# Tags the provider writes besides the annotations; update() and copies keep them apart.
PROVIDER_TAGS = ("Name", SOURCE_SNAPSHOT_TAG, SOURCE_REGION_TAG, COMPLETED_TAG)


EBS_STATES: Mapping[str, State] = {
    "pending": "pending",
    "completed": "completed",
    "recovering": "pending",
    "error": "error",
    "recoverable": "error",
}


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


class Ec2(Protocol):
    """What talks to EC2 for this VM: the disks' region, its clients, its error wrapper."""

    region: str

    def client(self, region: str | None = None) -> EC2Client: ...

    def calling(self, action: str, region: str | None = None) -> AbstractContextManager[None]:
        """Turns a botocore error inside into error() of ``action``."""
        ...


def _scrub(secret: str, text: str) -> str:
    return text.replace(secret, "<secret>") if secret else text


def error(err: Exception, action: str, region: str, secret: str) -> ProviderError:
    """One clear message per failure, never carrying the secret key."""
    if isinstance(err, NoCredentialsError):
        return ProviderError(
            f"{action}: no AWS credentials: the VM has no instance profile and "
            "provider.aws.access_key_id/secret_access_key are empty"
        )
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = _scrub(secret, str(error.get("Message", "")))
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
        return ProviderError(f"{action} failed in {region}: {_scrub(secret, str(err))}")
    return ProviderError(f"{action} failed in {region}: {_scrub(secret, str(err))}")


def annotation_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Our tags minus the provider's bookkeeping: what a copy or an update carries over."""
    return {k: v for k, v in tags.items() if k.startswith(TAG_PREFIX) and k not in PROVIDER_TAGS}


def display_name(a: Annotations) -> str:
    """The console's Name column: enough to recognise a snapshot without opening its tags."""
    moment = a.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{a.deployment}/{a.instance_group}/{a.index} {a.trigger} {moment}"[:256]


def gib(size: object) -> int | None:
    return size * 2**30 if isinstance(size, int) else None


def tag_filters(equals: Mapping[str, str], key: str) -> builtins.list[FilterTypeDef]:
    """Snapshots carrying tag ``key``, with these exact tag values."""
    filters: builtins.list[FilterTypeDef] = [{"Name": "tag-key", "Values": [key]}]
    for name, value in equals.items():
        filters.append({"Name": f"tag:{name}", "Values": [value]})
    return filters


def snapshot_record(raw: Mapping[str, Any], tags: Mapping[str, str]) -> Snapshot:
    """An EBS snapshot as the catalog shows it (AnnotationError when its tags are not ours)."""
    return Snapshot(
        id=check_snapshot_id(raw.get("SnapshotId")),
        annotations=Annotations.from_tags(tags),
        state=EBS_STATES.get(str(raw.get("State", "")), "error"),
        size_bytes=gib(raw.get("VolumeSize")),
    )
