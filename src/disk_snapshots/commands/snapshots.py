"""``bin/snapshots list|show|take|delete|backup|delete-backup|cleanup``: the catalog, both
tiers, for ``bosh ssh`` users.

Errors reach cli.main's guard (errors.guarded): one line, the documented exit code.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC
from datetime import datetime

from disk_snapshots.backups.decisions import in_progress_sources
from disk_snapshots.backups.decisions import newest_completed
from disk_snapshots.backups.runner import BackupRunner
from disk_snapshots.errors import EXIT_FAILED
from disk_snapshots.errors import EXIT_PARTIAL
from disk_snapshots.errors import PartialFailure
from disk_snapshots.errors import UsageError
from disk_snapshots.providers.base import LeavesDebris
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.base import backup_tier
from disk_snapshots.providers.base import require_backup_tier
from disk_snapshots.retention import guard_keeps
from disk_snapshots.retention import holds
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import VM_PATHS
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.table import render_backups
from disk_snapshots.table import render_table
from disk_snapshots.table import to_json
from disk_snapshots.triggers import MANUAL


def run_snapshots(args: argparse.Namespace, paths: Paths = VM_PATHS) -> int:
    snapshotter = Snapshotter.load(paths)
    if args.action == "list":
        print(listing(snapshotter, as_json=args.json))
    elif args.action == "show":
        print(_show(snapshotter, args.snapshot_id))
    elif args.action == "take":
        return _take(snapshotter, args.note, as_json=args.json)
    elif args.action == "delete":
        return _delete(snapshotter, args.snapshot_id, force=args.force)
    elif args.action == "cleanup":
        return _cleanup(snapshotter, yes=args.yes)
    elif args.action == "backup":
        return _backup(snapshotter, args.snapshot_id)
    elif args.action == "delete-backup":
        return _delete_backup(snapshotter, args.backup_id, force=args.force)
    return 0


def _take(snapshotter: Snapshotter, note: str, *, as_json: bool) -> int:
    taken = snapshotter.take(MANUAL, note=note)
    # Warnings on stderr: with --json, stdout is one document the operator's command reads.
    for warning in taken.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(to_json([taken.snapshot]) if as_json else render_table([taken.snapshot]))
    try:
        snapshotter.prune()
    except SNAPSHOT_ERRORS as err:
        raise PartialFailure(
            f"snapshot {taken.snapshot.id} taken, but retention failed: {err}"
        ) from None
    return 0


def _delete(snapshotter: Snapshotter, snapshot_id: str, *, force: bool) -> int:
    snapshot = snapshotter.provider.get(snapshot_id)
    catalog = snapshotter.catalog()
    guard = guard_keeps(catalog).get(snapshot.id) or holds(catalog, datetime.now(UTC)).get(
        snapshot.id
    )
    if snapshot.id in in_progress_sources(snapshotter.backups()):
        guard = "source of a backup still being copied"
    if guard and not force:
        raise UsageError(
            f"{snapshot_id} ({guard}): retention keeps it on purpose. "
            "Pass --force to delete it anyway."
        )
    snapshotter.provider.delete(snapshot_id)
    print(f"deleted {snapshot_id}")
    return 0


def _cleanup(snapshotter: Snapshotter, *, yes: bool) -> int:
    """What killed operations left behind; released only with --yes."""
    provider = snapshotter.provider
    if not isinstance(provider, LeavesDebris):
        print(f"the {provider.name} provider makes no temporary resources")
        return 0
    found = provider.leftovers()
    if not found:
        print("nothing left behind")
        return 0
    for leftover in found:
        print(f"{'releasing' if yes else 'left behind'}: {leftover.describe()}")
    if not yes:
        print(f"{len(found)} left behind; run again with --yes to release them")
        return 0
    released = provider.cleanup_leftovers()
    print(f"released {len(released)} of {len(found)}")
    return 0 if len(released) >= len(found) else EXIT_PARTIAL


def listing(snapshotter: Snapshotter, *, as_json: bool) -> str:
    """Both tiers of this deployment's catalog; the backups only when the tier is on."""
    catalog = snapshotter.catalog()
    tier = backup_tier(snapshotter.provider)
    backups = snapshotter.backups() if tier else None
    return to_json(catalog, backups or ()) if as_json else render_table(catalog, backups)


def _show(snapshotter: Snapshotter, record_id: str) -> str:
    try:
        return to_json([snapshotter.provider.get(record_id)])
    except UnknownSnapshot:
        tier = backup_tier(snapshotter.provider)
        if tier is None:
            raise
    try:
        return to_json([], [tier.get_backup(record_id)])
    except UnknownBackup:
        raise UnknownSnapshot(f"{record_id} is neither a snapshot nor a backup") from None


def _backup(snapshotter: Snapshotter, snapshot_id: str | None) -> int:
    outcome = BackupRunner(snapshotter).run(snapshot_id)
    if outcome.backup is not None:
        print(render_backups([outcome.backup]))
    print(("" if outcome.ok else "FAILED: ") + outcome.message)
    for deleted in outcome.deleted:
        print(f"retention deleted backup {deleted}")
    return 0 if outcome.ok else EXIT_FAILED


def _delete_backup(snapshotter: Snapshotter, backup_id: str, *, force: bool) -> int:
    tier = require_backup_tier(snapshotter.provider)
    backup = tier.get_backup(backup_id)
    newest = newest_completed(tier.backups(), backup.annotations.instance_id)
    if newest is not None and newest.id == backup.id and not force:
        raise UsageError(
            f"{backup_id} is the newest completed backup of {backup.annotations.instance}; "
            "retention keeps it on purpose. Pass --force to delete it anyway."
        )
    tier.delete_backup(backup_id)
    print(f"deleted backup {backup_id}")
    return 0
