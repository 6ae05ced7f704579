"""The colocated errands take-snapshot and list-snapshots (restore: commands/restore.py).

A colocated errand runs on every instance that has the job (docs/bosh-contracts.md,
errands). Work that belongs to the deployment as a whole is done by one coordinator
(members.coordinator); the others say who that is and exit 0.
"""

from __future__ import annotations

from typing import TypeVar

from disk_snapshots.backups.runner import BackupRunner
from disk_snapshots.commands.snapshots import listing
from disk_snapshots.config import EXIT_INVALID_CONFIG
from disk_snapshots.config import ConfigError
from disk_snapshots.config import ListSnapshotsConfig
from disk_snapshots.config import TakeSnapshotConfig
from disk_snapshots.config import load_config
from disk_snapshots.errors import EXIT_PARTIAL
from disk_snapshots.errors import code_of
from disk_snapshots.members import coordinator
from disk_snapshots.sets.coordinator import SetError
from disk_snapshots.sets.coordinator import run_set
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import VM_PATHS
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.table import render_table
from disk_snapshots.triggers import MANUAL

T = TypeVar("T")


def _load(job: str, kind: type[T], paths: Paths) -> tuple[T, Snapshotter] | int:
    """The errand's own config and this instance's snapshotter, or the exit code (said why)."""
    try:
        config = load_config(paths.job_config(job))
        snapshotter = Snapshotter.load(paths)
    except ConfigError as err:
        print(err.report(f"{job}: invalid configuration"))
        return EXIT_INVALID_CONFIG
    except SNAPSHOT_ERRORS as err:
        print(f"{job}: this instance's snapshotter cannot be used: {err}")
        return code_of(err)
    if not isinstance(config, kind):
        print(f"{job}: {paths.job_config(job)} is not the {job} job's config")
        return EXIT_INVALID_CONFIG
    return config, snapshotter


def take_snapshot(paths: Paths = VM_PATHS) -> int:
    loaded = _load("take-snapshot", TakeSnapshotConfig, paths)
    if isinstance(loaded, int):
        return loaded
    config, snapshotter = loaded
    if config.scope == "set":
        code, taken_ids = _take_set(snapshotter, config.note)
    else:
        code, taken_ids = _take_instance(snapshotter, config.note)
    if code == 0 and config.backup:
        return _back_up(snapshotter, taken_ids)
    return code


def _take_instance(snapshotter: Snapshotter, note: str) -> tuple[int, list[str]]:
    spec = snapshotter.config.spec
    try:
        taken = snapshotter.take(MANUAL, note=note)
    except SNAPSHOT_ERRORS as err:
        print(f"take-snapshot: {spec.name}/{spec.index}: FAILED, no snapshot taken: {err}")
        return code_of(err), []
    for warning in taken.warnings:
        print(f"take-snapshot: warning: {warning}")
    print(render_table([taken.snapshot]))
    print(f"frozen for {taken.frozen_seconds * 1000:.0f} ms")
    try:
        snapshotter.prune()
    except SNAPSHOT_ERRORS as err:
        print(f"take-snapshot: snapshot {taken.snapshot.id} taken, but retention failed: {err}")
        return EXIT_PARTIAL, [taken.snapshot.id]
    return 0, [taken.snapshot.id]


def _back_up(snapshotter: Snapshotter, snapshot_ids: list[str]) -> int:
    """take_snapshot.backup: each snapshot just taken, backed up until complete."""
    failed = 0
    for snapshot_id in snapshot_ids:
        outcome = BackupRunner(snapshotter).run(snapshot_id)
        print(f"take-snapshot: {'' if outcome.ok else 'backup FAILED: '}{outcome.message}")
        failed += not outcome.ok
    return 1 if failed else 0


def _take_set(snapshotter: Snapshotter, note: str) -> tuple[int, list[str]]:
    """One consistent set across every instance, run by the coordinator only."""
    leads, who = coordinator(snapshotter.config)
    if not leads:
        print(f"take-snapshot: the set is coordinated by {who}; nothing to do on this instance")
        return 0, []
    try:
        outcome = run_set(snapshotter, MANUAL, note=note)
    except SetError as err:
        print(f"take-snapshot: FAILED, no set taken: {err}")
        return code_of(err), []
    taken = [r.snapshot_id for r in outcome.results if r.snapshot_id]
    try:
        catalog = [s for s in snapshotter.catalog() if s.id in taken]
        print(render_table(catalog))
    except SNAPSHOT_ERRORS as err:
        print(f"take-snapshot: cannot read the catalog back: {err}")
    for r in outcome.results:
        what = r.snapshot_id or "no snapshot"
        errors = f": {'; '.join(r.errors)}" if r.errors else ""
        print(
            f"  {r.member.label} ({r.member.id}): {what}, "
            f"frozen {r.frozen_seconds * 1000:.0f} ms{errors}"
        )
    for warning in outcome.warnings:
        print(f"take-snapshot: warning: {warning}")
    if outcome.state != "complete":
        print(f"take-snapshot: set {outcome.set_id} is INCOMPLETE: {outcome.reason}")
        return EXIT_PARTIAL, taken
    print(
        f"take-snapshot: set {outcome.set_id} complete: {len(taken)} snapshots "
        f"({outcome.cut}), longest freeze {outcome.longest_freeze * 1000:.0f} ms"
    )
    return 0, taken


def list_snapshots(paths: Paths = VM_PATHS) -> int:
    loaded = _load("list-snapshots", ListSnapshotsConfig, paths)
    if isinstance(loaded, int):
        return loaded
    config, snapshotter = loaded
    leads, who = coordinator(snapshotter.config)
    if not leads:
        print(f"list-snapshots: the catalog is printed by {who}; nothing to do on this instance")
        return 0
    try:
        print(listing(snapshotter, as_json=config.format == "json"))
    except SNAPSHOT_ERRORS as err:
        print(f"list-snapshots: FAILED, the catalog cannot be read: {err}")
        return code_of(err)
    return 0
