"""Which tier each point in time a restore may choose comes from (``restore.source``).

A backup holds the point in time of the snapshot it was copied from, with that
snapshot's annotations, so the planner chooses among points in time the same way
whichever tier holds them: ``snapshot`` offers the snapshots, ``backup`` the completed
backups, ``auto`` every snapshot that still exists and, for those that are gone (or
failed), their backups. Pure functions of the catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Snapshot

Source = Literal["auto", "snapshot", "backup"]
SOURCES: tuple[Source, ...] = ("auto", "snapshot", "backup")


@dataclass(frozen=True)
class Points:
    """The points in time a restore may choose from, each as a snapshot record."""

    catalog: tuple[Snapshot, ...]
    # point (its snapshot's id) -> the backup its data comes from; absent: the snapshot
    backups: Mapping[str, Backup]
    # a backup's own id -> its point, so that restore.snapshots may name either
    aliases: Mapping[str, str]
    source: Source
    gone: frozenset[str] = frozenset()  # points whose snapshot no longer exists

    def snapshot_of(self, named: str) -> str:
        return self.aliases.get(named, named)

    def via(self, point: str) -> tuple[Backup | None, str]:
        """The backup the point's data comes from (None: its snapshot), and why, in words."""
        backup = self.backups.get(point)
        if backup is None:
            if self.source == "auto":
                return None, "tier: the snapshot (restore.source auto: it still exists)"
            return None, ""
        when = backup.completed_at.strftime("%Y-%m-%d %H:%M:%S UTC") if backup.completed_at else "?"
        if self.source == "backup":
            why = "restore.source is backup"
        elif point in self.gone:
            why = "restore.source auto: the snapshot is gone"
        else:
            why = "restore.source auto: the snapshot failed"
        return backup, f"tier: backup {backup.id} in {backup.location} (completed {when}); {why}"


def usable_backups(backups: Iterable[Backup]) -> dict[str, Backup]:
    """Snapshot id -> its newest completed backup; pending and failed ones hold nothing yet."""
    chosen: dict[str, Backup] = {}
    for b in backups:
        if b.state != "completed":
            continue
        known = chosen.get(b.source_snapshot)
        if known is None or (b.completed_at or b.created_at) > (
            known.completed_at or known.created_at
        ):
            chosen[b.source_snapshot] = b
    return chosen


def _as_point(backup: Backup) -> Snapshot:
    return Snapshot(
        id=backup.source_snapshot,
        annotations=backup.annotations,
        state="completed",
        size_bytes=backup.size_bytes,
    )


def points(catalog: Sequence[Snapshot], backups: Sequence[Backup], source: Source) -> Points:
    if source == "snapshot":
        return Points(tuple(catalog), {}, {}, source)
    usable = usable_backups(backups)
    aliases = {b.id: point for point, b in usable.items()}
    if source == "backup":
        return Points(tuple(_as_point(b) for b in usable.values()), usable, aliases, source)
    alive = {s.id for s in catalog if s.state != "error"}
    listed = {s.id for s in catalog}
    instead = {point: b for point, b in usable.items() if point not in alive}
    merged = [s for s in catalog if s.id not in instead] + [_as_point(b) for b in instead.values()]
    gone = frozenset(point for point in instead if point not in listed)
    return Points(tuple(merged), instead, aliases, source, gone)
