"""The aws-ebs provider's backup tier: CopySnapshot into ``provider.aws.backup_region``.

A backup is an EBS snapshot in the backup region carrying the source snapshot's tags plus
where it came from (``source_snapshot``, ``source_region``). EBS copies on its own:
``backup`` returns it ``pending``; ``get`` reports EBS's state and progress, and tags the
moment it first sees the copy ``completed`` (``backup_completed_at``), which EC2 does
not record itself. It outlives its source: retention in the disks' region never
reaches it, and ``backups`` lists copies whose source is gone.

A restore from a backup copies it back first: an EBS volume attaches only in its own
availability zone, and CreateVolume takes only a snapshot of its own region, so a copy
in the backup region cannot become a disk of a VM in the disks' region. The copy back
(CopySnapshot into the disks' region) is tagged temporary, made into a volume exactly
like a snapshot (ebs_volumes.py), and deleted on the way out; one a killed process
left behind is found by ``cleanup_leftovers``.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import parse_timestamp
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import select
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.ebs_volumes import MATERIALIZED_BY_TAG
from disk_snapshots.providers.ebs_volumes import TEMPORARY_TAG
from disk_snapshots.providers.ec2 import COMPLETED_TAG
from disk_snapshots.providers.ec2 import EBS_STATES
from disk_snapshots.providers.ec2 import SCHEMA_TAG
from disk_snapshots.providers.ec2 import SOURCE_REGION_TAG
from disk_snapshots.providers.ec2 import SOURCE_SNAPSHOT_TAG
from disk_snapshots.providers.ec2 import annotation_tags
from disk_snapshots.providers.ec2 import check_snapshot_id
from disk_snapshots.providers.ec2 import display_name
from disk_snapshots.providers.ec2 import snapshot_record
from disk_snapshots.providers.ec2 import tag_filters
from disk_snapshots.providers.ec2 import tag_list
from disk_snapshots.providers.ec2 import tags_of

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import CopySnapshotRequestTypeDef
    from mypy_boto3_ec2.type_defs import FilterTypeDef

    from disk_snapshots.providers.aws_ebs import AwsEbsProvider

log = logging.getLogger(__name__)

# A copy back into the disks' region is a step of a restore, never a backup or a snapshot:
# it carries no annotations (so no listing shows it), only where it came from.
COPY_BACK_HOURS = 6.0


def _completed_at(tags: Mapping[str, str]) -> datetime | None:
    try:
        return parse_timestamp(tags[COMPLETED_TAG]) if COMPLETED_TAG in tags else None
    except AnnotationError:
        return None


class EbsBackups:
    def __init__(self, provider: AwsEbsProvider, *, copy_back_timeout: float | None = None) -> None:
        self.ebs = provider
        self.region = provider.backup_region
        self.copy_back_timeout = copy_back_timeout or COPY_BACK_HOURS * 3600

    def _off(self) -> ProviderError:
        return ProviderError("backups are off: provider.aws.backup_region is empty")

    def record(self, raw: Mapping[str, Any]) -> Backup:
        """A copy as the catalog shows it; AnnotationError/UnknownSnapshot when not ours."""
        tags = tags_of(raw)
        snapshot = snapshot_record(raw, tags)
        state = snapshot.state
        detail = str(raw.get("StateMessage") or "")
        if state == "pending":
            detail = f"{raw.get('Progress') or '0%'} copied"
        return Backup(
            id=check_snapshot_id(raw.get("SnapshotId")),
            source_snapshot=check_snapshot_id(tags.get(SOURCE_SNAPSHOT_TAG, "")),
            annotations=Annotations.from_tags(tags),
            state=state,
            started_at=raw.get("StartTime"),
            completed_at=_completed_at(tags) if state == "completed" else None,
            size_bytes=snapshot.size_bytes,
            location=self.region,
            detail=detail,
        )

    def backup(self, snapshot_id: str, timeout: float | None) -> Backup:
        """CopySnapshot into the backup region, once the source is completed (EBS copies
        only those): waits up to ``timeout`` for it, then returns the copy pending."""
        if not self.region:
            raise self._off()
        source, tags = self.ebs.ours(snapshot_id)
        if EBS_STATES.get(str(source.get("State"))) == "pending":
            self.ebs.wait_done(snapshot_id, 3600.0 if timeout is None else timeout)
            source, tags = self.ebs.ours(snapshot_id)
        state = snapshot_record(source, tags).state
        if state != "completed":
            raise ProviderError(f"snapshot {snapshot_id} is in state {state}: not copied")
        name = display_name(Annotations.from_tags(tags)) + " (backup)"
        copy_tags = annotation_tags(tags) | {
            "Name": name,
            SOURCE_SNAPSHOT_TAG: snapshot_id,
            SOURCE_REGION_TAG: self.ebs.region,
        }
        request: CopySnapshotRequestTypeDef = {
            "SourceSnapshotId": snapshot_id,
            "SourceRegion": self.ebs.region,
            "Description": f"disk-snapshots backup of {snapshot_id} from {self.ebs.region}",
            "TagSpecifications": [{"ResourceType": "snapshot", "Tags": tag_list(copy_tags)}],
        }
        if self.ebs.kms_key_id:
            request |= {"Encrypted": True, "KmsKeyId": self.ebs.kms_key_id}
        with self.ebs.calling(f"CopySnapshot of {snapshot_id} from {self.ebs.region}", self.region):
            copy_id = self.ebs.client(self.region).copy_snapshot(**request)["SnapshotId"]
        log.info("%s: backup copy %s started in %s", snapshot_id, copy_id, self.region)
        return self.get(check_snapshot_id(copy_id))

    def _ours(self, backup_id: str) -> Mapping[str, Any]:
        if not self.region:
            raise self._off()
        try:
            raw = self.ebs.describe(check_snapshot_id(backup_id), self.region)
        except UnknownSnapshot as err:
            raise UnknownBackup(f"backup {backup_id}: {err}") from None
        tags = tags_of(raw)
        if SCHEMA_TAG not in tags or SOURCE_SNAPSHOT_TAG not in tags:
            raise UnknownBackup(
                f"snapshot {backup_id} in {self.region} is not a disk-snapshots backup (no "
                f"{SOURCE_SNAPSHOT_TAG} tag), so this release will not read or delete it"
            )
        return raw

    def get(self, backup_id: str) -> Backup:
        """The copy as EBS reports it now; the first time it is completed, say when."""
        raw = self._ours(backup_id)
        try:
            backup = self.record(raw)
        except (AnnotationError, UnknownSnapshot) as err:
            raise ProviderError(f"backup {backup_id} has damaged tags: {err}") from None
        if backup.state == "completed" and backup.completed_at is None:
            now = datetime.now(UTC)
            stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            with self.ebs.calling(f"CreateTags on {backup_id}", self.region):
                self.ebs.client(self.region).create_tags(
                    Resources=[backup_id], Tags=[{"Key": COMPLETED_TAG, "Value": stamp}]
                )
            backup = self.record({**raw, "Tags": [*raw.get("Tags", []), _tag(stamp)]})
        return backup

    def list(self, query: Query | None = None) -> builtins.list[Backup]:
        """Every copy of ours in the backup region, also those whose source is gone."""
        if not self.region:
            return []
        query = query or Query()
        filters: builtins.list[FilterTypeDef] = tag_filters(query.exact_tags(), SOURCE_SNAPSHOT_TAG)
        found: builtins.list[Backup] = []
        for page in self.ebs.pages(self.region, filters):
            for raw in page:
                try:
                    found.append(self.record(raw))
                except (AnnotationError, UnknownSnapshot) as err:
                    log.warning(
                        "ignoring EBS snapshot %s in %s: %s",
                        raw.get("SnapshotId"),
                        self.region,
                        err,
                    )
        return select(found, query)

    def delete(self, backup_id: str) -> None:
        self._ours(backup_id)
        with self.ebs.calling(f"DeleteSnapshot of {backup_id}", self.region):
            self.ebs.client(self.region).delete_snapshot(SnapshotId=backup_id)

    def _copy_back(self, backup_id: str) -> str:
        instance_id = self.ebs.instance_id()
        tags = {
            "Name": f"disk-snapshots restore of backup {backup_id}",
            TEMPORARY_TAG: "true",
            SOURCE_SNAPSHOT_TAG: backup_id,
            SOURCE_REGION_TAG: self.region,
            MATERIALIZED_BY_TAG: instance_id,
        }
        with self.ebs.calling(f"CopySnapshot of {backup_id} from {self.region}"):
            copy_id = self.ebs.client().copy_snapshot(
                SourceSnapshotId=backup_id,
                SourceRegion=self.region,
                Description=f"disk-snapshots: backup {backup_id} copied back for a restore",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
            )["SnapshotId"]
        return check_snapshot_id(copy_id)

    @contextmanager
    def materialize(self, backup_id: str, az: str) -> Iterator[Path]:
        """Copy the backup back into the disks' region, then a volume from that copy,
        mounted read-only here; the volume and the copy are gone on exit."""
        backup = self.get(backup_id)
        if backup.state != "completed":
            raise ProviderError(
                f"backup {backup_id} is {backup.state} ({backup.detail}): not restorable"
            )
        copy_id = self._copy_back(backup_id)
        log.info("backup %s: copying back into %s as %s", backup_id, self.ebs.region, copy_id)
        try:
            raw = self.ebs.wait_done(copy_id, self.copy_back_timeout)
            if raw.get("State") != "completed":
                raise ProviderError(
                    f"copying backup {backup_id} back into {self.ebs.region} failed "
                    f"({copy_id}: {raw.get('State')} {raw.get('StateMessage', '')})"
                )
            with self.ebs.volumes.mounted(copy_id, az) as mountpoint:
                yield mountpoint
        finally:
            try:
                with self.ebs.calling(f"DeleteSnapshot of {copy_id}"):
                    self.ebs.client().delete_snapshot(SnapshotId=copy_id)
            except ProviderError as err:
                log.error("%s; it is tagged %s=true for cleanup_leftovers", err, TEMPORARY_TAG)

    def cleanup_leftovers(self, min_age: timedelta) -> builtins.list[str]:
        """Delete copies back that a killed restore on this instance left behind."""
        instance_id = self.ebs.instance_id()
        filters: builtins.list[FilterTypeDef] = [
            {"Name": f"tag:{TEMPORARY_TAG}", "Values": ["true"]},
            {"Name": f"tag:{MATERIALIZED_BY_TAG}", "Values": [instance_id]},
        ]
        now = datetime.now(UTC)
        removed: builtins.list[str] = []
        for page in self.ebs.pages(self.ebs.region, filters):
            for raw in page:
                started = raw.get("StartTime")
                if isinstance(started, datetime) and now - started < min_age:
                    continue
                snapshot_id = check_snapshot_id(raw.get("SnapshotId"))
                with self.ebs.calling(f"DeleteSnapshot of {snapshot_id}"):
                    self.ebs.client().delete_snapshot(SnapshotId=snapshot_id)
                log.info("removed leftover copy back %s", snapshot_id)
                removed.append(snapshot_id)
        return removed


def _tag(stamp: str) -> dict[str, str]:
    return {"Key": COMPLETED_TAG, "Value": stamp}
