"""Annotations as Cinder metadata, Cinder ids and statuses: the openstack-cinder provider's
pure decisions (no network)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import State
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.vm.instance import Disk

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Cinder keeps metadata keys and values of at most 255 characters (our tags allow 256).
MAX_METADATA_VALUE = 255
# Every snapshot, backup and volume of ours carries this: the list filter, and the proof
# of ownership before anything is changed or deleted.
MARKER_KEY = TAG_PREFIX + "provider"
MARKER = "openstack-cinder"
SCHEMA_KEY = TAG_PREFIX + "schema"
SOURCE_SNAPSHOT_KEY = TAG_PREFIX + "source_snapshot"
SOURCE_BACKUP_KEY = TAG_PREFIX + "source_backup"
# A group-snapshot member that retention let go of: Cinder deletes members only together,
# as their group snapshot, once every member is released.
RELEASED_KEY = TAG_PREFIX + "released"
# A backup's bookkeeping: the backup Cinder chained an incremental one to (the API does
# not say), and when it was first seen complete (updated_at moves on later).
PARENT_BACKUP_KEY = TAG_PREFIX + "parent_backup"
COMPLETED_KEY = TAG_PREFIX + "backup_completed_at"
PROVIDER_KEYS = (
    MARKER_KEY,
    SOURCE_SNAPSHOT_KEY,
    SOURCE_BACKUP_KEY,
    RELEASED_KEY,
    PARENT_BACKUP_KEY,
    COMPLETED_KEY,
)
# Free text may be cut to fit; identifiers never are.
TRUNCATABLE = (TAG_PREFIX + "note", TAG_PREFIX + "set_reason")
# The volume metadata the OpenStack CPI writes from the Director's set_disk_metadata.
BOSH_DEPLOYMENT_KEY = "deployment"

CINDER_STATES: Mapping[str, State] = {
    "creating": "pending",
    "available": "completed",
    # Still whole while Cinder reads from it.
    "backing-up": "completed",
    "restoring": "completed",
}


def check_uuid(value: object, what: str = "snapshot") -> str:
    """Refuse anything but a Cinder id before it reaches a URL."""
    if not isinstance(value, str) or not UUID.match(value):
        message = f"{value!r} is not a Cinder {what} id (a lowercase UUID)"
        # The ids an operator gives are bad arguments; any other is Cinder's answer.
        if what == "snapshot":
            raise UnknownSnapshot(message)
        if what == "backup":
            raise UnknownBackup(message)
        raise ProviderError(message)
    return value


def cinder_volume_id(disk: Disk) -> str:
    """The Cinder volume behind a BOSH disk: the agent's hint, else the CID itself."""
    for candidate in (disk.hint.get("volume_id"), disk.hint.get("VolumeID"), disk.cid):
        if isinstance(candidate, str) and UUID.match(candidate):
            return candidate
    raise ProviderError(
        f"disk {disk.cid} has no Cinder volume id (neither the CID nor the agent's hint "
        "volume_id is a UUID): is this instance on OpenStack?"
    )


def display_name(a: Annotations) -> str:
    """The dashboard's Name column: enough to recognise a snapshot without its metadata."""
    moment = a.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{a.deployment}/{a.instance_group}/{a.index} {a.trigger} {moment}"[:MAX_METADATA_VALUE]


def fitted(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata Cinder keeps (255 characters a key or value): free text is cut to fit,
    anything else that does not fit is refused."""
    fit: dict[str, str] = {}
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_VALUE:
            raise ProviderError(f"metadata key {key[:40]!r}... is longer than Cinder keeps")
        if len(value) > MAX_METADATA_VALUE:
            if key not in TRUNCATABLE:
                raise ProviderError(
                    f"annotation {key} is {len(value)} characters long; Cinder keeps at most "
                    f"{MAX_METADATA_VALUE}"
                )
            value = value[: MAX_METADATA_VALUE - 1] + "…"
        fit[key] = value
    return fit


def metadata_of(annotations: Annotations) -> dict[str, str]:
    """The annotations as Cinder metadata, with our marker."""
    return fitted(annotations.to_tags()) | {MARKER_KEY: MARKER}


def carried_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Our annotation keys without the provider's bookkeeping: what a copy carries over."""
    return {
        k: v for k, v in metadata.items() if k.startswith(TAG_PREFIX) and k not in PROVIDER_KEYS
    }


def metadata_filter(query: Query) -> dict[str, str]:
    """What Cinder matches exactly in metadata: our marker and the query's exact fields."""
    return {MARKER_KEY: MARKER} | query.exact_tags()


def metadata_dict(raw: Mapping[str, object]) -> dict[str, str]:
    metadata = raw.get("metadata")
    if not isinstance(metadata, Mapping):
        return {}
    return {str(k): str(v) for k, v in metadata.items()}


def is_ours(metadata: Mapping[str, str]) -> bool:
    return metadata.get(MARKER_KEY) == MARKER and SCHEMA_KEY in metadata


def is_released(metadata: Mapping[str, str]) -> bool:
    return metadata.get(RELEASED_KEY) == "true"


def is_going(raw: Mapping[str, object]) -> bool:
    """Being deleted: already out of the catalog, though Cinder still shows it."""
    return raw.get("status") == "deleting"


def state_of(status: object) -> State:
    return CINDER_STATES.get(str(status), "error")


def gib_to_bytes(size: object) -> int | None:
    return size * 2**30 if isinstance(size, int) and not isinstance(size, bool) else None


def timestamp(text: object) -> datetime | None:
    """Cinder's ``created_at``: ISO 8601 in UTC, usually without a zone."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def volume_owner(volume: Mapping[str, object]) -> str:
    """The BOSH deployment a volume belongs to, as the CPI recorded it ("" if unknown)."""
    return metadata_dict(volume).get(BOSH_DEPLOYMENT_KEY, "")


def check_owner(volume: Mapping[str, object], deployment: str) -> None:
    owner = volume_owner(volume)
    if owner and owner != deployment:
        raise ProviderError(
            f"volume {volume.get('id')} belongs to deployment {owner!r}, not {deployment!r}: "
            "refusing to snapshot another deployment's disk"
        )
