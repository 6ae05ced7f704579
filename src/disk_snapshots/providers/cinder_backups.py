"""Cinder backups of our snapshots (the backup tier), and new volumes from snapshots or
backups (the replace restore).

A backup is ``backup-create`` of one of our snapshots (Cinder reads the snapshot, not the
live volume) into ``provider.openstack.backup_container``, with the snapshot's
annotations and where it came from as backup metadata (API 3.43). Cinder copies on its
own: ``start_backup`` returns once Cinder has accepted the request, and the caller
follows the backup (``creating``, then ``available`` or ``error`` with Cinder's
``fail_reason``). A process killed meanwhile leaves nothing of its own behind: Cinder
goes on copying, and the next run finds the backup of that snapshot and follows it.

Incremental chains. Cinder chains an incremental backup to the volume's backup whose
data is the newest before the snapshot, whoever made it, and refuses to delete a backup
while an incremental one depends on it. So a backup is incremental only when that
parent is one of ours, available, in the same container, and no backup of its chain was
let go of by retention; otherwise it is full and starts a new chain. Retention's delete
of a backup that others depend on *releases* it instead (``disk-snapshots:released``):
it leaves the catalog at once, and is deleted by a later ``sweep`` once nothing depends
on it. A chain therefore grows only until retention lets go of one of its backups; then
the next backup is full, and the old chain is deleted from its newest end as retention
reaches it.

A new volume is made from a snapshot or a backup (API 3.47) in the availability zone
asked for, carrying our metadata, and returned once ``available`` for
``bosh attach-disk``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from typing import Any

from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import parse_timestamp
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import select
from disk_snapshots.providers.base import NewDisk
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.cinder_api import CinderApi
from disk_snapshots.providers.cinder_api import CinderNotFound
from disk_snapshots.providers.cinder_metadata import COMPLETED_KEY
from disk_snapshots.providers.cinder_metadata import MARKER
from disk_snapshots.providers.cinder_metadata import MARKER_KEY
from disk_snapshots.providers.cinder_metadata import PARENT_BACKUP_KEY
from disk_snapshots.providers.cinder_metadata import RELEASED_KEY
from disk_snapshots.providers.cinder_metadata import SOURCE_BACKUP_KEY
from disk_snapshots.providers.cinder_metadata import SOURCE_SNAPSHOT_KEY
from disk_snapshots.providers.cinder_metadata import carried_metadata
from disk_snapshots.providers.cinder_metadata import check_uuid
from disk_snapshots.providers.cinder_metadata import display_name
from disk_snapshots.providers.cinder_metadata import fitted
from disk_snapshots.providers.cinder_metadata import gib_to_bytes
from disk_snapshots.providers.cinder_metadata import is_going
from disk_snapshots.providers.cinder_metadata import is_ours
from disk_snapshots.providers.cinder_metadata import is_released
from disk_snapshots.providers.cinder_metadata import metadata_dict
from disk_snapshots.providers.cinder_metadata import state_of
from disk_snapshots.providers.cinder_metadata import timestamp

log = logging.getLogger(__name__)

# Cinder's refusal to delete a parent (cinder/backup/api.py), the same since Liberty.
HAS_DEPENDENTS = "Incremental backups exist"


def _completed_at(raw: Mapping[str, Any], metadata: Mapping[str, str]) -> datetime | None:
    with suppress(AnnotationError):
        if COMPLETED_KEY in metadata:
            return parse_timestamp(metadata[COMPLETED_KEY])
    # Not stamped yet (never read one by one since it completed): the last change is
    # the completion unless a later one (a child's, a release) moved it on.
    return timestamp(raw.get("updated_at"))


def backup_record(raw: Mapping[str, Any]) -> Backup:
    """A backup of ours as the catalog shows it; AnnotationError when its metadata is not
    a snapshot's annotations."""
    metadata = metadata_dict(raw)
    status = str(raw.get("status") or "")
    state = state_of(status)
    detail = ""
    if state == "pending":
        detail = f"Cinder is copying it ({status})"
    elif state == "error":
        detail = str(raw.get("fail_reason") or f"Cinder status {status!r}, no reason recorded")
    source = metadata.get(SOURCE_SNAPSHOT_KEY) or str(raw.get("snapshot_id") or "")
    return Backup(
        id=check_uuid(raw.get("id"), "backup"),
        source_snapshot=check_uuid(source) if source else "",
        annotations=Annotations.from_tags(metadata),
        state=state,
        started_at=timestamp(raw.get("created_at")),
        completed_at=_completed_at(raw, metadata) if state == "completed" else None,
        size_bytes=gib_to_bytes(raw.get("size")),
        location=str(raw.get("container") or ""),
        detail=detail,
    )


def _raw_backups(api: CinderApi, volume_id: str | None, action: str) -> list[dict[str, Any]]:
    """Every backup of the project (of one volume), whoever made it, as Cinder shows it."""
    params: dict[str, str | int] = {}
    if volume_id:
        params["volume_id"] = check_uuid(volume_id, "volume")
    return [raw for page in api.pages("/backups/detail", "backups", params, action) for raw in page]


def list_backups(api: CinderApi, query: Query | None = None) -> list[Backup]:
    """Our backups, newest point in time first, also those whose snapshot is gone.
    Cinder filters backups by volume but not by metadata: the query is matched here."""
    query = query or Query()
    found: list[Backup] = []
    for raw in _raw_backups(api, None, "listing backups"):
        metadata = metadata_dict(raw)
        if not is_ours(metadata) or is_released(metadata) or is_going(raw):
            continue
        try:
            found.append(backup_record(raw))
        except (AnnotationError, ProviderError) as err:
            # Damaged metadata: skipped, but never silently.
            log.warning("ignoring Cinder backup %s: %s", raw.get("id"), err)
    return select(found, query)


def read_backup(api: CinderApi, backup_id: str) -> dict[str, Any]:
    """One of our backups as Cinder shows it; UnknownBackup when it is absent, not ours,
    or released (out of the catalog, though Cinder keeps it for its dependents)."""
    check_uuid(backup_id, "backup")
    try:
        raw = dict(
            api.request("GET", f"/backups/{backup_id}", f"reading backup {backup_id}")["backup"]
        )
    except CinderNotFound:
        raise UnknownBackup(f"backup {backup_id} does not exist in this project") from None
    metadata = metadata_dict(raw)
    if not is_ours(metadata):
        raise UnknownBackup(
            f"backup {backup_id} has no {MARKER_KEY}={MARKER} metadata: it was not made by "
            "disk-snapshots, so this release will not restore or delete it"
        )
    if is_released(metadata) or is_going(raw):
        raise UnknownBackup(
            f"backup {backup_id} was deleted (Cinder keeps a backup until the incremental "
            "backups that depend on it are deleted too)"
        )
    return raw


def incremental_parent(
    backups: Sequence[Mapping[str, Any]], snapshot: Mapping[str, Any], container: str
) -> str | None:
    """The backup Cinder would chain an incremental backup of ``snapshot`` to, when an
    incremental one is wanted (see the module docstring); None: make a full one."""
    taken = timestamp(snapshot.get("created_at"))
    if taken is None:
        return None
    # Cinder's choice (backup/api.py): the newest data_timestamp before the snapshot.
    dated = [(timestamp(b.get("data_timestamp")), b) for b in backups]
    earlier = [(when, b) for when, b in dated if when is not None and when < taken]
    if not earlier:
        return None
    newest = max(when for when, _ in earlier)
    tied = [b for when, b in earlier if when == newest]
    if len(tied) != 1:
        return None  # Cinder picks one of them by its own order: no telling which
    by_id = {str(b.get("id")): b for b in backups}
    node: Mapping[str, Any] | None = tied[0]
    parent = str(tied[0].get("id"))
    seen: set[str] = set()
    while node is not None:
        metadata = metadata_dict(node)
        if not is_ours(metadata) or is_released(metadata) or node.get("status") != "available":
            return None
        if str(node.get("container") or "") != container:
            return None
        if not node.get("is_incremental"):
            return parent
        up = metadata.get(PARENT_BACKUP_KEY, "")
        if not up or up in seen:
            return None  # made before chains were recorded: start a chain we know
        seen.add(up)
        node = by_id.get(up)
    return None


def start_backup(api: CinderApi, snapshot: Mapping[str, Any], container: str) -> str:
    """``backup-create`` of one of our snapshots (as Cinder shows it, ``available``) into
    ``container``; the new backup's id, once Cinder has accepted the request."""
    snapshot_id = check_uuid(snapshot.get("id"))
    volume_id = check_uuid(snapshot.get("volume_id"), "volume")
    metadata = metadata_dict(snapshot)
    annotations = Annotations.from_tags(metadata)
    action = f"creating a backup of snapshot {snapshot_id}"
    existing = _raw_backups(api, volume_id, f"listing the backups of volume {volume_id}")
    parent = incremental_parent(existing, snapshot, container)
    ours = {MARKER_KEY: MARKER, SOURCE_SNAPSHOT_KEY: snapshot_id}
    if parent:
        ours[PARENT_BACKUP_KEY] = parent
    request = {
        "volume_id": volume_id,
        "snapshot_id": snapshot_id,
        "container": container,
        "incremental": parent is not None,
        "force": True,
        "name": (display_name(annotations) + " backup")[:255],
        "description": f"disk-snapshots backup of snapshot {snapshot_id}",
        "metadata": carried_metadata(metadata) | ours,
    }
    try:
        created = api.request("POST", "/backups", action, body={"backup": request})["backup"]
    except ProviderError as err:
        # A lost answer may hide a backup that was started: look before giving up.
        known = {str(b.get("id")) for b in existing}
        found = _started(api, volume_id, snapshot_id, known)
        if found is None:
            raise ProviderError(f"{err}; no backup of {snapshot_id} was started") from None
        log.warning("%s: the answer was lost, but backup %s was started", action, found)
        created = {"id": found}
    backup_id = check_uuid(created.get("id"), "backup")
    log.info(
        "%s backup %s of snapshot %s started in container %s",
        f"incremental (onto {parent})" if parent else "full",
        backup_id,
        snapshot_id,
        container,
    )
    return backup_id


def _started(api: CinderApi, volume_id: str, snapshot_id: str, known: set[str]) -> str | None:
    try:
        after = _raw_backups(api, volume_id, f"looking for the backup of {snapshot_id} requested")
    except ProviderError as err:
        log.warning("looking for the backup of %s just requested: %s", snapshot_id, err)
        return None
    for raw in after:
        new = str(raw.get("id")) not in known
        if new and metadata_dict(raw).get(SOURCE_SNAPSHOT_KEY) == snapshot_id:
            return check_uuid(raw.get("id"), "backup")
    return None


def stamp_completed(api: CinderApi, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Record when a backup was first seen ``available``; Cinder keeps no such time."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    metadata = metadata_dict(raw) | {COMPLETED_KEY: stamp}
    _write_metadata(api, str(raw.get("id")), metadata)
    return {**raw, "metadata": metadata}


def _write_metadata(api: CinderApi, backup_id: str, metadata: Mapping[str, str]) -> None:
    # A backup's metadata is written whole (PUT), so the same write twice is harmless.
    api.request(
        "PUT",
        f"/backups/{backup_id}",
        f"writing the metadata of backup {backup_id}",
        body={"backup": {"metadata": dict(metadata)}},
        retry_ambiguous=True,
    )


def _release(api: CinderApi, raw: Mapping[str, Any]) -> None:
    backup_id = str(raw.get("id"))
    _write_metadata(api, backup_id, metadata_dict(raw) | {RELEASED_KEY: "true"})
    log.info(
        "backup %s: incremental backups depend on it, so it is released (out of the "
        "catalog) and deleted once they are gone",
        backup_id,
    )


def delete_backup(api: CinderApi, backup_id: str) -> str:
    """Delete one of our backups, or release it while incremental backups depend on it;
    returns its volume's id (for ``sweep``)."""
    raw = read_backup(api, backup_id)
    volume_id = str(raw.get("volume_id") or "")
    if raw.get("has_dependent_backups"):
        _release(api, raw)
        return volume_id
    try:
        api.request("DELETE", f"/backups/{backup_id}", f"deleting backup {backup_id}")
    except CinderNotFound:
        pass  # gone already: what was asked for holds
    except ProviderError as err:
        # Also refused for a dependent that is still being made or failed, which
        # has_dependent_backups does not count.
        if HAS_DEPENDENTS not in str(err):
            raise
        _release(api, raw)
    return volume_id


def releasable(api: CinderApi, volume_id: str | None = None) -> list[dict[str, Any]]:
    """Our released backups that nothing depends on any more: Cinder would delete them."""
    return [
        raw
        for raw in _raw_backups(api, volume_id, "listing released backups")
        if metadata_dict(raw).get(MARKER_KEY) == MARKER
        and is_released(metadata_dict(raw))
        and raw.get("status") in ("available", "error")
        and not raw.get("has_dependent_backups")
    ]


def sweep(api: CinderApi, volume_id: str | None = None) -> list[str]:
    """Delete the released backups nothing depends on any more (of one volume, or of the
    project); the ids deleted. One whose dependent is still being deleted waits for the
    next sweep: Cinder counts a dependent until its deletion has finished."""
    deleted: list[str] = []
    for raw in releasable(api, volume_id):
        backup_id = check_uuid(raw.get("id"), "backup")
        try:
            api.request("DELETE", f"/backups/{backup_id}", f"deleting released backup {backup_id}")
        except CinderNotFound:
            continue
        except ProviderError as err:
            log.info("released backup %s stays for now: %s", backup_id, err)
            continue
        log.info("released backup %s deleted: nothing depends on it any more", backup_id)
        deleted.append(backup_id)
    return deleted


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
    if backup.source_snapshot:
        ours[SOURCE_SNAPSHOT_KEY] = backup.source_snapshot
    source = {"backup_id": backup_id, "size": raw.get("size")}
    made = _new_volume(
        api,
        source,
        backup.annotations,
        carried_metadata(metadata) | dict(labels) | ours,
        zone,
        timeout,
    )
    return replace(made, snapshot_id=backup.source_snapshot)


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
