"""What a backup run decides, as pure functions of the catalog, the config and now."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from datetime import datetime
from datetime import timedelta
from typing import Literal

from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Snapshot
from disk_snapshots.triggers import PRE_RESTORE

Source = Literal["instance", "set"]


class NothingToBackUp(ValueError):
    """No snapshot qualifies; the message says which were looked at and why none."""


def choose_source(catalog: Iterable[Snapshot], instance_id: str, source: Source) -> Snapshot:
    """The snapshot a scheduled backup copies.

    ``instance``: this instance's newest app-consistent (or clean) snapshot. ``set``:
    this instance's member of the newest complete set. Never a failed snapshot, a
    pre-restore safety snapshot, or a member of a set that is not complete.
    """
    mine = sorted(
        (s for s in catalog if s.annotations.instance_id == instance_id),
        key=lambda s: (s.created_at, s.id),
        reverse=True,
    )
    for snapshot in mine:
        a = snapshot.annotations
        if snapshot.state == "error" or a.trigger == PRE_RESTORE:
            continue
        if a.set_id and a.set_state != "complete":
            continue
        if source == "set" and a.set_id:
            return snapshot
        if source == "instance" and a.consistency in ("app", "clean"):
            return snapshot
    wanted = {
        "instance": "an app-consistent or clean snapshot",
        "set": "a member of a complete set",
    }[source]
    raise NothingToBackUp(
        f"this instance has {len(mine)} snapshot(s) and none is {wanted} "
        "(failed snapshots, pre-restore safety snapshots and incomplete sets are never "
        "backed up)"
    )


def backup_of(backups: Iterable[Backup], snapshot_id: str) -> Backup | None:
    """The backup that already holds (or is copying) ``snapshot_id``: a completed one
    first, else one still pending; None when a new one is needed."""
    found = [b for b in backups if b.source_snapshot == snapshot_id and b.state != "error"]
    found.sort(key=lambda b: (b.state == "completed", b.started_at or b.created_at))
    return found[-1] if found else None


def overdue(backup: Backup, deadline: timedelta, now: datetime) -> bool:
    """Still not completed ``deadline`` after it started."""
    started = backup.started_at
    return backup.state == "pending" and started is not None and now - started > deadline


def in_progress_sources(backups: Sequence[Backup]) -> frozenset[str]:
    """Snapshots a backup is being copied from: retention must not delete them."""
    return frozenset(b.source_snapshot for b in backups if b.state == "pending")


def newest_completed(backups: Iterable[Backup], instance_id: str) -> Backup | None:
    done = [
        b for b in backups if b.state == "completed" and b.annotations.instance_id == instance_id
    ]
    return max(done, key=lambda b: (b.created_at, b.id), default=None)
