"""The ``openstack-cinder`` provider: snapshots whose Cinder metadata is the catalog (DESIGN §4).

On OpenStack the BOSH disk CID is the Cinder volume id. A snapshot is one
``POST /snapshots`` with ``force`` (the volume is attached) and every annotation as
``disk-snapshots:*`` metadata in the same request, so no snapshot of ours exists without
its annotations. Cinder fixes the point in time when the backend has made the snapshot,
not when the API answers (202), so ``snapshot`` polls until ``available``, with a
deadline, inside the freeze; ``error`` is reported with Cinder's reason.

Beyond the ``Provider`` protocol: group snapshots for sets (``GroupSnapshots``, in
cinder_groups), the backup tier (``BackupTier``: Cinder backups into
``provider.openstack.backup_container``) and new volumes for the replace restore
(cinder_backups). A copy restore needs a new volume attached to this VM, which is Nova's
(``os-volume_attachments``): ``materialize`` and ``materialize_backup`` refuse and point
to the replace method.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import AbstractContextManager
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import disk_snapshots.providers.cinder_backups as cinder_backups
import disk_snapshots.providers.cinder_groups as cinder_groups
from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import select
from disk_snapshots.openstack_settings import OpenstackSettings
from disk_snapshots.providers.base import Leftover
from disk_snapshots.providers.base import NewDisk
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.cinder_api import CinderApi
from disk_snapshots.providers.cinder_api import CinderNotFound
from disk_snapshots.providers.cinder_metadata import COMPLETED_KEY
from disk_snapshots.providers.cinder_metadata import MARKER
from disk_snapshots.providers.cinder_metadata import MARKER_KEY
from disk_snapshots.providers.cinder_metadata import SCHEMA_KEY
from disk_snapshots.providers.cinder_metadata import check_owner
from disk_snapshots.providers.cinder_metadata import check_uuid
from disk_snapshots.providers.cinder_metadata import cinder_volume_id
from disk_snapshots.providers.cinder_metadata import display_name
from disk_snapshots.providers.cinder_metadata import gib_to_bytes
from disk_snapshots.providers.cinder_metadata import is_going
from disk_snapshots.providers.cinder_metadata import is_ours
from disk_snapshots.providers.cinder_metadata import is_released
from disk_snapshots.providers.cinder_metadata import metadata_dict
from disk_snapshots.providers.cinder_metadata import metadata_filter
from disk_snapshots.providers.cinder_metadata import metadata_of
from disk_snapshots.providers.cinder_metadata import state_of
from disk_snapshots.providers.group_snapshots import VolumeGroup
from disk_snapshots.vm.instance import Disk

log = logging.getLogger(__name__)
# No set in flight is this old (a freeze lasts 300 s at most): older leftovers are debris.
SET_GRACE = timedelta(minutes=30)
# How long a backup waits for its snapshot still being made, when no deadline is given.
SOURCE_WAIT = 3600.0


class OpenstackCinderProvider:
    name = "openstack-cinder"

    def __init__(
        self,
        settings: OpenstackSettings,
        *,
        timeout: float = 30.0,
        attempts: int = 4,
        retry_delays: Sequence[float] = (1.0, 2.0, 4.0),
        poll_interval: float = 0.5,
        snapshot_timeout: float = 300.0,
        volume_timeout: float = 600.0,
        page_size: int = 1000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = CinderApi(
            settings,
            timeout=timeout,
            attempts=attempts,
            retry_delays=retry_delays,
            poll_interval=poll_interval,
            page_size=page_size,
            sleep=sleep,
        )
        self.group_type = settings.group_type
        self.snapshot_timeout = snapshot_timeout
        self.backup_container = settings.backup_container
        self.volume_timeout = volume_timeout
        # The volume prepare() read, so that snapshot() inside the freeze makes one request.
        self._prepared: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, settings: OpenstackSettings) -> OpenstackCinderProvider:
        return cls(settings)

    def __repr__(self) -> str:
        return f"OpenstackCinderProvider({self.api!r})"

    def __enter__(self) -> OpenstackCinderProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.api.close()

    # -- snapshots ------------------------------------------------------------------------

    def prepare(self, disk: Disk) -> None:
        """Authentication, the endpoint and the volume, while writes still go on."""
        volume_id = cinder_volume_id(disk)
        self._prepared = {volume_id: cinder_groups.read_volume(self.api, volume_id)}

    def snapshot(self, disk: Disk, annotations: Annotations) -> Snapshot:
        """A snapshot with the annotations as metadata, returned once Cinder has made it."""
        volume_id = cinder_volume_id(disk)
        volume = self._prepared.pop(volume_id, None) or cinder_groups.read_volume(
            self.api, volume_id
        )
        check_owner(volume, annotations.deployment)
        request = {
            "snapshot": {
                "volume_id": volume_id,
                "name": display_name(annotations),
                "description": f"disk-snapshots {annotations.trigger} of {annotations.instance}",
                # The volume is attached (in-use): Cinder wants force before API 3.66.
                "force": True,
                "metadata": metadata_of(annotations),
            }
        }
        action = f"creating a snapshot of volume {volume_id}"
        try:
            created = self.api.request("POST", "/snapshots", action, body=request)["snapshot"]
        except CinderNotFound:
            raise ProviderError(f"{action}: volume {volume_id} is gone") from None
        except ProviderError as err:
            # A lost answer may hide a snapshot that was made: look before giving up.
            found = self._find_requested(volume_id, annotations)
            if found is None:
                raise ProviderError(f"{err}; no snapshot of {volume_id} was taken") from None
            log.warning("%s: the answer was lost, but snapshot %s was made", action, found)
            created = {"id": found}
        snapshot_id = check_uuid(created.get("id"))
        raw = self.api.wait(
            "snapshot", snapshot_id, "available", self.snapshot_timeout, ("creating",)
        )
        return self._record(raw)

    def _find_requested(self, volume_id: str, annotations: Annotations) -> str | None:
        """The snapshot a create request with these annotations made, if it made one."""
        tags = annotations.to_tags()
        wanted = {
            MARKER_KEY: MARKER,
            TAG_PREFIX + "instance_id": tags[TAG_PREFIX + "instance_id"],
            TAG_PREFIX + "created_at": tags[TAG_PREFIX + "created_at"],
        }
        params = {"volume_id": volume_id, "metadata": json.dumps(wanted, sort_keys=True)}
        action = f"looking for the snapshot of {volume_id} just requested"
        try:
            for page in self.api.pages("/snapshots/detail", "snapshots", params, action):
                for raw in page:
                    return check_uuid(raw.get("id"))
        except ProviderError as err:
            log.warning("%s: %s", action, err)
        return None

    def _record(self, raw: Mapping[str, Any]) -> Snapshot:
        return Snapshot(
            id=check_uuid(raw.get("id")),
            annotations=Annotations.from_tags(metadata_dict(raw)),
            state=state_of(raw.get("status")),
            size_bytes=gib_to_bytes(raw.get("size")),
        )

    def _ours(self, snapshot_id: str) -> dict[str, Any]:
        """A snapshot of ours as Cinder shows it; UnknownSnapshot for anything else."""
        raw = cinder_groups.read_snapshot(self.api, snapshot_id)
        metadata = metadata_dict(raw)
        if not is_ours(metadata):
            raise UnknownSnapshot(
                f"snapshot {snapshot_id} has no {MARKER_KEY}={MARKER} and {SCHEMA_KEY} "
                "metadata: it was not taken by disk-snapshots, so this release will not read, "
                "change or delete it"
            )
        if is_released(metadata):
            raise UnknownSnapshot(
                f"snapshot {snapshot_id} was deleted (Cinder keeps a group-snapshot member "
                "until its last sibling is deleted too)"
            )
        return dict(raw)

    def get(self, snapshot_id: str) -> Snapshot:
        raw = self._ours(snapshot_id)
        try:
            return self._record(raw)
        except AnnotationError as err:
            raise ProviderError(f"snapshot {snapshot_id} has damaged metadata: {err}") from None

    def update(self, snapshot_id: str, annotations: Annotations) -> Snapshot:
        """Rewrite the annotation metadata (every field, so that none goes stale)."""
        raw = self._ours(snapshot_id)
        metadata = metadata_of(annotations)
        self.api.add_metadata("snapshot", snapshot_id, metadata)
        return self._record({**raw, "metadata": metadata_dict(raw) | metadata})

    def delete(self, snapshot_id: str) -> None:
        """Delete a snapshot of ours; a group-snapshot member is released instead."""
        raw = self._ours(snapshot_id)
        if raw.get("group_snapshot_id"):
            cinder_groups.release_member(self.api, raw)
            return
        # Already gone (another instance's retention): what was asked for holds.
        with suppress(CinderNotFound):
            self.api.request(
                "DELETE", f"/snapshots/{snapshot_id}", f"deleting snapshot {snapshot_id}"
            )

    def list(self, query: Query | None = None) -> builtins.list[Snapshot]:
        """Our snapshots, from their metadata alone, newest first."""
        query = query or Query()
        found: builtins.list[Snapshot] = []
        skipped = 0
        params = {"metadata": json.dumps(metadata_filter(query), sort_keys=True)}
        for page in self.api.pages("/snapshots/detail", "snapshots", params, "listing snapshots"):
            for raw in page:
                metadata = metadata_dict(raw)
                if not is_ours(metadata) or is_released(metadata) or is_going(raw):
                    continue
                try:
                    found.append(self._record(raw))
                except (AnnotationError, UnknownSnapshot) as err:
                    # Damaged metadata: skipped, but never silently.
                    skipped += 1
                    log.warning("ignoring Cinder snapshot %s: %s", raw.get("id"), err)
        if skipped:
            log.warning("%d Cinder snapshot(s) with damaged disk-snapshots metadata", skipped)
        return select(found, query)

    def copy_refusal(self) -> str:
        """A copy restore needs the new volume attached to this VM: Nova's job (RefusesCopy),
        said while a restore is planned, before anything stops."""
        return (
            "openstack-cinder cannot restore by copying: attaching a volume made from a "
            "snapshot to this VM needs Nova (os-volume_attachments), which this release does "
            "not drive. Restore with disk-snapshots restore --method replace instead: the "
            "snapshotter makes a new volume from the snapshot and the operator's command "
            "attaches it with bosh attach-disk"
        )

    def materialize(self, snapshot_id: str, az: str = "") -> AbstractContextManager[Path]:
        """Refused (copy_refusal), should anything ask all the same."""
        raise ProviderError(f"snapshot {snapshot_id}: {self.copy_refusal()}")

    # -- group snapshots (the GroupSnapshots capability) ----------------------------------

    def volume_group(
        self, disks: Sequence[Disk], deployment: str
    ) -> AbstractContextManager[VolumeGroup]:
        return cinder_groups.volume_group(
            self.api, disks, deployment, group_type=self.group_type, timeout=self.volume_timeout
        )

    def snapshot_group(self, group: VolumeGroup, set_id: str) -> dict[str, str]:
        return cinder_groups.snapshot_group(self.api, group, set_id, timeout=self.snapshot_timeout)

    def claim_group_member(
        self, snapshot_id: str, disk: Disk, annotations: Annotations
    ) -> Snapshot:
        return cinder_groups.claim_member(self.api, snapshot_id, disk, annotations)

    def release_group_member(self, snapshot_id: str) -> None:
        cinder_groups.release_unclaimed(self.api, snapshot_id)

    def leftovers(self, min_age: timedelta = SET_GRACE) -> builtins.list[Leftover]:
        """What a set whose coordinator died left behind, and released backups nothing
        depends on any more; nothing is changed."""
        found = cinder_groups.cleanup_leftovers(
            self.api, min_age, self.volume_timeout, release=False
        )
        return found + [
            _released(check_uuid(raw.get("id"), "backup"))
            for raw in cinder_backups.releasable(self.api)
        ]

    def cleanup_leftovers(self, min_age: timedelta = SET_GRACE) -> builtins.list[Leftover]:
        """What a set whose coordinator died left behind, and released backups nothing
        depends on any more (``bin/snapshots cleanup``). A backup killed midway leaves
        nothing: Cinder finishes it or marks it error, and backup retention deletes it."""
        found = cinder_groups.cleanup_leftovers(self.api, min_age, self.volume_timeout)
        return found + [_released(b) for b in cinder_backups.sweep(self.api)]

    # -- the backup tier (BackupTier) ----------------------------------------------------

    backup_property = "provider.openstack.backup_container"

    @property
    def backup_location(self) -> str:
        return self.backup_container

    def backup(self, snapshot_id: str, timeout: float | None = None) -> Backup:
        """``backup-create`` of a snapshot of ours into the backup container, returned
        ``pending`` as soon as Cinder accepted it (Cinder copies on its own: poll
        ``get_backup``); ``timeout`` bounds the wait for a snapshot still being made."""
        if not self.backup_container:
            raise ProviderError(f"backups are off: {self.backup_property} is empty")
        raw = self._ours(snapshot_id)
        if state_of(raw.get("status")) == "pending":
            wait = SOURCE_WAIT if timeout is None else timeout
            raw = self.api.wait("snapshot", snapshot_id, "available", wait, ("creating",))
        backup_id = cinder_backups.start_backup(self.api, raw, self.backup_container)
        return self.get_backup(backup_id)

    def backups(self, query: Query | None = None) -> builtins.list[Backup]:
        """Our backups in every container, newest point in time first, also those whose
        snapshot is gone; those retention released are out of the catalog already."""
        return cinder_backups.list_backups(self.api, query)

    def get_backup(self, backup_id: str) -> Backup:
        """One of our backups as Cinder reports it now; the first time it is seen
        ``available``, when that was is written into its metadata."""
        raw = cinder_backups.read_backup(self.api, backup_id)
        try:
            backup = cinder_backups.backup_record(raw)
        except AnnotationError as err:
            raise ProviderError(f"backup {backup_id} has damaged metadata: {err}") from None
        if backup.state != "completed" or COMPLETED_KEY in metadata_dict(raw):
            return backup
        try:
            return cinder_backups.backup_record(cinder_backups.stamp_completed(self.api, raw))
        except ProviderError as err:
            # The backup is complete all the same; its time is Cinder's updated_at until
            # a later look records it.
            log.warning("backup %s: completion time not recorded: %s", backup_id, err)
            return backup

    def delete_backup(self, backup_id: str) -> None:
        """Delete a backup of ours; one that incremental backups depend on is released
        (out of the catalog) and deleted once they are, by this or a later delete."""
        volume_id = cinder_backups.delete_backup(self.api, backup_id)
        if not volume_id:
            return
        try:
            cinder_backups.sweep(self.api, volume_id)
        except ProviderError as err:
            # What was asked is done; the next delete or cleanup sweeps again.
            log.warning("released backups of volume %s not swept: %s", volume_id, err)

    def backup_refusal(self) -> str:
        return (
            "openstack-cinder cannot restore a backup by copying: a volume made from it "
            "would have to be attached to this VM, which needs Nova (os-volume_attachments), "
            "which this release does not drive. While the backup's snapshot exists, restore "
            "that with disk-snapshots restore --method replace; once only the backup is left, "
            "make a volume from it in the instance's availability zone (cinder create "
            "--backup-id, API 3.47, or cinder backup-restore) and attach it with bosh "
            "attach-disk GROUP/ID VOLUME --disk-properties=copy between bosh stop and bosh start"
        )

    def materialize_backup(self, backup_id: str, az: str = "") -> AbstractContextManager[Path]:
        """Refused (backup_refusal): the copy restore's twin of ``materialize``."""
        raise ProviderError(f"backup {backup_id}: {self.backup_refusal()}")

    # -- new volumes (the replace restore) ------------------------------------------------

    def create_disk(self, snapshot_id: str, like: Disk, labels: Mapping[str, str]) -> NewDisk:
        """A new volume holding the snapshot, for ``bosh attach-disk`` (the replace restore):
        in the availability zone of ``like`` (this instance's volume, so Nova can attach it
        to this VM), with the snapshot's annotations, ``labels`` and our marker as metadata;
        returned once available, deleted again if it never is."""
        zone = self._zone_of(like)
        return cinder_backups.volume_from_snapshot(
            self.api, self._ours(snapshot_id), zone, labels, timeout=self.volume_timeout
        )

    def create_disk_from_backup(
        self, backup_id: str, like: Disk, labels: Mapping[str, str]
    ) -> NewDisk:
        """The same from one of our backups, when the snapshot itself is gone."""
        zone = self._zone_of(like)
        return cinder_backups.volume_from_backup(
            self.api, backup_id, zone, labels, timeout=self.volume_timeout
        )

    def _zone_of(self, disk: Disk) -> str:
        volume = cinder_groups.read_volume(self.api, cinder_volume_id(disk))
        return str(volume.get("availability_zone") or "")


def _released(backup_id: str) -> Leftover:
    return Leftover(
        "released backup",
        backup_id,
        "backup retention let it go while incremental backups depended on it; none does now",
    )
