"""Cinder backups of our snapshots, and new volumes from snapshots or backups.

The backup tier: ``backup-create`` from a snapshot (Cinder reads the snapshot, not the
live volume), full for a volume's first backup and incremental after it, with the
snapshot's annotations as backup metadata (API 3.43). The replace restore: a new volume
from a snapshot or a backup (API 3.47), in the availability zone asked for, carrying our
metadata, returned once ``available`` for ``bosh attach-disk``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from typing import Any

from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import State
from disk_snapshots.providers.base import NewDisk
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.cinder_api import CinderApi
from disk_snapshots.providers.cinder_api import CinderNotFound
from disk_snapshots.providers.cinder_metadata import MARKER
from disk_snapshots.providers.cinder_metadata import MARKER_KEY
from disk_snapshots.providers.cinder_metadata import SOURCE_BACKUP_KEY
from disk_snapshots.providers.cinder_metadata import SOURCE_SNAPSHOT_KEY
from disk_snapshots.providers.cinder_metadata import carried_metadata
from disk_snapshots.providers.cinder_metadata import check_uuid
from disk_snapshots.providers.cinder_metadata import display_name
from disk_snapshots.providers.cinder_metadata import fitted
from disk_snapshots.providers.cinder_metadata import gib_to_bytes
from disk_snapshots.providers.cinder_metadata import is_going
from disk_snapshots.providers.cinder_metadata import is_ours
from disk_snapshots.providers.cinder_metadata import metadata_dict
from disk_snapshots.providers.cinder_metadata import state_of
from disk_snapshots.providers.cinder_metadata import timestamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backup:
    """A backup of one of our snapshots: its own id, and what it was taken of."""

    id: str
    snapshot_id: str
    volume_id: str
    annotations: Annotations
    state: State
    incremental: bool
    size_bytes: int | None
    created_at: datetime | None
    availability_zone: str


def create_backup(
    api: CinderApi, snapshot: Mapping[str, Any], *, incremental: bool | None, timeout: float
) -> Backup:
    """``backup-create`` of one of our snapshots (as Cinder shows it), once available."""
    snapshot_id = check_uuid(snapshot.get("id"))
    if state_of(snapshot.get("status")) != "completed":
        raise ProviderError(f"snapshot {snapshot_id} is {snapshot.get('status')!r}: not backed up")
    volume_id = check_uuid(snapshot.get("volume_id"), "volume")
    metadata = metadata_dict(snapshot)
    annotations = Annotations.from_tags(metadata)
    if incremental is None:
        # Cinder chains an incremental backup to the volume's newest backup.
        incremental = any(b.state == "completed" for b in list_backups(api, volume_id=volume_id))
    created = api.request(
        "POST",
        "/backups",
        f"creating a backup of snapshot {snapshot_id}",
        body={
            "backup": {
                "volume_id": volume_id,
                "snapshot_id": snapshot_id,
                "incremental": incremental,
                "force": True,
                "name": (display_name(annotations) + " backup")[:255],
                "description": f"disk-snapshots backup of snapshot {snapshot_id}",
                "metadata": carried_metadata(metadata)
                | {MARKER_KEY: MARKER, SOURCE_SNAPSHOT_KEY: snapshot_id},
            }
        },
    )["backup"]
    backup_id = check_uuid(created.get("id"), "backup")
    done = api.wait("backup", backup_id, "available", timeout, ("creating",))
    backup = backup_record(done)
    log.info(
        "%s backup %s of snapshot %s",
        "incremental" if backup.incremental else "full",
        backup_id,
        snapshot_id,
    )
    return backup


def backup_record(raw: Mapping[str, Any]) -> Backup:
    metadata = metadata_dict(raw)
    return Backup(
        id=check_uuid(raw.get("id"), "backup"),
        snapshot_id=metadata.get(SOURCE_SNAPSHOT_KEY, ""),
        volume_id=str(raw.get("volume_id") or ""),
        annotations=Annotations.from_tags(metadata),
        state=state_of(raw.get("status")),
        incremental=bool(raw.get("is_incremental")),
        size_bytes=gib_to_bytes(raw.get("size")),
        created_at=timestamp(raw.get("created_at")),
        availability_zone=str(raw.get("availability_zone") or ""),
    )


def list_backups(
    api: CinderApi, query: Query | None = None, *, volume_id: str | None = None
) -> list[Backup]:
    """Our backups, newest first. Cinder filters backups by volume but not by metadata."""
    params: dict[str, str | int] = {}
    if volume_id:
        params["volume_id"] = check_uuid(volume_id, "volume")
    found: list[Backup] = []
    for page in api.pages("/backups/detail", "backups", params, "listing backups"):
        for raw in page:
            if not is_ours(metadata_dict(raw)) or is_going(raw):
                continue
            try:
                backup = backup_record(raw)
            except (AnnotationError, ProviderError) as err:
                log.warning("ignoring Cinder backup %s: %s", raw.get("id"), err)
                continue
            as_snapshot = Snapshot(
                id=backup.snapshot_id or backup.id, annotations=backup.annotations
            )
            if query is None or query.matches(as_snapshot):
                found.append(backup)
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda b: (b.created_at or oldest, b.id), reverse=True)


def read_backup(api: CinderApi, backup_id: str) -> dict[str, Any]:
    """One of our backups as Cinder shows it; UnknownSnapshot when absent or not ours."""
    check_uuid(backup_id, "backup")
    try:
        raw = dict(
            api.request("GET", f"/backups/{backup_id}", f"reading backup {backup_id}")["backup"]
        )
    except CinderNotFound:
        raise UnknownSnapshot(f"backup {backup_id} does not exist in this project") from None
    if not is_ours(metadata_dict(raw)):
        raise UnknownSnapshot(
            f"backup {backup_id} has no {MARKER_KEY}={MARKER} metadata: it was not made by "
            "disk-snapshots, so this release will not restore or delete it"
        )
    return raw


def delete_backup(api: CinderApi, backup_id: str) -> None:
    """Delete one of our backups (Cinder refuses while incremental backups depend on it)."""
    read_backup(api, backup_id)
    try:
        api.request("DELETE", f"/backups/{backup_id}", f"deleting backup {backup_id}")
    except CinderNotFound:
        return


def volume_from_snapshot(
    api: CinderApi,
    snapshot: Mapping[str, Any],
    zone: str,
    labels: Mapping[str, str],
    *,
    timeout: float,
) -> NewDisk:
    """A new volume holding one of our snapshots' data."""
    snapshot_id = check_uuid(snapshot.get("id"))
    if state_of(snapshot.get("status")) != "completed":
        raise ProviderError(f"snapshot {snapshot_id} is {snapshot.get('status')!r}: no volume made")
    metadata = metadata_dict(snapshot)
    source = {"snapshot_id": snapshot_id, "size": snapshot.get("size")}
    ours = {MARKER_KEY: MARKER, SOURCE_SNAPSHOT_KEY: snapshot_id}
    annotations = Annotations.from_tags(metadata)
    return _new_volume(
        api, source, annotations, carried_metadata(metadata) | dict(labels) | ours, zone, timeout
    )


def volume_from_backup(
    api: CinderApi, backup_id: str, zone: str, labels: Mapping[str, str], *, timeout: float
) -> NewDisk:
    """A new volume restored from one of our backups (API 3.47)."""
    raw = read_backup(api, backup_id)
    backup = backup_record(raw)
    if backup.state != "completed":
        raise ProviderError(f"backup {backup_id} is {raw.get('status')!r}: no volume made")
    metadata = metadata_dict(raw)
    ours = {MARKER_KEY: MARKER, SOURCE_BACKUP_KEY: backup_id}
    if backup.snapshot_id:
        ours[SOURCE_SNAPSHOT_KEY] = backup.snapshot_id
    source = {"backup_id": backup_id, "size": raw.get("size")}
    made = _new_volume(
        api,
        source,
        backup.annotations,
        carried_metadata(metadata) | dict(labels) | ours,
        zone,
        timeout,
    )
    return replace(made, snapshot_id=backup.snapshot_id)


def _new_volume(
    api: CinderApi,
    source: Mapping[str, Any],
    annotations: Annotations,
    metadata: Mapping[str, str],
    zone: str,
    timeout: float,
) -> NewDisk:
    """``POST /volumes`` from the source, in ``zone``, waited until available. A volume that
    never gets there is deleted again, so a failed restore leaves no volume behind."""
    source_id = str(source.get("snapshot_id") or source.get("backup_id"))
    metadata = fitted(metadata)
    request = {k: v for k, v in source.items() if v is not None} | {
        "name": f"disk-snapshots restore of {annotations.instance} from {source_id}"[:255],
        "description": f"made by disk-snapshots from {source_id}",
        "metadata": metadata,
    }
    if zone:
        request["availability_zone"] = zone
    created = api.request(
        "POST", "/volumes", f"creating a volume from {source_id}", body={"volume": request}
    )["volume"]
    volume_id = check_uuid(created.get("id"), "volume")
    try:
        done = api.wait(
            "volume",
            volume_id,
            "available",
            timeout,
            ("creating", "downloading", "restoring-backup"),
        )
    except ProviderError:
        with suppress(ProviderError):
            api.request("DELETE", f"/volumes/{volume_id}", f"deleting failed volume {volume_id}")
        raise
    # A restore writes the backed-up volume's metadata over the new volume's: ours again.
    api.add_metadata("volume", volume_id, metadata)
    log.info("volume %s made from %s in %s", volume_id, source_id, done.get("availability_zone"))
    size = gib_to_bytes(done.get("size"))
    return NewDisk(
        cid=volume_id,
        size_mib=size // 2**20 if size else 0,
        zone=str(done.get("availability_zone") or ""),
        snapshot_id=source_id,
    )
