"""``bin/snapshots list|show|take|delete|cleanup``: the catalog for ``bosh ssh`` users."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC
from datetime import datetime

from disk_snapshots.config import EXIT_INVALID_CONFIG
from disk_snapshots.config import ConfigError
from disk_snapshots.providers.base import LeavesDebris
from disk_snapshots.retention import guard_keeps
from disk_snapshots.retention import holds
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.table import render_table
from disk_snapshots.table import to_json
from disk_snapshots.triggers import MANUAL


def run_snapshots(args: argparse.Namespace) -> int:
    try:
        snapshotter = Snapshotter.load()
    except ConfigError as err:
        print(err.report("invalid configuration"), file=sys.stderr)
        return EXIT_INVALID_CONFIG
    except SNAPSHOT_ERRORS as err:
        print(f"snapshots: {err}", file=sys.stderr)
        return 1
    try:
        if args.action == "list":
            catalog = snapshotter.catalog()
            print(to_json(catalog) if args.json else render_table(catalog))
        elif args.action == "show":
            print(to_json([snapshotter.provider.get(args.snapshot_id)]))
        elif args.action == "take":
            taken = snapshotter.take(MANUAL, note=args.note)
            snapshotter.prune()
            for warning in taken.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            print(to_json([taken.snapshot]) if args.json else render_table([taken.snapshot]))
        elif args.action == "delete":
            return _delete(snapshotter, args.snapshot_id, force=args.force)
        elif args.action == "cleanup":
            _cleanup(snapshotter)
    except SNAPSHOT_ERRORS as err:
        print(f"snapshots {args.action}: {err}", file=sys.stderr)
        return 1
    return 0


def _delete(snapshotter: Snapshotter, snapshot_id: str, *, force: bool) -> int:
    snapshot = snapshotter.provider.get(snapshot_id)
    catalog = snapshotter.catalog()
    guard = guard_keeps(catalog).get(snapshot.id) or holds(catalog, datetime.now(UTC)).get(
        snapshot.id
    )
    if guard and not force:
        print(
            f"snapshots delete: {snapshot_id} ({guard}): retention keeps it on purpose. "
            "Pass --force to delete it anyway.",
            file=sys.stderr,
        )
        return 1
    snapshotter.provider.delete(snapshot_id)
    print(f"deleted {snapshot_id}")
    return 0


def _cleanup(snapshotter: Snapshotter) -> None:
    provider = snapshotter.provider
    if not isinstance(provider, LeavesDebris):
        print(f"the {provider.name} provider keeps no temporary resources to clean up")
        return
    removed = provider.cleanup_leftovers()
    print(
        f"removed {len(removed)} leftover temporary resource(s){': ' if removed else ''}"
        + ", ".join(removed)
    )
