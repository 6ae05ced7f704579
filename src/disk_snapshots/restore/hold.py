"""A restore's plan hold: the snapshots a plan chose are kept by retention until it ends.

Between planning a restore and finishing it (and between a dry run and the real run,
for as long as the operator asked), a schedule's retention on any instance could
delete the very snapshot the plan chose. A hold is written onto each chosen snapshot
as an annotation (``hold_until``, ``hold_by``), so every instance's retention sees it
whoever took the snapshot, and it expires on its own if the restore never comes back
to release it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from disk_snapshots.catalog import Snapshot
from disk_snapshots.providers.base import Provider


def hold(provider: Provider, snapshot_ids: Iterable[str], by: str, until: datetime) -> list[str]:
    """Hold each snapshot until ``until`` (a later hold of another restore is kept);
    UnknownSnapshot names one that does not exist."""
    held = []
    for snapshot_id in dict.fromkeys(snapshot_ids):
        snapshot = provider.get(snapshot_id)
        a = snapshot.annotations
        if a.held(until) and a.hold_by != by:
            continue  # someone else holds it longer: that hold covers ours
        provider.update(snapshot.id, a.with_hold(until, by))
        held.append(snapshot.id)
    return held


def release(provider: Provider, catalog: Iterable[Snapshot], by: str) -> list[str]:
    """Drop every hold ``by`` placed (others' holds stay); the ids released."""
    released = []
    for snapshot in catalog:
        if snapshot.annotations.hold_by == by:
            provider.update(snapshot.id, snapshot.annotations.with_hold(None))
            released.append(snapshot.id)
    return released
