"""The catalog as operators read it: tables like ``bosh snapshots``, or JSON for scripts.

Both tiers: the snapshots, then the backups, each backup with the snapshot it was copied
from (which may be gone: that is when a backup matters) and its state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from collections.abc import Sequence
from datetime import datetime

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Snapshot

COLUMNS = (
    "Instance",
    "Snapshot CID",
    "Created at",
    "Clean",
    "Trigger",
    "Role",
    "Consistency",
    "Set",
    "Note",
    "Backup",
)
BACKUP_COLUMNS = (
    "Instance",
    "Backup ID",
    "Source snapshot",
    "Point in time",
    "State",
    "Completed at",
    "Size",
    "Trigger",
    "Role",
    "Consistency",
    "Where",
)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _instance(snapshot: Snapshot | Backup) -> str:
    a = snapshot.annotations
    return f"{a.instance_group}/{a.index} ({a.instance_id})"


def newest_backups(backups: Iterable[Backup]) -> dict[str, Backup]:
    """Source snapshot id → its newest backup (a completed one before any other)."""
    chosen: dict[str, Backup] = {}
    for b in backups:
        known = chosen.get(b.source_snapshot)
        if known is None or _rank(b) > _rank(known):
            chosen[b.source_snapshot] = b
    return chosen


def _rank(backup: Backup) -> tuple[bool, datetime]:
    return backup.state == "completed", backup.started_at or backup.created_at


def row(snapshot: Snapshot, backup: Backup | None = None) -> tuple[str, ...]:
    a = snapshot.annotations
    set_text = f"{a.set_id} ({a.set_state or 'pending'})" if a.set_id else "-"
    return (
        _instance(snapshot),
        snapshot.id,
        _when(a.created_at),
        "true" if a.consistency == "clean" else "false",
        a.trigger,
        a.role,
        a.consistency if snapshot.state == "completed" else f"{a.consistency} ({snapshot.state})",
        set_text,
        a.note or "-",
        f"{backup.id} ({backup.state})" if backup else "-",
    )


def backup_row(backup: Backup, snapshot_ids: set[str]) -> tuple[str, ...]:
    a = backup.annotations
    source = backup.source_snapshot
    state = backup.state if backup.state == "completed" else f"{backup.state}: {backup.detail}"
    return (
        _instance(backup),
        backup.id,
        source if source in snapshot_ids else f"{source} (gone)",
        _when(a.created_at),
        state,
        _when(backup.completed_at),
        f"{backup.size_bytes / 2**30:.1f} GiB" if backup.size_bytes is not None else "-",
        a.trigger,
        a.role,
        a.consistency,
        backup.location or "-",
    )


def _grid(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    cells = [tuple(columns), *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def render_table(snapshots: Sequence[Snapshot], backups: Sequence[Backup] | None = None) -> str:
    """The snapshots; with ``backups`` (the tier is on), each snapshot's newest backup in
    its row and every backup in a second table."""
    of = newest_backups(backups or ())
    lines = _grid(COLUMNS, [row(s, of.get(s.id)) for s in snapshots])
    lines += ["", _count(len(snapshots), "snapshot")]
    if backups is not None:
        lines += ["", render_backups(backups, {s.id for s in snapshots})]
    return "\n".join(lines)


def render_backups(backups: Sequence[Backup], snapshot_ids: set[str] | None = None) -> str:
    """The backups; a source snapshot not in ``snapshot_ids`` (when given) is marked gone."""
    ids = snapshot_ids if snapshot_ids is not None else {b.source_snapshot for b in backups}
    lines = _grid(BACKUP_COLUMNS, [backup_row(b, ids) for b in backups])
    return "\n".join([*lines, "", _count(len(backups), "backup")])


def _annotations(record: Snapshot | Backup) -> dict[str, str]:
    return {k.removeprefix("disk-snapshots:"): v for k, v in record.annotations.to_tags().items()}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def to_json(snapshots: Sequence[Snapshot], backups: Sequence[Backup] = ()) -> str:
    """One list: every snapshot (``tier: snapshot``), then every backup (``tier: backup``,
    with its source snapshot, state, times and where it lives)."""
    records: list[dict[str, object]] = [
        {
            "tier": "snapshot",
            "id": s.id,
            "state": s.state,
            "size_bytes": s.size_bytes,
            "annotations": _annotations(s),
        }
        for s in snapshots
    ]
    records += [
        {
            "tier": "backup",
            "id": b.id,
            "source_snapshot": b.source_snapshot,
            "state": b.state,
            "detail": b.detail,
            "started_at": _iso(b.started_at),
            "completed_at": _iso(b.completed_at),
            "size_bytes": b.size_bytes,
            "location": b.location,
            "annotations": _annotations(b),
        }
        for b in backups
    ]
    return json.dumps(records, indent=2)


def from_json(text: str) -> list[Snapshot]:
    """The snapshots ``to_json`` wrote (read back by the operator's command); ValueError
    (an AnnotationError) names what is wrong, since the text crossed a network."""
    records = json.loads(text)
    if not isinstance(records, list):
        raise ValueError("the catalog is not a JSON list")
    snapshots = []
    for record in records:
        if not isinstance(record, dict) or record.get("tier", "snapshot") != "snapshot":
            continue
        annotations = record.get("annotations")
        if not isinstance(annotations, dict):
            raise ValueError(f"snapshot {record.get('id')!r} has no annotations")
        state = record.get("state", "completed")
        if state not in ("pending", "completed", "error"):
            raise ValueError(f"snapshot {record.get('id')!r} has state {state!r}")
        size = record.get("size_bytes")
        snapshots.append(
            Snapshot(
                id=str(record.get("id", "")),
                annotations=Annotations.from_tags(
                    {TAG_PREFIX + str(k): str(v) for k, v in annotations.items()}
                ),
                state=state,
                size_bytes=size if isinstance(size, int) else None,
            )
        )
    return snapshots
