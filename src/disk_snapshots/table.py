"""The catalog as operators read it: a table like ``bosh snapshots``, or JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import Annotations
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


def row(snapshot: Snapshot) -> tuple[str, ...]:
    a = snapshot.annotations
    set_text = f"{a.set_id} ({a.set_state or 'pending'})" if a.set_id else "-"
    return (
        f"{a.instance_group}/{a.index} ({a.instance_id})",
        snapshot.id,
        a.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "true" if a.consistency == "clean" else "false",
        a.trigger,
        a.role,
        a.consistency if snapshot.state == "completed" else f"{a.consistency} ({snapshot.state})",
        set_text,
        a.note or "-",
        f"{snapshot.backup_id} ({snapshot.backup_region})" if snapshot.backup_id else "-",
    )


def render_table(snapshots: Sequence[Snapshot]) -> str:
    rows = [COLUMNS, *(row(s) for s in snapshots)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.append("")
    lines.append(f"{len(snapshots)} snapshot{'s' if len(snapshots) != 1 else ''}")
    return "\n".join(lines)


def to_json(snapshots: Sequence[Snapshot]) -> str:
    return json.dumps(
        [
            {
                "id": s.id,
                "state": s.state,
                "size_bytes": s.size_bytes,
                "backup_id": s.backup_id,
                "backup_region": s.backup_region,
                "annotations": {
                    k.removeprefix("disk-snapshots:"): v for k, v in s.annotations.to_tags().items()
                },
            }
            for s in snapshots
        ],
        indent=2,
    )


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
                backup_id=str(record.get("backup_id") or ""),
                backup_region=str(record.get("backup_region") or ""),
            )
        )
    return snapshots
